import ArgumentParser
import CairnCore
import Foundation

/// Every option of `cairn serve`: its key (file), its environment variable (CAIRN_ +
/// upper-case key) and its flag (--key-with-dashes). docs/configuration.md is generated
/// from this table (`cairn config keys --markdown`).
struct OptionDoc: Sendable {
  enum Kind: String, Sendable { case string, int, size, number, bool, path, address }
  let key: String
  let kind: Kind
  let defaultText: String
  let help: String
  let section: String

  var env: String { "CAIRN_" + key.uppercased() }
  var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-") }
}

enum OptionCatalog {
  static let options: [OptionDoc] = [
    .init(key: "data", kind: .path, defaultText: "./cairn-data", help: "Data directory (blobs, ingests, metadata, cluster state).", section: "Node"),
    .init(key: "listen", kind: .address, defaultText: "127.0.0.1:7400", help: "TCP HOST:PORT for both Content APIs, health and (cluster) the peer protocol; \"none\" for no TCP.", section: "Node"),
    .init(key: "unix", kind: .path, defaultText: "(none)", help: "Unix socket path (containerd's proxy plugins need one). Callers on it have every permission: guard it with unix_mode.", section: "Node"),
    .init(key: "unix_client", kind: .string, defaultText: "(none)", help: "Client identity of calls on the unix socket that send no cairn-client header (docs/containerd.md).", section: "Node"),
    .init(key: "unix_mode", kind: .string, defaultText: "0660", help: "Permissions of the unix socket file, octal. The process umask is 077 while it is created.", section: "Node"),
    .init(key: "admin_listen", kind: .address, defaultText: "(none)", help: "HOST:PORT (or just PORT, on loopback) of the admin HTTP port: /healthz and /readyz for probes; /metrics, /api/status and the dashboard need a token with monitor or admin when tokens_file is set. Off loopback it needs tokens_file (or insecure).", section: "Node"),
    .init(key: "log_level", kind: .string, defaultText: "info", help: "trace, debug, info, notice, warning, error, critical.", section: "Node"),
    .init(key: "log_format", kind: .string, defaultText: "text", help: "text or json (one JSON object per line on standard error).", section: "Node"),
    .init(key: "ingest_expiry", kind: .number, defaultText: "86400", help: "Seconds after which an untouched upload is removed.", section: "Node"),
    .init(key: "shutdown_grace", kind: .number, defaultText: "10", help: "Seconds in-flight calls get to finish on SIGTERM/SIGINT.", section: "Node"),
    .init(key: "io_threads", kind: .int, defaultText: "8", help: "Threads for blocking file I/O.", section: "Node"),

    .init(key: "tls_cert", kind: .path, defaultText: "(none)", help: "PEM certificate chain of this node: served on the TCP listener and presented to peers. With tls_key, turns TLS on.", section: "Security"),
    .init(key: "tls_key", kind: .path, defaultText: "(none)", help: "PEM private key of tls_cert.", section: "Security"),
    .init(key: "tls_ca", kind: .path, defaultText: "(none)", help: "PEM cluster CA. Client certificates are asked for and must chain to it; a certificate's role is its SAN URI (cairn://peer/NODE, cairn://operator/NAME, cairn://client/NAME; `cairn certs`). Peers prove themselves with it (mTLS).", section: "Security"),
    .init(key: "tls_require_client_cert", kind: .bool, defaultText: "false", help: "Refuse TLS connections without a certificate from tls_ca (clients too, not just peers).", section: "Security"),
    .init(key: "tls_reload_interval", kind: .number, defaultText: "30", help: "Seconds between checks of the TLS files and tokens_file; changed files are loaded without a restart.", section: "Security"),
    .init(key: "tokens_file", kind: .path, defaultText: "(none)", help: "Bearer tokens file (one CLIENT PERMISSIONS sha256:HASH per line; `cairn token new`). A peer token (NODE peer sha256:HASH) authenticates a node.", section: "Security"),
    .init(key: "peer_token", kind: .string, defaultText: "(none)", help: "This node's peer token (`cairn token new NODE --permissions peer`), sent to its peers when they authenticate peers by token. Prefer the CAIRN_PEER_TOKEN variable.", section: "Security"),
    .init(key: "insecure", kind: .bool, defaultText: "false", help: "Run open off loopback: every caller, the peer protocol included, is trusted without credentials. Without it a node that listens beyond loopback refuses to start unless callers (and, in a cluster, peers) authenticate. Logged loudly, shown by `cairn cluster status`.", section: "Security"),
    .init(key: "anonymous_permissions", kind: .string, defaultText: "none", help: "What a TCP caller without a credential may do when credentials are configured: none, or a comma list of read, write, delete (e.g. read for a public cache).", section: "Security"),

    .init(key: "max_message_bytes", kind: .size, defaultText: "16842752", help: "Largest gRPC message accepted (containerd's clients send up to 16 MiB).", section: "Limits"),
    .init(key: "max_concurrent_streams", kind: .int, defaultText: "1024", help: "Concurrent HTTP/2 streams (calls) per client connection.", section: "Limits"),
    .init(key: "max_active_ingests", kind: .int, defaultText: "4096", help: "Uploads open for writing at once on this node.", section: "Limits"),
    .init(key: "max_active_ingests_per_client", kind: .int, defaultText: "256", help: "Write streams one identity (its token or certificate, else its address; never the cairn-client header) may have open at once; 0 = no limit.", section: "Limits"),
    .init(key: "max_requests_per_second_per_client", kind: .number, defaultText: "10000", help: "Requests per second one identity may make (token bucket); 0 = no limit. Peers and the unix socket are exempt.", section: "Limits"),
    .init(key: "request_burst_per_client", kind: .number, defaultText: "20000", help: "Burst of the per-client request rate.", section: "Limits"),
    .init(key: "max_watches_per_client", kind: .int, defaultText: "64", help: "Watches (seed Status, health Watch) one identity may have open at once; 0 = no limit.", section: "Limits"),
    .init(key: "request_idle_timeout", kind: .number, defaultText: "120", help: "Seconds a call may wait for its client's next request message (an upload's next chunk, a call's request) before it is ended (UNAVAILABLE; an upload's ingest stays, resumable); 0 = never.", section: "Limits"),
    .init(key: "watch_idle_timeout", kind: .number, defaultText: "600", help: "Seconds a seed Status watch may have nothing to send before it is ended; 0 = never.", section: "Limits"),
    .init(key: "max_connections", kind: .int, defaultText: "4096", help: "TCP connections open at once on the client port; more are closed at once.", section: "Limits"),
    .init(key: "max_connections_per_address", kind: .int, defaultText: "128", help: "TCP connections open at once from one remote address.", section: "Limits"),
    .init(key: "handshake_timeout", kind: .number, defaultText: "10", help: "Seconds a new connection has to finish its TLS handshake and HTTP/2 preface.", section: "Limits"),
    .init(key: "connection_idle_timeout", kind: .number, defaultText: "300", help: "Seconds a connection with no calls stays open (clients reconnect as needed); 0 = forever.", section: "Limits"),
    .init(key: "connection_max_age", kind: .number, defaultText: "86400", help: "Seconds after which a connection is asked to go away (calls in flight get connection_max_age_grace to finish); 0 = forever.", section: "Limits"),
    .init(key: "connection_max_age_grace", kind: .number, defaultText: "3600", help: "Seconds calls in flight on a connection past connection_max_age get before it closes.", section: "Limits"),
    .init(key: "max_buffered_bytes", kind: .size, defaultText: "1073741824", help: "Bytes of request messages received but not yet taken by their calls, on the whole node; past it, streams wait (HTTP/2 flow control), nothing fails.", section: "Limits"),
    .init(key: "max_buffered_bytes_per_address", kind: .size, defaultText: "268435456", help: "The same, for one remote address (at least twice max_message_bytes).", section: "Limits"),
    .init(key: "max_blob_bytes", kind: .size, defaultText: "1099511627776", help: "Largest blob an upload may build.", section: "Limits"),
    .init(key: "max_label_bytes", kind: .size, defaultText: "4096", help: "Largest label key plus value (containerd's rule).", section: "Limits"),
    .init(key: "max_labels_per_blob", kind: .int, defaultText: "256", help: "Labels per blob.", section: "Limits"),
    .init(key: "max_ref_bytes", kind: .size, defaultText: "4096", help: "Longest upload ref.", section: "Limits"),
    .init(key: "lock_wait", kind: .number, defaultText: "0.5", help: "Seconds a writer waits for a ref held by another writer before UNAVAILABLE.", section: "Limits"),
    .init(key: "commit_wait", kind: .number, defaultText: "30", help: "Seconds a writer that names its digest waits for another writer of the ref to commit.", section: "Limits"),
    .init(key: "disk_high_watermark", kind: .number, defaultText: "0.95", help: "Fraction of the data filesystem in use above which uploads get RESOURCE_EXHAUSTED (1 = only a full disk).", section: "Limits"),
    .init(key: "max_coalesced_fetch_bytes", kind: .size, defaultText: "536870912", help: "Cluster: largest blob whose concurrent remote reads share one in-memory fetch (0 = never share).", section: "Limits"),

    .init(key: "node_id", kind: .string, defaultText: "(none)", help: "Cluster mode: this node's id (with discover_dns: the host name's first label).", section: "Cluster"),
    .init(key: "peers", kind: .string, defaultText: "(none)", help: "Cluster mode: every node as ID=HOST:PORT, comma separated, this one included.", section: "Cluster"),
    .init(key: "discover_dns", kind: .string, defaultText: "(none)", help: "Cluster mode: a Kubernetes headless service NAME:PORT; peers from its addresses' reverse names. Needs cluster_size.", section: "Cluster"),
    .init(key: "cluster_size", kind: .int, defaultText: "(none)", help: "With discover_dns: nodes to wait for.", section: "Cluster"),
    .init(key: "join", kind: .address, defaultText: "(none)", help: "Join a running cluster through any member's HOST:PORT (needs node_id).", section: "Cluster"),
    .init(key: "replicas", kind: .int, defaultText: "3", help: "Replicas per blob (at most the cluster size).", section: "Cluster"),
    .init(key: "write_quorum", kind: .int, defaultText: "2", help: "Replicas holding a blob before a commit is acknowledged (at most replicas).", section: "Cluster"),
    .init(key: "vnodes", kind: .int, defaultText: "2048", help: "Virtual nodes per node on the hash ring.", section: "Cluster"),
    .init(key: "repair_interval", kind: .number, defaultText: "30", help: "Seconds between anti-entropy rounds (0 = off).", section: "Cluster"),
    .init(key: "repair_rate", kind: .size, defaultText: "67108864", help: "Bytes per second repair transfers may use (0 = no limit).", section: "Cluster"),
    .init(key: "tombstone_retention", kind: .number, defaultText: "86400", help: "Seconds a tombstone is kept; a node down longer must rejoin empty.", section: "Cluster"),
    .init(key: "max_clock_skew", kind: .number, defaultText: "5", help: "Seconds a peer's clock may run ahead of the cluster's (the median of the nodes' clocks) before its messages are refused; a node keeps its own time within half of it of the median (docs/ARCHITECTURE.md, Time).", section: "Cluster"),
    .init(key: "ingest_mirror_lag", kind: .size, defaultText: "8388608", help: "Bytes of an upload not yet mirrored to the ref's next owner, at most (0 = no ingest failover).", section: "Cluster"),
  ]

