import CairnClient
import CairnCore
import CairnProto
import CairnTestKit
import Foundation
import SwiftProtobuf
import Testing

/// Issue 15: what a broken or hostile peer sends. Against three real nodes (an open cluster
/// on loopback, where every caller may speak the peer protocol), every peer RPC is sent with
/// values at the edges: 2^64 − 1 incarnations and epochs, timestamps at Int64's ends and far
/// in the future, negative and huge sizes and offsets, garbage digests, oversized lists. Each
/// call may be refused with any status; afterwards every node must still be running, the
/// cluster whole and a blob acknowledged before readable intact through every node.
@Suite(.serialized) struct HostilePeerTests {
  @Test func extremeValuesInEveryPeerRPCKillNoNodeAndLoseNothing() async throws {
    try await attack(with: { hostileCalls(fingerprint: $0, digest: $1) }, expectWhole: true)
  }

  /// Gossip that drives incarnations to their bound (2^53 − 1 claims, refuted at 2^53, and
  /// claims at 2^53): no node dies and nothing is lost. The membership is not required to
  /// heal: a member at the bound can no longer refute a suspicion its peers' own probes
  /// raise (a peer credential can do this; docs/operations.md, threat model; issue 15's
  /// note has the plan: incarnations kept on disk, only claims at a member's own
  /// incarnation refuted).
  @Test func incarnationsDrivenToTheirBoundKillNoNodeAndLoseNothing() async throws {
    try await attack(with: { fingerprint, _ in incarnationGames(fingerprint: fingerprint) }, expectWhole: false)
  }

  func attack(
    with makeCalls: @Sendable (String, String) -> [(String, @Sendable (ContentClient) async throws -> Void)], expectWhole: Bool
  ) async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let blob = Data("acknowledged before the attack".utf8)
      let digest = try await retryingUnavailable {
        try await ContentClient.with(address: cluster.address(1)) { try await $0.write(ref: "kept", source: DataSource(blob), size: Int64(blob.count)).digest }
      }
      let status = try await ContentClient.with(address: cluster.address(0)) { try await $0.clusterStatus() }
      let calls = makeCalls(status.fingerprint, digest.description)
      var answers: [String] = []
      for (name, call) in calls {
        let code = await code { try await ContentClient.with(address: cluster.address(0)) { try await call($0) } }
        answers.append("\(name): \(code.map(\.name) ?? "OK")")
        for (i, node) in cluster.nodes.enumerated() {
          #expect(node.process.isRunning, "\(cluster.ids[i]) died after \(name) (answers so far: \(answers))")
        }
      }
      // The blob is intact through every node (each holds a copy: R = 3).
      for i in cluster.ids.indices {
        let data = try await retryingUnavailable { try await ContentClient.with(address: cluster.address(i)) { try await $0.readAll(digest.description) } }
        #expect(data == blob, "the blob through \(cluster.ids[i])")
      }
      guard expectWhole else { return }
      // Every node still serves, the membership is as it was.
      do {
        _ = try await converged(cluster)
      } catch {
        var views: [String] = []
        for i in cluster.ids.indices {
          let s = try? await ContentClient.with(address: cluster.address(i)) { try await $0.clusterStatus() }
          views.append("\(cluster.ids[i]) sees " + (s?.members.map { "\($0.state.id)@\($0.state.incarnation):\($0.state.status)\($0.connected ? "" : " (not connected)")" }.joined(separator: ", ") ?? "nothing"))
        }
        Issue.record("the cluster did not come back whole after \(answers): \(views)")
        throw error
      }
      let after = try await ContentClient.with(address: cluster.address(0)) { try await $0.clusterStatus() }
      #expect(after.members.map(\.state.id).sorted() == ["n1", "n2", "n3"] && after.configEpoch == status.configEpoch)
    }
  }
}

