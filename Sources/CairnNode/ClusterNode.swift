import CairnClient
import CairnCluster
import CairnCore
import CairnDisk
import CairnProto
import CairnServer
import Foundation
import GRPCCore
import Logging
import Synchronization

/// One node of a cluster: its local store, its membership, its connections to peers and
/// the state the cluster store shares between requests. `store` is what clients see (one
/// content store for the whole cluster); `services` is the peer protocol other nodes call.
public final class ClusterNode: Sendable {
  /// The cluster config in force: the one given at start, or a later epoch adopted from
  /// the cluster (Membership).
  public var config: ClusterConfig { membership.current.config }

  /// Whether this node's stamps are ordered against its peers': it has none (a one-node
  /// cluster: its own clock is the only one), or it heard recently from at least one and
  /// from every peer its view counts live. Not just one: the median of two clocks is this
  /// node's own, so a node a day behind that heard only one peer would stamp a day behind
  /// (and a true one that heard only that node would follow it), which ordered a new upload
  /// before an earlier Delete. A dead peer is not waited for.
  var clockIsSynced: Bool {
    if config.peers.count <= 1 { return true }
    let heard = clock.heard
    guard !heard.isEmpty else { return false }
    let view = self.view
    return view.config.peers.keys.allSatisfy { id in
      id == view.config.me || view.members[id]?.isLive == false || heard.contains(id.name)
    }
  }

  /// The time of a Delete: ordered against commits on every node, so this node must have
  /// heard its peers' clocks first.
  func deletionStamp() throws(ContentError) -> Timestamp {
    guard clockIsSynced else { throw .unavailable("this node has not heard its peers' clocks yet; retry") }
    return clock.stamp()
  }
  let local: any ReplicaStore
  let membership: Membership
  let peers: PeerClients
  let hints: Hints
  let fetches: FetchCoalescer
  let logger: Logger
  /// Blob fetches from other nodes started by reads (coalesced reads share one).
  let remoteFetches = Atomic<UInt64>(0)
  /// Ingest events of the whole cluster (Events.swift).
  /// Ingest events of the whole cluster (relayed from every peer), for seed Status
  /// watches: coalesced per ref, so a subscriber holds about one event per ingest.
  let events = EventHub<IngestEvent>(bufferLimit: 16384)
  let relaying = Mutex<Set<NodeID>>([])
  let tombstones: Tombstones
  let repairConfig: RepairConfig
  let repair = RepairCounters()
  let repairLimiter: ByteRateLimiter
  /// What forwarded uploads keep to move to a ref's next owner (FailoverWriter).
  let failoverTails: ByteBudget
  /// Blobs whose commit-time replication is still under way (counted: one blob can be
  /// committed twice at once under two refs); handoff leaves them alone.
  let replicating = Mutex<[Digest: Int]>([:])
  /// Refs whose uploads this full node passed to their next owner (Delegation.swift).
  let delegations = Delegations()
  /// Refs whose ingest on this node is a mirror of another node's upload (IngestMirror).
  let mirrors = Mutex<[Bytewise: Int]>([:])  // by ref
  /// Digests a read-repair fetch is running for.
  let repairing = Mutex<Set<Digest>>([])
  /// Local Deletes and replicas' commits, one at a time per digest (`guarding`).
  let digestGuards = LockTable()
  /// What this node stores and served, for status reports (set by whoever runs the node).
  let usageProvider = Mutex<(@Sendable () async -> Cairn_Peer_V1_NodeUsage)?>(nil)
  let security = Mutex("")
  /// Orders commits and Deletes across nodes (its store should stamp with it too).
  public let clock: ClusterClock

  /// Refs of the ingests a replica writes while receiving a blob: internal, hidden from
  /// clients' Status/ListStatuses/watches, and refused as client refs.
  static let replicaRefPrefix = "cairn.replica/"

