import CairnClient
import CairnCluster
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// A node past its disk's high watermark still takes the uploads of the refs it owns: it
/// passes them on to each ref's next owner (Delegation.swift), and a ref still has one
/// writer. (n2's watermark is a millionth of its disk: it is full from the start.)
@Suite(.serialized, .timeLimit(.minutes(3)))
struct FullNodeProcessTests {
  static func fullN2(_ extra: [String] = []) async throws -> ClusterProcesses {
    try await converged(ClusterProcesses.start(count: 3, extraArgs: extra, perNodeArgs: [1: ["--disk-high-watermark", "0.000001"]]))
  }

  /// Refs the full node n2 owns while every node is alive.
  static func refsOwnedByN2(_ cluster: ClusterProcesses, count: Int) -> [String] {
    let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
    return (0..<500).map { "full-owner-\($0)" }.filter { ring.owner(ofRef: $0, isLive: { _ in true }) == NodeID("n2") }
      .prefix(count).map { $0 }
  }

  @Test func aFullOwnersRefsAreWrittenThroughEveryNode() async throws {
    try await withCluster(try await Self.fullN2()) { cluster in
      let refs = Self.refsOwnedByN2(cluster, count: 3)
      #expect(refs.count == 3)
      for (i, ref) in refs.enumerated() {
        // Through n1, through the full owner itself, through n3. Retried as a careful
        // client does: with n2 full, the quorum needs both other nodes, and in CI's
        // clusters phase (eight clusters on two cores) a starved failure detector once
        // declared n3 dead for a moment, which is a correct UNAVAILABLE, not this test's
        // subject.
        let data = StoreConformance.bytes(300_000 + i, seed: UInt64(900 + i))
        let r = try await putRetrying(cluster.address(i), data, ref: ref)
        #expect(r.digest == Digest.of(data))
        #expect(!cluster.holds(1, digest: r.digest.hex), "the full node stored \(r.digest)")
        for reader in 0..<3 { #expect(try await get(cluster.address(reader), r.digest) == data) }
      }
    }
  }

  /// Two writers of one ref the full node owns, through different nodes: the second gets
  /// the lock's UNAVAILABLE while the first holds the ref (at the next owner).
  @Test func aFullOwnersRefStillHasOneWriter() async throws {
    try await withCluster(try await Self.fullN2(["--lock-wait", "0.2"])) { cluster in
      let ref = try #require(Self.refsOwnedByN2(cluster, count: 1).first)
      let source = HoldingSource(StoreConformance.bytes(10_000, seed: 1))
      let first = Task {
        try await ContentClient.with(address: cluster.address(0)) { c in
          try await c.write(ref: ref, source: source, resume: false) { source.ack.yield($0) }
        }
      }
      for await offset in source.acked where offset > 0 { break }
      for second in [1, 2] {
        do {
          _ = try await put(cluster.address(second), StoreConformance.bytes(100, seed: 2), ref: ref)
          Issue.record("a second writer through n\(second + 1) succeeded while the first held \(ref)")
        } catch let e as ContentError {
          #expect(e.code == .unavailable, "\(e)")
        }
      }
      source.release.yield()
      _ = await first.result
      // Once the first writer is gone, the ref takes a write again.
      let data = StoreConformance.bytes(20_000, seed: 3)
      let r = try await putRetrying(cluster.address(2), data, ref: ref)
      #expect(try await get(cluster.address(0), r.digest) == data)
    }
  }
}
