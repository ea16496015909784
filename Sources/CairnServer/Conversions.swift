import CairnCore
import CairnProto
import Foundation
import GRPCCore
import Logging
import NIOCore
import SwiftProtobuf

typealias Modern = Containerd_Services_Content_V1_Content
typealias Seed = Containerd_V1_Content

extension ContentError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .cancelled: .cancelled
    case .unknown: .unknown
    case .invalidArgument: .invalidArgument
    case .deadlineExceeded: .deadlineExceeded
    case .notFound: .notFound
    case .alreadyExists: .alreadyExists
    case .permissionDenied: .permissionDenied
    case .resourceExhausted: .resourceExhausted
    case .failedPrecondition: .failedPrecondition
    case .aborted: .aborted
    case .outOfRange: .outOfRange
    case .unimplemented: .unimplemented
    case .internalError: .internalError
    case .unavailable: .unavailable
    case .dataLoss: .dataLoss
    case .unauthenticated: .unauthenticated
    }
  }

  public var rpcErrorMessage: String { message }
}

/// Runs a handler body so that every failure leaves as a gRPC status with containerd's
/// code: domain errors keep theirs, anything unexpected becomes INTERNAL.
/// What the caller is told never names a server path: a ContentError's detail, and the
/// text of an error that is not Cairn's own (a Foundation error quotes file names), go to
/// the node's log instead.
public func rpc<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let e as ContentError {
    if let detail = e.detail { rpcLogger.warning("\(e.code.name): \(e.message) (\(detail))") }
    throw RPCError(e)
  } catch let e as RPCError {
    throw e
  } catch is CancellationError {
    throw RPCError(ContentError.cancelled("operation cancelled"))
  } catch let e as ChannelError {
    // A connection closed under the call: the client's (then nobody hears the answer) or
    // that of a peer the call was forwarded to, which died or was cut off. Then another
    // node can answer: UNAVAILABLE, which careful clients retry (it was INTERNAL "I/O on
    // closed channel", which they do not, and an error line in the log for every one).
    rpcLogger.debug("a connection closed during a call: \(e)")
    throw RPCError(ContentError.unavailable("a connection closed during the call (a node went away); retry"))
  } catch {
    rpcLogger.error("unexpected error: \(String(describing: error))")
    throw RPCError(ContentError.internalError("unexpected error (\(type(of: error))); the node's log has its text"))
  }
}

private let rpcLogger = Logger(label: "cairn")

/// Runs a watch handler (one that waits for events, not for the client) in a task of its
/// own, so that gRPC's signal that the RPC is cancelled (the client went away, a deadline
/// passed) cancels it: grpc-swift signals through the cancellation handle, not by
/// cancelling the handler's task. Reads and writes need no such bridge: their next read
/// or write fails when the client is gone. Watches also register with `watches` so that a
/// shutdown ends them instead of waiting for them.
public func watchRPC(watches: WatchRegistry, _ body: @escaping @Sendable () async throws -> Void) async throws {
  let task = Task { try await rpc(body) }
  let token = watches.add(task)
  defer { watches.remove(token) }
  try await withRPCCancellationHandler {
    try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
  } onCancelRPC: {
    task.cancel()
  }
}

/// The Read RPC of either API: resolves the range and hands each chunk, with its offset,
/// to `send`.
func streamBlob(
  _ store: any ContentStore, digest: String, offset: Int64, size: Int64, send: (Int64, Data) async throws -> Void
) async throws {
  let reader = try await store.read(try Digest(parsing: digest), offset: offset, size: size)
  var at = reader.offset
  for try await chunk in reader {
    try await send(at, chunk)
    at += Int64(chunk.count)
  }
}
