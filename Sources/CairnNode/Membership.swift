import CairnCluster
import CairnCore
import CairnDisk
import CairnProto
import Foundation
import Logging
import Synchronization

/// Drives the SWIM state machine: feeds it the monotonic clock every tick and the gossip
/// that arrives, sends what it asks for, and publishes each new view where the request
/// paths read it without waiting (`current`).
actor Membership {
  private(set) var config: ClusterConfig
  private var swim: SWIM
  private var seed: SplitMix64
  private let peers: PeerClients
  private let logger: Logger
  private let published: Mutex<ClusterView>
  nonisolated let deathWatches = DeathWatches()
  private let gate: Mutex<OwnershipGate>
  private let problems = Mutex<[NodeID: String]>([:])
  /// Where an adopted config is kept, so that a restart resumes at its epoch.
  private let configPath: String?
  private var incarnation: UInt64

  init(config: ClusterConfig, peers: PeerClients, logger: Logger, seed: UInt64, configPath: String?) {
    self.config = config
    self.peers = peers
    self.logger = logger
    self.configPath = configPath
    self.seed = SplitMix64(seed: seed)
    // A restarted node must supersede what others remember of it: its incarnation starts
    // at its start time (milliseconds), which only grows.
    // (A clock absurdly far ahead must not pass SWIM's bound: refutations add to it.)
    incarnation = UInt64(min(max(1, Date().timeIntervalSince1970 * 1000), Double(SWIM.maxIncarnation / 2)))
    swim = Membership.makeSWIM(config, incarnation: incarnation, seed: self.seed.next())
    published = Mutex(ClusterView(config: config, members: swim.members, version: swim.version))
    // Two suspicion timeouts: the others declare this node dead one after suspecting it,
    // and learn of its refutation within a few probe periods.
    gate = Mutex(OwnershipGate(settle: 2 * config.swim.suspicionTimeout, now: Membership.now()))
  }

  /// Whether this node may hold ref locks now (OwnershipGate), and why not.
  nonisolated func ownershipRefusal() -> String? {
    let now = Membership.now()
    if gate.withLock({ $0.mayOwn(now: now) }) { return nil }
    let view = current
    let alive = view.members.values.filter { $0.isLive }.count
    return "\(view.me) sees \(alive) of \(view.config.peers.count) nodes alive, or saw a majority again less than \(gate.withLock { $0.settle } / 1_000_000) ms ago: it holds no ref locks until the others know it is back"
  }

  private func observeOwnership() {
    let view = current
    // Suspects count as alive: a node starved of CPU for a moment must not drop its locks.
    let alive = view.members.values.filter { $0.isLive }.count
    gate.withLock { $0.observe(alive: alive, of: view.config.peers.count, now: Membership.now()) }
  }

  private static func makeSWIM(_ config: ClusterConfig, incarnation: UInt64, seed: UInt64) -> SWIM {
    // A node removed from the cluster keeps its own entry, to run; nobody gossips with it.
    var peers = config.peers
    if peers[config.me] == nil { peers[config.me] = "departed" }
    return SWIM(
      me: config.me, address: peers[config.me]!, incarnation: incarnation, peers: peers, config: config.swim,
      seed: seed, now: Membership.now())
  }

  static func now() -> Int64 { Monotonic.nanoseconds }

  /// The latest view; cheap, callable from any thread.
  nonisolated var current: ClusterView { published.withLock { $0 } }

  nonisolated var configProblems: [String] {
    problems.withLock { p in p.keys.sorted().map { "\($0): \(p[$0]!)" } }
  }

  /// Ticks until cancelled.
  func run() async {
    let interval = UInt64(max(10_000_000, config.swim.probeInterval / 5))
    while !Task.isCancelled {
      perform(swim.tick(now: Self.now()))
      try? await Task.sleep(nanoseconds: interval)
    }
  }

  /// One gossip message from a peer. A sender with a newer config epoch makes this node
  /// fetch and adopt that config first; one with an older epoch is answered with ours (it
  /// then fetches it). FAILED_PRECONDITION if the configs cannot be reconciled (other R, W
  /// or vnodes, or two different peer lists of the same epoch).
  func receive(_ request: Cairn_Peer_V1_GossipRequest) async throws(ContentError) -> Cairn_Peer_V1_GossipResponse {
    let from = NodeID(request.from)
    let message = try request.swimMessage()
    if request.clusterFingerprint != config.fingerprint {
      if request.configEpoch > config.epoch {
        try await adopt(from: from, epoch: request.configEpoch)
      } else if request.configEpoch < config.epoch {
        return .with { $0.newerConfigEpoch = config.epoch }
      }
    }
    guard request.clusterFingerprint == config.fingerprint else {
      let why = "cluster config fingerprint \(request.clusterFingerprint) differs from this node's \(config.fingerprint) (\(config.canonicalDescription))"
      noteProblem(from, why)
      throw .failedPrecondition("\(config.me) refuses gossip from \(from): \(why)")
    }
    guard config.peers[from] != nil else {
      throw .failedPrecondition("\(config.me) refuses gossip from \(from): not a configured peer")
    }
    clearProblem(from)
    perform(swim.receive(message, from: from, now: Self.now()))
    return .init()
  }

  /// Fetches `from`'s config and adopts it if it is newer and compatible.
  func adopt(from: NodeID, epoch: UInt64) async throws(ContentError) {
    let message = try await peers.call(from) {
      try await $0.getClusterConfig(.init(), options: PeerClients.options(timeout: .seconds(5)))
    }
    try adopt(message)
  }

  /// Adopts `message` if its epoch is higher than this node's (no-op otherwise).
  func adopt(_ message: Cairn_Peer_V1_ClusterConfigMessage) throws(ContentError) {
    guard message.epoch > config.epoch else { return }
    let next = try config.adopting(peers: message.peerList, epoch: message.epoch)
    guard Int(message.replicas) == config.replicas, Int(message.writeQuorum) == config.writeQuorum,
      Int(message.vnodes) == config.vnodesPerNode
    else {
      let why = "config epoch \(message.epoch) has replicas=\(message.replicas) write_quorum=\(message.writeQuorum) vnodes=\(message.vnodes), this node \(config.compatibility)"
      throw .failedPrecondition("\(config.me) cannot adopt it: \(why)")
    }
    try install(next)
  }

  /// Takes a membership change on this node: the next epoch's config, spread by gossip.
  func change(add: [NodeID: String], remove: Set<NodeID>) throws(ContentError) -> ClusterConfig {
    // Re-adding a node with the same address (a joining node that restarts) is a no-op.
    let add = add.filter { config.peers[$0.key] != $0.value }
    if add.isEmpty && remove.isEmpty { return config }
    let next = try config.changing(add: add, remove: remove)
    try install(next)
    return next
  }

  /// Makes `next` this node's config: durable first (a restart keeps the epoch it adopted,
  /// whatever its command line says), so a disk that cannot take it fails the change or
  /// the adoption (gossip offers it again). The file is small and changes are rare: it is
  /// written here, on the actor, so no other change interleaves.
  private func install(_ next: ClusterConfig) throws(ContentError) {
    if let configPath {
      do throws(ContentError) {
        let json: String
        do { json = try Cairn_Peer_V1_ClusterConfigMessage(next).jsonString() } catch { throw .internalError("encoding the config: \(error)") }
        try DurableFiles.write(configPath, Data(json.utf8))
      } catch {
        logger.error("membership: config epoch \(next.epoch) not adopted: writing \(configPath) failed: \(error.message)")
        throw error
      }
    }
    let before = config
    config = next
    peers.update(addresses: next.peers)
    // A fresh SWIM over the new peer list, with a higher incarnation than any this node
    // used, so that the others' knowledge of it is superseded at once.
    incarnation = min(incarnation + 1, SWIM.maxIncarnation)
    swim = Membership.makeSWIM(next, incarnation: incarnation, seed: seed.next())
    let (members, version) = (swim.members, swim.version)
    published.withLock { $0 = ClusterView(config: next, members: members, version: $0.version + version + 1) }
    observeOwnership()
    deathWatches.fire(current)
    let added = Set(next.peers.keys).subtracting(before.peers.keys).map(\.name).sorted()
    let removed = Set(before.peers.keys).subtracting(next.peers.keys).map(\.name).sorted()
    logger.notice(
      "membership: config epoch \(next.epoch) (added: \(added), removed: \(removed)); \(next.isMember ? "repair moves the data" : "this node was removed: it hands its blobs to their replicas")")
  }

  /// How long a leaving node waits for each peer to take its death.
  static let leaveTimeout: Duration = .seconds(1)

  /// A graceful stop (SIGTERM): every live peer is told that this node is dead, and each
  /// answer awaited (up to `leaveTimeout`), so the others move its refs to their next
  /// owners, and forwarded uploads to it fail over, before it stops serving; until now
  /// that took a suspicion timeout after it stopped. Returns how many peers took it.
  @discardableResult
  func leave() async -> Int {
    guard config.isMember else { return 0 }
    var told: [(NodeID, Cairn_Peer_V1_GossipRequest)] = []
    var local: [SWIM.Action] = []
    for action in swim.leave(now: Self.now()) {
      if case .send(let to, let message) = action {
        told.append((to, Cairn_Peer_V1_GossipRequest(message, from: config.me, config: config)))
      } else {
        local.append(action)
      }
    }
    perform(local)
    let peers = self.peers
    let took = await withTaskGroup(of: Bool.self) { group in
      for (to, request) in told {
        group.addTask {
          (try? await peers.call(to) { try await $0.gossip(request, options: PeerClients.options(timeout: Self.leaveTimeout)) }) != nil
        }
      }
      return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
    }
    logger.notice("membership: left the cluster: \(took) of \(told.count) live peers took this node's death")
    return took
  }

  private func perform(_ actions: [SWIM.Action]) {
    var changed = false
    for action in actions {
      switch action {
      case .send(let to, let message):
        guard config.isMember else { continue }
        let request = Cairn_Peer_V1_GossipRequest(message, from: config.me, config: config)
        let peers = self.peers
        Task { [weak self] in
          do {
            let answer = try await peers.call(to) { try await $0.gossip(request, options: PeerClients.options(timeout: .seconds(1))) }
            await self?.clearProblem(to)
            if answer.newerConfigEpoch > request.configEpoch { try await self?.adopt(from: to, epoch: answer.newerConfigEpoch) }
          } catch let e as ContentError where e.code == .failedPrecondition {
            await self?.noteProblem(to, e.message)
          } catch {
            // Lost messages are SWIM's business: no ack means suspicion.
          }
        }
      case .changed(let m):
        changed = true
        if m.id != config.me || m.status != .alive {
          logger.notice("membership: \(m.id) is \(m.status) (incarnation \(m.incarnation))")
        }
      }
    }
    if changed {
      let (members, version) = (swim.members, swim.version)
      published.withLock { $0.update(members: members, version: max($0.version + 1, version)) }
      observeOwnership()
      deathWatches.fire(current)
    }
  }

  private func noteProblem(_ id: NodeID, _ why: String) {
    let isNew = problems.withLock { p -> Bool in
      defer { p[id] = why }
      return p[id] != why
    }
    if isNew { logger.error("cluster config mismatch with \(id): \(why)") }
  }

  private func clearProblem(_ id: NodeID) {
    problems.withLock { _ = $0.removeValue(forKey: id) }
  }
}
