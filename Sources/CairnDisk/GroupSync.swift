import CairnCore
import Synchronization

/// Group commit for directory entries. A committed blob is durable only once the directory
/// holding its name is fsynced; concurrent commits share those fsyncs.
///
/// A committer enters after its link, on an I/O thread. If no sync of that directory is
/// running it becomes the leader and syncs right there (a lone committer pays no extra
/// thread hop), repeating while more committers arrived during its sync. Otherwise it waits
/// for the first sync that *starts* after it entered, so that nobody rides on a sync that
/// began before its link.
final class GroupSync: Sendable {
  private struct Directory {
    var entered: UInt64 = 0
    var synced: UInt64 = 0
    var running = false
    /// Tickets up to this one were entered before a failed sync and fail too.
    var failedUpTo: UInt64 = 0
    var waiters: [(ticket: UInt64, done: CheckedContinuation<Void, any Error>)] = []
  }

  private struct State {
    var dirs: [String: Directory] = [:]
    var syncs = 0
    var requests = 0
  }

  private let state = Mutex(State())
  private let syncDirectory: @Sendable (String) throws(ContentError) -> Void

  /// `syncDirectory` is the fsync (injected so that tests can hold a sync in flight).
  init(syncDirectory: @escaping @Sendable (String) throws(ContentError) -> Void = { try POSIX.fsyncDirectory($0) }) {
    self.syncDirectory = syncDirectory
  }

  /// Called on an I/O thread right after the link. Returns the ticket to wait for, or nil
  /// if this call led and the directory is already synced for it.
  func enter(_ dir: String) throws(ContentError) -> UInt64? {
    let (ticket, lead) = state.withLock { s -> (UInt64, Bool) in
      var d = s.dirs[dir] ?? Directory()
      d.entered += 1
      s.requests += 1
      let lead = !d.running
      d.running = true
      s.dirs[dir] = d
      return (d.entered, lead)
    }
    guard lead else { return ticket }
    while true {
      let upTo = state.withLock { $0.dirs[dir]!.entered }
      var failure: ContentError?
      do throws(ContentError) { try syncDirectory(dir) } catch { failure = error }
      let (waiters, more) = state.withLock { s -> ([CheckedContinuation<Void, any Error>], Bool) in
        var d = s.dirs[dir]!
        s.syncs += 1
        // After a failure nobody may count as synced: everyone waiting fails with it.
        let ready = failure == nil ? d.waiters.filter { $0.ticket <= upTo } : d.waiters
        d.waiters.removeAll { failure != nil || $0.ticket <= upTo }
        if failure == nil { d.synced = upTo } else { d.failedUpTo = d.entered }
        let more = failure == nil && d.entered > upTo
        if !more { d.running = false }
        s.dirs[dir] = d
        return (ready.map(\.done), more)
      }
      for w in waiters {
        if let failure { w.resume(throwing: failure) } else { w.resume() }
      }
      if let failure { throw failure }
      if !more { return nil }
    }
  }

  /// Waits until a sync that started after `ticket` entered has finished.
  func wait(_ dir: String, ticket: UInt64) async throws {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
      let outcome = state.withLock { s -> Bool? in
        let d = s.dirs[dir]!
        if d.synced >= ticket { return true }
        if d.failedUpTo >= ticket { return false }
        s.dirs[dir]!.waiters.append((ticket, c))
        return nil
      }
      switch outcome {
      case true?: c.resume()
      case false?: c.resume(throwing: ContentError(.internalError, "fsync of a directory of the store failed", detail: dir))
      case nil: break
      }
    }
  }

  /// Runs on an I/O thread: syncs `dirs` (leading or joining a group) and returns what
  /// is left to wait for.
  func enterAll(_ dirs: [String]) throws(ContentError) -> [(String, UInt64)] {
    var pending: [(String, UInt64)] = []
    for dir in dirs {
      if let ticket = try enter(dir) { pending.append((dir, ticket)) }
    }
    return pending
  }

  func waitAll(_ pending: [(String, UInt64)]) async throws {
    for (dir, ticket) in pending { try await wait(dir, ticket: ticket) }
  }

  /// Directory fsyncs issued and the commits/updates/deletes that needed one.
  func counters() -> (syncs: Int, served: Int) {
    state.withLock { ($0.syncs, $0.requests) }
  }
}
