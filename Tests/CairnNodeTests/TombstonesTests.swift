import CairnCore
import CairnTestKit
import Foundation
import Logging
import Synchronization
import Testing

@testable import CairnNode

/// Deletion times are the hybrid logical clock's, so the tombstones' notion of "now" must
/// be too: found by ClockSkewTests, where a node whose wall clock ran a day ahead took
/// every Delete it heard as older than the ten minutes it is remembered for, and accepted a
/// replica of the blob it had just deleted.
@Suite struct TombstonesTests {
  static let minute: Int64 = 60_000_000_000

  @Test func aRecentDeleteIsRememberedByTheNodeClockNotTheWall() throws {
    let dir = try TemporaryDirectory("tombstones")
    let t0 = Timestamp.now().totalNanoseconds
    // The node's clock reads t0; the wall clock (what the old code asked) a day ahead.
    let now = Atomic<Int64>(t0)
    let stones = try Tombstones(root: dir.path, logger: Logger(label: "test"), now: { now.load(ordering: .relaxed) })
    let digest = Digest.of(Data("deleted".utf8))
    stones.noteRecent(digest, at: Timestamp(totalNanoseconds: t0))
    #expect(stones.deletedSince(digest, createdAt: Timestamp(totalNanoseconds: t0 - Self.minute)), "a copy older than the Delete is dead")
    #expect(!stones.deletedSince(digest, createdAt: Timestamp(totalNanoseconds: t0 + 1)), "a copy newer than the Delete lives")
    now.store(t0 + Tombstones.recentRetentionNanoseconds + Self.minute, ordering: .relaxed)
    #expect(!stones.deletedSince(digest, createdAt: Timestamp(totalNanoseconds: t0 - Self.minute)), "forgotten once the node's clock is past the retention")
  }
}