  public init(
    config: ClusterConfig, local: any ReplicaStore, dataDir: String, logger: Logger, repair: RepairConfig = .init(),
    seed: UInt64? = nil, peerSecurity: ClientSecurity = .none, clock: ClusterClock = ClusterClock(maxSkewSeconds: 5)
  ) throws {
    self.clock = clock
    let configPath = dataDir + "/cluster-config.json"
    let config = try Self.persistedConfig(at: configPath, over: config, logger: logger) ?? config
    repairConfig = repair
    repairLimiter = ByteRateLimiter(bytesPerSecond: repair.bytesPerSecond)
    failoverTails = ByteBudget(limit: local.limits.failoverTailBudgetBytes)
    tombstones = try Tombstones(root: dataDir, logger: logger, now: { clock.reading })
    self.local = local
    self.logger = logger
    peers = PeerClients(addresses: config.peers, security: peerSecurity, clock: clock, me: config.me)
    hints = try Hints(root: dataDir, logger: logger)
    fetches = FetchCoalescer(limits: local.limits)
    membership = Membership(
      config: config, peers: peers, logger: logger, seed: seed ?? UInt64.random(in: 1...UInt64.max),
      configPath: configPath)
  }

  /// A config of a later epoch this node adopted before it stopped (join/leave happened
  /// since the peer list on its command line was written).
  /// The file is this node's own (DurableFiles): one it cannot use is damage or a changed
  /// command line, and said so, never skipped in silence.
  private static func persistedConfig(at path: String, over given: ClusterConfig, logger: Logger) throws -> ClusterConfig? {
    guard DurableFiles.exists(path) else { return nil }
    let m: Cairn_Peer_V1_ClusterConfigMessage
    do {
      m = try Cairn_Peer_V1_ClusterConfigMessage(jsonUTF8Bytes: try DurableFiles.read(path))
    } catch {
      logger.error("ignoring \(path): not a cluster config (\(error)); starting from the given peer list")
      return nil
    }
    guard m.epoch > given.epoch else { return nil }
    guard Int(m.replicas) == given.replicas, Int(m.writeQuorum) == given.writeQuorum, Int(m.vnodes) == given.vnodesPerNode else {
      logger.warning(
        "ignoring \(path): its epoch \(m.epoch) has replicas=\(m.replicas) write_quorum=\(m.writeQuorum) vnodes=\(m.vnodes), this node \(given.compatibility)")
      return nil
    }
    let adopted: ClusterConfig
    do throws(ContentError) {
      adopted = try given.adopting(peers: m.peerList, epoch: m.epoch)
    } catch {
      logger.warning("ignoring \(path): \(error.message)")
      return nil
    }
    logger.notice("using the cluster config of epoch \(m.epoch) from \(path) (newer than the given peer list)")
    return adopted
  }

  /// Adds and removes nodes (the next config epoch), from this node; gossip spreads it.
  public func changeMembership(add: [NodeID: String], remove: Set<NodeID>) async throws -> ClusterConfig {
    try await membership.change(add: add, remove: remove)
  }

  /// The content store clients talk to: routes, forwards, replicates, fans out.
  public var store: ClusterStore { ClusterStore(node: self, servesOwnerWrites: false) }

  /// The peer protocol, to serve beside the content APIs.
  public func services(watches: WatchRegistry) -> [any RegistrableRPCService] {
    [PeerService(node: self, watches: watches)]
  }

  /// What the server must run on every call, after authentication: the clock readings.
  public var interceptors: [any ServerInterceptor] { [clock.serverInterceptor()] }

  /// Jobs that run for the node's lifetime: the membership protocol, hint delivery,
  /// anti-entropy and the cluster-wide event relay.
  public var maintenance: [@Sendable () async -> Void] {
    [
      { [membership] in await membership.run() },
      { [self] in await self.deliverHintsForever() },
      { [self] in await self.antiEntropyForever() },
      { [self] in await self.relayEventsForever() },
    ]
  }

  public func shutdown() async { await peers.shutdown() }

  /// A graceful stop's first step: the peers learn that this node is gone (Membership.leave).
  public func leave() async { await membership.leave() }

  var view: ClusterView { membership.current }

  /// Runs `onDeath` once if `peer` is (or is declared) dead, until the token is cancelled.
  func watchDeath(of peer: NodeID, _ onDeath: @escaping @Sendable () -> Void) -> DeathWatch {
    membership.deathWatches.watch(peer, in: view, onDeath)
  }

  /// Runs `onDeath` once if `peer`, which is calling this node, is declared dead from now
  /// on (DeathWatches.watchNextDeath), until the token is cancelled.
  func watchNextDeath(of peer: NodeID, _ onDeath: @escaping @Sendable () -> Void) -> DeathWatch {
    membership.deathWatches.watchNextDeath(peer, in: view, onDeath)
  }

