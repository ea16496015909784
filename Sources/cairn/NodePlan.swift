import ArgumentParser
import CairnClient
import CairnCluster
import CairnCore
import CairnNode
import CairnServer
import CairnTransport
import Foundation
import Logging

/// A node's validated settings: everything `cairn serve` needs except what takes the
/// network to learn (DNS discovery, joining). `cairn config check` builds one too.
struct NodePlan {
  enum ClusterSource {
    case single
    case peers(ClusterConfig)
    case dns(service: String, size: Int, id: String?)
    case join(seed: String, id: NodeID)
  }

  var dataDir: String
  var tcp: (host: String, port: Int)?
  var unixPath: String?
  var unixClient: ClientID?
  var unixMode: mode_t
  var admin: (host: String, port: Int)?
  var logLevel: Logger.Level
  var logJSON: Bool
  var expiry: Double
  var grace: Double
  var threads: Int
  var limits = Limits()
  var access = AccessControl.Settings()
  var tls: ServerTLS.Settings?
  var tlsReloadSeconds: Double
  var tokensFile: String?
  var tokens: TokenTable?
  var peerToken: String?
  /// Open off loopback on purpose (`--insecure`).
  var insecure: Bool
  var connections = ConnectionLimits()
  var cluster: ClusterSource
  var vnodes: Int
  var replicas: Int?
  var writeQuorum: Int?
  var repair = RepairConfig()
  var maxClockSkewSeconds: Double

  var listenText: String

