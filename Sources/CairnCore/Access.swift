import Crypto
import Foundation

/// What a caller may do. `admin` includes everything, the cluster's peer protocol too.
public enum Permission: String, Sendable, Hashable, CaseIterable, Comparable {
  case read, write, delete, admin

  public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }

  /// The permission a gRPC method needs (nil: none, e.g. health checks for probes).
  public static func required(forMethod path: String) -> Permission? {
    let parts = path.split(separator: "/")
    guard parts.count == 2 else { return .admin }
    let (service, method) = (parts[0], parts[1])
    switch service {
    case "grpc.health.v1.Health": return nil
    case "containerd.v1.Content", "containerd.services.content.v1.Content":
      switch method {
      case "Info", "Read", "Status", "List", "ListStatuses": return .read
      case "Write", "Abort", "Update": return .write
      case "Delete": return .delete
      default: return .admin
      }
    default: return .admin
    }
  }
}

/// One bearer token's grant: who the caller is and what it may do.
public struct Grant: Sendable, Hashable {
  /// The client identity calls with this token act as (their ScopedStore); nil ("*" in
  /// the file) = the whole store, and the caller may name a client in `cairn-client`.
  public var client: ClientID?
  public var permissions: Set<Permission>

  public init(client: ClientID?, permissions: Set<Permission>) {
    self.client = client
    self.permissions = permissions
  }

  public func allows(_ p: Permission) -> Bool { permissions.contains(.admin) || permissions.contains(p) }

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
          throw .invalidArgument("\(at): unknown permission \(quoted(String(p))); known: read, write, delete, admin")
        }
        permissions.insert(perm)
      }
      let hash = fields[2]
      guard hash.hasPrefix("sha256:"), hash.count == 71, hash.dropFirst(7).allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
        throw .invalidArgument("\(at): token hash must be sha256: and 64 lowercase hex digits, got \(quoted(hash))")
      }
      guard grants[hash] == nil else { throw .invalidArgument("\(at): the same token hash appears twice") }
      grants[hash] = Grant(client: client, permissions: permissions)
    }
  }

  public static func hash(of token: String) -> String {
    "sha256:" + SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
  }

  public func grant(forToken token: String) -> Grant? { grants[Self.hash(of: token)] }

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
