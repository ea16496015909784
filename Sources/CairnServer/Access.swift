import CairnCore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

/// Which client a call comes from, handed to the handlers (and every task they start) as
/// a task-local. Calls with a client see their ScopedStore; calls without one see the
/// whole store (operators, and clients that share everything on purpose).
public enum ClientScope {
  public static let header = "cairn-client"
  @TaskLocal static var current: ClientID?

  static func store(_ base: any ContentStore) -> any ContentStore {
    guard let client = current else { return base }
    return ScopedStore(base: base, client: client)
  }
}

/// Who may call, and how much. Shared by every listener of a node; the token table is
/// replaced when its file changes.
public final class AccessControl: Sendable {
  public struct Settings: Sendable {
    /// Requests per second one client may make (0 = no limit), and its burst.
    public var requestsPerSecondPerClient: Double = 10000
    public var requestBurstPerClient: Double = 20000
    /// Write streams one client may have open at once (0 = no limit).
    public var maxActiveIngestsPerClient: Int = 256
    /// TCP callers presenting no certificate may not use the peer protocol (set when TLS
    /// with a cluster CA is on: peers prove membership with a certificate).
    public var peersNeedCertificates = false
    public init() {}
  }

  public let settings: Settings
  /// nil: no tokens are required.
  private let tokens: Mutex<TokenTable?>
  private let buckets: Mutex<RateBuckets>
  private let writers = Mutex<[String: Int]>([:])
  let metrics: NodeMetrics?

  public init(settings: Settings = Settings(), tokens: TokenTable? = nil, metrics: NodeMetrics? = nil) {
    self.settings = settings
    self.tokens = Mutex(tokens)
    self.metrics = metrics
    buckets = Mutex(RateBuckets(rate: settings.requestsPerSecondPerClient, burst: settings.requestBurstPerClient))
  }

  public func replaceTokens(_ table: TokenTable) { tokens.withLock { $0 = table } }

  /// Who the caller is: its grant, its client scope and the key its limits count under.
  struct Caller {
    var grant: Grant
    var client: ClientID?
    var key: String
    /// Peers and local sockets are not rate limited: the cluster must not throttle itself.
    var limited: Bool
  }

  func authenticate(metadata: Metadata, context: ServerContext, socketClient: ClientID?, isUnixSocket: Bool) throws -> Caller {
    let hasCertificate = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate != nil
    let named: ClientID?
    if let value = metadata[stringValues: ClientScope.header].first(where: { _ in true }) {
      do { named = try ClientID(value) } catch {
        throw RPCError(code: .invalidArgument, message: "\(ClientScope.header) header: \(error.message)")
      }
    } else {
      named = isUnixSocket ? socketClient : nil
    }
    let everything = Grant(client: nil, permissions: [.admin])
    // The unix socket's file permissions and a cluster CA's certificate are credentials.
    if isUnixSocket || hasCertificate {
      return Caller(grant: everything, client: named, key: named?.name ?? (isUnixSocket ? "unix" : "certificate"), limited: false)
    }
    let remote = "anonymous@" + (context.remotePeer.split(separator: ":").dropFirst().dropLast().joined(separator: ":"))
    guard let table = tokens.withLock({ $0 }) else {
      let grant = settings.peersNeedCertificates ? Grant(client: nil, permissions: [.read, .write, .delete]) : everything
      return Caller(grant: grant, client: named, key: named?.name ?? remote, limited: true)
    }
    guard let auth = metadata[stringValues: "authorization"].first(where: { _ in true }) else {
      throw RPCError(code: .unauthenticated, message: "this node requires a bearer token: send the header authorization: Bearer TOKEN")
    }
    let parts = auth.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "bearer", let grant = table.grant(forToken: String(parts[1])) else {
      throw RPCError(code: .unauthenticated, message: "the bearer token is not valid on this node")
    }
    if let own = grant.client, let named, named != own {
      throw RPCError(
        code: .permissionDenied, message: "token of client \(own) may not act as client \(named) (\(ClientScope.header) header)")
    }
    let client = grant.client ?? named
    return Caller(grant: grant, client: client, key: client?.name ?? "token:\(grant.name)", limited: true)
  }

  func authorize(_ caller: Caller, method: String) throws {
    guard let needed = Permission.required(forMethod: method), !caller.grant.allows(needed) else { return }
    let granted = caller.grant.permissions.sorted().map(\.rawValue).joined(separator: ",")
    throw RPCError(
      code: .permissionDenied,
      message: "client \(caller.grant.name) may not call \(method): it needs \(needed.rawValue), granted \(granted.isEmpty ? "nothing" : granted)")
  }

  func admitRequest(_ caller: Caller) throws {
    guard caller.limited, settings.requestsPerSecondPerClient > 0 else { return }
    let now = Date().timeIntervalSinceReferenceDate
    guard buckets.withLock({ $0.take(caller.key, now: now) }) else {
      metrics?.recordLimitHit("max_requests_per_second_per_client")
      throw RPCError(
        code: .resourceExhausted,
        message: "client \(caller.key) is over its request rate (limit max_requests_per_second_per_client = \(settings.requestsPerSecondPerClient), burst \(settings.requestBurstPerClient)); retry with backoff")
    }
  }

  /// Counts one more open Write stream of `key`; the caller must call `endWrite`.
  func beginWrite(_ key: String) throws {
    let limit = settings.maxActiveIngestsPerClient
    let admitted = writers.withLock { w -> Bool in
      let n = w[key, default: 0]
      guard limit == 0 || n < limit else { return false }
      w[key] = n + 1
      return true
    }
    guard admitted else {
      metrics?.recordLimitHit("max_active_ingests_per_client")
      throw RPCError(
        code: .resourceExhausted,
        message: "client \(key) has \(limit) uploads open (limit max_active_ingests_per_client = \(limit)); finish or abort one first")
    }
  }

  func endWrite(_ key: String) {
    writers.withLock { w in
      let n = w[key, default: 1] - 1
      w[key] = n > 0 ? n : nil
    }
  }
}

/// Authenticates, authorizes and rate-limits every call, then runs it as its client.
struct AccessInterceptor: ServerInterceptor {
  let access: AccessControl
  /// The identity of calls without the header on this listener (a per-host socket).
  let socketClient: ClientID?
  let isUnixSocket: Bool

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let method = context.descriptor.fullyQualifiedMethod
    let caller = try access.authenticate(
      metadata: request.metadata, context: context, socketClient: socketClient, isUnixSocket: isUnixSocket)
    try access.authorize(caller, method: method)
    if Permission.required(forMethod: method) != nil { try access.admitRequest(caller) }
    let isWrite = context.descriptor.method == "Write"
    if isWrite { try access.beginWrite(caller.key) }
    let client = caller.client
    // Streaming handlers run in the response's producer, after `next` returns.
    var response: StreamingServerResponse<Output>
    do {
      response = try await ClientScope.$current.withValue(client) { try await next(request, context) }
    } catch {
      if isWrite { access.endWrite(caller.key) }
      throw error
    }
    switch response.accepted {
    case .success(var contents):
      let producer = contents.producer
      let access = self.access
      contents.producer = { writer in
        defer { if isWrite { access.endWrite(caller.key) } }
        return try await ClientScope.$current.withValue(client) { try await producer(writer) }
      }
      response.accepted = .success(contents)
    case .failure:
      if isWrite { access.endWrite(caller.key) }
    }
    return response
  }
}
