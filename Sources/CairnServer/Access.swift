import CairnCore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import CairnTransport
import Synchronization

/// The authenticated caller of the call being served, handed to the handlers (and every
/// task they start) as a task-local by `AccessInterceptor`.
public struct CallContext: Sendable {
  /// What the caller's credential grants.
  public var grant: Grant
  /// The client view the call sees (ScopedStore); nil = the whole store. A client grant's
  /// own client, else what the `cairn-client` header narrowed an unscoped grant to.
  public var scope: ClientID?
  /// The identity the caller's limits count under: its token, its certificate, else its
  /// remote address. Never the `cairn-client` header, which the caller chooses.
  public var key: String
  /// Peers and the unix socket are not rate limited: the cluster must not throttle itself.
  public var limited: Bool
  /// The node a peer credential authenticated (nil in open mode, where nobody is
  /// authenticated and every caller is trusted).
  public var peer: String? { grant.peer }
  /// Open mode (loopback without credentials, or `--insecure`): every caller is trusted.
  public var trusted: Bool
  /// The cluster node the call comes from: the peer its credential authenticated, or in
  /// open mode the node its `cairn-node` header names (nil for a client).
  public var node: String?
  /// The header in which a node names itself on its calls to peers.
  public static let nodeHeader = "cairn-node"

  @TaskLocal public static var current: CallContext?

  /// A peer message names its sender (gossip's `from`, a replica's `owner`); unless the
  /// node runs open, that name must be the peer the credential authenticated.
  public static func requireSender(_ claimed: String, in what: String) throws(ContentError) {
    guard let c = current, !c.trusted else { return }
    guard let peer = c.peer, peer == claimed else {
      throw .permissionDenied(
        "\(what) claims to come from \(quoted(claimed, limit: 80)), but the caller authenticated as \(c.peer.map { "peer \($0)" } ?? c.key)")
    }
  }
}

/// Which client a call comes from: calls with a client see their ScopedStore; calls
/// without one see the whole store (operators, and clients that share everything on
/// purpose). A caller without the write permission never takes a hold by looking.
public enum ClientScope {
  public static let header = "cairn-client"

  static func store(_ base: any ContentStore) -> any ContentStore {
    guard let c = CallContext.current, let client = c.scope else { return base }
    return ScopedStore(base: base, client: client, mayClaim: c.grant.allows(.write))
  }
}

/// Who may call, and how much. Shared by every listener of a node; the token table is
/// replaced when its file changes.
public final class AccessControl: Sendable {
  /// How callers are told apart.
  public enum Mode: Sendable, Hashable {
    /// No credentials exist: every caller is trusted with everything, the peer protocol
    /// included. Only on loopback, or when the operator says `--insecure`.
    case open
    /// Credentials (cluster certificates, tokens) decide; a caller without one gets
    /// `anonymousPermissions`.
    case secured
  }

  public struct Settings: Sendable {
    public var mode: Mode = .open
    /// What a TCP caller without a credential may do in secured mode (default: nothing
    /// but health checks).
    public var anonymousPermissions: Set<Permission> = []
    /// Requests per second one identity may make (0 = no limit), and its burst.
    public var requestsPerSecondPerClient: Double = 10000
    public var requestBurstPerClient: Double = 20000
    /// Write streams one identity may have open at once (0 = no limit).
    public var maxActiveIngestsPerClient: Int = 256
    /// Watches (seed Status, health Watch) one identity may have open at once.
    public var maxWatchesPerClient: Int = 64
    /// A call waiting this long for its client's next request message ends (an upload's
    /// ingest stays, resumable); a watch with nothing to say for this long ends.
    public var requestIdleSeconds: Double = 120
    public var watchIdleSeconds: Double = 600
    public init() {}
  }

  public let settings: Settings
  /// nil: no tokens are accepted.
  private let tokens: Mutex<TokenTable?>
  private let buckets: Mutex<RateBuckets>
  private let open = Mutex<[String: Int]>([:])
  let metrics: NodeMetrics?

  public init(settings: Settings = Settings(), tokens: TokenTable? = nil, metrics: NodeMetrics? = nil) {
    self.settings = settings
    self.tokens = Mutex(tokens)
    self.metrics = metrics
    buckets = Mutex(RateBuckets(rate: settings.requestsPerSecondPerClient, burst: settings.requestBurstPerClient))
  }

  public func replaceTokens(_ table: TokenTable) { tokens.withLock { $0 = table } }

  /// The grant of a bearer token, if it is valid here.
  public func grant(forToken token: String) -> Grant? { tokens.withLock { $0 }?.grant(forToken: token) }

