import CairnCluster
import CairnTestKit
import Foundation
import Testing

/// Hinted handoff, anti-entropy and tombstones through crashes, a wiped disk and
/// partitions, over many seeds. A failure prints its seed; CAIRN_SIM_SEED=N replays one
/// run and prints its event log.
@Suite struct RepairSimulationTests {
  static let seeds: [UInt64] = {
    if let s = ProcessInfo.processInfo.environment["CAIRN_SIM_SEED"], let seed = UInt64(s) { return [seed] }
    return Array(1...200)
  }()

  @Test func everyAcknowledgedUndeletedBlobReachesRReplicasAndDeletesStick() throws {
    var totals: [String: Int] = [:]
    for seed in Self.seeds {
      var sim = try RepairSimulation(seed: seed)
      sim.run(steps: 400)
      let passes = sim.settle()
      let problems = sim.check()
      if passes > 20 { Issue.record("seed \(seed): repair did not settle in 20 passes (replay: CAIRN_SIM_SEED=\(seed))") }
      if !problems.isEmpty {
        Issue.record("seed \(seed) (replay: CAIRN_SIM_SEED=\(seed)): \(problems.joined(separator: "; "))")
      }
      if Self.seeds.count == 1 { print(sim.log.joined(separator: "\n")) }
      for (k, v) in sim.stats { totals[k, default: 0] += v }
    }
    // The runs must exercise what they claim to: faults happened and repair did work.
    for kind in ["crash", "wipe", "partition", "pull", "apply-tombstone", "hint", "delete", "write"] where Self.seeds.count > 1 {
      #expect(totals[kind, default: 0] > 0, "no \(kind) in any run")
    }
  }

  /// The checker can fail: without the final repair passes, the same runs break the
  /// invariants (replicas missing, deleted copies left on nodes that missed the Delete).
  @Test func withoutRepairTheCheckerFindsViolations() throws {
    var failing = 0
    for seed in UInt64(1)...20 {
      var sim = try RepairSimulation(seed: seed)
      sim.run(steps: 400)
      if !sim.check().isEmpty { failing += 1 }
    }
    #expect(failing >= 15, "only \(failing) of 20 unrepaired runs violate the invariants")
  }

  @Test func theSameSeedReplaysTheSameRun() throws {
    var a = try RepairSimulation(seed: 42)
    var b = try RepairSimulation(seed: 42)
    a.run(steps: 300)
    b.run(steps: 300)
    #expect(a.log == b.log)
  }
}
