import CairnClient
import CairnCluster
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// A sloppy quorum (ClusterView.standIns): when two of a blob's three replicas cannot take
/// it, the commit is acknowledged on the next node of its preference list instead of
/// failing, the blob is readable through every node, and once the replicas can take it,
/// they get it and the stand-in drops its copy. Here n2 and n3 refuse replicas because
/// their disks are "full" (a watermark of a millionth); a partition does the same in chaos
/// (partition-minority).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct StandInProcessTests {
  @Test func aBlobWhoseReplicasAreFullIsDurableOnStandInsAndHandedOffLater() async throws {
    let full = ["--disk-high-watermark", "0.000001"]
    try await withCluster(
      try await converged(ClusterProcesses.start(count: 4, extraArgs: ["--repair-interval", "1"], perNodeArgs: [1: full, 2: full]))
    ) { cluster in
      let ids = cluster.ids.map { NodeID($0) }
      let ring = Ring(nodes: ids)
      // A blob replicated on n2, n3 and n4, uploaded under a ref n1 owns: n1 is its
      // stand-in (the fourth node of its preference list) and holds the committed copy.
      let ref = try #require((0..<500).map { "stand-in-\($0)" }.first { ring.owner(ofRef: $0, isLive: { _ in true }) == ids[0] })
      let data = try #require(
        (0..<400).lazy.map { StoreConformance.bytes(40_000, seed: UInt64(7000 + $0)) }
          .first { Set(ring.replicas(of: Digest.of($0), count: 3)) == Set(ids[1...]) })
      let digest = Digest.of(data)
      let r = try await putRetrying(cluster.address(0), data, ref: ref)
      #expect(r.digest == digest)
      #expect(cluster.holds(0, digest: digest.hex) && cluster.holds(3, digest: digest.hex))
      #expect(!cluster.holds(1, digest: digest.hex) && !cluster.holds(2, digest: digest.hex))
      for reader in 0..<4 {
        #expect(try await get(cluster.address(reader), digest) == data, "read through n\(reader + 1)")
        let info = try await ContentClient.with(address: cluster.address(reader)) { try await $0.info(digest.description) }
        #expect(info.size == Int64(data.count), "Info through n\(reader + 1)")
      }

      // The replicas get room (restarted without the watermark): the hints reach them and
      // the stand-in's copy goes.
      let peers = zip(cluster.ids, cluster.ports).map { "\($0)=127.0.0.1:\($1)" }.joined(separator: ",")
      var restarted: [ServerProcess] = []
      do {
        for i in [1, 2] {
          await cluster.nodes[i].stop(SIGTERM)
          let node = ServerProcess(
            dataDir: cluster.nodes[i].dataDir, listen: cluster.address(i),
            extraArgs: ["--node-id", cluster.ids[i], "--peers", peers, "--repair-interval", "1"])
          restarted.append(node)
          try await node.start()
        }
        try await waitUntil("n2 and n3 hold the blob and the stand-in n1 dropped its copy", timeout: 60) {
          cluster.holds(1, digest: digest.hex) && cluster.holds(2, digest: digest.hex) && cluster.holds(3, digest: digest.hex)
            && !cluster.holds(0, digest: digest.hex)
        }
        for reader in 0..<4 { #expect(try await get(cluster.address(reader), digest) == data) }
      } catch {
        for node in restarted { await node.stop(SIGKILL) }
        throw error
      }
      for node in restarted { await node.stop(SIGKILL) }
    }
  }
}
