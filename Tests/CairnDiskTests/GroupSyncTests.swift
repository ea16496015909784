import CairnCore
import Dispatch
import Foundation
import Synchronization
import Testing

@testable import CairnDisk

/// Group commit, with the directory fsync replaced by a function the test can hold open.
@Suite(.timeLimit(.minutes(1))) struct GroupSyncTests {
  final class Recorder: Sendable {
    let events = Mutex<[String]>([])
    let firstSyncStarted = DispatchSemaphore(value: 0)
    let releaseFirstSync = DispatchSemaphore(value: 0)
    func log(_ e: String) { events.withLock { $0.append(e) } }
  }

  /// Commits that enter while a sync is in flight are not covered by it: they share the
  /// next one, led by the same thread, and are woken only after it.
  @Test func commitsDuringASyncShareTheNextOne() async throws {
    let r = Recorder()
    let syncCount = Mutex(0)
    let group = GroupSync { dir throws(ContentError) in
      let n = syncCount.withLock { c -> Int in
        c += 1
        return c
      }
      r.log("sync \(n) start")
      if n == 1 {
        r.firstSyncStarted.signal()
        r.releaseFirstSync.wait()
      }
      r.log("sync \(n) end")
    }
    let leaderDone = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      let ticket = try? group.enter("d")
      r.log("leader returned \(String(describing: ticket))")
      leaderDone.signal()
    }
    r.firstSyncStarted.wait()
    let t2 = try #require(try group.enter("d"))
    let t3 = try #require(try group.enter("d"))
    #expect((t2, t3) == (2, 3))
    let waiters = Task {
      try await withThrowingTaskGroup(of: Void.self) { g in
        for t in [t2, t3] {
          g.addTask {
            try await group.wait("d", ticket: t)
            r.log("woke \(t)")
          }
        }
        try await g.waitForAll()
      }
    }
    r.releaseFirstSync.signal()
    try await waiters.value
    leaderDone.wait()
    let events = r.events.withLock { $0 }
    #expect(group.counters() == (syncs: 2, served: 3))
    let end2 = try #require(events.firstIndex(of: "sync 2 end"))
    #expect(events.firstIndex(of: "woke 2")! > end2 && events.firstIndex(of: "woke 3")! > end2)
    #expect(events.contains("leader returned nil"))
  }

  /// A failed sync fails every commit it would have covered, including ones that ask later.
  @Test func failedSyncFailsItsWaiters() async throws {
    let group = GroupSync { _ throws(ContentError) in throw ContentError.internalError("disk gone") }
    #expect(throws: ContentError.self) { try group.enter("d") }
    // The ticket entered before the failure can never count as synced.
    await #expect(throws: (any Error).self) { try await group.wait("d", ticket: 1) }
  }

  @Test func directoriesAreIndependent() throws {
    let group = GroupSync { _ throws(ContentError) in }
    #expect(try group.enterAll(["a", "b"]).isEmpty)
    #expect(group.counters() == (syncs: 2, served: 2))
  }
}
