import CairnCore
import CairnProto
import Foundation
import GRPCCore
import Synchronization

/// Messages that carry blob bytes: what `cairn_rpc_*_bytes_total` counts.
protocol CarriesBlobBytes { var blobBytes: Int { get } }
extension Containerd_Services_Content_V1_WriteContentRequest: CarriesBlobBytes { var blobBytes: Int { data.count } }
extension Containerd_Services_Content_V1_ReadContentResponse: CarriesBlobBytes { var blobBytes: Int { data.count } }
extension Containerd_V1_WriteRequest: CarriesBlobBytes { var blobBytes: Int { data.count } }
extension Containerd_V1_ReadResponse: CarriesBlobBytes { var blobBytes: Int { data.count } }
extension Cairn_Peer_V1_ReplicateRequest: CarriesBlobBytes { var blobBytes: Int { data.count } }
extension Cairn_Peer_V1_MirrorIngestRequest: CarriesBlobBytes { var blobBytes: Int { data.count } }

/// Counts every call by method and status code, times it to its status, and counts the
/// blob bytes it moved. It runs outermost, so refused calls (auth, limits) count too.
/// Messages over max_message_bytes are refused here, naming the limit; the transport's own
/// cap is twice as high (ContentServer), beyond which it resets the stream.
struct MetricsInterceptor: ServerInterceptor {
  let metrics: NodeMetrics
  let maxMessageBytes: Int

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let start = ContinuousClock.now
    let method = context.descriptor.fullyQualifiedMethod
    let bytes = ByteCounts()
    let metrics = self.metrics
    let limit = maxMessageBytes
    let cancellation = context.cancellation
    @Sendable func finish(_ error: (any Error)?) {
      // A call its client gave up on (Ctrl-C, a deadline, a reset stream) failed on its
      // side, not ours: `cancelled`, not the internal error the broken stream surfaces as
      // (error-rate alerts fired on every Ctrl-C).
      let code = error != nil && (cancellation.isCancelled || error is CancellationError) ? "cancelled" : Self.codeName(error)
      metrics.recordCall(method: method, code: code, duration: ContinuousClock.now - start)
      metrics.recordBytes(method: method, received: bytes.received.load(ordering: .relaxed), sent: bytes.sent.load(ordering: .relaxed))
    }
    var request = request
    if Input.self is any CarriesBlobBytes.Type {
      let messages = request.messages
      request.messages = RPCAsyncSequence(wrapping: messages.map { m in
        if let c = m as? any CarriesBlobBytes {
          guard c.blobBytes <= limit else {
            throw RPCError(
              code: .resourceExhausted, message: "a message carries \(c.blobBytes) bytes of data (limit max_message_bytes = \(limit))")
          }
          bytes.received.add(c.blobBytes, ordering: .relaxed)
        }
        return m
      })
    }
    var response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      finish(error)
      throw Self.namingLimit(error, limit)
    }
    switch response.accepted {
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        let out = Output.self is any CarriesBlobBytes.Type ? RPCWriter(wrapping: CountingWriter(base: writer, bytes: bytes)) : writer
        do {
          let trailers = try await producer(out)
          finish(nil)
          return trailers
        } catch {
          finish(error)
          throw Self.namingLimit(error, limit)
        }
      }
      response.accepted = .success(contents)
    case .failure(let error):
      finish(error)
      response.accepted = .failure(Self.namingLimit(error, limit) as? RPCError ?? error)
    }
    return response
  }

  static func codeName(_ error: (any Error)?) -> String {
    guard let error else { return "ok" }
    let code: RPCError.Code
    switch error {
    case let e as RPCError: code = e.code
    case let e as any RPCErrorConvertible: code = e.rpcErrorCode
    default: code = .unknown
    }
    return String(describing: code)
  }

  static func namingLimit(_ error: any Error, _ limit: Int) -> any Error {
    guard var e = error as? RPCError, e.code == .resourceExhausted, e.message.contains("maximum payload size") else { return error }
    e.message += " (limit max_message_bytes = \(limit))"
    return e
  }
}

private struct CountingWriter<Element: Sendable>: RPCWriterProtocol {
  let base: RPCWriter<Element>
  let bytes: ByteCounts

  func write(_ element: Element) async throws {
    if let c = element as? any CarriesBlobBytes { bytes.sent.add(c.blobBytes, ordering: .relaxed) }
    try await base.write(element)
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    for e in elements { try await write(e) }
  }
}

private final class ByteCounts: Sendable {
  let received = Atomic<Int>(0)
  let sent = Atomic<Int>(0)
}