/// Peer RPCs with values at the edges (n2 speaking, with the right fingerprint, so that each
/// message gets past the first checks to the arithmetic behind them).
func hostileCalls(fingerprint: String, digest: String) -> [(String, @Sendable (ContentClient) async throws -> Void)] {
  let garbage = "sha256:" + String(repeating: "z", count: 64)
  let farFuture = Google_Protobuf_Timestamp(seconds: Int64(Date().timeIntervalSince1970) + 365 * 86_400, nanos: 0)
  let extremes: [Google_Protobuf_Timestamp] = [
    .init(seconds: .max, nanos: 999_999_999), .init(seconds: .min, nanos: -1), .init(seconds: 10_000_000_000, nanos: 0), farFuture,
  ]
  var calls: [(String, @Sendable (ContentClient) async throws -> Void)] = []
  // Gossip: incarnations and epochs past every bound (refused whole), about every member.
  calls += gossip(fingerprint: fingerprint, [(UInt64.max, 0), (1, UInt64.max)])
  for t in extremes {
    calls.append(("LocalDelete deleted_at \(t.seconds)", { c in
      try await c.peer { _ = try await $0.localDelete(.with { $0.digest = digest; $0.deletedAt = t }) }
    }))
    calls.append(("Replicate created_at \(t.seconds)", { c in
      try await c.peer {
        _ = try await $0.replicate(requestProducer: { w in
          try await w.write(.with { $0.header.digest = Digest.of(Data("r".utf8)).description; $0.header.size = 1; $0.header.owner = "n2"; $0.header.clusterFingerprint = fingerprint; $0.header.createdAt = t })
          try await w.write(.with { $0.data = Data("r".utf8) })
        })
      }
    }))
  }
  for size in [Int64.min, -1, 0, Int64.max] {
    calls.append(("Replicate size \(size)", { c in
      try await c.peer {
        _ = try await $0.replicate(requestProducer: { w in
          try await w.write(.with { $0.header.digest = digest; $0.header.size = size; $0.header.owner = "n2"; $0.header.clusterFingerprint = fingerprint })
          try await w.write(.with { $0.data = Data(repeating: 7, count: 4096) })
        })
      }
    }))
    calls.append(("LocalRead offset \(size)", { c in
      try await c.peer { try await $0.localRead(.with { $0.digest = digest; $0.offset = size; $0.size = size }) { r in for try await _ in r.messages {} } }
    }))
    calls.append(("MirrorIngest offset \(size)", { c in
      try await c.peer {
        _ = try await $0.mirrorIngest(requestProducer: { w in
          try await w.write(.with { $0.header.ref = "hostile"; $0.header.owner = "n2"; $0.header.clusterFingerprint = fingerprint; $0.header.offset = size; $0.header.total = size })
          try await w.write(.with { $0.data = Data(repeating: 1, count: 1024) })
        })
      }
    }))
    calls.append(("OwnerWrite offset \(size)", { c in
      try await c.peer {
        try await $0.ownerWrite(requestProducer: { w in
          try await w.write(.with { $0.action = .write; $0.ref = "hostile-ow"; $0.offset = size; $0.total = size; $0.data = Data([1]) })
          try await w.write(.with { $0.action = .commit; $0.ref = "hostile-ow"; $0.offset = size; $0.total = size })
        }) { r in for try await _ in r.messages {} }
      }
    }))
  }
  calls.append(("Replicate garbage digest", { c in
    try await c.peer {
      _ = try await $0.replicate(requestProducer: { w in
        try await w.write(.with { $0.header.digest = garbage; $0.header.size = 1; $0.header.owner = "n2"; $0.header.clusterFingerprint = fingerprint })
      })
    }
  }))
  calls.append(("Replicate wrong bytes for a digest", { c in
    try await c.peer {
      _ = try await $0.replicate(requestProducer: { w in
        try await w.write(.with { $0.header.digest = digest; $0.header.size = 30; $0.header.owner = "n2"; $0.header.clusterFingerprint = fingerprint })
        try await w.write(.with { $0.data = Data(repeating: 0, count: 30) })
      })
    }
  }))
  let many = (0..<100_000).map { "sha256:" + String(format: "%064x", $0) }
  calls.append(("RepairEntries 100,000 digests", { c in
    try await c.peer { _ = try await $0.repairEntries(.with { $0.from = "n2"; $0.clusterFingerprint = fingerprint; $0.digests = many }) }
  }))
  calls.append(("RepairEntries bucket 2^32-1", { c in
    try await c.peer { _ = try await $0.repairEntries(.with { $0.from = "n2"; $0.clusterFingerprint = fingerprint; $0.buckets = [.max, 0, .max] }) }
  }))
  calls.append(("RepairPull 100,000 digests", { c in
    try await c.peer { _ = try await $0.repairPull(.with { $0.digests = many }) }
  }))
  calls.append(("ForgetTombstone garbage", { c in try await c.peer { _ = try await $0.forgetTombstone(.with { $0.digest = garbage }) } }))
  calls.append(("LocalStatus 1 MiB ref", { c in
    try await c.peer { _ = try await $0.localStatus(.with { $0.ref = String(repeating: "r", count: 1 << 20) }) }
  }))
  calls.append(("LocalUpdate 10,000 labels", { c in
    try await c.peer {
      _ = try await $0.localUpdate(.with {
        $0.info.digest = digest
        $0.info.labels = Dictionary(uniqueKeysWithValues: (0..<10_000).map { ("k\($0)", String(repeating: "v", count: 100)) })
      })
    }
  }))
  return calls
}

/// Gossip that drives every member's incarnation to the bound: claims just below it (each
/// member refutes at the bound) and at it.
func incarnationGames(fingerprint: String) -> [(String, @Sendable (ContentClient) async throws -> Void)] {
  gossip(fingerprint: fingerprint, [((UInt64(1) << 53) - 1, 0), (UInt64(1) << 53, 0)])
}

/// One Gossip of each kind per (incarnation, epoch): n2 says every member (and a stranger)
/// is dead at that incarnation, with the largest sequence number.
func gossip(fingerprint: String, _ values: [(UInt64, UInt64)]) -> [(String, @Sendable (ContentClient) async throws -> Void)] {
  values.flatMap { incarnation, epoch in
    [Cairn_Peer_V1_GossipRequest.Kind.ping, .pingRequest, .ack].map { kind in
      ("Gossip \(kind) incarnation \(incarnation) epoch \(epoch)", { @Sendable (c: ContentClient) async throws in
        try await c.peer {
          _ = try await $0.gossip(.with {
            $0.from = "n2"
            $0.clusterFingerprint = fingerprint
            $0.configEpoch = epoch
            $0.kind = kind
            $0.seq = .max
            $0.target = kind == .ping ? "" : "n3"
            $0.fullSync = true
            $0.updates = ["n1", "n2", "n3", "stranger"].map { id in .with { $0.id = id; $0.address = "127.0.0.1:1"; $0.incarnation = incarnation; $0.status = .dead } }
          })
        }
      })
    }
  }
}
