import CairnCluster
import Synchronization

/// Calls in flight to a peer, to be abandoned when membership declares the peer dead. A
/// stream to a node that vanished in a partition or stopped answering can hang longer than
/// failure detection takes; this ties the two together, so that a forwarded upload, a
/// remote read or a replica transfer fails over once the view says the peer is gone.
final class DeathWatches: Sendable {
  private struct State {
    var next = 0
    /// `armed`: whether the peer may die now; a watch made while the view held the peer
    /// dead is armed once a view holds it live.
    var watches: [Int: (peer: NodeID, armed: Bool, action: @Sendable () -> Void)] = [:]
  }

  private let state = Mutex(State())

  /// Runs `action` once when `peer` is not live in a published view (at once if it is
  /// not live in `view` already), unless `cancel` of the returned token comes first.
  func watch(_ peer: NodeID, in view: ClusterView, _ action: @escaping @Sendable () -> Void) -> DeathWatch {
    if !view.isLive(peer) {
      action()
      return DeathWatch(watches: nil, id: 0)
    }
    return add(peer, armed: true, action)
  }

  /// Runs `action` once when `peer` dies after this call: if `view` holds it dead already
  /// (a view not yet updated after the peer restarted, while the peer is calling this
  /// node), only after a later view has held it live. For the calls a peer makes: that it
  /// calls says it is alive, whatever a stale view says.
  func watchNextDeath(_ peer: NodeID, in view: ClusterView, _ action: @escaping @Sendable () -> Void) -> DeathWatch {
    add(peer, armed: view.isLive(peer), action)
  }

  private func add(_ peer: NodeID, armed: Bool, _ action: @escaping @Sendable () -> Void) -> DeathWatch {
    let id = state.withLock { s in
      s.next += 1
      s.watches[s.next] = (peer, armed, action)
      return s.next
    }
    return DeathWatch(watches: self, id: id)
  }

  func remove(_ id: Int) { _ = state.withLock { $0.watches.removeValue(forKey: id) } }

  /// After each new view.
  func fire(_ view: ClusterView) {
    let due = state.withLock { s -> [@Sendable () -> Void] in
      var due: [@Sendable () -> Void] = []
      for (id, w) in s.watches {
        if view.isLive(w.peer) {
          if !w.armed { s.watches[id]?.armed = true }
        } else if w.armed {
          s.watches[id] = nil
          due.append(w.action)
        }
      }
      return due
    }
    for action in due { action() }
  }
}

struct DeathWatch: Sendable {
  let watches: DeathWatches?
  let id: Int
  func cancel() { watches?.remove(id) }
}

/// A value set once (the first `fulfil` wins) and awaited by one waiter.
final class OneShot<Value: Sendable>: Sendable {
  private struct State {
    var value: Value?
    var waiter: CheckedContinuation<Value, Never>?
  }

  private let state = Mutex(State())

  func fulfil(_ value: Value) {
    let waiter = state.withLock { s -> CheckedContinuation<Value, Never>? in
      guard s.value == nil else { return nil }
      s.value = value
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume(returning: value)
  }

  var value: Value {
    get async {
      await withCheckedContinuation { c in
        let ready = state.withLock { s -> Value? in
          if let v = s.value { return v }
          s.waiter = c
          return nil
        }
        if let ready { c.resume(returning: ready) }
      }
    }
  }
}