  static let keys = Set(options.map(\.key))
  static func doc(_ key: String) -> OptionDoc? { options.first { $0.key == key } }

  /// The reference table of docs/configuration.md.
  static func markdown() -> String {
    var out = ""
    var section = ""
    for o in options {
      if o.section != section {
        section = o.section
        out += "\n### \(section)\n\n| key | environment | flag | type | default | meaning |\n|---|---|---|---|---|---|\n"
      }
      out += "| `\(o.key)` | `\(o.env)` | `\(o.flag)` | \(o.kind.rawValue) | `\(o.defaultText)` | \(o.help.replacingOccurrences(of: "|", with: "\\|")) |\n"
    }
    return out
  }
}

/// The option values in force: flags over environment over file, each remembering where
/// it came from, so that an error names the key, the value, its source and why.
struct Settings: Sendable {
  struct Value: Sendable {
    let text: String
    let source: String
  }

  private(set) var values: [String: Value] = [:]

  init(file: ConfigFile?, env: [String: String], flags: [String: String?]) {
    if let file {
      for (k, v) in file.values { values[k] = Value(text: v, source: "\(file.path):\(file.lines[k] ?? 0)") }
    }
    for o in OptionCatalog.options {
      if let v = env[o.env], !v.isEmpty { values[o.key] = Value(text: v, source: "environment \(o.env)") }
    }
    for (k, v) in flags {
      if let v { values[k] = Value(text: v, source: "flag \(OptionCatalog.doc(k)?.flag ?? k)") }
    }
  }

