import CairnCluster
import CairnCore
import Foundation
import GRPCNIOTransportHTTP2
import Synchronization

/// The cluster as one client: any node answers any call, so a call that finds its node
/// unreachable (or UNAVAILABLE) moves on to the next node, and after a full round waits
/// with growing, jittered backoff, until `failoverSeconds` have passed. Whoever uses it sees
/// node failures only as latency. The node that answered last is asked first next time.
///
/// It keeps a view of the cluster: the nodes it was given, plus every member a node names
/// when asked (the peer API's `Members`, which a client's credential may call; asked at
/// the first call, after a round in which no node answered, and every
/// `rediscoverySeconds`), so a client given one address still fails over when that node
/// dies. Members are only ever added: a node that left costs one fast failure per
/// round, and forgetting a node on a stale answer could leave a client with none.
public final class ClusterClient: Sendable {
  public let failoverSeconds: Double
  private let identity: String?
  private let nodes: Mutex<[Node]>
  private let preferred = Atomic<Int>(0)
  private let discovery = Mutex(Discovery())
  /// How often a working client asks again who the members are (a node that joined).
  public static let rediscoverySeconds = 60.0
  /// How long one node may take to say who the members are.
  static let discoveryTimeout: Duration = .seconds(5)

  private struct Node: Sendable {
    let address: String
    let client: ContentClient
    let runner: Task<Void, Never>
  }

  private struct Discovery {
    var enabled = true
    var running = false
    var last = -Double.infinity
  }
  /// After a round in which no node answered, members are asked again at most this often
  /// (asking costs up to `discoveryTimeout` per node that hangs).
  static let rediscoveryAfterFailureSeconds = 5.0

  /// The nodes this client knows of, those it was given first.
  public var addresses: [String] { nodes.withLock { $0.map(\.address) } }

  /// `client` is the identity sent with every call (the `cairn-client` header).
  /// `discover`: learn the other members from the nodes given (off for a client that must
  /// stay on the nodes it names).
  public init(addresses: [String], client: String?, failoverSeconds: Double = 30, discover: Bool = true) throws {
    guard !addresses.isEmpty else { throw ContentError.invalidArgument("no cluster addresses given") }
    self.failoverSeconds = failoverSeconds
    identity = client
    var seen = Set<String>()
    nodes = Mutex(try addresses.filter { seen.insert($0).inserted }.map { try Self.connect($0, client: client) })
    discovery.withLock { $0.enabled = discover }
  }

  private static func connect(_ address: String, client: String?) throws -> Node {
    let c = try ContentClient.connect(
      address: address, client: client, keepalive: .seconds(2),
      backoff: .init(initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.2))
    return Node(address: address, client: c, runner: Task { _ = try? await c.runConnections() })
  }

  /// Asks the known nodes in turn who the cluster's members are and adds those it did not
  /// know. Returns the addresses added. One discovery runs at a time (a caller that finds
  /// one running, or one within `unlessWithin` seconds, returns at once).
  @discardableResult
  public func discover(unlessWithin seconds: Double = 0) async -> [String] {
    let start = discovery.withLock { d -> Bool in
      guard d.enabled, !d.running, Monotonic.seconds - d.last >= seconds else { return false }
      d.running = true
      return true
    }
    guard start else { return [] }
    defer {
      discovery.withLock {
        $0.running = false
        $0.last = Monotonic.seconds
      }
    }
    for node in nodes.withLock({ $0 }) {
      // A node that cannot say (down, a single node without the peer API) is skipped.
      guard let members = try? await node.client.members(timeout: Self.discoveryTimeout) else { continue }
      return add(members.map(\.address).filter { !$0.isEmpty })
    }
    return []
  }

  private func add(_ addresses: [String]) -> [String] {
    nodes.withLock { nodes in
      var added: [String] = []
      // A node's answer is not trusted to size this client: no more connections than a
      // cluster may have members.
      for address in addresses where nodes.count < ClusterConfig.maxPeers && !nodes.contains(where: { $0.address == address }) {
        // A member's address that cannot be dialled (a name this host cannot parse) is skipped.
        guard let node = try? Self.connect(address, client: identity) else { continue }
        nodes.append(node)
        added.append(address)
      }
      return added
    }
  }

  private func discoverIfDue() {
    let due = discovery.withLock { $0.enabled && !$0.running && Monotonic.seconds - $0.last >= Self.rediscoverySeconds }
    if due { Task { await self.discover(unlessWithin: Self.rediscoverySeconds) } }
  }

  /// Runs `body` against one node after another until one answers with anything but
  /// UNAVAILABLE. `body` must be safe to repeat (reads track their own position).
  public func call<T>(_ body: (ContentClient) async throws -> T) async throws -> T {
    discoverIfDue()
    let deadline = Monotonic.seconds + failoverSeconds
    var pause = 0.05
    while true {
      let clients = nodes.withLock { $0.map(\.client) }
      let start = preferred.load(ordering: .relaxed)
      var last: ContentError?
      for i in 0..<clients.count {
        let index = (start + i) % clients.count
        do {
          let result = try await body(clients[index])
          preferred.store(index, ordering: .relaxed)
          return result
        } catch {
          let e = ContentError.from(error)
          guard e.code == .unavailable, !Task.isCancelled else { throw e }
          last = e
        }
      }
      if Monotonic.seconds > deadline {
        throw ContentError.unavailable("no node of the cluster answered within \(failoverSeconds) s: \(last?.message ?? "")")
      }
      // No node answered: the members may have changed (a node replaced, a new address).
      if await !discover(unlessWithin: Self.rediscoveryAfterFailureSeconds).isEmpty { continue }
      // Backoff between rounds over every node (jittered, so that clients that failed
      // together do not come back together), not synchronisation.
      try await Task.sleep(for: .seconds(pause * Double.random(in: 0.8...1.2)))
      pause = min(pause * 2, 1)
    }
  }

  public func close() async {
    let all = nodes.withLock { $0 }
    for n in all { n.client.close() }
    for n in all { await n.runner.value }
  }
}
