import ArgumentParser
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
    discussion: "SIGINT/SIGTERM shut down gracefully: no new calls, in-flight ones finish (cancelled after --shutdown-grace; a cancelled upload stays resumable).")

  @Option(help: "Config file (flat TOML: data, listen, unix, unix_client, disk_high_watermark, ingest_expiry, shutdown_grace, io_threads, lock_wait, log_level, node_id, peers, discover_dns, cluster_size, join, replicas, write_quorum, vnodes, max_coalesced_fetch_bytes, repair_interval, repair_rate, tombstone_retention, ingest_mirror_lag). Flags win.")
  var config: String?
  @Option(help: "Data directory (default ./cairn-data).") var data: String?
  @Option(help: "TCP HOST:PORT to listen on (default 127.0.0.1:7400; \"none\" for no TCP).") var listen: String?
  @Option(help: "Unix socket path to listen on (containerd's proxy plugins need one).") var unix: String?
  @Option(help: "Client identity of every call on the unix socket that sends no cairn-client header: a containerd using this socket then sees only its own blobs (docs/containerd.md).")
  var unixClient: String?
  @Option(help: "Seconds after which an untouched upload is removed (default 86400).") var ingestExpiry: Double?
  @Option(help: "Seconds in-flight calls get to finish on shutdown (default 10).") var shutdownGrace: Double?
  @Option(help: "Threads for blocking file I/O (default 8).") var ioThreads: Int?
  @Option(help: "Seconds a writer waits for a ref held by another writer before UNAVAILABLE (default 0.5).")
  var lockWait: Double?
  @Option(help: "trace, debug, info, notice, warning, error, critical (default info).") var logLevel: String?
  @Option(help: "Fraction of the data directory's filesystem in use above which uploads get RESOURCE_EXHAUSTED (default 0.95; 1 = only a full disk).")
  var diskHighWatermark: Double?

  @Option(help: "Cluster mode: this node's id (one of --peers).") var nodeId: String?
  @Option(help: "Cluster mode: every node as ID=HOST:PORT, comma separated, this one included.") var peers: String?
  @Option(help: "Cluster mode, peers from DNS: a Kubernetes headless service NAME:PORT; each address's reverse name gives a peer (id = its first label). Waits for --cluster-size peers.")
  var discoverDns: String?
  @Option(help: "With --discover-dns: the number of nodes to wait for.") var clusterSize: Int?
  @Option(help: "Cluster mode, joining a running cluster: any member's HOST:PORT. The node adds itself (as --node-id at its --listen address) and takes the cluster's config; repair then moves its share of the data to it.")
  var join: String?
  @Option(help: "Cluster mode: replicas per blob (default 3, or the cluster size if smaller).") var replicas: Int?
  @Option(help: "Cluster mode: replicas that must hold a blob before a commit is acknowledged (default 2, or R if smaller).")
  var writeQuorum: Int?
  @Option(help: "Cluster mode: virtual nodes per node on the hash ring (default 2048).") var vnodes: Int?
  @Option(help: "Cluster mode: largest blob whose concurrent remote reads share one in-memory fetch (default 512 MiB; 0 = never share).")
  var maxCoalescedFetchBytes: Int64?
  @Option(help: "Cluster mode: seconds between anti-entropy rounds (default 30; 0 = off).") var repairInterval: Double?
  @Option(help: "Cluster mode: bytes per second repair transfers may use (default 67108864; 0 = no limit).")
  var repairRate: Int64?
  @Option(help: "Cluster mode: seconds a tombstone is kept at least (default 86400); a node down longer must rejoin empty.")
  var tombstoneRetention: Double?
  @Option(help: "Cluster mode: bytes of an upload not yet mirrored to the ref's next owner, at most (default 8388608; 0 = no ingest failover).")
  var ingestMirrorLag: Int?

  static let configKeys: Set<String> = [
    "data", "listen", "unix", "unix_client", "ingest_expiry", "shutdown_grace", "io_threads", "lock_wait", "log_level",
    "disk_high_watermark",
    "node_id", "peers", "replicas", "write_quorum", "vnodes", "max_coalesced_fetch_bytes",
    "discover_dns", "cluster_size", "join", "repair_interval", "repair_rate", "tombstone_retention",
    "ingest_mirror_lag",
  ]

  func repairConfig(_ file: ConfigFile) throws -> RepairConfig {
    var r = RepairConfig()
    do {
      r.intervalSeconds = try repairInterval ?? file.double("repair_interval") ?? r.intervalSeconds
      r.bytesPerSecond = try repairRate ?? file.int("repair_rate").map(Int64.init) ?? r.bytesPerSecond
      r.tombstoneRetentionSeconds = try tombstoneRetention ?? file.double("tombstone_retention") ?? r.tombstoneRetentionSeconds
      r.mirrorLagBytes = try ingestMirrorLag ?? file.int("ingest_mirror_lag") ?? r.mirrorLagBytes
    } catch {
      throw ValidationError(ContentError.from(error).message)
    }
    guard r.intervalSeconds >= 0, r.bytesPerSecond >= 0, r.tombstoneRetentionSeconds >= 0, r.mirrorLagBytes >= 0 else {
      throw ValidationError("repair_interval, repair_rate, tombstone_retention and ingest_mirror_lag must not be negative")
    }
    return r
  }

  /// The cluster configuration, or nil for a single node.
  func clusterConfig(_ file: ConfigFile) async throws -> ClusterConfig? {
    var id = nodeId ?? file.string("node_id")
    let peerText = peers ?? file.string("peers")
    let dns = discoverDns ?? file.string("discover_dns")
    if let seed = join ?? file.string("join") {
      guard peerText == nil && dns == nil else { throw ValidationError("give --join, --peers or --discover-dns, one of them") }
      guard let id else { throw ValidationError("--join needs --node-id") }
      return try await joinCluster(seed: seed, id: NodeID(id), address: listen ?? file.string("listen") ?? "127.0.0.1:7400")
    }
    guard id != nil || peerText != nil || dns != nil else { return nil }
    if peerText != nil && dns != nil { throw ValidationError("give --peers or --discover-dns, not both") }
    let peerList: [NodeID: String]
    if let dns {
      guard let size = try clusterSize ?? file.int("cluster_size"), size > 0 else {
        throw ValidationError("--discover-dns needs --cluster-size N")
      }
      // In a StatefulSet the pod's hostname is its DNS name's first label.
      id = id ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init)
      do {
        peerList = try await discoverPeers(service: dns, size: size, timeout: 300)
      } catch {
        throw fail(error)
      }
    } else {
      guard let peerText else { throw ValidationError("cluster mode needs --peers (or --discover-dns)") }
      do { peerList = try ClusterConfig.parsePeers(peerText) } catch { throw ValidationError(error.message) }
    }
    guard let id else { throw ValidationError("cluster mode needs --node-id") }
    do {
      return try ClusterConfig(
        me: NodeID(id), peers: peerList,
        replicas: try replicas ?? file.int("replicas"), writeQuorum: try writeQuorum ?? file.int("write_quorum"),
        vnodesPerNode: try vnodes ?? file.int("vnodes") ?? Ring.defaultVnodesPerNode)
    } catch {
      throw ValidationError(ContentError.from(error).message)
    }
  }

  /// Adds this node to a running cluster through `seed`, retrying for a minute while the
  /// seed is unreachable; the cluster's new config.
  func joinCluster(seed: String, id: NodeID, address: String) async throws -> ClusterConfig {
    let deadline = Date().addingTimeInterval(60)
    while true {
      do {
        let m = try await ContentClient.with(address: seed) {
          try await $0.changeMembership(add: [id.name: address], remove: [])
        }
        print("cairn: joined the cluster through \(seed): config epoch \(m.epoch), \(m.peers.count) nodes")
        return try ClusterConfig(
          me: id, peers: Dictionary(uniqueKeysWithValues: m.peers.map { (NodeID($0.key), $0.value) }),
          replicas: Int(m.replicas), writeQuorum: Int(m.writeQuorum), vnodesPerNode: Int(m.vnodes), epoch: m.epoch)
      } catch let e as ContentError where e.code == .unavailable && Date() < deadline {
        try await Task.sleep(nanoseconds: 500_000_000)
      } catch {
        throw fail(error)
      }
    }
  }

  func run() async throws {
    takeOverConcurrencyPool()
    exitWithParentIfAsked()
    let file: ConfigFile
    do {
      file = try config.map { try ConfigFile.load($0, allowed: Self.configKeys) } ?? ConfigFile()
    } catch {
      throw ValidationError(ContentError.from(error).message)
    }
    let dataDir = data ?? file.string("data") ?? "./cairn-data"
    let listenText = listen ?? file.string("listen") ?? "127.0.0.1:7400"
    let unixPath = unix ?? file.string("unix")
    let expiry: Double, grace: Double, threads: Int
    var limits = Limits()
    do {
      limits.lockWaitSeconds = try lockWait ?? file.double("lock_wait") ?? limits.lockWaitSeconds
      limits.maxCoalescedFetchBytes =
        try maxCoalescedFetchBytes ?? file.int("max_coalesced_fetch_bytes").map(Int64.init) ?? limits.maxCoalescedFetchBytes
      limits.diskHighWatermark = try diskHighWatermark ?? file.double("disk_high_watermark") ?? limits.diskHighWatermark
      expiry = try ingestExpiry ?? file.double("ingest_expiry") ?? 86400
      grace = try shutdownGrace ?? file.double("shutdown_grace") ?? 10
      threads = try ioThreads ?? file.int("io_threads") ?? 8
    } catch {
      throw ValidationError(ContentError.from(error).message)
    }
    let cluster = try await clusterConfig(file)
    let repair = try repairConfig(file)
    let levelText = logLevel ?? file.string("log_level") ?? "info"
    guard let level = Logger.Level(rawValue: levelText) else { throw ValidationError("unknown log level \(levelText)") }
    guard limits.diskHighWatermark > 0, limits.diskHighWatermark <= 1 else {
      throw ValidationError("disk_high_watermark must be above 0 and at most 1, got \(limits.diskHighWatermark)")
    }
    guard expiry > 0, grace >= 0, threads > 0, limits.lockWaitSeconds >= 0 else {
      throw ValidationError("ingest_expiry and io_threads must be positive, shutdown_grace and lock_wait not negative")
    }

    var tcp: (String, Int)?
    if listenText != "none" {
      guard let colon = listenText.lastIndex(of: ":"), let port = Int(listenText[listenText.index(after: colon)...]) else {
        throw ValidationError("--listen \(listenText) is not HOST:PORT")
      }
      var host = String(listenText[..<colon])
      if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
      if host == "localhost" || host.isEmpty { host = "127.0.0.1" }
      guard host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." }) else {
        throw ValidationError("--listen wants an IP address (IPv4, [IPv6] or localhost), got \(host)")
      }
      tcp = (host, port)
    }
    if tcp == nil && unixPath == nil { throw ValidationError("nothing to listen on: give --listen or --unix") }
    var socketClient: ClientID?
    if let name = unixClient ?? file.string("unix_client") {
      guard unixPath != nil else { throw ValidationError("--unix-client needs --unix") }
      do { socketClient = try ClientID(name) } catch { throw ValidationError("--unix-client: \(error.message)") }
    }

    bootstrapLogging(level)
    let logger = Logger(label: "cairn")
    let store: DiskStore
    do {
      store = try await DiskStore.open(root: dataDir, limits: limits, ioThreads: threads)
    } catch {
      throw fail(error)
    }
    let expireJob: @Sendable () async -> Void = {
      let interval = min(expiry / 4, 3600)
      while !Task.isCancelled {
        try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
        if Task.isCancelled { return }
        if let removed = try? await store.expireIngests(olderThan: expiry), !removed.isEmpty {
          logger.info("expired \(removed.count) stale ingests", metadata: ["refs": "\(removed.prefix(10))"])
        }
      }
    }
    let node: ClusterNode?
    do {
      node = try cluster.map { try ClusterNode(config: $0, local: store, dataDir: store.root, logger: logger, repair: repair) }
    } catch {
      throw fail(error)
    }
    let server = ContentServer(
      store: node?.store ?? store, listen: ListenConfig(tcp: tcp, unixPath: unixPath, unixClient: socketClient), logger: logger,
      maintenance: [expireJob] + (node?.maintenance ?? []),
      extraServices: { watches in node?.services(watches: watches) ?? [] })
    var groupConfig = ServiceGroupConfiguration(
      services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    groupConfig.maximumGracefulShutdownDuration = .milliseconds(Int64(grace * 1000))
    let group = ServiceGroup(configuration: groupConfig)
    let announce = Task {
      guard let addresses = try? await server.listeningAddresses() else { return }
      // Scripts and tests wait for these lines to know the node is ready.
      for a in addresses { print("cairn: listening on \(a)") }
      print("cairn: data in \(store.root)")
      if let cluster {
        print("cairn: node \(cluster.me) of \(cluster.peers.count), replicas \(cluster.replicas), write quorum \(cluster.writeQuorum), config \(cluster.fingerprint)")
      }
      fflush(nil)
    }
    do {
      try await group.run()
    } catch {
      announce.cancel()
      await node?.shutdown()
      await store.shutdown()
      throw fail(error)
    }
    await node?.shutdown()
    await store.shutdown()
    let (syncs, served) = store.groupCommitCounters()
    logger.info("stopped", metadata: ["directory-fsyncs": "\(syncs)", "durable-operations": "\(served)"])
  }
}

/// Logs go to standard error at `level`.
func bootstrapLogging(_ level: Logger.Level) {
  LoggingSystem.bootstrap { label in
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
