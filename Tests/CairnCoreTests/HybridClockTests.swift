import CairnCore
import Testing

/// Three nodes' clocks driven by hand: wall clocks a day off either way, and the order of
/// a Delete and the upload that follows it.
@Suite struct HybridClockTests {
  static let second: Int64 = 1_000_000_000
  static let day = 86_400 * second
  static let skew = 5 * second
  let t0: Int64 = 1_800_000_000 * second

  /// n1 true, n2 a day ahead, n3 a day behind; each gossips its reading to the others.
  struct Cluster {
    var clocks = [HybridClock](repeating: HybridClock(maxSkew: HybridClockTests.skew), count: 3)
    let offsets: [Int64] = [0, HybridClockTests.day, -HybridClockTests.day]
    var trueTime: Int64
    var refused = 0

    func wall(_ i: Int) -> Int64 { trueTime + offsets[i] }

    mutating func gossip(from i: Int, to j: Int) {
      let m = clocks[i].message(wall: wall(i), mono: trueTime)
      if clocks[j].observe(m.reading, peerWall: m.wall, from: "n\(i)", wall: wall(j), mono: trueTime) != nil { refused += 1 }
    }

    mutating func round() {
      for i in 0..<3 { for j in 0..<3 where i != j { gossip(from: i, to: j) } }
      trueTime += HybridClockTests.second / 4
    }

    mutating func stamp(_ i: Int) -> Int64 { clocks[i].stamp(wall: wall(i), mono: trueTime) }
  }

  @Test func aDayOffEitherWayStillOrdersADeleteBeforeTheNextUpload() {
    var c = Cluster(trueTime: t0)
    for _ in 0..<40 { c.round() }
    #expect(c.refused > 0, "n2's first readings, a day ahead, were refused")
    for i in 0..<3 {
      let r = c.clocks[i].reading(wall: c.wall(i), mono: c.trueTime)
      #expect(abs(r - c.trueTime) <= Self.skew, "n\(i + 1) reads \((r - c.trueTime) / Self.second) s from true time")
    }
    // A Delete through the node a day ahead fans out (its time reaches everyone), then an
    // upload through the node a day behind: the upload is newer.
    let deleted = c.stamp(1)
    for j in [0, 2] { #expect(c.clocks[j].observe(deleted, peerWall: c.wall(1), from: "n1", wall: c.wall(j), mono: c.trueTime) == nil) }
    let reuploaded = c.stamp(2)
    #expect(reuploaded > deleted)
    // And the other way round.
    let deleted2 = c.stamp(2)
    for j in [0, 1] { #expect(c.clocks[j].observe(deleted2, peerWall: c.wall(2), from: "n2", wall: c.wall(j), mono: c.trueTime) == nil) }
    #expect(c.stamp(1) > deleted2 && c.stamp(0) > deleted2)
  }

  /// Found by the process test under load: the two skewed nodes heard each other before
  /// either heard the true one. When messages carried the sender's physical time (pulled
  /// towards its median) rather than its wall clock, they agreed on a day-behind time and
  /// then pulled the true node to it, and a re-upload was stamped before its Delete.
  @Test func skewedNodesThatHearEachOtherFirstDoNotPullTheTrueClock() {
    var c = Cluster(trueTime: t0)
    for _ in 0..<8 {
      c.gossip(from: 1, to: 2)
      c.gossip(from: 2, to: 1)
      c.trueTime += Self.second / 4
    }
    for _ in 0..<8 {
      c.gossip(from: 2, to: 0)
      c.gossip(from: 1, to: 0)
      c.trueTime += Self.second / 4
    }
    for _ in 0..<40 { c.round() }
    for i in 0..<3 {
      let r = c.clocks[i].reading(wall: c.wall(i), mono: c.trueTime)
      #expect(abs(r - c.trueTime) <= Self.skew, "n\(i + 1) reads \((r - c.trueTime) / Self.second) s from true time")
    }
  }

  @Test func aReadingBeyondTheSkewIsRefusedAndMovesNothing() {
    var c = HybridClock(maxSkew: Self.skew)
    _ = c.observe(t0, peerWall: t0, from: "a", wall: t0, mono: 0)
    let before = c.reading(wall: t0, mono: 0)
    #expect(c.observe(t0 + Self.day, peerWall: t0 + Self.day, from: "b", wall: t0, mono: 0) != nil)
    #expect(c.reading(wall: t0, mono: 0) == before)
    #expect(!c.admits(t0 + Self.day, wall: t0, mono: 0) && c.admits(t0 + Self.skew, wall: t0, mono: 0))
    // Stamps only rise; far readings saturate instead of trapping.
    let s1 = c.stamp(wall: t0, mono: 0)
    #expect(c.stamp(wall: t0 - Self.second, mono: 0) > s1)
    #expect(c.observe(.max, peerWall: .max, from: "z", wall: t0, mono: 0) != nil)
    #expect(c.observe(.min, peerWall: .min, from: "y", wall: t0, mono: 0) == nil)
  }

  @Test func beforeAnyPeerSpokeStampsAreTheWallClockAndNotRemembered() {
    var c = HybridClock(maxSkew: Self.skew)
    #expect(!c.isSynced(mono: 0))
    #expect(c.stamp(wall: t0 + Self.day, mono: 0) == t0 + Self.day)
    _ = c.observe(t0, peerWall: t0, from: "a", wall: t0 + Self.day, mono: 0)
    _ = c.observe(t0, peerWall: t0, from: "b", wall: t0 + Self.day, mono: 0)
    #expect(c.stamp(wall: t0 + Self.day, mono: 0) <= t0 + Self.skew, "a day ahead, once its peers spoke, it stamps near their time")
  }

  @Test func heardListsOnlyPeersThatSpokeRecently() {
    var c = HybridClock(maxSkew: Self.skew)
    _ = c.observe(t0, peerWall: t0, from: "a", wall: t0, mono: 0)
    _ = c.observe(t0, peerWall: t0, from: "b", wall: t0, mono: HybridClock.readingLifetime / 2)
    #expect(c.heard(mono: HybridClock.readingLifetime / 2) == ["a", "b"])
    #expect(c.heard(mono: HybridClock.readingLifetime) == ["b"], "a's reading is a lifetime old")
    #expect(c.heard(mono: 2 * HybridClock.readingLifetime).isEmpty && !c.isSynced(mono: 2 * HybridClock.readingLifetime))
  }
}