  func invalid(_ key: String, _ why: String) -> ConfigProblem {
    guard let v = values[key] else { return ConfigProblem(key: key, message: "\(key): \(why)") }
    return ConfigProblem(key: key, message: "\(key) = \(quoted(v.text)) (from \(v.source)): \(why)")
  }

  /// These settings without `key` (its default applies): `config check` goes on after a
  /// problem with one key to find the others.
  func without(_ key: String) -> Settings {
    var copy = self
    copy.values[key] = nil
    return copy
  }

  func string(_ key: String) -> String? { values[key]?.text }

  func double(_ key: String, min: Double? = nil, max: Double? = nil, above: Double? = nil) throws -> Double? {
    guard let v = values[key] else { return nil }
    guard let d = Double(v.text), d.isFinite else { throw invalid(key, "not a number") }
    if let min, d < min { throw invalid(key, "must be at least \(min)") }
    if let above, d <= above { throw invalid(key, "must be above \(above)") }
    if let max, d > max { throw invalid(key, "must be at most \(max)") }
    return d
  }

  func int(_ key: String, min: Int? = nil, max: Int? = nil) throws -> Int? {
    guard let v = values[key] else { return nil }
    guard let i = Int(v.text) else { throw invalid(key, "not an integer") }
    if let min, i < min { throw invalid(key, "must be at least \(min)") }
    if let max, i > max { throw invalid(key, "must be at most \(max)") }
    return i
  }

