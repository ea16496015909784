import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

typealias PeerAPI = Cairn_Peer_V1_Peer.Client<HTTP2ClientTransport.Posix>

/// One long-lived gRPC connection per peer, opened on first use. Keepalive pings close a
/// connection to a node that stopped answering (SIGSTOP, a dead link) within a few
/// seconds, so calls to a hung peer fail over instead of waiting forever.
final class PeerClients: Sendable {
  private struct Entry {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let runner: Task<Void, Never>
  }

  private let addressBook: Mutex<[NodeID: String]>
  private let entries = Mutex<[NodeID: Entry]>([:])
  private let closed = Mutex(false)
  static let keepalive: Duration = .seconds(2)
  /// A node starved of CPU for a few seconds (repair, mirrors and clients sharing two
  /// cores) must keep its streams to its peers; a hung peer is still left within ~7 s.
  static let keepaliveTimeout: Duration = .seconds(5)
  /// Calls to a peer whose connection failed fail at once until it reconnects; retrying
  /// every 100 ms to 1 s (gRPC's default grows to 2 minutes) lets a node that comes back
  /// be used again within a second.
  static let backoff = HTTP2ClientTransport.Config.Backoff(
    initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.2)

  /// The node's credentials towards its peers (its certificate, the cluster CA).
  private let security: ClientSecurity
  /// Every call carries this node's clock reading and takes the peer's (ClusterClock).
  private let clock: ClusterClock
  private let me: NodeID

  init(addresses: [NodeID: String], security: ClientSecurity, clock: ClusterClock, me: NodeID) {
    addressBook = Mutex(addresses)
    self.security = security
    self.clock = clock
    self.me = me
  }

  /// A new peer list (a membership change): new peers become reachable; connections to
  /// removed ones stay until shutdown (a removed node may still be handing blobs off).
  func update(addresses: [NodeID: String]) {
    addressBook.withLock { book in
      for (id, address) in addresses {
        if book[id] != address { book[id] = address }
      }
    }
  }

  private func address(_ id: NodeID) -> String? { addressBook.withLock { $0[id] } }

  func api(_ id: NodeID) throws(ContentError) -> PeerAPI {
    if closed.withLock({ $0 }) { throw .unavailable("node is shutting down") }
    guard let text = address(id) else { throw .internalError("no address for peer \(id)") }
    let address = try ServerAddress(parsing: text)
    let entry = try entries.withLock { e throws(ContentError) -> Entry in
      if let existing = e[id] { return existing }
      let transport: HTTP2ClientTransport.Posix
      // With TLS, the server at a peer's address must be that peer (its certificate's role).
      var security = self.security
      if security.caPath != nil { security.serverRole = .peer(id.name) }
      do {
        transport = try ContentClient.makeTransport(
          address, keepalive: Self.keepalive, keepaliveTimeout: Self.keepaliveTimeout, backoff: Self.backoff, security: security)
      } catch {
        throw ContentError.from(error)
      }
      let client = GRPCClient(
        transport: transport, interceptors: security.interceptors + [clock.clientInterceptor(me: me.name, peer: id.name)])
      let runner = Task { _ = try? await client.runConnections() }
      let entry = Entry(client: client, runner: runner)
      e[id] = entry
      return entry
    }
    return PeerAPI(wrapping: entry.client)
  }

  /// Runs one call to `id`, with failures as ContentErrors.
  func call<T>(_ id: NodeID, _ body: (PeerAPI) async throws -> T) async throws(ContentError) -> T {
    let api = try api(id)
    do {
      return try await body(api)
    } catch {
      throw ContentError(rpcFailure: error, reaching: "\(id) (\(address(id) ?? "?"))")
    }
  }

  /// Deadline of a call that moves no blob (Info, Status, Delete, ...). Keepalive does not
  /// end every hang: a connection opened to a stopped process never gets its HTTP/2
  /// SETTINGS, and one whose packets vanish in a partition was seen to stay open.
  static let unaryTimeout: Duration = .seconds(10)
  /// A blob transfer's deadline: this, plus one second per minimumTransferBytesPerSecond
  /// of blob. Generous on purpose (a debug build under load moves a few MiB/s): it only
  /// bounds a hang that death watches miss.
  static let transferBaseTimeout: Duration = .seconds(30)
  static let minimumTransferBytesPerSecond: Int64 = 1 << 20

  static var unary: CallOptions { options(timeout: unaryTimeout) }
  /// Fan-out listings can carry a whole store's metadata.
  static var listing: CallOptions { options(timeout: .seconds(60)) }
  /// A call that moves `bytes` of blob data (a read, a replica).
  static func transfer(_ bytes: Int64) -> CallOptions {
    options(timeout: transferBaseTimeout + .seconds(max(0, bytes) / minimumTransferBytesPerSecond))
  }

  static func options(timeout: Duration? = nil) -> CallOptions {
    var o = CallOptions.defaults
    o.maxRequestMessageBytes = ContentClient.maxMessageBytes
    o.maxResponseMessageBytes = ContentClient.maxMessageBytes
    o.timeout = timeout
    return o
  }

  func shutdown() async {
    closed.withLock { $0 = true }
    let all = entries.withLock { e -> [Entry] in
      defer { e = [:] }
      return Array(e.values)
    }
    for entry in all {
      entry.client.beginGracefulShutdown()
      await entry.runner.value
    }
  }
}
