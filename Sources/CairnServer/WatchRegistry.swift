import Synchronization

/// The open watch streams (seed Status, health Watch), which never end by themselves: a
/// graceful shutdown cancels them, and watches that start after it end at once.
public final class WatchRegistry: Sendable {
  private struct State {
    var tasks: [Int: Task<Void, any Error>] = [:]
    var next = 0
    var closed = false
  }

  private let state = Mutex(State())

  public func add(_ task: Task<Void, any Error>) -> Int {
    let (id, closed) = state.withLock { s -> (Int, Bool) in
      s.next += 1
      if !s.closed { s.tasks[s.next] = task }
      return (s.next, s.closed)
    }
    if closed { task.cancel() }
    return id
  }

  public func remove(_ id: Int) { _ = state.withLock { $0.tasks.removeValue(forKey: id) } }

  public func closeAll() {
    let tasks = state.withLock { s -> [Task<Void, any Error>] in
      s.closed = true
      defer { s.tasks = [:] }
      return Array(s.tasks.values)
    }
    for t in tasks { t.cancel() }
  }
}