  /// Bytes, written as a number or with a unit (`64KiB`, `1GiB`, `1TB`; CairnCore's ByteSize).
  func size(_ key: String, min: Int? = nil, max: Int? = nil) throws -> Int? {
    guard let v = values[key] else { return nil }
    guard let n = ByteSize.parse(v.text) else { throw invalid(key, "not a size (bytes, or a number with a unit: 64KiB, 16MiB, 1GiB, 1TB)") }
    let i = Int(n)
    if let min, i < min { throw invalid(key, "must be at least \(min) (\(ByteSize.format(Int64(min))))") }
    if let max, i > max { throw invalid(key, "must be at most \(max) (\(ByteSize.format(Int64(max))))") }
    return i
  }

  func bool(_ key: String) throws -> Bool? {
    guard let v = values[key] else { return nil }
    switch v.text.lowercased() {
    case "true", "yes", "1", "on": return true
    case "false", "no", "0", "off": return false
    default: throw invalid(key, "not a boolean (true or false)")
    }
  }

  /// A file that must exist and be readable.
  func readableFile(_ key: String) throws -> String? {
    guard let path = values[key]?.text else { return nil }
    guard FileManager.default.isReadableFile(atPath: path) else {
      throw invalid(key, FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file")
    }
    return path
  }
}

/// A problem with one setting: which key, and the message naming its value, source and why.
struct ConfigProblem: Error, CustomStringConvertible {
  let key: String
  let message: String
  var description: String { message }
}