  init(_ s: Settings) throws {
    dataDir = s.string("data") ?? "./cairn-data"
    listenText = s.string("listen") ?? "127.0.0.1:7400"
    if listenText != "none" { tcp = try Self.ipPort(s, "listen", listenText) }
    unixPath = s.string("unix")
    if tcp == nil && unixPath == nil { throw ValidationError("nothing to listen on: give listen or unix") }
    if let name = s.string("unix_client") {
      guard unixPath != nil else { throw s.invalid("unix_client", "needs unix (a socket to apply to)") }
      do { unixClient = try ClientID(name) } catch { throw s.invalid("unix_client", error.message) }
    }
    let modeText = s.string("unix_mode") ?? "0660"
    guard let mode = mode_t(modeText, radix: 8), mode <= 0o777 else { throw s.invalid("unix_mode", "not an octal file mode like 0660") }
    unixMode = mode
    admin = try s.string("admin_listen").map { text in
      try Self.ipPort(s, "admin_listen", Int(text) != nil ? "127.0.0.1:\(text)" : text)
    }

    let levelText = s.string("log_level") ?? "info"
    guard let level = Logger.Level(rawValue: levelText) else {
      throw s.invalid("log_level", "one of trace, debug, info, notice, warning, error, critical")
    }
    logLevel = level
    switch s.string("log_format") ?? "text" {
    case "text": logJSON = false
    case "json": logJSON = true
    default: throw s.invalid("log_format", "text or json")
    }
    expiry = try s.double("ingest_expiry", above: 0) ?? 86400
    grace = try s.double("shutdown_grace", min: 0) ?? 10
    threads = try s.int("io_threads", min: 1, max: 1024) ?? 8

    limits.maxMessageBytes = try s.size("max_message_bytes", min: 1 << 20, max: 1 << 30) ?? limits.maxMessageBytes
    limits.maxConcurrentStreams = try s.int("max_concurrent_streams", min: 1) ?? limits.maxConcurrentStreams
    limits.maxActiveIngests = try s.int("max_active_ingests", min: 1) ?? limits.maxActiveIngests
    limits.maxBlobBytes = try s.size("max_blob_bytes", min: 1).map(Int64.init) ?? limits.maxBlobBytes
    limits.maxLabelBytes = try s.size("max_label_bytes", min: 64) ?? limits.maxLabelBytes
    limits.maxLabelsPerBlob = try s.int("max_labels_per_blob", min: 1) ?? limits.maxLabelsPerBlob
    limits.maxRefBytes = try s.size("max_ref_bytes", min: 64) ?? limits.maxRefBytes
    limits.lockWaitSeconds = try s.double("lock_wait", min: 0) ?? limits.lockWaitSeconds
    limits.commitWaitSeconds = try s.double("commit_wait", min: 0) ?? limits.commitWaitSeconds
    limits.diskHighWatermark = try s.double("disk_high_watermark", max: 1, above: 0) ?? limits.diskHighWatermark
    limits.maxCoalescedFetchBytes = try s.size("max_coalesced_fetch_bytes", min: 0).map(Int64.init) ?? limits.maxCoalescedFetchBytes
    access.maxActiveIngestsPerClient = try s.int("max_active_ingests_per_client", min: 0) ?? access.maxActiveIngestsPerClient
    access.requestsPerSecondPerClient = try s.double("max_requests_per_second_per_client", min: 0) ?? access.requestsPerSecondPerClient
    access.requestBurstPerClient = try s.double("request_burst_per_client", min: 1) ?? access.requestBurstPerClient
    access.maxWatchesPerClient = try s.int("max_watches_per_client", min: 0) ?? access.maxWatchesPerClient
    access.requestIdleSeconds = try s.double("request_idle_timeout", min: 0) ?? access.requestIdleSeconds
    access.watchIdleSeconds = try s.double("watch_idle_timeout", min: 0) ?? access.watchIdleSeconds
    connections.maxConnections = try s.int("max_connections", min: 1) ?? connections.maxConnections
    connections.maxConnectionsPerAddress = try s.int("max_connections_per_address", min: 1) ?? connections.maxConnectionsPerAddress
    connections.handshakeTimeoutSeconds = try s.double("handshake_timeout", above: 0) ?? connections.handshakeTimeoutSeconds
    connections.idleSeconds = try s.double("connection_idle_timeout", min: 0) ?? connections.idleSeconds
    connections.maxAgeSeconds = try s.double("connection_max_age", min: 0) ?? connections.maxAgeSeconds
    connections.maxAgeGraceSeconds = try s.double("connection_max_age_grace", min: 0) ?? connections.maxAgeGraceSeconds
    // A message is admitted whole, so a share must hold the largest one gRPC accepts.
    let largest = 2 * limits.maxMessageBytes + 5
    connections.maxBufferedBytesPerAddress =
      try s.size("max_buffered_bytes_per_address", min: largest) ?? max(largest, connections.maxBufferedBytesPerAddress)
    connections.maxBufferedBytes =
      try s.size("max_buffered_bytes", min: connections.maxBufferedBytesPerAddress) ?? max(connections.maxBufferedBytesPerAddress, connections.maxBufferedBytes)

    let cert = try s.readableFile("tls_cert")
    let key = try s.readableFile("tls_key")
    let ca = try s.readableFile("tls_ca")
    let requireCert = try s.bool("tls_require_client_cert") ?? false
    tlsReloadSeconds = try s.double("tls_reload_interval", above: 0) ?? 30
    switch (cert, key) {
    case (let cert?, let key?):
      tls = .init(certificatePath: cert, keyPath: key, clientCAPath: ca, requireClientCertificate: requireCert)
      guard tcp != nil else { throw s.invalid("tls_cert", "TLS is for the TCP listener, and listen is none") }
      // Loading now turns a mismatched key or a non-PEM file into an error at start.
      do { _ = try ServerTLS(tls!) } catch { throw s.invalid("tls_cert", error.message) }
    case (nil, nil):
      if ca != nil { throw s.invalid("tls_ca", "needs tls_cert and tls_key (TLS on this node)") }
      if requireCert { throw s.invalid("tls_require_client_cert", "needs tls_cert, tls_key and tls_ca") }
    case (nil, _): throw s.invalid("tls_key", "needs tls_cert too")
    case (_, nil): throw s.invalid("tls_cert", "needs tls_key too")
    }
    if requireCert && ca == nil { throw s.invalid("tls_require_client_cert", "needs tls_ca (the CA client certificates chain to)") }
    tokensFile = try s.readableFile("tokens_file")
    if let path = tokensFile {
      do { tokens = try TokenTable(parsing: String(contentsOfFile: path, encoding: .utf8), source: path) } catch {
        throw s.invalid("tokens_file", ContentError.from(error).message)
      }
    }
    peerToken = s.string("peer_token")
    insecure = try s.bool("insecure") ?? false
    access.anonymousPermissions = try Self.anonymousPermissions(s)
    // Open: nothing could authenticate a caller, so every caller is trusted (loopback, or
    // off loopback only when said out loud). Secured: credentials decide.
    access.mode = ca == nil && tokensFile == nil ? .open : .secured
    if insecure && access.mode == .secured {
      throw s.invalid("insecure", "contradicts tls_ca and tokens_file, which authenticate callers: drop one or the other")
    }

    vnodes = try s.int("vnodes", min: 1, max: 65536) ?? Ring.defaultVnodesPerNode
    replicas = try s.int("replicas", min: 1)
    writeQuorum = try s.int("write_quorum", min: 1)
    repair.intervalSeconds = try s.double("repair_interval", min: 0) ?? repair.intervalSeconds
    repair.bytesPerSecond = try s.size("repair_rate", min: 0).map(Int64.init) ?? repair.bytesPerSecond
    repair.tombstoneRetentionSeconds = try s.double("tombstone_retention", min: 0) ?? repair.tombstoneRetentionSeconds
    repair.mirrorLagBytes = try s.size("ingest_mirror_lag", min: 0) ?? repair.mirrorLagBytes
    maxClockSkewSeconds = try s.double("max_clock_skew", above: 0) ?? 5

    let id = s.string("node_id")
    let peerText = s.string("peers")
    let dns = s.string("discover_dns")
    if let seed = s.string("join") {
      guard peerText == nil && dns == nil else { throw s.invalid("join", "give join, peers or discover_dns, one of them") }
      guard let id else { throw s.invalid("join", "needs node_id") }
      _ = try Self.ipPort(s, "join", seed, requireIP: false)
      do { cluster = .join(seed: seed, id: try NodeID(id)) } catch { throw s.invalid("node_id", ContentError.from(error).message) }
    } else if let dns {
      if peerText != nil { throw s.invalid("discover_dns", "give peers or discover_dns, not both") }
      guard let size = try s.int("cluster_size", min: 1) else { throw s.invalid("discover_dns", "needs cluster_size") }
      _ = try Self.ipPort(s, "discover_dns", dns, requireIP: false)
      cluster = .dns(service: dns, size: size, id: id)
    } else if let peerText {
      guard let id else { throw s.invalid("peers", "cluster mode needs node_id too") }
      do {
        let peerList = try ClusterConfig.parsePeers(peerText)
        cluster = .peers(try ClusterConfig(me: NodeID(id), peers: peerList, replicas: replicas, writeQuorum: writeQuorum, vnodesPerNode: vnodes))
      } catch {
        throw s.invalid("peers", ContentError.from(error).message)
      }
    } else if id != nil {
      throw s.invalid("node_id", "cluster mode needs peers, discover_dns or join")
    } else {
      cluster = .single
    }
    if case .single = cluster {} else if tls != nil && ca == nil {
      throw s.invalid("tls_cert", "a cluster with TLS needs tls_ca: peers verify each other with the cluster CA")
    }
    if let id = clusterNodeID { try checkPeerCredential(s, for: id) }
    try checkClosedOffLoopback(s)
  }

