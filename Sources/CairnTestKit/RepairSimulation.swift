import CairnCluster
import CairnCore
import Foundation

/// Blob placement, hinted handoff, anti-entropy and tombstones of a whole cluster in one
/// process, driven by a seeded RNG through crashes, wiped disks and partitions. It runs
/// the same pure functions a node runs (AntiEntropy, TombstoneLedger, the ring); the
/// transport is a function call that fails when the two nodes cannot talk. The same seed
/// replays the same run.
///
/// The history records every acknowledged write and every Delete; `check()` holds the
/// cluster, once healed and quiet, to: every digest whose last acknowledged event is a
/// write is on all R replicas; every digest deleted after its last write attempt is on no
/// node; no tombstone is left (each was applied by every replica, then forgotten).
public struct RepairSimulation {
  public struct Node {
    public var blobs: [Digest: Int64] = [:]  // digest → creation time
    public var ledger = TombstoneLedger()
    public var hints: [NodeID: Set<Digest>] = [:]
    public var up = true
  }

  public let seed: UInt64
  public let ids: [NodeID]
  public let writeQuorum: Int
  public private(set) var nodes: [NodeID: Node] = [:]
  public private(set) var log: [String] = []
  public private(set) var stats: [String: Int] = [:]
  private var views: [NodeID: ClusterView] = [:]
  private var rng: SplitMix64
  private var clock: Int64 = 1
  private var group: [NodeID: Int] = [:]  // partition side; nodes on different sides cannot talk
  private let pool: [Digest]
  private var lastAckedWrite: [Digest: Int64] = [:]
  private var lastWriteAttempt: [Digest: Int64] = [:]
  private var lastDelete: [Digest: Int64] = [:]
  private var wiped = false
  /// Tombstone retention, in ticks. Outages in a run are far shorter (the operating rule:
  /// a node down longer rejoins empty); settling advances the clock past it so that
  /// every tombstone can be forgotten.
  public let retention: Int64 = 100_000

  public init(seed: UInt64, nodeCount: Int = 5, replicas: Int = 3, writeQuorum: Int = 2, digests: Int = 40) throws {
    self.seed = seed
    rng = SplitMix64(seed: seed)
    ids = (1...nodeCount).map { NodeID("n\($0)") }
    self.writeQuorum = writeQuorum
    let peers = Dictionary(uniqueKeysWithValues: ids.map { ($0, "sim://\($0)") })
    for id in ids {
      let config = try ClusterConfig(me: id, peers: peers, replicas: replicas, writeQuorum: writeQuorum, vnodesPerNode: 64)
      views[id] = ClusterView(config: config, members: [:], version: 0)
      nodes[id] = Node()
      group[id] = 0
    }
    pool = (0..<digests).map { Digest.of(Array("blob \($0)".utf8)) }
  }

  private func replicas(_ d: Digest) -> [NodeID] { views[ids[0]]!.replicas(of: d) }

  private func canTalk(_ a: NodeID, _ b: NodeID) -> Bool {
    nodes[a]!.up && nodes[b]!.up && group[a] == group[b]
  }

  private mutating func tick() -> Int64 {
    clock += 1
    return clock
  }

  private mutating func pick<T>(_ items: [T]) -> T? {
    items.isEmpty ? nil : items[Int(rng.next() % UInt64(items.count))]
  }

  private mutating func note(_ s: String) {
    log.append("t=\(clock) \(s)")
    stats[String(s.prefix { $0 != " " }), default: 0] += 1
  }

  /// Whether a replica takes a copy created at `created` (a tombstone at or after it refuses).
  private mutating func accept(_ d: Digest, created: Int64, on n: NodeID) -> Bool {
    if let t = nodes[n]!.ledger.deletedAt(d), t >= created { return false }
    if let have = nodes[n]!.blobs[d], have >= created { return true }
    nodes[n]!.blobs[d] = created
    return true
  }

  // MARK: Operations

  /// A client commit through one of the digest's live replicas (its owner stages nothing
  /// elsewhere): stored on every replica it can reach, acknowledged at the write quorum,
  /// hints for the others.
  public mutating func write() {
    guard let d = pick(pool) else { return }
    let reps = replicas(d)
    guard let coordinator = pick(reps.filter { nodes[$0]!.up }) else { return }
    let created = tick()
    lastWriteAttempt[d] = created
    var acks = 0
    for r in reps {
      if canTalk(coordinator, r) || r == coordinator {
        if accept(d, created: created, on: r) { acks += 1 }
      } else {
        nodes[coordinator]!.hints[r, default: []].insert(d)
      }
    }
    if acks >= writeQuorum {
      lastAckedWrite[d] = created
      note("write \(d.hex.prefix(8)) via \(coordinator): acknowledged by \(acks)")
    } else {
      note("write-failed \(d.hex.prefix(8)) via \(coordinator): \(acks) < W")
    }
  }

