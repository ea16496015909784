import Crypto
import Foundation

/// What a caller may do. Three kinds of callers are told apart by their credentials, never
/// by what a message says about itself (docs/operations.md, "Threat model"):
/// - **clients** (`read`, `write`, `delete`), scoped to their identity;
/// - **operators** (`admin`: everything a client may do, unscoped, plus membership changes
///   and cluster views; `monitor`: the cluster views, metrics and the dashboard only);
/// - **peers** (`peer`: the cluster's peer protocol and nothing else). `admin` does not
///   include `peer`, and no client credential grants it.
public enum Permission: String, Sendable, Hashable, CaseIterable, Comparable {
  case read, write, delete, admin, monitor, peer

  public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }

  /// The permissions any one of which lets a caller call a gRPC method; nil: none needed
  /// (health Check, for probes).
  public static func required(forMethod path: String) -> Set<Permission>? {
    let parts = path.split(separator: "/")
    guard parts.count == 2 else { return [.admin] }
    let (service, method) = (parts[0], parts[1])
    switch service {
    case "grpc.health.v1.Health":
      // Check is for probes; a Watch holds a stream open, so it needs a credential.
      return method == "Check" ? nil : [.read]
    case "containerd.v1.Content", "containerd.services.content.v1.Content":
      switch method {
      case "Info", "Read", "Status", "List", "ListStatuses": return [.read]
      case "Write", "Abort", "Update": return [.write]
      case "Delete": return [.delete]
      default: return [.admin]
      }
    case "cairn.peer.v1.Peer":
      switch method {
      // Operators look at the cluster and change its membership; peers do too (the
      // dashboard's fan-out, a joining node adding itself: PeerService checks that).
      case "ClusterStatus": return [.admin, .monitor, .peer]
      // A client's failover needs the members' addresses, and nothing more.
      case "Members": return [.read, .admin, .monitor, .peer]
      case "ChangeMembership": return [.admin, .peer]
      default: return [.peer]
      }
    default: return [.admin]
    }
  }
}

/// Who a certificate from the cluster CA says its holder is: a URI in its subject
/// alternative names, `cairn://peer/NODE`, `cairn://operator/NAME` or
/// `cairn://client/NAME` (`cairn certs` issues them; any CA tool that sets a SAN URI
/// can). A certificate without one is not a credential.
public enum CertificateRole: Sendable, Hashable {
  case peer(String)
  case operatorRole(String)
  case client(ClientID)

  public static let scheme = "cairn://"

  /// The role a SAN URI names; nil if it names none (not ours, or malformed).
  public init?(uri: String) {
    guard uri.hasPrefix(Self.scheme) else { return nil }
    let rest = uri.dropFirst(Self.scheme.count).split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
    guard rest.count == 2, let name = try? ClientID(String(rest[1])) else { return nil }
    switch rest[0] {
    case "peer": self = .peer(name.name)
    case "operator": self = .operatorRole(name.name)
    case "client": self = .client(name)
    default: return nil
    }
  }

  public var uri: String {
    switch self {
    case .peer(let n): Self.scheme + "peer/" + n
    case .operatorRole(let n): Self.scheme + "operator/" + n
    case .client(let c): Self.scheme + "client/" + c.name
    }
  }

  /// What the role may do, as a grant.
  public var grant: Grant {
    switch self {
    case .peer(let n): Grant(client: try? ClientID(n), permissions: [.peer])
    case .operatorRole: Grant(client: nil, permissions: [.admin])
    case .client(let c): Grant(client: c, permissions: [.read, .write, .delete])
    }
  }

  /// The first role among a certificate's SAN URIs.
  public static func from(uris: [String]) -> CertificateRole? { uris.lazy.compactMap(CertificateRole.init(uri:)).first }
}

/// One credential's grant: who the caller is and what it may do.
public struct Grant: Sendable, Hashable {
  /// The client identity calls with this grant act as (their ScopedStore); nil ("*" in
  /// the file) = the whole store, and the caller may narrow it with `cairn-client`. For a
  /// `peer` grant: the node id.
  public var client: ClientID?
  public var permissions: Set<Permission>

  public init(client: ClientID?, permissions: Set<Permission>) {
    self.client = client
    self.permissions = permissions
  }

