import CairnCluster
import CairnCore
import CairnProto
import Foundation
import Logging
import Synchronization

/// Drives the SWIM state machine: feeds it the monotonic clock every tick and the gossip
/// that arrives, sends what it asks for, and publishes each new view where the request
/// paths read it without waiting (`current`).
actor Membership {
  let config: ClusterConfig
  private var swim: SWIM
  private let peers: PeerClients
  private let logger: Logger
  private let published: Mutex<ClusterView>
  private let problems = Mutex<[NodeID: String]>([:])

  init(config: ClusterConfig, peers: PeerClients, logger: Logger, seed: UInt64) {
    self.config = config
    self.peers = peers
    self.logger = logger
    // A restarted node must supersede what others remember of it: its incarnation starts
    // at its start time (milliseconds), which only grows.
    let incarnation = UInt64(max(1, Date().timeIntervalSince1970 * 1000))
    let me = config.me
    swim = SWIM(
      me: me, address: config.peers[me]!, incarnation: incarnation, peers: config.peers, config: config.swim,
      seed: seed, now: Membership.now())
    published = Mutex(ClusterView(config: config, members: swim.members, version: swim.version))
  }

  static func now() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds) }

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

  /// One gossip message from a peer. FAILED_PRECONDITION if its cluster config differs.
  func receive(_ request: Cairn_Peer_V1_GossipRequest) throws(ContentError) {
    let from = NodeID(request.from)
    guard request.clusterFingerprint == config.fingerprint else {
      let why = "cluster config fingerprint \(request.clusterFingerprint) differs from this node's \(config.fingerprint) (\(config.canonicalDescription))"
      noteProblem(from, why)
      throw .failedPrecondition("\(config.me) refuses gossip from \(from): \(why)")
    }
    guard config.peers[from] != nil else {
      throw .failedPrecondition("\(config.me) refuses gossip from \(from): not a configured peer")
    }
    clearProblem(from)
    perform(swim.receive(request.swimMessage, from: from, now: Self.now()))
  }

  private func perform(_ actions: [SWIM.Action]) {
    var changed = false
    for action in actions {
      switch action {
      case .send(let to, let message):
        let request = Cairn_Peer_V1_GossipRequest(message, from: config.me, fingerprint: config.fingerprint)
        let peers = self.peers
        Task { [weak self] in
          do {
            _ = try await peers.call(to) { try await $0.gossip(request, options: PeerClients.options(timeout: .seconds(1))) }
            await self?.clearProblem(to)
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
      published.withLock { $0.update(members: members, version: version) }
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

extension Cairn_Peer_V1_MemberState {
  init(_ m: Member) {
    self.init()
    id = m.id.name
    address = m.address
    incarnation = m.incarnation
    status = m.status == .alive ? .alive : m.status == .suspect ? .suspect : .dead
  }

  var member: Member {
    Member(
      id: NodeID(id), address: address, incarnation: incarnation,
      status: status == .dead ? .dead : status == .suspect ? .suspect : .alive)
  }
}

extension Cairn_Peer_V1_GossipRequest {
  init(_ message: SWIM.Message, from: NodeID, fingerprint: String) {
    self.init()
    self.from = from.name
    clusterFingerprint = fingerprint
    switch message {
    case .ping(let s, let updates, let fullSync):
      kind = .ping
      seq = s
      self.updates = updates.map { .init($0) }
      self.fullSync = fullSync
    case .pingRequest(let s, let t, let updates):
      kind = .pingRequest
      seq = s
      target = t.name
      self.updates = updates.map { .init($0) }
    case .ack(let s, let t, let updates):
      kind = .ack
      seq = s
      target = t.name
      self.updates = updates.map { .init($0) }
    }
  }

  var swimMessage: SWIM.Message {
    let members = updates.map(\.member)
    switch kind {
    case .pingRequest: return .pingRequest(seq: seq, target: NodeID(target), updates: members)
    case .ack: return .ack(seq: seq, target: NodeID(target), updates: members)
    default: return .ping(seq: seq, updates: members, fullSync: fullSync)
    }
  }
}
