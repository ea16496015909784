import CairnClient
import CairnCluster
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// A node declared dead while its stream to another node hangs open (chaos one-way: a link
/// that lets packets out but not in) does not keep a ref's lock there: the ingest stays,
/// and the client's retry through another node resumes it. The cluster runs open, so this
/// process can play a node.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HangingPeerStreamTests {
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

  /// The same for an upload a node forwarded to the ref's owner (OwnerWrite): once the
  /// forwarding node is declared dead, the owner closes the writer and keeps the ingest,
  /// and the hanging stream, if it ever speaks again, hears UNAVAILABLE (retry), not that
  /// its writer is closed.
  @Test func aDeadForwardersHangingUploadReleasesTheRef() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3, extraArgs: ["--lock-wait", "0.2"]))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = try #require(
        (0..<2000).map { "hanging-upload-\($0)" }.first { ring.owner(ofRef: $0, isLive: { _ in true }) == NodeID("n2") })
      let sent = Data(repeating: 9, count: 1000)
      let (hold, release) = AsyncStream.makeStream(of: Void.self)
      // This process plays n3 forwarding a client's upload to n2: 1000 bytes, then silence.
      let forwarded = Task {
        try await ContentClient.with(address: cluster.address(1)) { c in
          try await c.peer { p in
            try await p.ownerWrite(
              metadata: ["cairn-node": "n3"],
              requestProducer: { w in
                try await w.write(.with {
                  $0.action = .stat
                  $0.ref = ref
                })
                try await w.write(.with {
                  $0.action = .write
                  $0.offset = 0
                  $0.data = sent
                })
                for await _ in hold { break }
                try await w.write(.with {
                  $0.action = .write
                  $0.offset = 1000
                  $0.data = sent
                })
              },
              onResponse: { r in for try await _ in r.messages {} })
          }
        }
      }
      try await waitUntil("n2 holds the forwarded ingest at 1000") {
        try await ContentClient.with(address: cluster.address(0)) { try await $0.status(ref: ref) }.offset == 1000
      }
      await cluster.nodes[2].stop(SIGKILL)
      let data = sent + StoreConformance.bytes(4000, seed: 12)
      let r = try await putRetrying(cluster.address(0), data, ref: ref)
      #expect(r.digest == Digest.of(data))
      #expect(try await get(cluster.address(1), r.digest) == data)
      release.yield()
      do {
        try await forwarded.value
        Issue.record("the dead forwarder's stream went on after its death")
      } catch let e as ContentError {
        #expect(e.code == .unavailable, "\(e)")
      }
    }
  }

  /// A node that forwards an upload while the owner still holds it dead (it restarted, and
  /// the owner's view has not caught up) is not cut off: only a death declared after the
  /// upload opened counts. (A watch that fired at once failed such uploads with "writer …
  /// is closed" in chaos membership-change.)
  @Test func aForwarderTheOwnerStillHoldsDeadKeepsItsUpload() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = try #require(
        (0..<2000).map { "stale-forwarder-\($0)" }.first { ring.owner(ofRef: $0, isLive: { _ in true }) == NodeID("n2") })
      await cluster.nodes[2].stop(SIGKILL)
      try await waitUntil("n2 holds n3 dead") {
        try await status(cluster.address(1)).members.contains { $0.state.id == "n3" && $0.state.status == .dead }
      }
      // This process plays n3, back from the dead before n2 knows it: an upload in three
      // messages, with a view change (none here) free to arrive between them.
      let data = StoreConformance.bytes(3000, seed: 13)
      let digest = try await ContentClient.with(address: cluster.address(1)) { c in
        try await c.peer { p in
          try await p.ownerWrite(
            metadata: ["cairn-node": "n3"],
            requestProducer: { w in
              try await w.write(.with {
                $0.action = .write
                $0.ref = ref
                $0.offset = 0
                $0.data = data.prefix(1000)
              })
              try await w.write(.with {
                $0.action = .write
                $0.offset = 1000
                $0.data = data.dropFirst(1000)
              })
              try await w.write(.with {
                $0.action = .commit
                $0.offset = Int64(data.count)
                $0.total = Int64(data.count)
              })
            },
            onResponse: { r in
              var last = ""
              for try await m in r.messages where !m.digest.isEmpty { last = m.digest }
              return last
            })
        }
      }
      #expect(digest == Digest.of(data).description)
      #expect(try await get(cluster.address(0), Digest.of(data)) == data)
    }
  }
}
