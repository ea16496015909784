import CairnCore
import Foundation

/// Runs one Write stream of either API: opens the ref's writer on the first message, feeds
/// every message through the WriteSession state machine, executes its commands against
/// the store, and answers each message. Both adapters are this plus message mapping.
struct WriteStreamDriver {
  let store: any ContentStore
  /// A peer's forwarded stream (see WriteSession.fromPeer).
  var fromPeer = false

  /// `respond` receives the state after a message and the action that produced it.
  func run<Requests: AsyncSequence & Sendable>(
    _ requests: Requests,
    step toStep: @Sendable (Requests.Element) throws(ContentError) -> WriteStep,
    respond: (WriterState, WriteStep.Action) async throws -> Void
  ) async throws where Requests.Element: Sendable {
    var iterator = requests.makeAsyncIterator()
    guard let firstMessage = try await iterator.next() else { return }
    let first = try toStep(firstMessage)
    var session = WriteSession(limits: store.limits, fromPeer: fromPeer)
    let opening = try session.start(first)
    let writer = try await store.openWriter(ref: opening.ref, total: opening.total, expected: opening.expected)
    do {
      var state = try await writer.state()
      var step = first
      while true {
        for command in try session.plan(step, currentOffset: state.status.offset) {
          state = try await execute(command, writer: writer, state: state, action: step.action, respond: respond)
        }
        if session.phase == .finished { break }
        guard let next = try await iterator.next() else { break }
        step = try toStep(next)
      }
    } catch {
      await writer.close()
      throw error
    }
    await writer.close()
    // The client half-closes after COMMIT/ABORT; wait for it (the writer is already
    // released). Ending first makes grpc-go reset the stream; HTTP2ConnectionGuard absorbs
    // such resets, but a client that half-closes needs neither.
    do { while try await iterator.next() != nil {} } catch {}
  }

  private func execute(
    _ command: WriteCommand, writer: any IngestWriter, state: WriterState, action: WriteStep.Action,
    respond: (WriterState, WriteStep.Action) async throws -> Void
  ) async throws -> WriterState {
    switch command {
    case .rejectIfCommitted(let d):
      if (try? await store.info(d)) != nil {
        // Abort while holding the ref, then release it: the other order let the next
        // writer of the ref open its ingest and lose it to this Abort (issue 17).
        try? await store.abort(ref: writer.ref)
        await writer.close()
        throw ContentError.alreadyExists("blob with expected digest \(d) exists")
      }
      return state
    case .setExpectations(let total, let expected):
      return try await writer.setExpectations(total: total, expected: expected)
    case .truncate:
      return try await writer.truncate()
    case .append(let data):
      return try await writer.append(data)
    case .commit(let size, let expected, let labels):
      return try await writer.commit(size: size, expected: expected, labels: labels)
    case .abort:
      try await store.abort(ref: writer.ref)
      var aborted = state
      aborted.status.offset = 0
      return aborted
    case .respond:
      try await respond(state, action)
      return state
    }
  }
}
