import CairnCluster
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// The SWIM state machine driven by hand: exact messages, exact times.
@Suite struct SWIMTests {
  let peers: [NodeID: String] = ["a": "a:1", "b": "b:1", "c": "c:1", "d": "d:1"]
  let second: Int64 = 1_000_000_000

  func node(_ id: NodeID, incarnation: UInt64 = 1) -> SWIM {
    SWIM(me: id, address: peers[id]!, incarnation: incarnation, peers: peers, seed: 7, now: 0)
  }

  func sends(_ actions: [SWIM.Action]) -> [(NodeID, SWIM.Message)] {
    actions.compactMap { if case .send(let to, let m) = $0 { return (to, m) } else { return nil } }
  }

  /// Ticks until the node sends its first probe; returns the target and sequence number.
  func firstProbe(_ n: inout SWIM) -> (NodeID, UInt64, Int64) {
    var t: Int64 = 0
    while t < 2 * second {
      for (to, m) in sends(n.tick(now: t)) {
        if case .ping(let seq, _, _) = m { return (to, seq, t) }
      }
      t += second / 100
    }
    Issue.record("no probe within two periods")
    return ("", 0, 0)
  }

  /// A graceful stop: the leaving node tells every live member of its death directly,
  /// they take it at once (dead beats alive at one incarnation), and it then neither
  /// probes, answers nor refutes; its restart (a later incarnation) is alive again.
  @Test func aLeavingNodeIsDeadEverywhereAtOnceAndStaysSo() {
    var b = node("b")
    var c = node("c")
    let told = sends(b.leave(now: second))
    #expect(Set(told.map(\.0)) == ["a", "c", "d"], "every live member but b itself")
    #expect(b.myself.status == .dead && b.hasLeft)
    for (to, message) in told where to == "c" { _ = c.receive(message, from: "b", now: second) }
    #expect(c.members["b"]?.status == .dead && c.members["b"]?.incarnation == 1)
    // Told it is dead, it does not refute; it sends nothing more.
    #expect(b.receive(.ping(seq: 9, updates: [c.members["b"]!], fullSync: false), from: "c", now: 2 * second).isEmpty)
    #expect(b.tick(now: 10 * second).isEmpty && b.myself.status == .dead)
    let restarted = node("b", incarnation: 2)
    _ = c.receive(.ping(seq: 2, updates: [restarted.myself], fullSync: false), from: "b", now: 11 * second)
    #expect(c.members["b"]?.status == .alive)
  }