  /// Runs `body`, a call to `peer`, and stops waiting for it with UNAVAILABLE if the peer is
  /// declared dead before it ends. The call itself is left to end at its deadline, not
  /// cancelled: cancelling gRPC streams from outside at arbitrary moments tripped an
  /// assertion in grpc-swift-nio-transport's connection handler ("Can't close stream N, it
  /// wasn't open") and killed a debug build.
  func untilDead<T: Sendable>(
    _ peer: NodeID, _ body: @escaping @Sendable () async throws -> T
  ) async throws(ContentError) -> T {
    let outcome = OneShot<Result<T, ContentError>>()
    let task = Task {
      do { outcome.fulfil(.success(try await body())) } catch { outcome.fulfil(.failure(ContentError.from(error))) }
    }
    let watch = watchDeath(of: peer) {
      outcome.fulfil(.failure(.unavailable("\(peer) was declared dead during the call")))
    }
    defer { watch.cancel() }
    let result = await withTaskCancellationHandler { await outcome.value } onCancel: { task.cancel() }
    return try result.get()
  }

  /// How long a node that stopped answering may take to be declared dead: a suspicion plus
  /// two probe rounds, doubled for a loaded machine.
  var deathWaitSeconds: Double {
    let swim = config.swim
    return 2 * Double(swim.suspicionTimeout + 2 * swim.probeInterval + swim.probeTimeout) / 1e9
  }

  /// How long `isGone` waits for a peer's answer to its Status probe: a live peer answers
  /// a local Status in milliseconds, even loaded.
  static let ownerProbeTimeout: Duration = .milliseconds(500)

  /// Whether `peer` is gone: it does not answer (a LocalStatus of `ref`), and membership
  /// declares it dead within `deathWaitSeconds`. A peer that answers, whatever it answers,
  /// is there: its errors are its own.
  func isGone(_ peer: NodeID, probingWith ref: String) async -> Bool {
    if !view.isLive(peer) { return true }
    let peers = self.peers
    do {
      _ = try await peers.call(peer) { api in
        try await api.localStatus(.with { $0.ref = ref }, options: PeerClients.options(timeout: Self.ownerProbeTimeout))
      }
      return false
    } catch {
      let code = ContentError.from(error).code
      if code != .unavailable && code != .deadlineExceeded { return false }
    }
    let died = OneShot<Bool>()
    let watch = watchDeath(of: peer) { died.fulfil(true) }
    let wait = deathWaitSeconds
    let timer = Task {
      try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
      died.fulfil(false)
    }
    let gone = await died.value
    watch.cancel()
    timer.cancel()
    return gone
  }

  /// A peer's own metadata for a blob (LocalInfo: no routing, no fetch), given up if the
  /// peer is declared dead meanwhile.
  func localInfo(of digest: Digest, on peer: NodeID) async throws(ContentError) -> BlobInfo {
    let peers = self.peers
    return try await untilDead(peer) {
      try await peers.call(peer) { api in
        try BlobInfo(try await api.localInfo(.with { $0.digest = digest.description }, options: PeerClients.unary).info)
      }
    }
  }

  static func isReserved(_ ref: String) -> Bool { ref.bytewiseHasPrefix(replicaRefPrefix) }

  /// Ingest events clients may see: not replicas' transfers, not mirrors.
  func isClientEvent(_ e: IngestEvent) -> Bool { !Self.isReserved(e.ref) && !isMirror(e.ref) }

  /// Deletes the local copy, recording the tombstone first so that a replica transfer
  /// still under way cannot bring the blob back, and repair spreads the deletion to the
  /// nodes that missed it (Tombstones).
  func deleteLocally(_ digest: Digest, at: Timestamp) async throws {
    try await guarding(digest) {
      try await recordTombstone(digest, at: at)
      try await local.delete(digest)
    }
  }

  /// False if kept: a label starting with `prefix` (a client's hold) arrived first.
  func deleteLocally(_ digest: Digest, at: Timestamp, unlessLabeled prefix: String) async throws -> Bool {
    try await guarding(digest) {
      try await recordTombstone(digest, at: at)
      let deleted = try await local.delete(digest, unlessLabeled: prefix)
      if !deleted { await tombstones.forget(digest) }
      return deleted
    }
  }

