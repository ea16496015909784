import CairnCore
import Foundation
import GRPCNIOTransportHTTP2
import Synchronization

/// The cluster as one client: any node answers any call, so a call that finds its node
/// unreachable (or UNAVAILABLE) moves on to the next node, and after a full round waits
/// with growing backoff, until `failoverSeconds` have passed. Whoever uses it sees node
/// failures only as latency. The node that answered last is asked first next time.
public final class ClusterClient: Sendable {
  public let addresses: [String]
  public let failoverSeconds: Double
  private let clients: [ContentClient]
  private let runners: [Task<Void, Never>]
  private let preferred = Atomic<Int>(0)

  /// `client` is the identity sent with every call (the `cairn-client` header).
  public init(addresses: [String], client: String?, failoverSeconds: Double = 30) throws {
    guard !addresses.isEmpty else { throw ContentError.invalidArgument("no cluster addresses given") }
    self.addresses = addresses
    self.failoverSeconds = failoverSeconds
    clients = try addresses.map {
      try ContentClient.connect(
        address: $0, client: client, keepalive: .seconds(2),
        backoff: .init(initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.2))
    }
    runners = clients.map { c in Task { _ = try? await c.runConnections() } }
  }

  /// Runs `body` against one node after another until one answers with anything but
  /// UNAVAILABLE. `body` must be safe to repeat (reads track their own position).
  public func call<T>(_ body: (ContentClient) async throws -> T) async throws -> T {
    let deadline = Monotonic.seconds + failoverSeconds
    var pause = 0.05
    while true {
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
      // Backoff between rounds over every node, not synchronisation.
      try await Task.sleep(for: .seconds(pause))
      pause = min(pause * 2, 1)
    }
  }

  public func close() async {
    for c in clients { c.close() }
    for r in runners { await r.value }
  }
}
