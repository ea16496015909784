import CairnCore

/// Group commit for directory entries. A commit's blob becomes durable only when the
/// directory holding its name is fsynced; concurrent commits share those fsyncs. Each
/// caller's request is satisfied by the first fsync that *starts* after the caller
/// asked, so a caller never rides on a sync that began before its rename.
actor GroupSync {
  private let io: BlockingIO
  private var pending: [(dirs: Set<String>, done: CheckedContinuation<Void, any Error>)] = []
  private var running = false
  /// Directory fsyncs issued and callers served, for the benchmark report.
  private(set) var syncs = 0
  private(set) var served = 0

  init(io: BlockingIO) { self.io = io }

  func sync(_ dirs: Set<String>) async throws {
    try await withCheckedThrowingContinuation { c in
      pending.append((dirs, c))
      if !running {
        running = true
        Task { await drain() }
      }
    }
  }

  private func drain() async {
    while !pending.isEmpty {
      let batch = pending
      pending = []
      let dirs = batch.reduce(into: Set<String>()) { $0.formUnion($1.dirs) }
      let result: Result<Void, any Error>
      do {
        try await io.run {
          for d in dirs { try POSIX.fsyncDirectory(d) }
        }
        result = .success(())
      } catch {
        result = .failure(error)
      }
      syncs += dirs.count
      served += batch.count
      for b in batch { b.done.resume(with: result) }
    }
    running = false
  }

  func counters() -> (syncs: Int, served: Int) { (syncs, served) }
}
