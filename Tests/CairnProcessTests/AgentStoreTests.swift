import CairnAgent
import CairnClient
import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Testing

/// The agent's store passes the store conformance suite in front of a real node, and
/// keeps working when the first node it knows is gone.
@Suite(.serialized, .timeLimit(.minutes(3))) struct AgentStoreTests {
  func withAgent(cluster: [String], _ body: (AgentStore) async throws -> Void) async throws {
    let dir = try TemporaryDirectory("cairn-agent")
    let local = try await DiskStore.open(root: dir.path, limits: StoreConformance.testLimits)
    let upstream = try ClusterClient(addresses: cluster, client: "test-host", failoverSeconds: 20)
    let cache = BlobCache(store: local, maxBytes: 64 << 20)
    do {
      try await body(AgentStore(local: local, cluster: upstream, cache: cache))
    } catch {
      await upstream.close()
      await local.shutdown()
      throw error
    }
    await upstream.close()
    await local.shutdown()
  }

  @Test func conformance() async throws {
    let node = ServerProcess(dataDir: try TemporaryDirectory("cairn-agent-node").path + "/n")
    try await node.start()
    defer { node.signal(SIGKILL) }
    try await withAgent(cluster: [node.tcpAddress]) { store in
      for c in StoreConformance.cases {
        do {
          try await c.run(store)
        } catch {
          Issue.record("\(c.name): \(error)")
        }
      }
    }
  }

  /// A dead first node costs a retry: uploads, reads (through the cache and past it) work.
  @Test func failsOverToTheNextNode() async throws {
    try await withCluster(try await ClusterProcesses.start(count: 3)) { cluster in
      await cluster.nodes[0].stop(SIGKILL)
      try await withAgent(cluster: (0..<3).map(cluster.address)) { store in
        let data = StoreConformance.bytes(3 << 20, seed: 5)
        let d = try await StoreConformance.put(store, data, ref: "failover")
        // Uploaded, or (when an attempt's commit landed but its answer was lost to the
        // failover) claimed by the retry, which found it committed: either way in the cluster.
        let published = store.counters.publishedBytes.load(ordering: .relaxed)
        let claimed = store.counters.deduplicated.load(ordering: .relaxed)
        #expect(published == 3 << 20 || (published == 0 && claimed == 1), "published \(published), claimed \(claimed)")
        let inCluster = try await ContentClient.with(address: cluster.address(1)) { try await $0.readAll(d.description) }
        #expect(inCluster == data)
        #expect(try await StoreConformance.readAll(store, d) == data)
        await store.cache.evict(d)
        #expect(try await StoreConformance.readAll(store, d, offset: 1000, size: 5000) == data.subdata(in: 1000..<6000))
        #expect(store.counters.readBytes.load(ordering: .relaxed) == 3 << 20, "one whole fetch into the cache")
      }
    }
  }
}
