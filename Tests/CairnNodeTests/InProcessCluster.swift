import CairnCluster
import CairnCore
import CairnNode
import CairnServer
import CairnTestKit
import Foundation
import Logging

/// Cluster nodes in this process, each with an in-memory local store, talking to each
/// other over real gRPC on loopback: the unit layer for the cluster store.
final class InProcessCluster: Sendable {
  let nodes: [ClusterNode]
  let dirs: [TemporaryDirectory]
  private let servers: [ContentServer]
  private let tasks: [Task<Void, any Error>]

  static func start(count: Int, replicas: Int? = nil, writeQuorum: Int? = nil, limits: Limits) async throws -> InProcessCluster {
    let ports = try freeLoopbackPorts(count)
    let peers = Dictionary(uniqueKeysWithValues: (0..<count).map { (NodeID("n\($0 + 1)"), "127.0.0.1:\(ports[$0])") })
    var nodes: [ClusterNode] = []
    var servers: [ContentServer] = []
    var tasks: [Task<Void, any Error>] = []
    var dirs: [TemporaryDirectory] = []
    var logger = Logger(label: "cluster-test")
    logger.logLevel = .error
    for i in 0..<count {
      // These tests are about the store's semantics, not failure detection: a node starved
      // of CPU by a loaded test run must not be declared dead (the process tests cover that
      // with the real timings).
      var swim = ClusterConfig.defaultSWIM
      swim.probeTimeout = 1_000_000_000
      swim.suspicionTimeout = 15_000_000_000
      let config = try ClusterConfig(
        me: NodeID("n\(i + 1)"), peers: peers, replicas: replicas, writeQuorum: writeQuorum, swim: swim)
      let dir = try TemporaryDirectory()
      let node = try ClusterNode(config: config, local: MemoryStore(limits: limits), dataDir: dir.path, logger: logger, seed: UInt64(i + 1))
      let server = ContentServer(
        store: node.store, listen: ListenConfig(tcp: ("127.0.0.1", ports[i]), unixPath: nil), logger: logger,
        maintenance: node.maintenance, extraServices: { node.services(watches: $0) }, extraInterceptors: node.interceptors)
      tasks.append(Task { try await server.run() })
      _ = try await server.listeningAddresses()
      nodes.append(node)
      servers.append(server)
      dirs.append(dir)
    }
    let cluster = InProcessCluster(nodes: nodes, dirs: dirs, servers: servers, tasks: tasks)
    try await waitUntil("every node relays every peer's ingest events") {
      nodes.allSatisfy { $0.relayedPeers.count == count - 1 }
    }
    return cluster
  }

  private init(nodes: [ClusterNode], dirs: [TemporaryDirectory], servers: [ContentServer], tasks: [Task<Void, any Error>]) {
    self.nodes = nodes
    self.dirs = dirs
    self.servers = servers
    self.tasks = tasks
  }

  func stop() async {
    for s in servers { s.stop() }
    for t in tasks { _ = try? await t.value }
    for n in nodes { await n.shutdown() }
  }
}
