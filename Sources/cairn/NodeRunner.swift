import ArgumentParser
import CairnAdmin
import CairnClient
import CairnCluster
import CairnCore
import CairnDisk
import CairnNode
import CairnProto
import CairnServer
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// Starts what a NodePlan describes and runs it until SIGTERM/SIGINT.
struct NodeRunner {
  let plan: NodePlan
  let settings: Settings

  /// A line scripts and people wait for ("cairn: listening on …") on standard output: text,
  /// or with `--log-format json` a JSON line like every other (it printed plain text first).
  func announce(_ message: String) {
    if plan.logJSON { JSONLogHandler.announce(message) } else { print("cairn: \(message)") }
  }

  func run() async throws {
    bootstrapLogging(plan.logLevel, json: plan.logJSON)
    let logger = Logger(label: "cairn")
    // The socket (and every file) is created owner-only; the socket is then opened up to
    // unix_mode. No window in which another user can connect.
    umask(0o077)
    let metrics = NodeMetrics()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))

    let cluster = try await clusterConfig()
    let store: DiskStore
    let node: ClusterNode?
    let tls: ServerTLS?
    // A cluster node's commits are stamped by its hybrid logical clock, so that they order
    // against Deletes whatever the wall clocks say (docs/ARCHITECTURE.md, "Time").
    let clock = ClusterClock(maxSkewSeconds: plan.maxClockSkewSeconds)
    let isCluster = cluster != nil
    let stamp: WallClock = { isCluster ? clock.stamp() : Timestamp.now() }
    do {
      store = try await DiskStore.open(root: plan.dataDir, limits: plan.limits, ioThreads: plan.threads, clock: stamp, logger: logger)
      tls = try plan.tls.map { try ServerTLS($0) }
      node = try cluster.map {
        try ClusterNode(
          config: $0, local: store, dataDir: store.root, logger: logger, repair: plan.repair, peerSecurity: plan.peerSecurity,
          clock: clock)
      }
    } catch {
      throw fail(error)
    }
    let access = AccessControl(settings: plan.access, tokens: plan.tokens, metrics: metrics)
    let listening = Atomic<Bool>(false)
    let notReady: @Sendable () async -> String? = {
      if !listening.load(ordering: .relaxed) { return "not listening yet" }
      return node?.notReadyReason
    }
    let health = HealthState()
    // NOT_SERVING until the readiness job has seen the node ready.
    health.set(serving: false)
    // The gRPC health service says what /readyz says.
    let readinessJob: @Sendable () async -> Void = {
      while !Task.isCancelled {
        let ready = await notReady() == nil
        if !Task.isCancelled { health.set(serving: ready) }
        try? await Task.sleep(nanoseconds: 500_000_000)
      }
    }
    let sampler: @Sendable () async -> Void = {
      while !Task.isCancelled {
        metrics.sampleThroughput()
        try? await Task.sleep(nanoseconds: UInt64(NodeMetrics.sampleSeconds * 1e9))
      }
    }
    let server = ContentServer(
      store: node?.store ?? store,
      listen: ListenConfig(
        tcp: plan.tcp, unixPath: plan.unixPath, unixClient: plan.unixClient, unixMode: plan.unixMode, tls: tls,
        connections: plan.connections),
      logger: logger, metrics: metrics, access: access, health: health,
      maintenance: [expireJob(store, logger), reloadJob(tls, access, metrics, logger), readinessJob, sampler] + (node?.maintenance ?? []),
      extraServices: { watches in node?.services(watches: watches) ?? [] }, extraInterceptors: node?.interceptors ?? [])
    let usage: @Sendable () async -> Cairn_Peer_V1_NodeUsage = {
      let u = await store.usage()
      let t = metrics.currentTotals
      return .with {
        $0.blobs = UInt64(u.blobs)
        $0.storedBytes = UInt64(u.storedBytes)
        $0.diskUsedBytes = UInt64(max(0, u.diskUsedBytes))
        $0.diskCapacityBytes = UInt64(max(0, u.diskCapacityBytes))
        $0.activeIngests = UInt64(u.activeIngests)
        $0.bytesReceived = UInt64(t.bytesReceived)
        $0.bytesSent = UInt64(t.bytesSent)
        $0.calls = UInt64(t.calls)
        $0.failedCalls = UInt64(t.failures)
        let history = metrics.throughputHistory()
        $0.receivedPerSecond = history.received
        $0.sentPerSecond = history.sent
      }
    }
    node?.setUsageProvider(usage)
    node?.setSecurity(plan.securityDescription)
    NodeGauges.install(metrics: metrics, store: store, node: node, server: server, notReady: notReady)
    ProcessGauges.install(metrics: metrics)

    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
    var adminServer: AdminServer?
    if let admin = plan.admin {
      // One status document a second, however many ask: each one asks every peer.
      let statusCache = Coalesced<[UInt8]>(seconds: 1) {
        await StatusPage.document(node: node, usage: usage, notReadyReason: await notReady(), security: plan.securityDescription, metrics: metrics).json()
      }
      let requireToken = plan.tokens != nil
      let routes = AdminRoutes(
        metrics: metrics, notReadyReason: notReady, status: { await statusCache.value() },
        authorized: { header in
          guard requireToken else { return true }
          return bearerOrBasicToken(header).flatMap(access.grant(forToken:))?.allows(.monitor) ?? false
        })
      let a = AdminServer(host: admin.host, port: admin.port, routes: routes, logger: logger)
      adminServer = a
      services.append(.init(service: a))
    }
    // Last in the list, so the first to shut down: the node leaves the cluster before the
    // servers stop taking calls.
    if let node { services.append(.init(service: LeaveOnShutdown(node: node))) }
    var groupConfig = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    groupConfig.maximumGracefulShutdownDuration = .milliseconds(Int64(plan.grace * 1000))
    let group = ServiceGroup(configuration: groupConfig)
    if plan.insecure {
      logger.warning(
        "INSECURE: every caller is trusted with everything, the peer protocol included, on \(plan.listenText) (--insecure). Anyone who reaches the port can read, write and delete blobs and change the cluster's membership.")
    }
    let announcing = Task {
      guard let addresses = try? await server.listeningAddresses() else { return }
      listening.store(true, ordering: .relaxed)
      // Scripts and tests wait for these lines to know the node is ready, then ask its
      // health: the readiness job's last look may predate the listening (up to 0.5 s).
      health.set(serving: await notReady() == nil)
      for a in addresses { announce("listening on \(a)\(tls != nil && !a.hasPrefix("unix") ? " (TLS)" : "")") }
      if let a = try? await adminServer?.address { announce("admin on http://\(a.ipAddress ?? "?"):\(a.port ?? 0)/") }
      announce("data in \(store.root)")
      if let cluster {
        announce("node \(cluster.me) of \(cluster.peers.count), replicas \(cluster.replicas), write quorum \(cluster.writeQuorum), config \(cluster.fingerprint)")
      }
      fflush(nil)
    }
    do {
      try await group.run()
    } catch {
      announcing.cancel()
      await node?.shutdown()
      await store.shutdown()
      // NIO says only "bind(...): Address already in use": name what this node listens on.
      if "\(error)".contains("Address already in use") {
        let admin = plan.admin.map { " or its admin port \($0.host):\($0.port)" } ?? ""
        throw failLocally(ContentError.unavailable("cannot listen on \(plan.listenText)\(admin): address already in use (another process listens there)"))
      }
      throw fail(error)
    }
    await node?.shutdown()
    await store.shutdown()
    let (syncs, served) = store.groupCommitCounters()
    logger.info("stopped", metadata: ["directory-fsyncs": "\(syncs)", "durable-operations": "\(served)"])
  }

  func expireJob(_ store: DiskStore, _ logger: Logger) -> @Sendable () async -> Void {
    staleIngestSweeper(store, expiry: plan.expiry, logger: logger)
  }

  /// Certificates and tokens are re-read when their files change; a broken new file is
  /// logged and the old one stays in force.
  func reloadJob(_ tls: ServerTLS?, _ access: AccessControl, _ metrics: NodeMetrics, _ logger: Logger) -> @Sendable () async -> Void {
    let (interval, tokensFile) = (plan.tlsReloadSeconds, plan.tokensFile)
    return {
      var tokensText = tokensFile.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }
      while !Task.isCancelled {
        try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
        if Task.isCancelled { return }
        if let tls {
          do {
            if try tls.reloadIfChanged() {
              logger.notice("TLS certificate reloaded", metadata: ["cert": "\(tls.settings.certificatePath)"])
              metrics.registry.makeCounter(name: "cairn_tls_reloads_total", labels: [("result", "ok")], help: "TLS file reloads").increment()
            }
          } catch {
            logger.error("TLS files changed but cannot be used; keeping the previous ones", metadata: ["error": "\(ContentError.from(error).message)"])
            metrics.registry.makeCounter(name: "cairn_tls_reloads_total", labels: [("result", "failed")], help: "TLS file reloads").increment()
          }
        }
        if let path = tokensFile, let text = try? String(contentsOfFile: path, encoding: .utf8), text != tokensText {
          do {
            access.replaceTokens(try TokenTable(parsing: text, source: path))
            tokensText = text
            logger.notice("tokens file reloaded", metadata: ["file": "\(path)"])
          } catch {
            logger.error("tokens file changed but is invalid; keeping the previous tokens", metadata: ["error": "\(ContentError.from(error).message)"])
          }
        }
      }
    }
  }

  /// The cluster configuration, or nil for a single node; DNS discovery and joining
  /// happen here. A node learns its id from DNS only here, so its peer credential is
  /// checked here too.
  func clusterConfig() async throws -> ClusterConfig? {
    switch plan.cluster {
    case .single: return nil
    case .peers(let c): return c
    case .dns(let service, let size, let givenID):
      // In a StatefulSet the pod's hostname is its DNS name's first label.
      let id = givenID ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
      do {
        try plan.checkPeerCredential(settings, for: id)
        let peerList = try await discoverPeers(service: service, size: size, timeout: 300, announce: announce)
        return try ClusterConfig(
          me: NodeID(id), peers: peerList, replicas: plan.replicas, writeQuorum: plan.writeQuorum, vnodesPerNode: plan.vnodes)
      } catch {
        throw fail(error)
      }
    case .join(let seed, let id):
      return try await joinCluster(seed: seed, id: id, address: plan.listenText)
    }
  }

  /// Adds this node to a running cluster through `seed`, retrying for a minute while the
  /// seed is unreachable; the cluster's new config.
  func joinCluster(seed: String, id: NodeID, address: String) async throws -> ClusterConfig {
    let deadline = Monotonic.seconds + 60
    while true {
      do {
        var security = plan.peerSecurity
        if security.caPath != nil { security.serverRole = .anyPeer }
        let m = try await ContentClient.with(address: seed, security: security) {
          try await $0.changeMembership(add: [id.name: address], remove: [])
        }
        announce("joined the cluster through \(seed): config epoch \(m.epoch), \(m.peers.count) nodes")
        return try ClusterConfig(
          me: id, peers: Dictionary(uniqueKeysWithValues: m.peers.map { (NodeID($0.key), $0.value) }),
          replicas: Int(m.replicas), writeQuorum: Int(m.writeQuorum), vnodesPerNode: Int(m.vnodes), epoch: m.epoch)
      } catch let e as ContentError where e.code == .unavailable && Monotonic.seconds < deadline {
        try await Task.sleep(nanoseconds: 500_000_000)
      } catch {
        throw fail(error)
      }
    }
  }
}