  /// `admin` includes what clients and monitors may do; `peer` is only itself.
  public func allows(_ p: Permission) -> Bool {
    permissions.contains(p) || (permissions.contains(.admin) && p != .peer)
  }

  public func allowsAny(of ps: Set<Permission>) -> Bool { ps.contains(where: allows) }

  /// The node this grant authenticates, if it is a peer's.
  public var peer: String? { permissions.contains(.peer) ? client?.name : nil }

  public var name: String { client?.name ?? "*" }
}

/// The tokens file: one grant per line, `CLIENT PERMISSIONS sha256:HEX`, where HEX is the
/// SHA-256 of the token, so the file holds no secret (`cairn token new` makes a line).
public struct TokenTable: Sendable, Hashable {
  public private(set) var grants: [String: Grant] = [:]

  public init() {}

  public init(parsing text: String, source: String) throws(ContentError) {
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
      if fields.isEmpty { continue }
      let at = "\(source):\(n + 1)"
      guard fields.count == 3 else {
        throw .invalidArgument("\(at): expected CLIENT PERMISSIONS sha256:HEX, got \(quoted(line.trimmingCharacters(in: .whitespaces)))")
      }
      var client: ClientID?
      if fields[0] != "*" {
        do { client = try ClientID(fields[0]) } catch { throw .invalidArgument("\(at): client \(quoted(fields[0])): \(error.message)") }
      }
      var permissions: Set<Permission> = []
      for p in fields[1].split(separator: ",") {
        guard let perm = Permission(rawValue: String(p)) else {
          throw .invalidArgument("\(at): unknown permission \(quoted(String(p))); known: \(Permission.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        permissions.insert(perm)
      }
      let hash = fields[2]
      guard hash.hasPrefix("sha256:"), hash.count == 71, hash.dropFirst(7).allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
        throw .invalidArgument("\(at): token hash must be sha256: and 64 lowercase hex digits, got \(quoted(hash))")
      }
      guard grants[hash] == nil else { throw .invalidArgument("\(at): the same token hash appears twice") }
      // A peer token names its node and grants nothing else: peers are not clients.
      if permissions.contains(.peer) && (permissions.count > 1 || client == nil) {
        throw .invalidArgument("\(at): a peer token names its node (NODE peer sha256:HEX) and has no other permission")
      }
      grants[hash] = Grant(client: client, permissions: permissions)
    }
  }

  public static func hash(of token: String) -> String {
    "sha256:" + SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
  }

  public func grant(forToken token: String) -> Grant? { grants[Self.hash(of: token)] }

  /// A token's grant and its hash (what identifies the token without revealing it).
  public func entry(forToken token: String) -> (hash: String, grant: Grant)? {
    let hash = Self.hash(of: token)
    return grants[hash].map { (hash, $0) }
  }

  /// A new random token (256 bits, URL-safe) and the file line that grants it.
  public static func newToken(client: String, permissions: [Permission]) -> (token: String, line: String) {
    var rng = SystemRandomNumberGenerator()
    let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
    let token = "cairn_" + Data(bytes).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    let perms = permissions.sorted().map(\.rawValue).joined(separator: ",")
    return (token, "\(client) \(perms) \(hash(of: token))")
  }
}

/// A token bucket per key (a client): `rate` requests per second, bursts of `burst`.
/// Time is passed in, so it is deterministic under test.
public struct RateBuckets: Sendable {
  public let rate: Double
  public let burst: Double
  private var buckets: [String: (tokens: Double, at: Double)] = [:]
  /// Keys idle this long are forgotten (their bucket would be full anyway).
  private var lastSweep = 0.0

  public init(rate: Double, burst: Double) {
    self.rate = rate
    self.burst = max(burst, 1)
  }

  /// Takes one token for `key` at `now` (seconds); false if the bucket is empty.
  public mutating func take(_ key: String, now: Double) -> Bool {
    if now - lastSweep > 60 {
      buckets = buckets.filter { now - $0.value.at < burst / rate }
      lastSweep = now
    }
    var b = buckets[key] ?? (burst, now)
    b.tokens = min(burst, b.tokens + (now - b.at) * rate)
    b.at = now
    defer { buckets[key] = b }
    guard b.tokens >= 1 else { return false }
    b.tokens -= 1
    return true
  }
}
