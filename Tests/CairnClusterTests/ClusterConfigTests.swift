import CairnCluster
import CairnCore
import Testing

@Suite struct ClusterConfigTests {
  let three: [NodeID: String] = ["n1": "127.0.0.1:7411", "n2": "127.0.0.1:7412", "n3": "127.0.0.1:7413"]

  @Test func parsesPeersAndDefaults() throws {
    let peers = try ClusterConfig.parsePeers("n1=127.0.0.1:7411, n2=127.0.0.1:7412,n3=127.0.0.1:7413")
    #expect(peers == three)
    let c = try ClusterConfig(me: "n2", peers: peers)
    #expect(c.replicas == 3 && c.writeQuorum == 2)
    let small = try ClusterConfig(me: "n1", peers: ["n1": "a:1"])
    #expect(small.replicas == 1 && small.writeQuorum == 1)
  }

  @Test(arguments: ["", "n1", "n1=", "=a:1", "n1=nohostport", "n1=a:1,n1=a:2"])
  func rejectsBadPeerLists(_ text: String) {
    #expect(throws: ContentError.self) { try ClusterConfig.parsePeers(text) }
  }

  @Test func rejectsInconsistentSettings() {
    #expect(throws: ContentError.self) { try ClusterConfig(me: "n9", peers: three) }
    #expect(throws: ContentError.self) { try ClusterConfig(me: "n1", peers: three, replicas: 4) }
    #expect(throws: ContentError.self) { try ClusterConfig(me: "n1", peers: three, replicas: 2, writeQuorum: 3) }
    #expect(throws: ContentError.self) { try ClusterConfig(me: "n1", peers: three, vnodesPerNode: 0) }
  }

  /// Every node computes the same fingerprint from the same cluster, whatever its own id
  /// and the order it lists peers in; any difference in what placement depends on changes it.
  @Test func fingerprintCoversWhatPlacementDependsOn() throws {
    let base = try ClusterConfig(me: "n1", peers: three).fingerprint
    #expect(try ClusterConfig(me: "n3", peers: three).fingerprint == base)
    #expect(try ClusterConfig(me: "n1", peers: three, replicas: 2).fingerprint != base)
    #expect(try ClusterConfig(me: "n1", peers: three, writeQuorum: 1).fingerprint != base)
    #expect(try ClusterConfig(me: "n1", peers: three, vnodesPerNode: 64).fingerprint != base)
    var moved = three
    moved["n3"] = "127.0.0.1:9999"
    #expect(try ClusterConfig(me: "n1", peers: moved).fingerprint != base)
  }

  /// NOT_FOUND needs R - W + 1 replicas that lack the blob: with R=3, W=2 one replica's
  /// answer (a node cut off with the others out of reach) cannot tell absent from unreachable.
  @Test func absenceNeedsEnoughReplicas() throws {
    let config = try ClusterConfig(me: "n1", peers: three, replicas: 3, writeQuorum: 2)
    let view = ClusterView(config: config, members: [:], version: 1)
    let d = Digest.of(Array("blob".utf8))
    #expect(!view.absenceIsCertain(of: d, lackedBy: []))
    #expect(!view.absenceIsCertain(of: d, lackedBy: ["n1"]))
    #expect(!view.absenceIsCertain(of: d, lackedBy: ["n1", "elsewhere"]))
    #expect(view.absenceIsCertain(of: d, lackedBy: ["n1", "n3"]))
    let w1 = try ClusterConfig(me: "n1", peers: three, replicas: 3, writeQuorum: 1)
    #expect(!ClusterView(config: w1, members: [:], version: 1).absenceIsCertain(of: d, lackedBy: ["n1", "n2"]))
    let w3 = try ClusterConfig(me: "n1", peers: three, replicas: 3, writeQuorum: 3)
    #expect(ClusterView(config: w3, members: [:], version: 1).absenceIsCertain(of: d, lackedBy: ["n2"]))
  }

  /// With stand-ins (a sloppy quorum), an acknowledged blob is on W of the R + W quorum
  /// slots: with five nodes, R=3, W=2, NOT_FOUND needs four of the five to lack it; the
  /// replicas alone (three) are not enough, as two copies may sit on the stand-ins.
  @Test func absenceCountsTheStandIns() throws {
    let five = Dictionary(uniqueKeysWithValues: (1...5).map { (NodeID("n\($0)"), "127.0.0.1:\(7410 + $0)") })
    let view = ClusterView(config: try ClusterConfig(me: "n1", peers: five, replicas: 3, writeQuorum: 2), members: [:], version: 1)
    let d = Digest.of(Array("blob".utf8))
    let slots = view.quorumSlots(of: d)
    #expect(slots.count == 5 && Array(slots.prefix(3)) == view.replicas(of: d) && Array(slots.suffix(2)) == view.standIns(of: d))
    #expect(!view.absenceIsCertain(of: d, lackedBy: Set(view.replicas(of: d))))
    #expect(view.absenceIsCertain(of: d, lackedBy: Set(view.replicas(of: d) + view.standIns(of: d).prefix(1))))
  }

