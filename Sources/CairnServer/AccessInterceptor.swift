import CairnCore
import CairnTransport
import Foundation
import GRPCCore
import Synchronization

/// Authenticates, authorizes and rate-limits every call, counts the long-lived streams of
/// each identity, ends streams whose client went silent, then runs the call as its caller
/// (`CallContext.current`).
struct AccessInterceptor: ServerInterceptor {
  let access: AccessControl
  /// The identity of calls without the header on this listener (a per-host socket).
  let socketClient: ClientID?
  let isUnixSocket: Bool
  /// The node's bound on buffered request bytes: each message the call takes is reported.
  let budget: InboundBudget?

  static let watches: Set<String> = ["containerd.v1.Content/Status", "grpc.health.v1.Health/Watch"]

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let access = self.access
    let method = context.descriptor.fullyQualifiedMethod
    var authenticated = try access.authenticate(
      metadata: request.metadata, context: context, socketClient: socketClient, isUnixSocket: isUnixSocket)
    authenticated.node =
      authenticated.peer
      ?? (authenticated.trusted ? request.metadata[stringValues: CallContext.nodeHeader].first(where: { _ in true }) : nil)
    let caller = authenticated
    try access.authorize(caller, method: method)
    if Permission.required(forMethod: method) != nil { try access.admitRequest(caller) }
    let held: AccessControl.Held? =
      context.descriptor.method == "Write" ? .upload : Self.watches.contains(method) ? .watch : nil
    let slot = try held.flatMap { try access.slot($0, caller) }
    var request = request
    // Every call is idle while it waits for its client's next request message: an upload
    // between chunks, any call whose client announced a message and trickles it.
    let idle: (clock: IdleClock, seconds: Double)? =
      access.settings.requestIdleSeconds > 0 ? (IdleClock(idle: false), access.settings.requestIdleSeconds) : nil
    let account = request.metadata[stringValues: InboundBudget.header].first(where: { _ in true }).flatMap(UInt64.init)
    request.metadata.removeAllValues(forKey: InboundBudget.header)
    var taken: (@Sendable () -> Void)?
    if let budget, let account { taken = { budget.consumed(account) } }
    if idle != nil || taken != nil {
      request.messages = RPCAsyncSequence(wrapping: TrackedMessages(base: request.messages, clock: idle?.clock, taken: taken))
    }
    // Streaming handlers run in the response's producer, after `next` returns; the slot
    // lives as long as that producer (or this call, if there is none).
    var response = try await CallContext.$current.withValue(caller) { [request] in
      guard let idle else { return try await next(request, context) }
      // A unary call's request is read here, before the response exists. (The limit's
      // task group ends before this returns, so `next` does not really escape.)
      return try await withoutActuallyEscaping(next) { next in
        try await withIdleLimit(idle.seconds, limit: "request_idle_timeout", clock: idle.clock) { try await next(request, context) }
      }
    }
    switch response.accepted {
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        withExtendedLifetime(slot) {}
        return try await CallContext.$current.withValue(caller) {
          guard let idle else { return try await producer(writer) }
          return try await withIdleLimit(idle.seconds, limit: "request_idle_timeout", clock: idle.clock) { try await producer(writer) }
        }
      }
      response.accepted = .success(contents)
    case .failure:
      break
    }
    return response
  }
}

/// When a stream last made progress. `idle` is set while the stream waits on its peer
/// (an upload awaiting the client's next message; a watch between events).
public final class IdleClock: Sendable {
  private let state: Mutex<(idle: Bool, since: ContinuousClock.Instant)>

  public init(idle: Bool) { state = Mutex((idle, .now)) }

  /// The stream starts or stops waiting on its peer.
  public func set(idle: Bool) { state.withLock { $0 = (idle, .now) } }

  /// How long the stream has been waiting; nil if it is not.
  var idleFor: Duration? {
    state.withLock { s in s.idle ? ContinuousClock.now - s.since : nil }
  }
}

/// Runs `body` and ends it with UNAVAILABLE (naming `limit`) once `clock` has been idle for
/// `seconds`; a cancelled upload keeps its ingest, resumable.
func withIdleLimit<T: Sendable>(
  _ seconds: Double, limit: String, clock: IdleClock, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
  let bound = Duration.milliseconds(Int64(seconds * 1000))
  return try await withThrowingTaskGroup(of: T?.self) { group in
    group.addTask { try await body() }
    group.addTask {
      while true {
        let waited = clock.idleFor ?? .zero
        if waited >= bound {
          throw RPCError(
            code: .unavailable,
            message: "the stream was idle for \(Int(seconds)) s (limit \(limit) = \(seconds)); it was ended, an upload's ingest stays and resumes")
        }
        try await Task.sleep(for: bound - waited)
      }
    }
    defer { group.cancelAll() }
    while let result = try await group.next() {
      if let result { return result }
    }
    throw CancellationError()
  }
}

/// `withIdleLimit` with a clock for `body`, or just `body` when `seconds` is 0.
func withIdleLimitIfSet<T: Sendable>(
  _ seconds: Double, limit: String, _ body: @escaping @Sendable (IdleClock) async throws -> T
) async throws -> T {
  let clock = IdleClock(idle: false)
  guard seconds > 0 else { return try await body(clock) }
  return try await withIdleLimit(seconds, limit: limit, clock: clock) { try await body(clock) }
}

/// A request stream that marks its clock idle while the handler waits for the next
/// message, and reports each message the handler takes (InboundBudget).
struct TrackedMessages<Element: Sendable>: AsyncSequence, Sendable {
  let base: RPCAsyncSequence<Element, any Error>
  let clock: IdleClock?
  let taken: (@Sendable () -> Void)?

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: RPCAsyncSequence<Element, any Error>.AsyncIterator
    let clock: IdleClock?
    let taken: (@Sendable () -> Void)?

    mutating func next() async throws -> Element? {
      clock?.set(idle: true)
      defer { clock?.set(idle: false) }
      let element = try await base.next()
      if element != nil { taken?() }
      return element
    }
  }

  func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), clock: clock, taken: taken) }
}
