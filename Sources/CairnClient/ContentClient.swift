import CairnCore
import CairnProto
import CairnTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf

/// Which Content API a client speaks.
public enum ContentAPI: String, Sendable, CaseIterable {
  /// containerd.v1.Content (the seed): Info, Read, Status (a watch), Write with ABORT.
  case seed
  /// containerd.services.content.v1.Content: what containerd 1.6 serves and proxies.
  case modern
}

/// A client of both Content APIs, for the CLI, the benchmark and the tests. It works
/// against Cairn and against a plain containerd socket (with a namespace).
public struct ContentClient: Sendable {
  public let api: ContentAPI
  public let namespace: String?
  /// Sent as the `cairn-client` header: the server then shows this client only what it
  /// holds (ScopedStore). nil = the whole store.
  public let client: String?
  public let address: ServerAddress
  let grpc: GRPCClient<HTTP2ClientTransport.Posix>
  /// containerd's clients allow 16 MiB messages; so do we, plus framing.
  public static let maxMessageBytes = 16 << 20 + 64 << 10

  /// Connects, runs `body`, and closes the connection.
  public static func with<T: Sendable>(
    address: String, api: ContentAPI = .modern, namespace: String? = nil, client: String? = nil,
    security: ClientSecurity = .current, _ body: (ContentClient) async throws -> T
  ) async throws -> T {
    let parsed = try ServerAddress(parsing: address)
    let transport = try makeTransport(parsed, security: security)
    return try await withGRPCClient(transport: transport, interceptors: security.interceptors) { grpc in
      try await body(ContentClient(api: api, namespace: namespace, client: client, address: parsed, grpc: grpc))
    }
  }

  /// A long-lived client: the caller runs `runConnections()` in a task for as long as it
  /// uses it and ends it with `close()`.
  public static func connect(
    address: String, api: ContentAPI = .modern, client: String? = nil, keepalive: Duration? = nil,
    backoff: HTTP2ClientTransport.Config.Backoff = .defaults, security: ClientSecurity = .current
  ) throws -> ContentClient {
    let parsed = try ServerAddress(parsing: address)
    let transport = try makeTransport(parsed, keepalive: keepalive, backoff: backoff, security: security)
    return ContentClient(
      api: api, namespace: nil, client: client, address: parsed,
      grpc: GRPCClient(transport: transport, interceptors: security.interceptors))
  }

  public func runConnections() async throws { try await grpc.runConnections() }

  /// The same connection, sending another `cairn-client` header.
  public func scoped(to client: String?) -> ContentClient {
    ContentClient(api: api, namespace: namespace, client: client, address: address, grpc: grpc)
  }
  public func close() { grpc.beginGracefulShutdown() }