  @Test func ackedProbeKeepsTargetAlive() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let (target, seq, t) = firstProbe(&a)
    _ = a.receive(.ack(seq: seq, target: target, updates: []), from: target, now: t + second / 10)
    _ = a.tick(now: t + 2 * second)
    #expect(a.members[target]?.status == .alive)
  }

  /// Ticks every 10 ms from `from` (exclusive) to `to` (inclusive), as the node's driver
  /// does: a longer gap is a stall, which postpones every deadline.
  func advance(_ n: inout SWIM, from: Int64, to: Int64) -> [SWIM.Action] {
    var actions: [SWIM.Action] = []
    var t = from
    while t < to {
      t = min(to, t + second / 100)
      actions += n.tick(now: t)
    }
    return actions
  }

  func isSuspicion(_ a: SWIM.Action, of id: NodeID) -> Bool {
    if case .changed(let m) = a { return m.id == id && m.status == .suspect }
    return false
  }

  @Test func silentTargetGetsIndirectProbesThenSuspicionThenDeath() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let (target, _, t) = firstProbe(&a)
    let afterTimeout = sends(advance(&a, from: t, to: t + a.config.probeTimeout))
    let helpers = afterTimeout.filter { if case .pingRequest(_, target, _) = $0.1 { return true } else { return false } }
    #expect(helpers.count == 2, "the other two members are asked to probe \(target)")
    #expect(!helpers.contains { $0.0 == target })
    let end = advance(&a, from: t + a.config.probeTimeout, to: t + a.config.probeInterval)
    #expect(end.contains { isSuspicion($0, of: target) })
    _ = advance(&a, from: t + a.config.probeInterval, to: t + a.config.probeInterval + a.config.suspicionTimeout)
    #expect(a.members[target]?.status == .dead)
    #expect(!a.liveMembers.contains(target))
  }

  /// Lifeguard's buddy system: the member a node starts to suspect is told so at once, and
  /// a live one refutes on that very ping's ack.
  @Test func aSuspectHearsOfItAtOnceAndRefutes() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let (target, _, t) = firstProbe(&a)
    let end = advance(&a, from: t, to: t + a.config.probeInterval)
    let told = sends(end).filter { to, m in
      if case .ping(_, let updates, _) = m { return to == target && updates.contains { $0.id == target && $0.status == .suspect } }
      return false
    }
    #expect(told.count == 1, "\(sends(end))")
    guard let (_, ping) = told.first, case .ping(let seq, _, _) = ping else { return }
    var b = node(target, incarnation: 0)
    let answer = sends(b.receive(ping, from: "a", now: t + a.config.probeInterval + 1))
    #expect(b.myself.incarnation == 1 && b.healthScore == 1, "refuting tells b it may be the slow one")
    guard let (_, ack) = answer.first else { Issue.record("no ack"); return }
    if case .ack(let s, _, _) = ack { #expect(s == seq) }
    _ = a.receive(ack, from: target, now: t + a.config.probeInterval + 2)
    #expect(a.members[target]?.status == .alive && a.members[target]?.incarnation == 1)
  }

  /// A node that did not run (a tick far later than asked for) blames nobody for the
  /// answers it was not there to take: deadlines move by the stall, and its health drops.
  @Test func aStarvedNodeBlamesNobody() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let (target, seq, t) = firstProbe(&a)
    let stalled = a.tick(now: t + 5 * second)
    #expect(!stalled.contains { isSuspicion($0, of: target) }, "\(stalled)")
    #expect(a.healthScore == 1)
    // The ack that waited in the queue during the stall is taken now.
    _ = a.receive(.ack(seq: seq, target: target, updates: []), from: target, now: t + 5 * second + 1)
    let probeEnd = t + 5 * second + a.config.probeInterval
    let after = advance(&a, from: t + 5 * second, to: probeEnd + second / 50)
    #expect(!after.contains { isSuspicion($0, of: target) } && a.members[target]?.status == .alive)
    // Suspicions wait out a stall too: a member suspected before it is not declared dead
    // the moment the node runs again.
    var c = SWIM(me: "c", address: "c:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let rumour = Member(id: "b", address: "b:1", incarnation: 0, status: .suspect)
    _ = c.receive(.ping(seq: 1, updates: [rumour], fullSync: false), from: "d", now: 10)
    _ = c.tick(now: 10 + 10 * second)
    #expect(c.members["b"]?.status == .suspect)
  }

  /// Each probe left unanswered stretches the next probe's timeout; answered ones shrink it
  /// back. A node that is itself slow gives its members more time before it accuses them.
  @Test func unansweredProbesStretchTheNextOnes() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    var t: Int64 = 0
    var timeouts: [Int64] = []
    // No probe is answered: each probe's ping-requests go out later than the one before.
    // (Each suspected member refutes at once, by gossip, so that there are always live
    // members to ask.)
    for _ in 0..<3 {
      var startedAt: Int64?
      var askedAt: Int64?
      while askedAt == nil && t < 100 * second {
        t += second / 100
        let actions = a.tick(now: t)
        for (_, m) in sends(actions) {
          if case .ping = m, startedAt == nil { startedAt = t }
          if case .pingRequest = m, let s = startedAt, askedAt == nil { askedAt = t - s }
        }
        for case .changed(let m) in actions where m.status == .suspect {
          let refutation = Member(id: m.id, address: m.address, incarnation: m.incarnation + 1, status: .alive)
          _ = a.receive(.ping(seq: 0, updates: [refutation], fullSync: false), from: m.id, now: t)
        }
      }
      guard let askedAt else {
        Issue.record("no ping-request within 100 s")
        return
      }
      timeouts.append(askedAt)
    }
    #expect(timeouts[0] == a.config.probeTimeout)
    #expect(timeouts[1] > timeouts[0] && timeouts[2] > timeouts[1], "\(timeouts)")
    #expect(a.healthScore >= 2)
    // Answered probes bring it back down.
    let end = t + 30 * second
    while t < end {
      t += second / 100
      for (to, m) in sends(a.tick(now: t)) {
        if case .ping(let seq, _, _) = m { _ = a.receive(.ack(seq: seq, target: to, updates: []), from: to, now: t) }
      }
    }
    #expect(a.healthScore == 0)
  }

  @Test func indirectAckArrivesThroughHelper() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let (target, seq, t) = firstProbe(&a)
    let requests = sends(a.tick(now: t + a.config.probeTimeout))
    guard let (helperID, request) = requests.first else { Issue.record("no ping request"); return }
    var helper = node(helperID)
    // The helper pings the target on a's behalf, the target answers, the helper relays.
    let relayPing = sends(helper.receive(request, from: "a", now: t + 1))
    guard case .ping(let helperSeq, _, _)? = relayPing.first?.1 else { Issue.record("helper did not ping"); return }
    #expect(relayPing.first?.0 == target)
    let relayed = sends(helper.receive(.ack(seq: helperSeq, target: target, updates: []), from: target, now: t + 2))
    #expect(relayed.count == 1 && relayed[0].0 == "a")
    if case .ack(let s, let tg, _) = relayed[0].1 { #expect(s == seq && tg == target) }
    _ = a.receive(relayed[0].1, from: helperID, now: t + 3)
    _ = a.tick(now: t + a.config.probeInterval)
    #expect(a.members[target]?.status == .alive)
  }

  @Test func suspectedMemberRefutesWithHigherIncarnation() {
    var b = node("b", incarnation: 5)
    let accusation = Member(id: "b", address: "b:1", incarnation: 5, status: .suspect)
    let actions = b.receive(.ping(seq: 1, updates: [accusation], fullSync: false), from: "a", now: 10)
    #expect(b.myself.incarnation == 6 && b.myself.status == .alive)
    // The refutation rides on the ack.
    guard case .ack(_, _, let updates)? = sends(actions).first?.1 else { Issue.record("no ack"); return }
    #expect(updates.contains(b.myself))
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    _ = a.receive(.ping(seq: 9, updates: [accusation], fullSync: false), from: "c", now: 11)
    #expect(a.members["b"]?.status == .suspect)
    _ = a.receive(.ack(seq: 99, target: "b", updates: [b.myself]), from: "b", now: 12)
    #expect(a.members["b"] == b.myself)
  }

  @Test func precedence() {
    let alive5 = Member(id: "x", address: "", incarnation: 5, status: .alive)
    var suspect5 = alive5
    suspect5.status = .suspect
    var dead5 = alive5
    dead5.status = .dead
    var alive6 = alive5
    alive6.incarnation = 6
    #expect(suspect5.supersedes(alive5) && dead5.supersedes(suspect5))
    #expect(!alive5.supersedes(suspect5) && alive6.supersedes(dead5))
  }

  @Test func membersNotInTheConfigAreIgnored() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    _ = a.receive(.ping(seq: 1, updates: [Member(id: "stranger", address: "x", incarnation: 9, status: .alive)], fullSync: true), from: "b", now: 1)
    #expect(a.members["stranger"] == nil)
  }
}