  /// This node's id, when known before the network is (not with DNS discovery by host name).
  var clusterNodeID: String? {
    switch cluster {
    case .single: nil
    case .peers(let c): c.me.name
    case .dns(_, _, let id): id
    case .join(_, let id): id.name
    }
  }

  var isCluster: Bool { if case .single = cluster { false } else { true } }

  /// How this node tells its callers apart, as `cairn cluster status` shows it.
  var securityDescription: String {
    if access.mode == .open { return insecure ? "INSECURE (--insecure: every caller trusted)" : "open (loopback only)" }
    var ways: [String] = []
    if tls?.clientCAPath != nil { ways.append("mTLS") }
    if tokens != nil { ways.append(peerToken != nil ? "peer tokens, client tokens" : "client tokens") }
    return ways.joined(separator: " + ")
  }

  /// Secured peers authenticate each other: this node must hold a peer credential for its
  /// own id (a certificate whose role is cairn://peer/ID, or a peer token the tokens file
  /// grants to ID), else its peers would refuse it.
  func checkPeerCredential(_ s: Settings, for id: String) throws {
    guard access.mode == .secured else { return }
    var problems: [String] = []
    if let tls, tls.clientCAPath != nil {
      switch try ServerTLS.role(ofCertificateAt: tls.certificatePath) {
      case .peer(let name) where name == id: return
      case .peer(let name): problems.append("tls_cert is peer \(name)'s certificate, and this node is \(id)")
      case let role?: problems.append("tls_cert's role is \(role.uri), not \(CertificateRole.peer(id).uri)")
      case nil: problems.append("tls_cert has no Cairn role (a SAN URI \(CertificateRole.peer(id).uri); `cairn certs issue --role peer \(id)`)")
      }
    }
    if let tcp, !Self.isLoopback(tcp.host), !insecure {
      // A token alone would travel to whoever answers at a peer's address (in clear
      // without TLS): beyond loopback, nodes prove themselves with certificates.
      problems.append(
        "beyond loopback peers authenticate with certificates whose role is \(CertificateRole.peer(id).uri) (`cairn certs init`; tls_cert, tls_key, tls_ca)")
    } else if let peerToken {
      let grant = tokens?.grant(forToken: peerToken)
      if grant?.peer == id { return }
      problems.append("peer_token is not granted to peer \(id) in tokens_file (a line `\(id) peer sha256:...`, from `cairn token new \(id) --permissions peer`)")
    } else if tokensFile != nil && (tls?.clientCAPath == nil) {
      problems.append("tokens_file is set, so peers authenticate by token: give peer_token")
    }
    throw ValidationError(
      "this cluster node has no credential its peers accept: \(problems.joined(separator: "; ")). Peers are authenticated as peers (docs/operations.md, Security).")
  }

