import Synchronization

/// Fan-out of events to any number of subscribers. A slow subscriber loses the oldest of
/// its unread events rather than slowing the publisher (bounded by `bufferLimit`).
public final class EventHub<Event: Sendable>: Sendable {
  private let subscribers = Mutex<[Int: AsyncStream<Event>.Continuation]>([:])
  private let nextID = Atomic<Int>(0)
  private let bufferLimit: Int

  public init(bufferLimit: Int = 4096) { self.bufferLimit = bufferLimit }

  public func subscribe() -> AsyncStream<Event> {
    let id = nextID.add(1, ordering: .relaxed).newValue
    let (stream, continuation) = AsyncStream.makeStream(
      of: Event.self, bufferingPolicy: .bufferingNewest(bufferLimit))
    continuation.onTermination = { [weak self] _ in
      _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
    }
    subscribers.withLock { $0[id] = continuation }
    return stream
  }

  public func publish(_ event: Event) {
    let targets = subscribers.withLock { Array($0.values) }
    for c in targets { c.yield(event) }
  }
}