/// The token in an `authorization` header: `Bearer TOKEN`, or `Basic` with the token as
/// the password (what a browser sends after its login prompt).
func bearerOrBasicToken(_ header: String?) -> String? {
  guard let header else { return nil }
  let parts = header.split(separator: " ", maxSplits: 1)
  guard parts.count == 2 else { return nil }
  switch parts[0].lowercased() {
  case "bearer": return String(parts[1])
  case "basic":
    guard let data = Data(base64Encoded: String(parts[1])), let text = String(data: data, encoding: .utf8),
      let colon = text.firstIndex(of: ":")
    else { return nil }
    return String(text[text.index(after: colon)...])
  default: return nil
  }
}

/// A value computed at most once per `seconds`; callers meanwhile share the last one, and
/// concurrent callers share one computation.
actor Coalesced<Value: Sendable> {
  private let seconds: Double
  private let compute: @Sendable () async -> Value
  private var last: (value: Value, at: ContinuousClock.Instant)?
  private var running: Task<Value, Never>?

  init(seconds: Double, compute: @escaping @Sendable () async -> Value) {
    self.seconds = seconds
    self.compute = compute
  }

  func value() async -> Value {
    if let last, ContinuousClock.now - last.at < .milliseconds(Int64(seconds * 1000)) { return last.value }
    if let running { return await running.value }
    let task = Task { await compute() }
    running = task
    let value = await task.value
    last = (value, .now)
    running = nil
    return value
  }
}

/// Removes ingests idle longer than `expiry` seconds, every quarter of that (at most hourly):
/// on a node and on an agent.
func staleIngestSweeper(_ store: DiskStore, expiry: Double, logger: Logger) -> @Sendable () async -> Void {
  {
    let interval = min(expiry / 4, 3600)
    while !Task.isCancelled {
      try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
      if Task.isCancelled { return }
      do {
        let removed = try await store.expireIngests(olderThan: expiry)
        if !removed.isEmpty { logger.info("expired \(removed.count) stale ingests", metadata: ["refs": "\(removed.prefix(10))"]) }
      } catch {
        logger.warning("expiring stale ingests failed: \(ContentError.from(error).message)")
      }
    }
  }
}

/// On a graceful stop (SIGTERM, SIGINT), before anything else stops: the node tells its
/// peers it is leaving, so they give its refs to the next owners and move forwarded
/// uploads on at once instead of after a suspicion timeout (docs/operations.md).
struct LeaveOnShutdown: Service {
  let node: ClusterNode

  func run() async throws {
    do {
      try await gracefulShutdown()
    } catch {
      return  // cancelled: the group ends for another reason
    }
    await node.leave()
  }
}
