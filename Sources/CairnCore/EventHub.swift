import Synchronization

/// Fan-out of events to any number of subscribers, without ever slowing the publisher.
///
/// Each subscriber has its own bounded queue. An event with a `key` replaces the pending
/// event of the same key when both are `replaceable` (an ingest's progress supersedes its
/// earlier progress: a slow watcher sees the latest offset, not every one), so a queue
/// holds about one event per key. A subscriber whose queue still reaches `bufferLimit`
/// has fallen behind for good: its stream ends (the consumer tells that from a normal
/// end by what it was waiting for) instead of silently losing events, which could be
/// the ones that end a watch.
public final class EventHub<Event: Sendable>: Sendable {
  private let subscribers = Mutex<[Int: Subscriber]>([:])
  private let nextID = Atomic<Int>(0)
  private let bufferLimit: Int
  private let key: @Sendable (Event) -> String?
  private let replaceable: @Sendable (Event) -> Bool

  public init(
    bufferLimit: Int = 4096, key: @escaping @Sendable (Event) -> String? = { _ in nil },
    replaceable: @escaping @Sendable (Event) -> Bool = { _ in false }
  ) {
    self.bufferLimit = bufferLimit
    self.key = key
    self.replaceable = replaceable
  }

  /// A new subscriber's stream; `onCancel` runs when its consumer stops iterating.
  public func subscribe(onCancel: (@Sendable () -> Void)? = nil) -> AsyncStream<Event> {
    let id = nextID.add(1, ordering: .relaxed).newValue
    let subscriber = Subscriber(limit: bufferLimit, key: key, replaceable: replaceable)
    subscribers.withLock { $0[id] = subscriber }
    return AsyncStream(unfolding: { await subscriber.next() }, onCancel: { [weak self] in
      subscriber.end()
      _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
      onCancel?()
    })
  }

  public func publish(_ event: Event) {
    let targets = subscribers.withLock { Array($0.values) }
    for s in targets { s.push(event) }
  }

  /// Ends every subscriber's stream once it has taken what is queued for it.
  public func finish() {
    for s in subscribers.withLock({ Array($0.values) }) { s.finishAfterQueue() }
  }

  /// Events waiting in subscribers' queues (all of them).
  public var pending: Int { subscribers.withLock { $0.values.reduce(0) { $0 + $1.count } } }

  final class Subscriber: Sendable {
    private struct State {
      /// Pending events from `head` on; slots before it were taken (compacted now and then).
      var queue: [Event?] = []
      var head = 0
      /// The absolute position of the latest pending event of each key.
      var latest: [Bytewise: Int] = [:]  // keys are refs: compared as bytes
      var base = 0
      var waiter: CheckedContinuation<Event?, Never>?
      var ended = false
      var count: Int { queue.count - head }
    }

    private let state = Mutex(State())
    private let limit: Int
    private let key: @Sendable (Event) -> String?
    private let replaceable: @Sendable (Event) -> Bool

    init(limit: Int, key: @escaping @Sendable (Event) -> String?, replaceable: @escaping @Sendable (Event) -> Bool) {
      self.limit = limit
      self.key = key
      self.replaceable = replaceable
    }

    var count: Int { state.withLock { $0.count } }

    func push(_ event: Event) {
      let k = key(event).map(Bytewise.init)
      let wake = state.withLock { s -> CheckedContinuation<Event?, Never>? in
        if s.ended { return nil }
        if let w = s.waiter {
          // Only ever waiting with an empty queue.
          s.waiter = nil
          return w
        }
        if let k, let at = s.latest[k], let old = s.queue[at - s.base], replaceable(old), replaceable(event) {
          s.queue[at - s.base] = event
          return nil
        }
        guard s.count < limit else {
          // Fallen behind for good: end rather than lose what it waits for.
          s.ended = true
          s.queue = []
          s.head = 0
          s.latest = [:]
          return nil
        }
        s.queue.append(event)
        if let k { s.latest[k] = s.base + s.queue.count - 1 }
        return nil
      }
      wake?.resume(returning: event)
    }

    func next() async -> Event? {
      await withTaskCancellationHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Event?, Never>) in
          let ready = state.withLock { s -> (Event?, Bool) in
            if s.head < s.queue.count {
              let e = s.queue[s.head]
              s.queue[s.head] = nil
              if let e, let k = key(e).map(Bytewise.init), s.latest[k] == s.base + s.head { s.latest[k] = nil }
              s.head += 1
              if s.head > 64 && s.head * 2 > s.queue.count {
                s.queue.removeFirst(s.head)
                s.base += s.head
                s.head = 0
              }
              return (e, true)
            }
            if s.ended { return (nil, true) }
            s.waiter = c
            return (nil, false)
          }
          if ready.1 { c.resume(returning: ready.0) }
        }
      } onCancel: {
        end()
      }
    }

    func finishAfterQueue() {
      let wake = state.withLock { s -> CheckedContinuation<Event?, Never>? in
        s.ended = true
        defer { s.waiter = nil }
        return s.waiter
      }
      wake?.resume(returning: nil)
    }

    func end() {
      let wake = state.withLock { s -> CheckedContinuation<Event?, Never>? in
        s.ended = true
        s.queue = []
        s.head = 0
        s.latest = [:]
        defer { s.waiter = nil }
        return s.waiter
      }
      wake?.resume(returning: nil)
    }
  }
}

extension EventHub where Event == IngestEvent {
  /// Ingest events: an ingest's progress supersedes its earlier progress.
  public convenience init(bufferLimit: Int = 4096) {
    self.init(bufferLimit: bufferLimit, key: { $0.ref }, replaceable: { if case .progress = $0 { true } else { false } })
  }
}