  /// A Delete through any live node: every node it reaches that holds a copy records a
  /// tombstone (just after its copy's creation time if that is later) and drops the copy.
  /// It succeeds if some node held one (NOT_FOUND otherwise, and then it deletes nothing).
  public mutating func delete() {
    guard let d = pick(pool), let coordinator = pick(ids.filter { nodes[$0]!.up }) else { return }
    let at = tick()
    var found = false
    for n in ids where n == coordinator || canTalk(coordinator, n) {
      guard let created = nodes[n]!.blobs[d] else { continue }
      let t = max(at, created + 1)
      nodes[n]!.ledger.record(d, at: t)
      nodes[n]!.blobs[d] = nil
      lastDelete[d] = max(lastDelete[d] ?? 0, t)
      found = true
    }
    note(found ? "delete \(d.hex.prefix(8)) via \(coordinator)" : "delete-notfound \(d.hex.prefix(8)) via \(coordinator)")
  }

  /// One anti-entropy exchange: `a` compares with `b` and pulls what it lacks (the node's
  /// `compare(with:)`, over a function call).
  public mutating func antiEntropy(_ a: NodeID, _ b: NodeID) {
    guard a != b, canTalk(a, b) else { return }
    let view = views[a]!
    let mine = inventory(a).values.filter { AntiEntropy.shared($0.digest, a, b, in: view) }
    let theirsAll = inventory(b).values.filter { AntiEntropy.shared($0.digest, a, b, in: view) }
    let differing = Set(AntiEntropy.differingBuckets(AntiEntropy.summary(mine), AntiEntropy.summary(theirsAll)))
    let theirs = Dictionary(uniqueKeysWithValues: theirsAll.filter { differing.contains(AntiEntropy.bucket(of: $0.digest)) }.map { ($0.digest, $0) })
    nodes[a]!.ledger.confirm(
      AntiEntropy.confirmedTombstones(mine: mine, theirs: theirs, differing: differing, now: clock, retention: retention), by: b)
    let mineThere = Dictionary(uniqueKeysWithValues: mine.filter { differing.contains(AntiEntropy.bucket(of: $0.digest)) }.map { ($0.digest, $0) })
    // Sorted: dictionaries iterate in a per-instance order, and the log must replay exactly.
    let theirsSorted = theirs.values.sorted { $0.digest.hex < $1.digest.hex }
    for action in AntiEntropy.plan(mine: mineThere, theirs: theirsSorted, now: clock, retention: retention) {
      switch action {
      case .pull(let d, _):
        if let created = nodes[b]!.blobs[d], accept(d, created: created, on: a) { note("pull \(d.hex.prefix(8)) \(a)<-\(b)") }
      case .delete(let d, let at):
        nodes[a]!.ledger.record(d, at: at)
        if let c = nodes[a]!.blobs[d], c <= at { nodes[a]!.blobs[d] = nil }
        note("apply-tombstone \(d.hex.prefix(8)) on \(a) from \(b)")
      case .recordTombstone(let d, let at):
        nodes[a]!.ledger.record(d, at: at)
      }
    }
  }

  /// `n` delivers the hints whose targets it can reach (a refused one is dropped, as is one
  /// whose blob `n` no longer holds).
  public mutating func deliverHints(_ n: NodeID) {
    for target in nodes[n]!.hints.keys.sorted() where canTalk(n, target) {
      for d in nodes[n]!.hints[target]!.sorted(by: { $0.hex < $1.hex }) {
        if let created = nodes[n]!.blobs[d] { _ = accept(d, created: created, on: target) }
        nodes[n]!.hints[target]!.remove(d)
        note("hint \(d.hex.prefix(8)) \(n)->\(target)")
      }
    }
  }

  public mutating func collectTombstones(_ n: NodeID) {
    guard nodes[n]!.up else { return }
    let gone = Set(nodes[n]!.ledger.collectable(now: clock, retention: retention, view: views[n]!))
      .union(nodes[n]!.ledger.superseded(byCopiesCreatedAt: nodes[n]!.blobs))
    for d in gone { nodes[n]!.ledger.remove(d) }
  }

  private func inventory(_ n: NodeID) -> [Digest: RepairEntry] {
    var out: [Digest: RepairEntry] = [:]
    for (d, c) in nodes[n]!.blobs { out[d] = RepairEntry(digest: d, state: .present, at: c) }
    for (d, s) in nodes[n]!.ledger.stones {
      let t = RepairEntry(digest: d, state: .deleted, at: s.deletedAt)
      out[d] = out[d].map { RepairEntry.newer($0, t) } ?? t
    }
    return out
  }