  /// Closed by default: a node reachable from other hosts must authenticate its callers,
  /// unless the operator runs it open on purpose.
  func checkClosedOffLoopback(_ s: Settings) throws {
    guard !insecure else { return }
    if let tcp, !Self.isLoopback(tcp.host), access.mode == .open {
      throw s.invalid(
        "listen",
        "\(tcp.host) is reachable from other hosts and nothing authenticates callers: anyone who reaches it could read, write and delete blobs\(isCluster ? " and join the cluster as a peer" : ""). Secure it: `cairn certs init --dir certs --nodes \(clusterNodeID ?? "n1")` makes a CA and certificates; set tls_cert, tls_key and tls_ca (and tokens_file for token clients). Or run it open on purpose with --insecure (docs/operations.md, Security)."
      )
    }
    if let admin, !Self.isLoopback(admin.host), tokens == nil {
      throw s.invalid(
        "admin_listen",
        "\(admin.host) is reachable from other hosts: /metrics, /api/status and the dashboard then need a bearer token (monitor or admin) from tokens_file, which is not set. Bind it to loopback, set tokens_file, or say --insecure.")
    }
  }

  static func isLoopback(_ host: String) -> Bool {
    host == "::1" || host == "localhost" || (host.hasPrefix("127.") && host.split(separator: ".").count == 4)
  }

  static func anonymousPermissions(_ s: Settings) throws -> Set<Permission> {
    guard let text = s.string("anonymous_permissions"), text != "none", !text.isEmpty else { return [] }
    var out: Set<Permission> = []
    for p in text.split(separator: ",") {
      guard let perm = Permission(rawValue: String(p)), [.read, .write, .delete].contains(perm) else {
        throw s.invalid("anonymous_permissions", "none, or a comma list of read, write, delete (got \(quoted(String(p))))")
      }
      out.insert(perm)
    }
    return out
  }

  /// The node's credentials towards its peers: its own certificate and the cluster CA
  /// (names are not checked: a member is whoever holds a cluster certificate).
  var peerSecurity: ClientSecurity {
    guard let tls else { return ClientSecurity(token: peerToken) }
    return ClientSecurity(caPath: tls.clientCAPath, certificatePath: tls.certificatePath, keyPath: tls.keyPath, verifyHostname: false, token: peerToken)
  }

  static func ipPort(_ s: Settings, _ key: String, _ text: String, requireIP: Bool = true) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
      throw s.invalid(key, "not HOST:PORT")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard requireIP else { return (host, port) }
    if host == "localhost" || host.isEmpty { host = "127.0.0.1" }
    guard host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." }) else {
      throw s.invalid(key, "wants an IP address (IPv4, [IPv6] or localhost), got \(host)")
    }
    return (host, port)
  }
}
