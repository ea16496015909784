import CairnCluster

/// Many SWIM nodes in one process on a simulated network: seeded message loss, delay,
/// partitions (symmetric and one-way), crashes and restarts, all on a virtual clock. The
/// same seed replays the same run exactly; a failing test prints it.
public struct MembershipSimulation {
  public struct Faults: Sendable {
    /// Chance that any message is lost while faults are on.
    public var lossRate = 0.05
    /// Message delay bounds, nanoseconds.
    public var minDelay: Int64 = 100_000
    public var maxDelay: Int64 = 30_000_000
    /// Mean time between fault events while faults are on, nanoseconds.
    public var meanEventInterval: Int64 = 3_000_000_000
    /// Nodes that crash and never come back (the rest of the crashes restart).
    public var permanentCrashes = 1
    public init() {}
  }

  public enum Event: Sendable, CustomStringConvertible {
    case crash(NodeID), restart(NodeID), partition([NodeID], [NodeID]), oneWayCut(from: NodeID, to: NodeID), heal

    public var description: String {
      switch self {
      case .crash(let n): "crash \(n)"
      case .restart(let n): "restart \(n)"
      case .partition(let a, let b): "partition \(a) | \(b)"
      case .oneWayCut(let f, let t): "cut \(f) -> \(t)"
      case .heal: "heal"
      }
    }
  }

  private struct Pending {
    var at: Int64
    var order: UInt64
    var kind: Kind
    enum Kind { case deliver(from: NodeID, to: NodeID, SWIM.Message), tick(NodeID) }
  }

  public let seed: UInt64
  public let ids: [NodeID]
  public let config: SWIM.Config
  public let faults: Faults
  public private(set) var now: Int64 = 0
  public private(set) var log: [(Int64, Event)] = []
  /// Violations of "one owner per ref per view" seen during the run.
  public private(set) var ownershipConflicts: [String] = []
  /// Protocol steps taken: ticks and message deliveries processed by live nodes.
  public private(set) var steps = 0

  private var nodes: [NodeID: SWIM] = [:]
  private var crashed: Set<NodeID> = []
  private var permanentlyDead: Set<NodeID> = []
  private var blocked: Set<[NodeID]> = []  // [from, to] pairs that drop messages
  private var faultsOn = true
  private var rng: SplitMix64
  private var queue: [Pending] = []
  private var order: UInt64 = 0
  /// Each node builds its own ring, from the member list in its own order.
  private var rings: [NodeID: Ring] = [:]
  private var owners: [String: [String: NodeID]] = [:]
  /// The view version of each node when its owners were last recorded.
  private var recordedVersion: [NodeID: UInt64] = [:]
  private let tickInterval: Int64

  public init(nodeCount: Int, seed: UInt64, config: SWIM.Config = SWIM.Config(), faults: Faults = Faults()) {
    self.seed = seed
    self.config = config
    self.faults = faults
    rng = SplitMix64(seed: seed)
    ids = (1...nodeCount).map { NodeID("n\($0)") }
    for id in ids {
      var order = ids
      rng.shuffle(&order)
      rings[id] = Ring(nodes: order, vnodesPerNode: 64)
    }
    tickInterval = config.probeInterval / 10
    let peers = Dictionary(uniqueKeysWithValues: ids.map { ($0, "sim://\($0)") })
    for id in ids {
      nodes[id] = SWIM(me: id, address: "sim://\(id)", incarnation: 1, peers: peers, config: config, seed: rng.next(), now: 0)
      schedule(at: Int64(rng.next() % UInt64(tickInterval)), .tick(id))
    }
  }

