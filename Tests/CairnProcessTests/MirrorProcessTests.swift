import CairnClient
import CairnCluster
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// The ingest mirror's receiving side (IngestMirror.receiveMirror) against a sender that
/// goes quiet.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MirrorProcessTests {
  /// A mirror stream whose owner is declared dead while the stream hangs open (chaos
  /// one-way: a node that can send and not receive) gives up the ref's lock, keeping the
  /// bytes: the ref's next owner, now its owner, takes the client's retry, which resumes
  /// from the mirrored offset. Before, the retry met the lock until the stream ended.
  @Test func aDeadOwnersHangingMirrorReleasesTheRef() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3, extraArgs: ["--lock-wait", "0.2"]))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = try #require(
        (0..<2000).map { "hanging-mirror-\($0)" }.first { r in
          ring.preferenceList(at: Ring.position(ofRef: r), count: 2) == [NodeID("n2"), NodeID("n1")]
        })
      let fingerprint = try await status(cluster.address(0)).fingerprint
      let mirrored = Data(repeating: 7, count: 1000)
      let (hold, release) = AsyncStream.makeStream(of: Void.self)
      // This process plays n2 (the cluster runs open): it mirrors 1000 bytes of the ref to
      // n1, then keeps its stream open without a word.
      let mirror = Task {
        try await ContentClient.with(address: cluster.address(0)) { c in
          try await c.peer { p in
            _ = try await p.mirrorIngest(requestProducer: { w in
              try await w.write(.with {
                $0.header.ref = ref
                $0.header.owner = "n2"
                $0.header.clusterFingerprint = fingerprint
              })
              try await w.write(.with { $0.data = mirrored })
              for await _ in hold { break }
            })
          }
        }
      }
      try await waitUntil("n1 holds the mirrored ingest at 1000") {
        try await ContentClient.with(address: cluster.address(0)) { try await $0.status(ref: ref) }.offset == 1000
      }
      await cluster.nodes[1].stop(SIGKILL)
      let data = mirrored + StoreConformance.bytes(4000, seed: 11)
      let r = try await putRetrying(cluster.address(2), data, ref: ref)
      #expect(r.digest == Digest.of(data))
      #expect(try await get(cluster.address(0), r.digest) == data)
      release.yield()
      _ = await mirror.result
    }
  }
}
