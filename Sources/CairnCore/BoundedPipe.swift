import Synchronization

/// A bounded hand-over between one producer task and one consumer: `send` waits while
/// `capacity` elements are unread, so a fast peer cannot fill memory ahead of a slow
/// client. It bridges gRPC's push-style response streams to the pull-style BlobReader and
/// IngestWriter APIs.
public final class BoundedPipe<Element: Sendable>: Sendable {
  private struct State {
    var buffer: [Element] = []
    var finished = false
    var failure: (any Error)?
    var reader: CheckedContinuation<Void, Never>?
    var writer: CheckedContinuation<Void, Never>?
  }

  private let capacity: Int
  private let state = Mutex(State())

  public init(capacity: Int) { self.capacity = max(1, capacity) }

  /// False once the consumer is gone (`cancel`): the producer should stop.
  @discardableResult
  public func send(_ element: Element) async -> Bool {
    while true {
      let (accepted, stop) = state.withLock { s -> (Bool, Bool) in
        if s.finished { return (false, true) }
        if s.buffer.count < capacity {
          s.buffer.append(element)
          return (true, false)
        }
        return (false, false)
      }
      if accepted {
        wakeReader()
        return true
      }
      if stop { return false }
      await withCheckedContinuation { c in
        let resumeNow = state.withLock { s -> Bool in
          if s.finished || s.buffer.count < capacity { return true }
          s.writer = c
          return false
        }
        if resumeNow { c.resume() }
      }
    }
  }

  /// Ends the stream after the buffered elements, with `error` if given.
  public func finish(_ error: (any Error)? = nil) {
    state.withLock { s in
      if !s.finished {
        s.finished = true
        s.failure = error
      }
    }
    wakeReader()
    wakeWriter()
  }

  /// The consumer gives up: the producer's next send returns false.
  public func cancel() {
    state.withLock { s in
      s.finished = true
      s.buffer = []
    }
    wakeReader()
    wakeWriter()
  }

  /// The next element; nil at the end; throws the producer's error after the buffer.
  public func next() async throws -> Element? {
    while true {
      let result = state.withLock { s -> Result<Element?, any Error>? in
        if !s.buffer.isEmpty { return .success(s.buffer.removeFirst()) }
        if s.finished { return s.failure.map { .failure($0) } ?? .success(nil) }
        return nil
      }
      if let result {
        wakeWriter()
        return try result.get()
      }
      await withCheckedContinuation { c in
        let resumeNow = state.withLock { s -> Bool in
          if !s.buffer.isEmpty || s.finished { return true }
          s.reader = c
          return false
        }
        if resumeNow { c.resume() }
      }
    }
  }

  private func wakeReader() {
    state.withLock { s -> CheckedContinuation<Void, Never>? in
      defer { s.reader = nil }
      return s.reader
    }?.resume()
  }

  private func wakeWriter() {
    state.withLock { s -> CheckedContinuation<Void, Never>? in
      defer { s.writer = nil }
      return s.writer
    }?.resume()
  }
}
