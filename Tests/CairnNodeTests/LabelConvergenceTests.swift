import CairnCore
import CairnTestKit
import Foundation
import Testing

@testable import CairnNode

/// Labels are the one mutable part of a blob, and its replicas must agree on them whatever
/// order an Update and the blob's copies reach them in. The containerd suite caught the
/// race in CI: an Update ran while a replica's copy was still on its way (or before a
/// hinted copy was delivered); the replica answered NOT_FOUND, then the copy arrived with
/// the labels of the commit, and Info on that replica answered the commit's labels and
/// time after the Update had succeeded.
@Suite(.serialized, .timeLimit(.minutes(2))) struct LabelConvergenceTests {
  @Test func anUpdateReachesReplicasThatLackedTheBlobAndALateCopyCannotUndoIt() async throws {
    let cluster = try await InProcessCluster.start(count: 3, replicas: 3, writeQuorum: 2, limits: StoreConformance.testLimits)
    do {
      try await check(cluster)
    } catch {
      await cluster.stop()
      throw error
    }
    await cluster.stop()
  }

  private func check(_ cluster: InProcessCluster) async throws {
    let (n1, n2) = (cluster.nodes[0], cluster.nodes[1])
    let data = Data("a blob whose copies to n2 and n3 are still on their way".utf8)
    let digest = Digest.of(data)
    // Committed on n1 alone, as if its transfers to the other replicas had not arrived yet.
    let writer = try await n1.local.openWriter(ref: "only-on-n1", total: Int64(data.count), expected: digest)
    _ = try await writer.append(data)
    let committed = try await writer.commit(size: Int64(data.count), expected: digest, labels: ["k": "v1"], createdAt: nil)
    await writer.close()
    let createdAt = committed.status.updatedAt

    let updated = try await n1.store.update(digest, labels: ["k": "v2"], fieldPaths: [])
    #expect(updated.labels == ["k": "v2"])
    for node in cluster.nodes {
      let info = try await node.local.info(digest)
      #expect(info.labels == ["k": "v2"], "labels on \(node.config.me)")
      #expect(info.updatedAt == updated.updatedAt, "labels' time on \(node.config.me)")
      #expect(try await node.store.info(digest).labels == ["k": "v2"], "Info through \(node.config.me)")
    }

    // The commit's own copy, made before the Update, arrives at n2 now: n2 keeps the
    // Update's labels.
    let late = n1.replicaHeader(
      digest, size: Int64(data.count), labels: ["k": "v1"], createdAt: createdAt, ref: "", labelsUpdatedAt: createdAt)
    #expect(try await n2.acceptReplica(late, next: Self.once(data)))
    #expect(try await n2.local.info(digest).labels == ["k": "v2"])

    // A copy whose labels were set after the Update's wins.
    let later = updated.updatedAt.adding(seconds: 0.001)
    let newer = n1.replicaHeader(
      digest, size: Int64(data.count), labels: ["k": "v3"], createdAt: createdAt, ref: "", labelsUpdatedAt: later)
    #expect(try await n2.acceptReplica(newer, next: Self.once(data)))
    let info = try await n2.local.info(digest)
    #expect(info.labels == ["k": "v3"])
    #expect(info.updatedAt == later)

    // A far-future time would pin its labels against every later Update: the copy is taken,
    // that time is not.
    let future = n1.replicaHeader(
      digest, size: Int64(data.count), labels: ["k": "forever"], createdAt: createdAt, ref: "",
      labelsUpdatedAt: Timestamp.now().adding(seconds: 3600))
    #expect(try await n2.acceptReplica(future, next: Self.once(data)))
    #expect(try await n2.local.info(digest).labels == ["k": "v3"])
  }

  private static func once(_ data: Data) -> () async throws -> Data? {
    var sent = false
    return {
      if sent { return nil }
      sent = true
      return data
    }
  }
}