  /// How long a local Delete or a replica's commit waits for the other on one digest.
  static let digestGuardTimeout: Double = 60

  /// Runs a local Delete, or a replica's tombstone check and commit, alone for its digest:
  /// otherwise a replica committed between a Delete's tombstone and its removal of the
  /// blob (the check ran before the tombstone, the commit after the removal) left a copy
  /// older than its tombstone, which an upload that followed the Delete then found
  /// "already stored" and replicated with the old creation time (refused everywhere).
  func guarding<T>(_ digest: Digest, _ body: () async throws -> T) async throws -> T {
    let key = digest.description
    guard await digestGuards.acquire(key, timeout: Self.digestGuardTimeout) else {
      throw ContentError.unavailable("\(digest) is busy on \(config.me) (a Delete or a replica's commit) for \(Int(Self.digestGuardTimeout)) s; retry")
    }
    defer { digestGuards.release(key) }
    return try await body()
  }

  /// A durable tombstone if this node holds a copy (later than that copy, whatever the
  /// clocks of the node that committed it and the one that took the Delete say); a note
  /// in memory in any case.
  private func recordTombstone(_ digest: Digest, at: Timestamp) async throws {
    tombstones.noteRecent(digest, at: at)
    let created: Timestamp
    do {
      created = try await local.info(digest).createdAt
    } catch let e as ContentError where e.code == .notFound {
      return
    }
    try await tombstones.record(digest, at: created < at ? at : Timestamp(totalNanoseconds: created.totalNanoseconds.addingSaturating(1)))
  }

  /// Fencing: only the ref's owner in this node's current view may hold its lock or
  /// commit it. A node that lost ownership (others declared it dead, it was paused)
  /// learns it from the view and stops.
  func requireOwnership(of ref: String) throws(ContentError) {
    let view = self.view
    let owner = view.owner(ofRef: ref)
    if owner != config.me {
      throw .unavailable(
        "\(config.me) no longer owns ref \(quoted(ref)) in membership view \(view.version) (owner: \(owner?.name ?? "none")); retry")
    }
    if let why = membership.ownershipRefusal() { throw .unavailable("\(why); retry") }
  }

  /// The status shown by `cairn cluster status`.
  public func statusReport() -> Cairn_Peer_V1_ClusterStatusResponse {
    let view = self.view
    let ownership = view.ring.ownership()
    let replicaShare = replicaShares(view)
    let connected = relayedPeers
    let security = self.security.withLock { $0 }
    let clockOffsets = clock.offsets()
    return .with {
      $0.security = security
      $0.clockOffsetNanos = clockOffsets.wallFromMedian ?? 0
      $0.maxClockSkewSeconds = clock.maxSkewSeconds
      $0.clockReadingsRefused = clock.refusedReadings.load(ordering: .relaxed)
      $0.nodeID = config.me.name
      $0.replicas = UInt32(config.replicas)
      $0.writeQuorum = UInt32(config.writeQuorum)
      $0.vnodes = UInt32(config.vnodesPerNode)
      $0.fingerprint = config.fingerprint
      $0.viewVersion = view.version
      $0.members = view.members.values.sorted { $0.id < $1.id }.map { m in
        .with {
          $0.state = .init(m)
          $0.ownership = ownership[m.id] ?? 0
          $0.replicaShare = replicaShare[m.id] ?? 0
          $0.connected = m.id == config.me || connected.contains(m.id)
          $0.clockOffsetNanos = clockOffsets.peers[m.id.name] ?? 0
        }
      }
      $0.configProblems = membership.configProblems
      $0.hintsPending = UInt64(hints.count)
      $0.remoteFetches = remoteFetches.load(ordering: .relaxed)
      $0.repair = repairStatus()
      $0.configEpoch = view.config.epoch
      $0.member = view.config.isMember
    }
  }

  /// Each node's share of digests it is a replica of, sampled over the ring's arcs.
  private func replicaShares(_ view: ClusterView) -> [NodeID: Double] {
    var share: [NodeID: Double] = [:]
    view.ring.forEachArc { start, end, _ in
      let width = Double(end &- start) / 18_446_744_073_709_551_616.0
      for n in view.ring.preferenceList(at: end, count: config.replicas) { share[n, default: 0] += width }
    }
    return share
  }
}