  /// Who the caller is. Credentials, strongest first: the unix socket (its file
  /// permissions), a cluster certificate with a Cairn role, a bearer token; else the caller
  /// is anonymous, keyed by its address. Nothing here fails for a missing credential:
  /// `authorize` says UNAUTHENTICATED when the method needs one.
  func authenticate(metadata: Metadata, context: ServerContext, socketClient: ClientID?, isUnixSocket: Bool) throws -> CallContext {
    let named: ClientID?
    if let value = metadata[stringValues: ClientScope.header].first(where: { _ in true }) {
      do { named = try ClientID(value) } catch {
        throw RPCError(code: .invalidArgument, message: "\(ClientScope.header) header: \(error.message)")
      }
    } else {
      named = isUnixSocket ? socketClient : nil
    }
    let address = Self.address(of: context.remotePeer)
    if settings.mode == .open {
      return CallContext(
        grant: Grant(client: nil, permissions: [.admin, .peer]), scope: named, key: isUnixSocket ? "unix" : "address:\(address)",
        limited: !isUnixSocket, trusted: true)
    }
    if isUnixSocket {
      return CallContext(grant: Grant(client: nil, permissions: [.admin]), scope: named, key: "unix", limited: false, trusted: false)
    }
    var grant: Grant?
    var key = ""
    if let certificate = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate,
      let role = CertificateRole.from(uris: CertificateURIs.of(certificate))
    {
      grant = role.grant
      key = "certificate:\(role.uri)"
    } else if let auth = metadata[stringValues: "authorization"].first(where: { _ in true }) {
      let parts = auth.split(separator: " ", maxSplits: 1)
      guard parts.count == 2, parts[0].lowercased() == "bearer", let (hash, g) = tokens.withLock({ $0 })?.entry(forToken: String(parts[1]))
      else {
        throw RPCError(code: .unauthenticated, message: "the bearer token is not valid on this node")
      }
      grant = g
      // Each token is an identity of its own (two `*` tokens are two callers), named by
      // its grant and the start of its hash.
      key = "token:\(g.permissions.contains(.peer) ? "peer/" : "")\(g.name)#\(hash.dropFirst("sha256:".count).prefix(12))"
    }
    guard let grant else {
      // An anonymous caller is nobody in particular: it may not pick a client's view (and
      // with it that client's labels and holds).
      if let named {
        throw RPCError(
          code: .permissionDenied,
          message: "a caller without a credential may not act as client \(named) (\(ClientScope.header) header): authenticate as that client")
      }
      return CallContext(
        grant: Grant(client: nil, permissions: settings.anonymousPermissions), scope: named, key: "anonymous@\(address)",
        limited: true, trusted: false)
    }
    if grant.peer != nil {
      return CallContext(grant: grant, scope: nil, key: key, limited: false, trusted: false)
    }
    if let own = grant.client, let named, named != own {
      throw RPCError(
        code: .permissionDenied, message: "client \(own) may not act as client \(named) (\(ClientScope.header) header)")
    }
    return CallContext(grant: grant, scope: grant.client ?? named, key: key, limited: true, trusted: false)
  }

  /// The host part of gRPC's `ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` peer description.
  static func address(of remotePeer: String) -> String {
    remotePeer.split(separator: ":").dropFirst().dropLast().joined(separator: ":")
  }

  func authorize(_ caller: CallContext, method: String) throws {
    guard let needed = Permission.required(forMethod: method), !caller.grant.allowsAny(of: needed) else { return }
    let want = needed.sorted().map(\.rawValue).joined(separator: " or ")
    if caller.grant.permissions.isEmpty && caller.key.hasPrefix("anonymous@") {
      throw RPCError(
        code: .unauthenticated,
        message: "\(method) needs \(want): send a bearer token (authorization: Bearer TOKEN) or present a cluster certificate with a Cairn role")
    }
    let granted = caller.grant.permissions.sorted().map(\.rawValue).joined(separator: ",")
    throw RPCError(
      code: .permissionDenied,
      message: "\(caller.key) may not call \(method): it needs \(want), granted \(granted.isEmpty ? "nothing" : granted)")
  }

  func admitRequest(_ caller: CallContext) throws {
    guard caller.limited, settings.requestsPerSecondPerClient > 0 else { return }
    let now = Monotonic.seconds
    guard buckets.withLock({ $0.take(caller.key, now: now) }) else {
      metrics?.recordLimitHit("max_requests_per_second_per_client")
      throw RPCError(
        code: .resourceExhausted,
        message: "\(caller.key) is over its request rate (limit max_requests_per_second_per_client = \(settings.requestsPerSecondPerClient), burst \(settings.requestBurstPerClient)); retry with backoff")
    }
  }

  /// A kind of long-lived stream counted per identity.
  enum Held: String {
    case upload = "max_active_ingests_per_client"
    case watch = "max_watches_per_client"
  }

  /// One open stream counted for its caller until the slot is gone: held by the call's
  /// response producer, so a call cancelled before it ever ran (its producer dropped
  /// unrun) gives its slot back too.
  final class Slot: Sendable {
    let access: AccessControl
    let kind: Held
    let caller: CallContext
    init(_ access: AccessControl, _ kind: Held, _ caller: CallContext) {
      self.access = access
      self.kind = kind
      self.caller = caller
    }
    deinit { access.end(kind, caller) }
  }

  /// Counts one more open stream of `kind` for the caller, for as long as the slot lives.
  func slot(_ kind: Held, _ caller: CallContext) throws -> Slot? {
    guard caller.limited else { return nil }
    try begin(kind, caller)
    return Slot(self, kind, caller)
  }

  private func begin(_ kind: Held, _ caller: CallContext) throws {
    let limit = kind == .upload ? settings.maxActiveIngestsPerClient : settings.maxWatchesPerClient
    let slot = "\(kind.rawValue) \(caller.key)"
    let admitted = open.withLock { w -> Bool in
      let n = w[slot, default: 0]
      guard limit == 0 || n < limit else { return false }
      w[slot] = n + 1
      return true
    }
    guard admitted else {
      metrics?.recordLimitHit(kind.rawValue)
      throw RPCError(
        code: .resourceExhausted,
        message: "\(caller.key) has \(limit) \(kind == .upload ? "uploads" : "watches") open (limit \(kind.rawValue) = \(limit)); finish one first")
    }
  }

  private func end(_ kind: Held, _ caller: CallContext) {
    let slot = "\(kind.rawValue) \(caller.key)"
    open.withLock { w in
      let n = w[slot, default: 1] - 1
      w[slot] = n > 0 ? n : nil
    }
  }
}
