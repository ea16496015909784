import CairnCluster
import CairnCore
import Foundation
import Testing

@Suite struct RingTests {
  /// One million random digests: the busiest node holds at most 1.10× the average for
  /// every cluster size from 3 to 50, and adding node N+1 moves at most 1.1/(N+1) of the
  /// keys. Keys are counted by sorting them once and sweeping each ring's arcs.
  @Test(.timeLimit(.minutes(5))) func loadBalanceAndMovementOverAMillionDigests() {
    var rng = SplitMix64(seed: 20261129)
    let keys = (0..<1_000_000).map { _ in rng.next() }.sorted()
    var worstLoad = 0.0
    var worstMove = 0.0
    var previous: [UInt16]?
    for n in 3...51 {
      let nodes = (1...n).map { NodeID("node-\($0)") }
      let ring = Ring(nodes: nodes)
      let owner = primaryOwners(ring, sortedKeys: keys)
      if n <= 50 {
        var counts = [Int](repeating: 0, count: n)
        for o in owner { counts[Int(o)] += 1 }
        let load = Double(counts.max()!) / (Double(keys.count) / Double(n))
        worstLoad = max(worstLoad, load)
        #expect(load <= 1.10, "\(n) nodes: max/avg load \(load)")
      }
      if let previous {
        // Owners are indices into each ring's sorted node list; translate the old ring's
        // indices into the new ring's before comparing.
        let after = nodes.sorted()
        let translate = (1...(n - 1)).map { NodeID("node-\($0)") }.sorted().map { UInt16(after.firstIndex(of: $0)!) }
        var moved = 0
        for i in keys.indices where translate[Int(previous[i])] != owner[i] { moved += 1 }
        let fraction = Double(moved) / Double(keys.count)
        worstMove = max(worstMove, fraction * Double(n))
        #expect(fraction <= 1.1 / Double(n), "adding node \(n) moved \(fraction) of the keys")
      }
      previous = owner
    }
    print("ring quality: worst max/avg load \(worstLoad), worst moved fraction × (N+1) \(worstMove)")
  }

  /// The primary owner (as an index into ring.nodes) of each sorted key, by sweeping the
  /// ring's arcs along the sorted keys.
  func primaryOwners(_ ring: Ring, sortedKeys keys: [UInt64]) -> [UInt16] {
    let index = Dictionary(uniqueKeysWithValues: ring.nodes.enumerated().map { ($1, UInt16($0)) })
    var out = [UInt16](repeating: 0, count: keys.count)
    var arcs: [(end: UInt64, owner: UInt16)] = []
    ring.forEachArc { _, end, owner in arcs.append((end, index[owner]!)) }
    // Keys after the last point wrap to the first arc.
    var a = 0
    for (i, k) in keys.enumerated() {
      while a < arcs.count && arcs[a].end < k { a += 1 }
      out[i] = a < arcs.count ? arcs[a].owner : arcs[0].owner
    }
    return out
  }

  @Test func replicaSetsAreDistinctAndStable() {
    let ring = Ring(nodes: ["a", "b", "c", "d", "e"])
    let shuffled = Ring(nodes: ["e", "c", "a", "d", "b"])
    for i in 0..<200 {
      let d = Digest.of(Data("blob \(i)".utf8))
      let r = ring.replicas(of: d, count: 3)
      #expect(r.count == 3 && Set(r).count == 3)
      #expect(shuffled.replicas(of: d, count: 3) == r, "placement must not depend on member order")
      #expect(r.first == ring.primary(at: Ring.position(of: d)))
    }
    #expect(ring.replicas(of: Digest.of(Data()), count: 9).count == 5)
  }

  @Test func refOwnerIsFirstLiveNodeOfItsList() {
    let ring = Ring(nodes: ["a", "b", "c"])
    for i in 0..<100 {
      let ref = "default/1/layer-\(i)"
      let list = ring.preferenceList(at: Ring.position(ofRef: ref), count: 3)
      #expect(ring.owner(ofRef: ref) { _ in true } == list[0])
      #expect(ring.owner(ofRef: ref) { $0 != list[0] } == list[1])
      #expect(ring.owner(ofRef: ref) { $0 == list[2] } == list[2])
      #expect(ring.owner(ofRef: ref) { _ in false } == nil)
    }
  }

  @Test func ownershipSharesSumToOne() {
    let shares = Ring(nodes: ["a", "b", "c", "d"]).ownership()
    #expect(abs(shares.values.reduce(0, +) - 1) < 1e-9)
    #expect(shares.values.allSatisfy { $0 > 0.2 && $0 < 0.3 })
  }
}
