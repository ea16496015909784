import CairnCore
import GRPCCore

/// Which client a call comes from, read from the `cairn-client` header by an interceptor
/// and handed to the handlers (and every task they start) as a task-local. Calls with the
/// header see their ScopedStore; calls without it see the whole store (operators, and
/// clients that share everything on purpose).
public enum ClientScope {
  public static let header = "cairn-client"
  @TaskLocal static var current: ClientID?

  static func store(_ base: any ContentStore) -> any ContentStore {
    guard let client = current else { return base }
    return ScopedStore(base: base, client: client)
  }
}

struct ClientScopeInterceptor: ServerInterceptor {
  /// The identity of calls without the header on this listener (a per-host socket).
  let socketClient: ClientID?

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let client: ClientID
    if let value = request.metadata[stringValues: ClientScope.header].first(where: { _ in true }) {
      do {
        client = try ClientID(value)
      } catch {
        throw RPCError(code: .invalidArgument, message: "\(ClientScope.header) header: \(error.message)")
      }
    } else if let socketClient {
      client = socketClient
    } else {
      return try await next(request, context)
    }
    // Streaming handlers run in the response's producer, after `next` returns.
    var response = try await ClientScope.$current.withValue(client) { try await next(request, context) }
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in try await ClientScope.$current.withValue(client) { try await producer(writer) } }
      response.accepted = .success(contents)
    }
    return response
  }
}
