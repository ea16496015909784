import ArgumentParser
import CairnAdmin
import CairnClient
import CairnCluster
import CairnCore
import CairnDisk
import CairnNode
import CairnServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a Cairn node: both Content APIs and gRPC health on TCP and/or a unix socket.",
    discussion: """
      Every option is a config file key (--config, flat TOML), an environment variable (CAIRN_ + the key in \
      upper case) and a flag; flags win over the environment, which wins over the file. docs/configuration.md \
      lists them all; `cairn config check FILE` validates a file. SIGINT/SIGTERM shut down gracefully: no new \
      calls, in-flight ones finish (cancelled after shutdown_grace; a cancelled upload stays resumable).
      """)

  @Option(help: "Config file (flat TOML, keys as in docs/configuration.md).") var config: String?
  @Option(help: "Data directory (default ./cairn-data).") var data: String?
  @Option(help: "TCP HOST:PORT to listen on (default 127.0.0.1:7400; \"none\" for no TCP).") var listen: String?
  @Option(help: "Unix socket path to listen on (containerd's proxy plugins need one).") var unix: String?
  @Option(help: "Client identity of every call on the unix socket that sends no cairn-client header (docs/containerd.md).")
  var unixClient: String?
  @Option(help: "Unix socket permissions, octal (default 0660).") var unixMode: String?
  @Option(help: "Admin HTTP HOST:PORT: /metrics, /healthz, /readyz, dashboard (default: none).") var adminListen: String?
  @Option(help: "trace, debug, info, notice, warning, error, critical (default info).") var logLevel: String?
  @Option(help: "text or json (default text).") var logFormat: String?
  @Option(help: "Seconds after which an untouched upload is removed (default 86400).") var ingestExpiry: String?
  @Option(help: "Seconds in-flight calls get to finish on shutdown (default 10).") var shutdownGrace: String?
  @Option(help: "Threads for blocking file I/O (default 8).") var ioThreads: String?

  @Option(help: "PEM certificate chain: TLS on the TCP listener, presented to peers.") var tlsCert: String?
  @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?
  @Option(help: "PEM cluster CA: peers (and clients with certificates) must chain to it.") var tlsCa: String?
  @Option(help: "Refuse TLS clients without a certificate from --tls-ca (default false).") var tlsRequireClientCert: String?
  @Option(help: "Seconds between checks for changed TLS files and tokens file (default 30).") var tlsReloadInterval: String?
  @Option(help: "Bearer tokens file (`cairn token new`): TCP calls then need a token or a cluster certificate.") var tokensFile: String?
  @Option(help: "This node's peer token, sent to peers that authenticate peers by token (prefer $CAIRN_PEER_TOKEN).") var peerToken: String?
  @Flag(help: "Run open off loopback: every caller, the peer protocol included, is trusted without credentials.") var insecure = false
  @Option(help: "What a caller without a credential may do when credentials are configured: none or read,write,delete (default none).")
  var anonymousPermissions: String?

  @Option(help: "Largest gRPC message (default 16842752).") var maxMessageBytes: String?
  @Option(help: "Concurrent calls per client connection (default 1024).") var maxConcurrentStreams: String?
  @Option(help: "Uploads open at once on this node (default 4096).") var maxActiveIngests: String?
  @Option(help: "Uploads one client may have open (default 256; 0 = no limit).") var maxActiveIngestsPerClient: String?
  @Option(help: "Requests per second per client (default 10000; 0 = no limit).") var maxRequestsPerSecondPerClient: String?
  @Option(help: "Burst of the per-client request rate (default 20000).") var requestBurstPerClient: String?
  @Option(help: "Watches one identity may have open (default 64).") var maxWatchesPerClient: String?
  @Option(help: "Seconds a call may wait for its client's next request message (default 120; 0 = never).") var requestIdleTimeout: String?
  @Option(help: "Seconds a seed Status watch may have nothing to send (default 600; 0 = never).") var watchIdleTimeout: String?
  @Option(help: "TCP connections open at once (default 4096).") var maxConnections: String?
  @Option(help: "TCP connections from one address (default 128).") var maxConnectionsPerAddress: String?
  @Option(help: "Seconds for a new connection's TLS handshake and HTTP/2 preface (default 10).") var handshakeTimeout: String?
  @Option(help: "Seconds a connection without calls stays open (default 300; 0 = forever).") var connectionIdleTimeout: String?
  @Option(help: "Seconds before a connection is asked to go away (default 86400; 0 = forever).") var connectionMaxAge: String?
  @Option(help: "Seconds calls get to finish on a connection past its age (default 3600).") var connectionMaxAgeGrace: String?
  @Option(help: "Bytes of received request messages not yet taken by their calls, node-wide (default 1 GiB).") var maxBufferedBytes: String?
  @Option(help: "The same per remote address (default 256 MiB).") var maxBufferedBytesPerAddress: String?
  @Option(help: "Largest blob (default 1 TiB).") var maxBlobBytes: String?
  @Option(help: "Largest label key + value (default 4096).") var maxLabelBytes: String?
  @Option(help: "Labels per blob (default 256).") var maxLabelsPerBlob: String?
  @Option(help: "Longest ref (default 4096).") var maxRefBytes: String?
  @Option(help: "Seconds a writer waits for a held ref before UNAVAILABLE (default 0.5).") var lockWait: String?
  @Option(help: "Seconds a writer naming its digest waits for the ref's holder to commit (default 30).") var commitWait: String?
  @Option(help: "Fraction of the data filesystem in use above which uploads get RESOURCE_EXHAUSTED (default 0.95).")
  var diskHighWatermark: String?
  @Option(help: "Cluster: largest blob whose concurrent remote reads share one fetch (default 512 MiB; 0 = never).")
  var maxCoalescedFetchBytes: String?

  @Option(help: "Cluster mode: this node's id (one of --peers).") var nodeId: String?
  @Option(help: "Cluster mode: every node as ID=HOST:PORT, comma separated, this one included.") var peers: String?
  @Option(help: "Cluster mode, peers from DNS: a Kubernetes headless service NAME:PORT. Needs --cluster-size.")
  var discoverDns: String?
  @Option(help: "With --discover-dns: the number of nodes to wait for.") var clusterSize: String?
  @Option(help: "Cluster mode: join a running cluster through any member's HOST:PORT (needs --node-id).") var join: String?
  @Option(help: "Cluster mode: replicas per blob (default 3, or the cluster size if smaller).") var replicas: String?
  @Option(help: "Cluster mode: replicas holding a blob before a commit is acknowledged (default 2, or R).") var writeQuorum: String?
  @Option(help: "Cluster mode: virtual nodes per node on the hash ring (default 2048).") var vnodes: String?
  @Option(help: "Cluster mode: seconds between anti-entropy rounds (default 30; 0 = off).") var repairInterval: String?
  @Option(help: "Cluster mode: bytes per second repair may use (default 67108864; 0 = no limit).") var repairRate: String?
  @Option(help: "Cluster mode: seconds a tombstone is kept (default 86400).") var tombstoneRetention: String?
  @Option(help: "Cluster mode: seconds a peer's clock may run ahead of the cluster's before its messages are refused (default 5).")
  var maxClockSkew: String?
  @Option(help: "Cluster mode: bytes of an upload not yet mirrored to the ref's next owner (default 8388608; 0 = off).")
  var ingestMirrorLag: String?

  var flagValues: [String: String?] {
    [
      "data": data, "listen": listen, "unix": unix, "unix_client": unixClient, "unix_mode": unixMode,
      "admin_listen": adminListen, "log_level": logLevel, "log_format": logFormat, "ingest_expiry": ingestExpiry,
      "shutdown_grace": shutdownGrace, "io_threads": ioThreads, "tls_cert": tlsCert, "tls_key": tlsKey, "tls_ca": tlsCa,
      "tls_require_client_cert": tlsRequireClientCert, "tls_reload_interval": tlsReloadInterval, "tokens_file": tokensFile,
      "peer_token": peerToken, "insecure": insecure ? "true" : nil, "anonymous_permissions": anonymousPermissions,
      "max_watches_per_client": maxWatchesPerClient, "request_idle_timeout": requestIdleTimeout,
      "watch_idle_timeout": watchIdleTimeout, "max_connections": maxConnections,
      "max_connections_per_address": maxConnectionsPerAddress, "handshake_timeout": handshakeTimeout,
      "connection_idle_timeout": connectionIdleTimeout, "connection_max_age": connectionMaxAge,
      "connection_max_age_grace": connectionMaxAgeGrace, "max_buffered_bytes": maxBufferedBytes,
      "max_buffered_bytes_per_address": maxBufferedBytesPerAddress, "max_message_bytes": maxMessageBytes, "max_concurrent_streams": maxConcurrentStreams,
      "max_active_ingests": maxActiveIngests, "max_active_ingests_per_client": maxActiveIngestsPerClient,
      "max_requests_per_second_per_client": maxRequestsPerSecondPerClient, "request_burst_per_client": requestBurstPerClient,
      "max_blob_bytes": maxBlobBytes, "max_label_bytes": maxLabelBytes, "max_labels_per_blob": maxLabelsPerBlob,
      "max_ref_bytes": maxRefBytes, "lock_wait": lockWait, "commit_wait": commitWait, "disk_high_watermark": diskHighWatermark,
      "max_coalesced_fetch_bytes": maxCoalescedFetchBytes, "node_id": nodeId, "peers": peers, "discover_dns": discoverDns,
      "cluster_size": clusterSize, "join": join, "replicas": replicas, "write_quorum": writeQuorum, "vnodes": vnodes,
      "repair_interval": repairInterval, "repair_rate": repairRate, "tombstone_retention": tombstoneRetention,
      "ingest_mirror_lag": ingestMirrorLag, "max_clock_skew": maxClockSkew,
    ]
  }

  func validate() throws {
    // The flags mirror the catalogue by hand (ArgumentParser needs stored properties).
    precondition(Set(flagValues.keys) == OptionCatalog.keys, "flags and option catalogue differ: \(Set(flagValues.keys).symmetricDifference(OptionCatalog.keys))")
  }

  func run() async throws {
    takeOverConcurrencyPool()
    exitWithParentIfAsked()
    let (settings, plan) = try configurationProblems {
      let file = try config.map { try ConfigFile.load($0, allowed: OptionCatalog.keys) }
      let settings = Settings(file: file, env: ProcessInfo.processInfo.environment, flags: flagValues)
      return (settings, try NodePlan(settings))
    }
    try await NodeRunner(plan: plan, settings: settings).run()
  }
}