  private mutating func schedule(at: Int64, _ kind: Pending.Kind) {
    order += 1
    let p = Pending(at: at, order: order, kind: kind)
    // Binary insertion keeps the queue ordered by (time, order): deterministic.
    var lo = 0
    var hi = queue.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if (queue[mid].at, queue[mid].order) < (p.at, p.order) { lo = mid + 1 } else { hi = mid }
    }
    queue.insert(p, at: lo)
  }

  /// Runs with random faults until `faultsUntil`, then heals everything (restarting all
  /// but the permanently crashed nodes) and runs on until `until`.
  public mutating func run(faultsUntil: Int64, until: Int64) {
    var nextFault = randomInterval()
    while let next = queue.first, next.at <= until {
      if faultsOn && nextFault <= next.at && nextFault < faultsUntil {
        now = nextFault
        injectFault()
        nextFault = now + randomInterval()
        continue
      }
      if faultsOn && next.at >= faultsUntil {
        now = faultsUntil
        healAll()
        continue
      }
      queue.removeFirst()
      now = next.at
      switch next.kind {
      case .tick(let id):
        if !crashed.contains(id), var node = nodes[id] {
          steps += 1
          let actions = node.tick(now: now)
          nodes[id] = node
          perform(actions, from: id)
        }
        if !permanentlyDead.contains(id) { schedule(at: now + tickInterval, .tick(id)) }
      case .deliver(let from, let to, let message):
        guard !crashed.contains(to), var node = nodes[to] else { continue }
        steps += 1
        let actions = node.receive(message, from: from, now: now)
        nodes[to] = node
        perform(actions, from: to)
      }
      recordOwnership()
    }
    now = until
  }

  private mutating func randomInterval() -> Int64 {
    Int64(rng.next() % UInt64(2 * faults.meanEventInterval)) + 1
  }

  private mutating func perform(_ actions: [SWIM.Action], from: NodeID) {
    for case .send(let to, let message) in actions {
      if blocked.contains([from, to]) { continue }
      if faultsOn && Double(rng.next() % 1_000_000) / 1_000_000 < faults.lossRate { continue }
      let delay = faults.minDelay + Int64(rng.next() % UInt64(max(1, faults.maxDelay - faults.minDelay)))
      schedule(at: now + delay, .deliver(from: from, to: to, message))
    }
  }

  private mutating func injectFault() {
    let live = ids.filter { !crashed.contains($0) }
    // The permanent crashes come first, so that every run checks that the dead are found.
    let choice = permanentlyDead.count < faults.permanentCrashes ? 0 : rng.next() % 5
    switch choice {
    case 0 where live.count > 2:
      let victim = live[Int(rng.next() % UInt64(live.count))]
      crashed.insert(victim)
      if permanentlyDead.count < faults.permanentCrashes {
        permanentlyDead.insert(victim)
      }
      log.append((now, .crash(victim)))
    case 1:
      let restartable = crashed.subtracting(permanentlyDead).sorted()
      if let n = restartable.first { restart(n) }
    case 2:
      var shuffled = ids
      rng.shuffle(&shuffled)
      let cut = 1 + Int(rng.next() % UInt64(max(1, ids.count / 2)))
      let (a, b) = (Array(shuffled.prefix(cut)).sorted(), Array(shuffled.dropFirst(cut)).sorted())
      for x in a { for y in b { blocked.insert([x, y]); blocked.insert([y, x]) } }
      log.append((now, .partition(a, b)))
    case 3:
      let f = ids[Int(rng.next() % UInt64(ids.count))]
      let t = ids[Int(rng.next() % UInt64(ids.count))]
      if f != t {
        blocked.insert([f, t])
        log.append((now, .oneWayCut(from: f, to: t)))
      }
    default:
      blocked = []
      log.append((now, .heal))
    }
  }

  private mutating func restart(_ id: NodeID) {
    crashed.remove(id)
    let peers = Dictionary(uniqueKeysWithValues: ids.map { ($0, "sim://\($0)") })
    // A restarted node's incarnation comes from its clock, above any it used before.
    nodes[id] = SWIM(me: id, address: "sim://\(id)", incarnation: UInt64(now), peers: peers, config: config, seed: rng.next(), now: now)
    recordedVersion[id] = nil
    log.append((now, .restart(id)))
  }

  private mutating func healAll() {
    faultsOn = false
    blocked = []
    for n in crashed.subtracting(permanentlyDead).sorted() { restart(n) }
    log.append((now, .heal))
  }

  /// Every node derives ref owners from its own ring and view; two nodes with the same
  /// live set (the same view of who may own) must agree on every owner.
  private mutating func recordOwnership() {
    for id in ids where !crashed.contains(id) {
      guard let node = nodes[id], let ring = rings[id], recordedVersion[id] != node.version else { continue }
      recordedVersion[id] = node.version
      let key = node.liveMembers.map(\.name).joined(separator: ",")
      var table: [String: NodeID] = [:]
      for r in 0..<16 {
        let ref = "ref-\(r)"
        table[ref] = ring.owner(ofRef: ref) { node.isLive($0) }
      }
      if let seen = owners[key] {
        if seen != table && ownershipConflicts.count < 10 {
          ownershipConflicts.append("two owners under view [\(key)]: \(id) computes \(table), another node \(seen)")
        }
      } else {
        owners[key] = table
      }
    }
  }

  /// The properties a healed cluster must have; empty when all hold.
  public func violations() -> [String] {
    var out: [String] = []
    let live = ids.filter { !crashed.contains($0) }
    for observer in live {
      let view = nodes[observer]!
      for other in live where other != observer {
        let m = view.members[other]!
        if m.status != .alive { out.append("\(observer) sees live \(other) as \(m.status) (incarnation \(m.incarnation))") }
      }
      for dead in permanentlyDead {
        let m = view.members[dead]!
        if m.status != .dead { out.append("\(observer) sees crashed \(dead) as \(m.status)") }
      }
    }
    return out + ownershipConflicts
  }

  public func view(of id: NodeID) -> SWIM? { nodes[id] }

  public var timeline: String {
    log.map { "  \(Double($0.0) / 1e9)s \($0.1)" }.joined(separator: "\n")
  }
}