  /// A node holds ref locks only with a majority in sight, and after losing it only once it
  /// has seen one again for the settle time.
  @Test func ownershipNeedsASettledMajority() {
    var gate = OwnershipGate(settle: 2_000, now: 10_000)
    #expect(gate.mayOwn(now: 10_000))
    gate.observe(alive: 3, of: 4, now: 10_100)
    #expect(gate.mayOwn(now: 10_100))
    gate.observe(alive: 2, of: 4, now: 10_200)  // half is not a majority
    #expect(!gate.mayOwn(now: 10_200))
    gate.observe(alive: 3, of: 4, now: 11_000)
    #expect(!gate.mayOwn(now: 12_999))
    gate.observe(alive: 4, of: 4, now: 12_000)  // still the same stretch of majority
    #expect(gate.mayOwn(now: 13_000))
  }

  /// The view's placement: replica sets ignore liveness, ownership moves to the next live node.
  @Test func viewPlacement() throws {
    let config = try ClusterConfig(me: "n1", peers: three, replicas: 2)
    let alive = Dictionary(uniqueKeysWithValues: three.map { ($0.key, Member(id: $0.key, address: $0.value, incarnation: 1, status: .alive)) })
    var view = ClusterView(config: config, members: alive, version: 1)
    let ref = "some-ref"
    let owner = try #require(view.owner(ofRef: ref))
    let d = Digest.of(Array("blob".utf8))
    let replicas = view.replicas(of: d)
    #expect(replicas.count == 2)
    var members = alive
    members[owner]!.status = .dead
    view.update(members: members, version: 2)
    let next = try #require(view.owner(ofRef: ref))
    #expect(next != owner)
    #expect(view.replicas(of: d) == replicas)
    #expect(!view.readOrder(of: d).contains(owner) && !view.readOrder(of: d).contains("n1"))
  }

  /// A membership change is the next epoch: a different fingerprint, the same
  /// compatibility (R, W, vnodes); a node removed from the list is no longer a member.
  @Test func membershipChangesRaiseTheEpoch() throws {
    let c = try ClusterConfig(me: "n1", peers: three)
    let joined = try c.changing(add: ["n4": "127.0.0.1:7414"], remove: [])
    #expect(joined.epoch == 1 && joined.peers.count == 4 && joined.isMember)
    #expect(joined.fingerprint != c.fingerprint && joined.compatibility == c.compatibility)
    let left = try joined.changing(add: [:], remove: ["n1"])
    #expect(left.epoch == 2 && !left.isMember && left.peers.count == 3)
    #expect(throws: ContentError.self) { try c.changing(add: [:], remove: ["n9"]) }
    #expect(throws: ContentError.self) { try c.changing(add: [:], remove: ["n2"]) }  // 2 nodes < R = 3
    #expect(throws: ContentError.self) { try c.changing(add: ["n2": "127.0.0.1:7412"], remove: []) }  // no change
    #expect(throws: ContentError.self) { try c.changing(add: ["n4": "nohostport"], remove: []) }
  }

  /// A config a peer sends is bounded before any ring is built from it: 300,000 peers (what
  /// fits in one 4 MiB message) would make a ring of 600 million points on every node.
  @Test func peerListsAreBounded() throws {
    var many: [NodeID: String] = [:]
    for i in 0...ClusterConfig.maxPeers { many[NodeID("n\(i)")] = "h:\(i)" }
    #expect(throws: ContentError.self) { try ClusterConfig(me: "n0", peers: many) }
    many.removeValue(forKey: "n1")
    #expect(try ClusterConfig(me: "n0", peers: many).peers.count == ClusterConfig.maxPeers)
    let c = try ClusterConfig(me: "n1", peers: three)
    #expect(throws: ContentError.self) { try c.adopting(peers: three.merging(["": "h:1"]) { a, _ in a }, epoch: 1) }
    let longID = NodeID(String(repeating: "x", count: ClusterConfig.maxNodeIDBytes + 1))
    #expect(throws: ContentError.self) { try c.adopting(peers: three.merging([longID: "h:1"]) { a, _ in a }, epoch: 1) }
    let longAddress = String(repeating: "a", count: ClusterConfig.maxAddressBytes) + ":1"
    #expect(throws: ContentError.self) { try c.adopting(peers: three.merging(["n4": longAddress]) { a, _ in a }, epoch: 1) }
  }
}

@Suite struct DNSDiscoveryTests {
  @Test func peersFromReverseNames() throws {
    let peers = try DNSDiscovery.peers(
      fromNames: ["cairn-1.cairn.default.svc.cluster.local.", "cairn-0.cairn.default.svc.cluster.local"], port: 7411)
    #expect(peers == [
      "cairn-0": "cairn-0.cairn.default.svc.cluster.local:7411",
      "cairn-1": "cairn-1.cairn.default.svc.cluster.local:7411",
    ])
  }

  @Test func clashingIdsAreAnError() {
    #expect(throws: ContentError.self) {
      try DNSDiscovery.peers(fromNames: ["cairn-0.a.svc", "cairn-0.b.svc"], port: 1)
    }
  }
}
