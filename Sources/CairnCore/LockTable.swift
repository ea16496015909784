import Synchronization

/// One lock per ref, with fair hand-off: when the holder releases, the longest waiter
/// becomes the holder directly, so a crowd of waiters on one ref costs no retry storm.
public final class LockTable: Sendable {
  private struct Waiter {
    let id: Int
    let continuation: CheckedContinuation<Bool, Never>
  }

  private struct Entry {
    var waiters: [Waiter] = []
  }

  private struct State {
    var held: [Bytewise: Entry] = [:]  // refs are opaque bytes
    var nextID = 0
  }

  private let state = Mutex(State())

  public init() {}

  public func tryAcquire(_ key: String) -> Bool {
    state.withLock { s in
      if s.held[Bytewise(key)] != nil { return false }
      s.held[Bytewise(key)] = Entry()
      return true
    }
  }

  /// Waits up to `timeout` seconds for the lock. Returns false on timeout or cancellation.
  public func acquire(_ key: String, timeout: Double) async -> Bool {
    if tryAcquire(key) { return true }
    if timeout <= 0 { return false }
    let id = state.withLock { s -> Int in
      s.nextID += 1
      return s.nextID
    }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
        let acquiredNow = state.withLock { s -> Bool in
          if s.held[Bytewise(key)] == nil {
            s.held[Bytewise(key)] = Entry()
            return true
          }
          s.held[Bytewise(key)]!.waiters.append(Waiter(id: id, continuation: c))
          return false
        }
        if acquiredNow {
          c.resume(returning: true)
          return
        }
        // A timeout bounds the wait; it is not used to order events.
        Task { [weak self] in
          try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
          self?.giveUp(key, id: id)
        }
      }
    } onCancel: {
      giveUp(key, id: id)
    }
  }

  private func giveUp(_ key: String, id: Int) {
    let waiter = state.withLock { s -> Waiter? in
      guard let idx = s.held[Bytewise(key)]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
      return s.held[Bytewise(key)]!.waiters.remove(at: idx)
    }
    waiter?.continuation.resume(returning: false)
  }

  public func release(_ key: String) {
    let next = state.withLock { s -> Waiter? in
      guard var entry = s.held[Bytewise(key)] else { return nil }
      if entry.waiters.isEmpty {
        s.held[Bytewise(key)] = nil
        return nil
      }
      let w = entry.waiters.removeFirst()
      s.held[Bytewise(key)] = entry
      return w
    }
    next?.continuation.resume(returning: true)
  }

  public func isHeld(_ key: String) -> Bool { state.withLock { $0.held[Bytewise(key)] != nil } }
}