  // MARK: Faults and the run

  /// `steps` random steps of writes, deletes, crashes, restarts, one wiped disk at most,
  /// partitions and repair; then everything heals and repair runs until nothing changes.
  public mutating func run(steps: Int) {
    for _ in 0..<steps {
      let roll = rng.next() % 100
      switch roll {
      case 0..<35: write()
      case 35..<45: delete()
      case 45..<50:
        if let n = pick(ids.filter { nodes[$0]!.up }), ids.filter({ !nodes[$0]!.up }).count < 2 {
          nodes[n]!.up = false
          note("crash \(n)")
        }
      case 50..<51:
        // A lost disk: one per run, and only once every acknowledged blob has two copies
        // (W = 2 promises nothing beyond one lost copy).
        if !wiped, let n = pick(ids), everyAckedBlobHasTwoCopies(), everyDeletionHasTwoTombstones() {
          wiped = true
          nodes[n] = Node(up: nodes[n]!.up)
          note("wipe \(n)")
        }
      case 51..<58:
        if let n = pick(ids.filter { !nodes[$0]!.up }) {
          nodes[n]!.up = true
          note("restart \(n)")
        }
      case 58..<61:
        for id in ids { group[id] = Int(rng.next() % 2) }
        note("partition \(ids.map { "\($0):\(group[$0]!)" }.joined(separator: " "))")
      case 61..<64:
        for id in ids { group[id] = 0 }
        note("heal")
      case 64..<85:
        if let a = pick(ids), let b = pick(ids) { antiEntropy(a, b) }
      case 85..<95:
        if let n = pick(ids) { deliverHints(n) }
      default:
        if let n = pick(ids) { collectTombstones(n) }
      }
    }
    for id in ids {
      nodes[id]!.up = true
      group[id] = 0
    }
    note("heal-all")
  }

  /// Repair passes on the healed cluster until a pass changes nothing; returns the passes.
  public mutating func settle(maxPasses: Int = 20) -> Int {
    for pass in 1...maxPasses {
      if pass == 3 { clock += retention }  // first repair everything, then let tombstones age
      let before = fingerprint()
      for a in ids {
        deliverHints(a)
        for b in ids { antiEntropy(a, b) }
      }
      for n in ids { collectTombstones(n) }
      if fingerprint() == before && pass > 3 { return pass }
    }
    return maxPasses + 1
  }

  private func fingerprint() -> String {
    ids.map { id in
      let n = nodes[id]!
      return "\(n.blobs.keys.map(\.hex).sorted())|\(n.ledger.stones.keys.map(\.hex).sorted())|\(n.hints.values.map(\.count).reduce(0, +))"
    }.joined(separator: "/")
  }

  private func everyAckedBlobHasTwoCopies() -> Bool {
    lastAckedWrite.keys.allSatisfy { d in
      (lastDelete[d] ?? 0) > lastAckedWrite[d]! || ids.filter { nodes[$0]!.blobs[d] != nil }.count >= 2
    }
  }

  /// A Delete is acknowledged by one copy's tombstone; losing the only one before repair
  /// spread it would lose the Delete (documented), so the one wiped disk waits for two.
  private func everyDeletionHasTwoTombstones() -> Bool {
    lastDelete.keys.allSatisfy { d in
      lastDelete[d]! < (lastWriteAttempt[d] ?? 0) || ids.filter { nodes[$0]!.ledger.deletedAt(d) != nil }.count >= 2
        || ids.allSatisfy { nodes[$0]!.blobs[d] == nil }
    }
  }

  /// Violations of the invariants; empty when the run is correct.
  public func check() -> [String] {
    var problems: [String] = []
    for d in pool {
      let holders = ids.filter { nodes[$0]!.blobs[d] != nil }
      if let w = lastAckedWrite[d], w > (lastDelete[d] ?? 0) {
        let missing = replicas(d).filter { nodes[$0]!.blobs[d] == nil }
        if !missing.isEmpty {
          problems.append("\(d.hex.prefix(8)) acknowledged at t=\(w), not deleted since, missing on \(missing)")
        }
      }
      if let t = lastDelete[d], t > (lastWriteAttempt[d] ?? 0), !holders.isEmpty {
        problems.append("\(d.hex.prefix(8)) deleted at t=\(t) after its last write, still on \(holders)")
      }
    }
    for id in ids where !nodes[id]!.ledger.stones.isEmpty {
      problems.append("\(id) still holds \(nodes[id]!.ledger.stones.count) tombstones after repair settled")
    }
    return problems
  }
}
