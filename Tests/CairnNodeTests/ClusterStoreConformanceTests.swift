import CairnCore
import CairnNode
import CairnTestKit
import Testing

/// The store conformance suite against the cluster store: three in-process nodes over
/// real gRPC, every case run through one node, so most refs are owned elsewhere (forwarded
/// writes) and most blobs have replicas elsewhere (routed reads, fanned-out listings).
/// Each case runs through every node in turn, so that (refs being random) a case almost
/// never meets only locally owned refs.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ClusterStoreConformanceTests {
  @Test(arguments: StoreConformance.cases)
  func clusterStore(_ c: StoreConformance.Case) async throws {
    let cluster = try await InProcessCluster.start(count: 3, limits: StoreConformance.testLimits)
    do {
      for node in cluster.nodes { try await c.run(node.store) }
    } catch {
      await cluster.stop()
      throw error
    }
    await cluster.stop()
  }
}
