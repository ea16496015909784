import ArgumentParser
import CairnAgent
import CairnClient
import CairnCore
import CairnDisk
import CairnServer
import Foundation
import Logging
import ServiceLifecycle

struct Agent: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run the node-local endpoint for containerd: a unix socket that serves both Content APIs from a Cairn cluster.",
    discussion: """
      Uploads land in local ingests and are published to the cluster at COMMIT (a blob the \
      cluster already has is only claimed, not sent); blob calls go to the cluster as this \
      host's client identity, so containerd's garbage collector sees and deletes only this \
      host's blobs; committed blobs stay in a bounded local cache for the reads that follow. \
      A cluster node that fails costs a retry on the next one. See docs/containerd.md.
      """)

  @Option(help: "Unix socket for containerd's proxy plugin.") var unix: String = "/run/cairn/agent.sock"
  @Option(help: "Cluster nodes, HOST:PORT or unix:///PATH, comma separated (default $CAIRN_CLUSTER).")
  var cluster: String?
  @Option(help: "This host's client identity (default: the host name's first label).") var client: String?
  @Option(help: "Directory for local ingests and the cache.") var data: String = "./cairn-agent"
  @Option(help: "Local cache size (bytes, or with a unit: 512MiB, 10GiB, 10g).") var cacheBytes: String = "10g"
  @Option(help: "Seconds a call keeps trying other nodes before UNAVAILABLE.") var failoverSeconds: Double = 30
  @Option(help: "Seconds after which an untouched local upload is removed.") var ingestExpiry: Double = 86400
  @Option(help: "Seconds a writer waits for a ref another writer holds before UNAVAILABLE (2, not serve's 0.5: containerd closes a stream and reopens its ref at once, and a busy host notices the close late).")
  var lockWait: Double = 2
  @Option(help: "trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"

  func run() async throws {
    takeOverConcurrencyPool()
    exitWithParentIfAsked()
    guard let addresses = (cluster ?? ProcessInfo.processInfo.environment["CAIRN_CLUSTER"])?
      .split(separator: ",").map({ String($0).trimmingCharacters(in: .whitespaces) }), !addresses.isEmpty
    else { throw ValidationError("give --cluster HOST:PORT,... (or $CAIRN_CLUSTER)") }
    guard let cacheMax = ByteSize.parse(cacheBytes), cacheMax >= 0 else { throw ValidationError("--cache-bytes \(cacheBytes) is not a size") }
    guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
    guard failoverSeconds >= 0, ingestExpiry > 0, lockWait >= 0 else {
      throw ValidationError("--failover-seconds, --ingest-expiry and --lock-wait must not be negative")
    }
    var limits = Limits()
    limits.lockWaitSeconds = lockWait
    let identity = client ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
    do { _ = try ClientID(identity) } catch { throw ValidationError("--client: \(error.message)") }
    bootstrapLogging(level)
    let logger = Logger(label: "cairn-agent")
    // The socket is created owner-only, then opened to owner and group (0660).
    umask(0o077)
    let local: DiskStore
    let upstream: ClusterClient
    let cache: BlobCache
    do {
      try FileManager.default.createDirectory(
        atPath: (unix as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      local = try await DiskStore.open(root: data, limits: limits, logger: logger)
      upstream = try ClusterClient(addresses: addresses, client: identity, failoverSeconds: failoverSeconds)
      cache = BlobCache(store: local, maxBytes: cacheMax)
      try await cache.load()
    } catch {
      throw fail(error)
    }
    let store = AgentStore(local: local, cluster: upstream, cache: cache, logger: logger)
    let expireJob = staleIngestSweeper(local, expiry: ingestExpiry, logger: logger)
    let server = ContentServer(
      store: store, listen: ListenConfig(tcp: nil, unixPath: unix), logger: logger, maintenance: [expireJob])
    var groupConfig = ServiceGroupConfiguration(
      services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    groupConfig.maximumGracefulShutdownDuration = .seconds(10)
    let announce = Task {
      guard let listening = try? await server.listeningAddresses() else { return }
      for a in listening { print("cairn agent: listening on \(a)") }
      print("cairn agent: client \(identity), cluster \(addresses.joined(separator: ",")), cache \(cacheMax) bytes in \(local.root)")
      fflush(nil)
    }
    defer { announce.cancel() }
    do {
      try await ServiceGroup(configuration: groupConfig).run()
    } catch {
      await upstream.close()
      await local.shutdown()
      throw fail(error)
    }
    await upstream.close()
    await local.shutdown()
    let c = store.counters
    let (hits, evictions) = (await cache.hits, await cache.evictions)
    logger.info(
      "stopped",
      metadata: [
        "published-bytes": "\(c.publishedBytes.load(ordering: .relaxed))",
        "deduplicated-commits": "\(c.deduplicated.load(ordering: .relaxed))",
        "cache-hits": "\(hits)", "cache-evictions": "\(evictions)",
      ])
  }
}