/// Seeded simulations: thousands of protocol steps with loss, delay, partitions and
/// crashes, then a healed network. A failure names the seed; replay one with
/// CAIRN_SIM_SEED=<seed> swift test --filter MembershipSimulationTests (CAIRN_SIM_SEEDS=<n>
/// runs seeds 1...n instead of the 200 CI runs).
@Suite struct MembershipSimulationTests {
  static var seeds: [UInt64] {
    let env = ProcessInfo.processInfo.environment
    if let s = env["CAIRN_SIM_SEED"], let seed = UInt64(s) { return [seed] }
    return Array(1...(env["CAIRN_SIM_SEEDS"].flatMap { UInt64($0) } ?? 200))
  }

  @Test(arguments: seeds)
  func convergesAfterFaults(seed: UInt64) {
    var sim = MembershipSimulation(nodeCount: 5 + Int(seed % 4), seed: seed)
    let second: Int64 = 1_000_000_000
    sim.run(faultsUntil: 40 * second, until: 80 * second)
    let problems = sim.violations()
    #expect(problems.isEmpty, "seed \(seed): \(problems.joined(separator: "; "))\nfaults:\n\(sim.timeline)")
    #expect(sim.steps > 2_000)
    #expect(sim.timeline.contains("crash"), "seed \(seed) crashed no node")
  }

  /// A quarter of all messages lost and a fault every second on average.
  @Test(arguments: seeds.prefix(50))
  func convergesAfterHarshFaults(seed: UInt64) {
    var faults = MembershipSimulation.Faults()
    faults.lossRate = 0.25
    faults.meanEventInterval = 1_000_000_000
    faults.permanentCrashes = 2
    var sim = MembershipSimulation(nodeCount: 7 + Int(seed % 5), seed: seed, faults: faults)
    let second: Int64 = 1_000_000_000
    sim.run(faultsUntil: 60 * second, until: 120 * second)
    let problems = sim.violations()
    #expect(problems.isEmpty, "seed \(seed): \(problems.joined(separator: "; "))\nfaults:\n\(sim.timeline)")
  }

  /// The checker is not blind: right after faults stop, before the cluster has had time
  /// to heal, it reports what is still wrong (here, a crashed node nobody has declared
  /// dead yet, or a partitioned one still suspected).
  @Test func checkerSeesAnUnhealedCluster() {
    var faults = MembershipSimulation.Faults()
    faults.meanEventInterval = 500_000_000
    var found = 0
    for seed in UInt64(100)..<110 {
      var sim = MembershipSimulation(nodeCount: 6, seed: seed, faults: faults)
      sim.run(faultsUntil: 10_000_000_000, until: 10_000_000_000)
      if !sim.violations().isEmpty { found += 1 }
    }
    #expect(found > 0)
  }