/// Logs go to standard error at `level`, as text or one JSON object per line.
func bootstrapLogging(_ level: Logger.Level, json: Bool = false) {
  LoggingSystem.bootstrap { label in
    if json {
      var h = JSONLogHandler(label: label)
      h.logLevel = level
      return h
    }
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = level
    return h
  }
}

/// Set by `cairn demo` and the tests for their children: shut down gracefully when the
/// parent is gone (re-parented), so that no node outlives a demo or a test run that was
/// killed. (PR_SET_PDEATHSIG would fire when the spawning *thread* exits.)
func exitWithParentIfAsked() {
  guard ProcessInfo.processInfo.environment["CAIRN_EXIT_WITH_PARENT"] == "1" else { return }
  let parent = getppid()
  Thread.detachNewThread {
    while getppid() == parent { usleep(200_000) }
    kill(getpid(), SIGTERM)
  }
}

/// Runs Swift Concurrency's jobs on NIO's event loops. Every RPC otherwise crosses threads
/// twice (event loop to Swift's pool and back), and on this 2-core machine each crossing
/// is a futex wake-up: measured 400 µs per trivial RPC before, see docs/benchmarks.md.
/// Blocking work never runs on either: file I/O has its own threads (BlockingIO).
func takeOverConcurrencyPool() {
  _ = concurrencyTakeOver
}

/// NIO allows the take-over once per process; a global's initialiser runs exactly once.
private let concurrencyTakeOver: Bool = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