  /// The HTTP/2 transport every Cairn client uses (the CLI's and the nodes' own, to
  /// their peers): big windows and frames, and the ping guard. `keepalive` closes a
  /// connection whose peer stops answering pings (a hung node): a ping after `keepalive`
  /// of silence, unanswered for `keepaliveTimeout` (default: the same).
  public static func makeTransport(
    _ address: ServerAddress, keepalive: Duration? = nil, keepaliveTimeout: Duration? = nil,
    backoff: HTTP2ClientTransport.Config.Backoff = .defaults, security: ClientSecurity = .current
  ) throws -> HTTP2ClientTransport.Posix {
    try HTTP2ClientTransport.Posix(
      target: address.target, transportSecurity: security.transportSecurity(for: address),
      config: .defaults { config in
        config.http2.targetWindowSize = 8 << 20
        config.http2.maxFrameSize = 1 << 20
        config.backoff = backoff
        if let keepalive {
          config.connection.keepalive = .init(time: keepalive, timeout: keepaliveTimeout ?? keepalive, allowWithoutCalls: true)
        }
        // containerd's server pings per round trip while an upload flows (see the guard).
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
          HTTP2ConnectionGuard.install(on: channel, role: .client, maxPingsPerSecond: Limits.default.maxAbsorbedPingsPerSecond)
        }
      })
  }

  var metadata: Metadata {
    var m = Metadata()
    if let namespace, !namespace.isEmpty { m.addString(namespace, forKey: "containerd-namespace") }
    if let client, !client.isEmpty { m.addString(client, forKey: "cairn-client") }
    return m
  }

  var options: CallOptions {
    var o = CallOptions.defaults
    o.maxRequestMessageBytes = Self.maxMessageBytes
    o.maxResponseMessageBytes = Self.maxMessageBytes
    return o
  }

  var modern: Containerd_Services_Content_V1_Content.Client<HTTP2ClientTransport.Posix> { .init(wrapping: grpc) }

  /// Any call of the peer protocol, as this client's credentials allow (operators' tools,
  /// and tests that play a hostile peer); failures as ContentErrors.
  public func peer<T>(_ body: (Cairn_Peer_V1_Peer.Client<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
    try await call { try await body(.init(wrapping: grpc)) }
  }
  var seed: Containerd_V1_Content.Client<HTTP2ClientTransport.Posix> { .init(wrapping: grpc) }

  func requireModern(_ what: String) throws(ContentError) {
    if api == .seed {
      throw .unimplemented("\(what) is not part of the seed API (containerd.v1.Content); use --api modern")
    }
  }

  /// Maps transport and status errors onto ContentError so callers see one error type.
  func call<T>(_ body: () async throws -> T) async throws -> T {
    do {
      return try await body()
    } catch {
      throw ContentError(rpcFailure: error, reaching: address.description)
    }
  }

  // MARK: Blobs

  public func info(_ digest: String) async throws -> BlobInfo {
    try await call {
      switch api {
      case .modern:
        let r = try await modern.info(.with { $0.digest = digest }, metadata: metadata, options: options)
        return try BlobInfo(r.info)
      case .seed:
        let r = try await seed.info(.with { $0.digest = digest }, metadata: metadata, options: options)
        let t = Timestamp(seconds: r.committedAt.seconds, nanos: r.committedAt.nanos)
        return BlobInfo(digest: try Digest(parsing: r.digest), size: r.size, createdAt: t, updatedAt: t)
      }
    }
  }

  /// Streams [offset, offset+size) to `sink` (size 0 = to the end). Returns bytes read.
  @discardableResult
  public func read(
    _ digest: String, offset: Int64 = 0, size: Int64 = 0, sink: @escaping @Sendable (Data) async throws -> Void
  ) async throws -> Int64 {
    try await call {
      switch api {
      case .modern:
        let req = Containerd_Services_Content_V1_ReadContentRequest.with {
          $0.digest = digest
          $0.offset = offset
          $0.size = size
        }
        return try await modern.read(request: ClientRequest(message: req, metadata: metadata), options: options) {
          try await drain($0.messages, \.data, into: sink)
        }
      case .seed:
        let req = Containerd_V1_ReadRequest.with {
          $0.digest = digest
          $0.offset = offset
          $0.size = size
        }
        return try await seed.read(request: ClientRequest(message: req, metadata: metadata), options: options) {
          try await drain($0.messages, \.data, into: sink)
        }
      }
    }
  }

  /// Reads a range into memory (for small blobs and tests).
  public func readAll(_ digest: String, offset: Int64 = 0, size: Int64 = 0) async throws -> Data {
    let box = DataBox()
    try await read(digest, offset: offset, size: size) { box.append($0) }
    return box.data
  }

  public func list(filters: [String] = []) async throws -> [BlobInfo] {
    try requireModern("List")
    return try await call {
      let req = Containerd_Services_Content_V1_ListContentRequest.with { $0.filters = filters }
      return try await modern.list(request: ClientRequest(message: req, metadata: metadata), options: options) { r in
        var out: [BlobInfo] = []
        for try await m in r.messages { out += try m.info.map { try BlobInfo($0) } }
        return out
      }
    }
  }

  public func delete(_ digest: String) async throws {
    try requireModern("Delete")
    try await call {
      _ = try await modern.delete(.with { $0.digest = digest }, metadata: metadata, options: options)
    }
  }

  public func update(_ digest: String, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    try requireModern("Update")
    return try await call {
      let req = Containerd_Services_Content_V1_UpdateRequest.with {
        $0.info.digest = digest
        $0.info.labels = labels
        if !fieldPaths.isEmpty { $0.updateMask.paths = fieldPaths }
      }
      return try BlobInfo(try await modern.update(req, metadata: metadata, options: options).info)
    }
  }

  /// grpc.health.v1 Check of the whole server: true when SERVING (a node is ready).
  public func isServing() async throws -> Bool {
    try await call {
      try await Grpc_Health_V1_Health.Client(wrapping: grpc).check(.init(), options: options).status == .serving
    }
  }

  /// The first answer of a health Watch (what gRPC clients' health checking asks for).
  public func healthWatchFirst() async throws -> Bool {
    try await call {
      try await Grpc_Health_V1_Health.Client(wrapping: grpc).watch(.init(), options: options) { response in
        for try await m in response.messages { return m.status == .serving }
        return false
      }
    }
  }

  /// A cluster node's view of its cluster (the peer protocol's ClusterStatus).
  public func clusterStatus() async throws -> Cairn_Peer_V1_ClusterStatusResponse {
    try await call {
      try await Cairn_Peer_V1_Peer.Client(wrapping: grpc).clusterStatus(.init(), options: options)
    }
  }

  /// The cluster's members as this node sees them (a client's credential suffices).
  public func members(timeout: Duration) async throws -> [Cairn_Peer_V1_MemberState] {
    var options = self.options
    options.timeout = timeout
    return try await call { [options] in
      try await Cairn_Peer_V1_Peer.Client(wrapping: grpc).members(.init(), options: options).members
    }
  }

  /// Whether this cluster node holds `digest` in its own store (the peer protocol's
  /// LocalInfo: no routing, no remote fetch).
  public func holdsLocally(_ digest: String) async throws -> Bool {
    do {
      return try await call {
        try await Cairn_Peer_V1_Peer.Client(wrapping: grpc).localInfo(.with { $0.digest = digest }, options: options).hasInfo
      }
    } catch let e as ContentError where e.code == .notFound {
      return false
    }
  }

  /// Adds (id → HOST:PORT) and/or removes cluster nodes through this node; the new config.
  public func changeMembership(add: [String: String], remove: [String]) async throws -> Cairn_Peer_V1_ClusterConfigMessage {
    try await call {
      try await Cairn_Peer_V1_Peer.Client(wrapping: grpc).changeMembership(
        .with {
          $0.add = add
          $0.remove = remove
        }, options: options)
    }
  }

  // MARK: Ingests

  public func status(ref: String) async throws -> IngestStatus {
    try requireModern("Status of one ref")
    return try await call {
      try IngestStatus(try await modern.status(.with { $0.ref = ref }, metadata: metadata, options: options).status)
    }
  }

  public func listStatuses(filters: [String] = []) async throws -> [IngestStatus] {
    try requireModern("ListStatuses")
    return try await call {
      let r = try await modern.listStatuses(.with { $0.filters = filters }, metadata: metadata, options: options)
      return try r.statuses.map { try IngestStatus($0) }
    }
  }

  /// The seed API's Status watch: calls `onUpdate` for every status the server streams,
  /// until every matched ingest is committed or aborted (or the caller is cancelled).
  public func watchStatus(
    refs: [String] = [], prefixes: [String] = [], onUpdate: @escaping @Sendable (IngestStatus) async throws -> Void
  ) async throws {
    try await call {
      let req = Containerd_V1_StatusRequest.with {
        $0.refs = refs
        $0.prefix = prefixes
      }
      try await seed.status(request: ClientRequest(message: req, metadata: metadata), options: options) { r in
        for try await m in r.messages {
          try await onUpdate(
            IngestStatus(
              ref: m.ref, offset: m.offset, total: 0, expected: nil, startedAt: Timestamp(m.startedAt),
              updatedAt: Timestamp(m.updatedAt)))
        }
      }
    }
  }

  public func abort(ref: String) async throws {
    switch api {
    case .modern:
      try await call { _ = try await modern.abort(.with { $0.ref = ref }, metadata: metadata, options: options) }
    case .seed:
      // The seed has no Abort RPC: a Write stream whose ABORT action frees the ref.
      try await call {
        let request = StreamingClientRequest<Containerd_V1_WriteRequest>(metadata: metadata) { writer in
          try await writer.write(.with {
            $0.action = .abort
            $0.ref = ref
          })
        }
        try await seed.write(request: request, options: options) { r in
          for try await _ in r.messages {}
        }
      }
    }
  }
}