  @Test func sameSeedSameRun() {
    var a = MembershipSimulation(nodeCount: 5, seed: 42)
    var b = MembershipSimulation(nodeCount: 5, seed: 42)
    a.run(faultsUntil: 20_000_000_000, until: 30_000_000_000)
    b.run(faultsUntil: 20_000_000_000, until: 30_000_000_000)
    #expect(a.timeline == b.timeline)
    for id in a.ids { #expect(a.view(of: id)?.members == b.view(of: id)?.members) }
  }
}

/// Numbers a peer sends: out of range is ignored, never a trap (issue 15, finding 1).
@Suite struct SWIMBoundsTests {
  let peers: [NodeID: String] = ["a": "a:1", "b": "b:1", "c": "c:1"]

  /// A PING reporting this node DEAD at incarnation 2^64 − 1 crashed it when it refuted
  /// (`+ 1`), and again after every restart. Now such an update is no update.
  @Test func anIncarnationBeyondTheBoundIsIgnored() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 5, peers: peers, seed: 1, now: 0)
    for status in [Member.Status.dead, .suspect] {
      let lie = Member(id: "a", address: "a:1", incarnation: .max, status: status)
      let actions = a.receive(.ping(seq: 1, updates: [lie], fullSync: false), from: "b", now: 0)
      #expect(!actions.contains { if case .changed = $0 { true } else { false } })
      let aboutC = Member(id: "c", address: "c:1", incarnation: SWIM.maxIncarnation + 1, status: .dead)
      _ = a.receive(.ping(seq: 2, updates: [aboutC], fullSync: false), from: "b", now: 0)
      #expect(a.members["c"]?.status == .alive && a.members["a"]?.incarnation == 5)
    }
    // At the bound itself: ignored (a refutation would pass the bound, where the others
    // would ignore it and keep the suspicion for good); just below, the refutation fits.
    let atBound = Member(id: "a", address: "a:1", incarnation: SWIM.maxIncarnation, status: .suspect)
    _ = a.receive(.ping(seq: 3, updates: [atBound], fullSync: false), from: "b", now: 0)
    #expect(a.members["a"]?.incarnation == 5)
    let below = Member(id: "a", address: "a:1", incarnation: SWIM.maxIncarnation - 1, status: .suspect)
    _ = a.receive(.ping(seq: 4, updates: [below], fullSync: false), from: "b", now: 0)
    #expect(a.members["a"]?.incarnation == SWIM.maxIncarnation && a.members["a"]?.status == .alive)
    var b = SWIM(me: "b", address: "b:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    let refutation = Member(id: "a", address: "a:1", incarnation: SWIM.maxIncarnation, status: .alive)
    _ = b.receive(.ping(seq: 1, updates: [below], fullSync: false), from: "c", now: 0)
    _ = b.receive(.ping(seq: 2, updates: [refutation], fullSync: false), from: "a", now: 0)
    #expect(b.members["a"]?.status == .alive, "the others take the refutation")
    let atBoundAboutA = Member(id: "a", address: "a:1", incarnation: SWIM.maxIncarnation, status: .dead)
    _ = b.receive(.ping(seq: 3, updates: [atBoundAboutA], fullSync: false), from: "c", now: 0)
    #expect(b.members["a"]?.status == .alive, "a death at the bound, which a could never refute, is not taken")
  }

  /// Found by fuzzing (Tests/Fuzz/corpus/swim): only members are answered, and a
  /// ping-request is relayed only to another member, at most maxRelays at once.
  @Test func strangersAndBadPingRequestsGetNothing() {
    var a = SWIM(me: "a", address: "a:1", incarnation: 1, peers: peers, seed: 1, now: 0)
    #expect(a.receive(.ping(seq: 1, updates: [], fullSync: false), from: "stranger", now: 0).isEmpty)
    #expect(a.receive(.ping(seq: 1, updates: [], fullSync: false), from: "a", now: 0).isEmpty)
    for target: NodeID in ["stranger", "a", "b"] {
      #expect(a.receive(.pingRequest(seq: 1, target: target, updates: []), from: "b", now: 0).isEmpty, "target \(target)")
    }
    var relayed = 0
    for i in 0..<(SWIM.maxRelays + 10) {
      relayed += a.receive(.pingRequest(seq: UInt64(i), target: "c", updates: []), from: "b", now: 0).count
    }
    #expect(relayed == SWIM.maxRelays)
  }
}

@Suite struct ClusterConfigBoundsTests {
  @Test func anEpochBeyondTheBoundIsRefused() throws {
    let c = try ClusterConfig(me: "a", peers: ["a": "a:1", "b": "b:1"])
    #expect(throws: ContentError.self) { _ = try c.adopting(peers: c.peers, epoch: .max) }
    let last = try c.adopting(peers: c.peers, epoch: ClusterConfig.maxEpoch)
    #expect(throws: ContentError.self) { _ = try last.changing(add: ["c": "c:1"], remove: []) }
  }
}