/// Feeds the bytes of a Read response stream (either API) to `sink`; returns how many.
private func drain<M: Sendable>(
  _ messages: RPCAsyncSequence<M, any Error>, _ data: KeyPath<M, Data>, into sink: @Sendable (Data) async throws -> Void
) async throws -> Int64 {
  var n: Int64 = 0
  for try await m in messages {
    try await sink(m[keyPath: data])
    n += Int64(m[keyPath: data].count)
  }
  return n
}

extension ContentError {
  /// A failed call as a ContentError: a gRPC status keeps its code, a transport failure
  /// (connection refused, closed) is UNAVAILABLE naming `address`.
  public init(rpcFailure error: any Error, reaching address: String) {
    switch error {
    case let e as RPCError: self.init(ContentError.Code(rawValue: e.code.rawValue) ?? .unknown, e.message)
    case let e as ContentError: self = e
    case let e as RuntimeError: self = .unavailable("cannot reach \(address): \(e.message)")
    case is CancellationError: self = .cancelled("cancelled")
    default: self = .from(error)
    }
  }
}

final class DataBox: @unchecked Sendable {
  private let lock = NSLock()
  private var buffer = Data()
  func append(_ d: Data) { lock.withLock { buffer.append(d) } }
  var data: Data { lock.withLock { buffer } }
}
