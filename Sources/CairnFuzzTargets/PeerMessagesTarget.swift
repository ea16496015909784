import CairnCluster
import CairnCore
import CairnMessages
import Foundation
import SwiftProtobuf

/// The decoding of every peer message into domain values (Sources/CairnProto/
/// PeerConversions.swift): the first byte picks the message, the rest is its protobuf
/// encoding as it arrives from a socket. Invariants: decoding and conversion never trap;
/// what converts is within its bounds (incarnations, epochs, sizes, calendar times) and
/// survives encoding and decoding again unchanged; a cluster config a peer sends is
/// adopted only within ClusterConfig's bounds.
public func fuzzPeerMessages(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  let kind = input.byte()
  let body = Data(input.rest())
  // A message that does not parse is refused by gRPC before any Cairn code sees it.
  func decode<M: SwiftProtobuf.Message>(_: M.Type) -> M? { try? M(serializedBytes: body) }
  switch kind % 9 {
  case 0:
    guard let m = decode(Cairn_Peer_V1_GossipRequest.self), let swim = try? m.swimMessage() else { return }
    let updates: [Member]
    switch swim {
    case .ping(_, let u, _), .pingRequest(_, _, let u), .ack(_, _, let u): updates = u
    }
    for u in updates { fuzzCheck(u.incarnation <= SWIM.maxIncarnation, "an incarnation past its bound") }
    let again = try? Cairn_Peer_V1_GossipRequest(swim, from: NodeID(m.from), config: fuzzConfig).swimMessage()
    fuzzCheck(again == swim, "gossip changed through encoding: \(swim) vs \(String(describing: again))")
  case 1:
    guard let m = decode(Cairn_Peer_V1_ClusterConfigMessage.self) else { return }
    guard let next = try? fuzzConfig.adopting(peers: m.peerList, epoch: m.epoch) else { return }
    fuzzCheck(next.peers.count <= ClusterConfig.maxPeers, "a config with \(next.peers.count) peers was adopted")
    fuzzCheck(next.epoch <= ClusterConfig.maxEpoch, "a config epoch past its bound was adopted")
    _ = next.fingerprint
    let joined = try? ClusterConfig(
      me: next.peers.keys.min() ?? "n1", peers: next.peers, replicas: Int(m.replicas), writeQuorum: Int(m.writeQuorum),
      vnodesPerNode: Int(m.vnodes), epoch: m.epoch)
    if let joined { fuzzCheck((1...65536).contains(joined.vnodesPerNode), "vnodes \(joined.vnodesPerNode) accepted") }
  case 2:
    guard let m = decode(Cairn_Peer_V1_ReplicateRequest.self), let offer = try? m.header.offer() else { return }
    fuzzCheck(offer.size >= 0, "a negative replica size was accepted")
    if let t = offer.createdAt { fuzzCheck(Timestamp.validSeconds.contains(t.seconds), "created_at \(t) accepted") }
    _ = offer.createdAt?.totalNanoseconds
  case 3:
    guard let m = decode(Cairn_Peer_V1_LocalDeleteRequest.self), let (_, at) = try? m.decoded() else { return }
    if let at { fuzzCheck(Timestamp.validSeconds.contains(at.seconds), "deleted_at \(at) accepted") }
    _ = at?.totalNanoseconds
  case 4:
    guard let m = decode(Cairn_Peer_V1_MirrorIngestRequest.self) else { return }
    if let o = try? m.header.opening() { fuzzCheck(o.total >= 0 && o.offset >= 0, "a negative mirror total or offset") }
    if let (_, at) = try? m.commit.decoded() { fuzzCheck(Timestamp.validSeconds.contains(at.seconds), "created_at \(at) accepted") }
  case 5:
    guard let m = decode(Cairn_Peer_V1_RepairEntriesResponse.self) else { return }
    for e in m.entries {
      guard let entry = RepairEntry(e) else { continue }
      fuzzCheck(RepairEntry(Cairn_Peer_V1_RepairEntry(entry)) == entry, "a repair entry changed through encoding")
    }
  case 6:
    guard let m = decode(Cairn_Peer_V1_IngestEventMessage.self), let event = IngestEvent(m) else { return }
    fuzzCheck(IngestEvent(Cairn_Peer_V1_IngestEventMessage(event)) == event, "an ingest event changed through encoding")
  case 7:
    guard let m = decode(Cairn_Peer_V1_RepairSummaryResponse.self) else { return }
    _ = AntiEntropy.differingBuckets(AntiEntropy.summary([]), m.buckets)
  default:
    guard let m = decode(Cairn_Peer_V1_ClusterStatusResponse.self) else { return }
    for member in m.members { _ = member.state.member }
  }
}

/// The receiving node's config: n1 of a 3-node cluster.
private let fuzzConfig = try! ClusterConfig(me: "n1", peers: ["n1": "n1:7400", "n2": "n2:7400", "n3": "n3:7400"])

/// The corpus's starting points for `peer-messages`: one message of each kind with the
/// values at the edges (scripts/fuzz grows the corpus from these; `cairn-fuzz --write-seeds
/// peer-messages DIR` writes them).
public func peerMessageSeeds() -> [[UInt8]] {
  let digest = "sha256:" + String(repeating: "ab", count: 32)
  func ts(_ s: Int64, _ n: Int32) -> Google_Protobuf_Timestamp { .with { $0.seconds = s; $0.nanos = n } }
  func seed(_ kind: UInt8, _ m: some SwiftProtobuf.Message) -> [UInt8] { [kind] + ((try? m.serializedBytes()) ?? []) }
  let member: (UInt64) -> Cairn_Peer_V1_MemberState = { i in .with { $0.id = "n2"; $0.address = "n2:7400"; $0.incarnation = i; $0.status = .dead } }
  return [
    seed(0, Cairn_Peer_V1_GossipRequest.with { $0.from = "n2"; $0.kind = .ping; $0.updates = [member(.max), member(1 << 53), member(0)] }),
    seed(0, Cairn_Peer_V1_GossipRequest.with { $0.from = "n3"; $0.kind = .pingRequest; $0.target = "n2"; $0.seq = .max; $0.configEpoch = (1 << 53) + 1 }),
    seed(0, Cairn_Peer_V1_GossipRequest.with { $0.from = "n3"; $0.kind = .ack; $0.target = "n1"; $0.updates = [member(7)] }),
    seed(1, Cairn_Peer_V1_ClusterConfigMessage.with { $0.epoch = 5; $0.peers = ["n1": "a:1", "n2": "b:1", "n3": "c:1"]; $0.replicas = 3; $0.writeQuorum = 2; $0.vnodes = 2048 }),
    seed(1, Cairn_Peer_V1_ClusterConfigMessage.with { $0.epoch = .max; $0.peers = ["n1": "a:1", "": ""]; $0.replicas = .max; $0.vnodes = 1 << 31 }),
    seed(2, Cairn_Peer_V1_ReplicateRequest.with { $0.header = .with { $0.digest = digest; $0.size = -1; $0.createdAt = ts(10_000_000_000, -1) } }),
    seed(2, Cairn_Peer_V1_ReplicateRequest.with { $0.header = .with { $0.digest = digest; $0.size = .max; $0.createdAt = ts(1, 5); $0.labels = ["k": "v"] } }),
    seed(3, Cairn_Peer_V1_LocalDeleteRequest.with { $0.digest = digest; $0.deletedAt = ts(.max, 999_999_999) }),
    seed(3, Cairn_Peer_V1_LocalDeleteRequest.with { $0.digest = "sha256:zz"; $0.unlessLabelPrefix = "x" }),
    seed(4, Cairn_Peer_V1_MirrorIngestRequest.with { $0.header = .with { $0.ref = "r"; $0.offset = -1; $0.total = .max; $0.expected = digest } }),
    seed(4, Cairn_Peer_V1_MirrorIngestRequest.with { $0.commit = .with { $0.digest = digest; $0.createdAt = ts(.min, 0) } }),
    seed(5, Cairn_Peer_V1_RepairEntriesResponse.with {
      $0.entries = [.with { $0.digest = digest; $0.atNanos = .min; $0.size = -1 }, .with { $0.digest = "md5:00"; $0.deleted = true; $0.atNanos = .max }]
    }),
    seed(6, Cairn_Peer_V1_IngestEventMessage.with {
      $0.kind = .progress; $0.status = .with { $0.ref = "r"; $0.offset = .max; $0.total = -1; $0.startedAt = ts(.max, .max); $0.updatedAt = ts(.min, .min) }
    }),
    seed(6, Cairn_Peer_V1_IngestEventMessage.with { $0.kind = .committed; $0.ref = "r"; $0.digest = digest; $0.size = .min }),
    seed(7, Cairn_Peer_V1_RepairSummaryResponse.with { $0.buckets = Array(repeating: .max, count: 257) }),
    seed(8, Cairn_Peer_V1_ClusterStatusResponse.with { $0.members = [.with { $0.state = member(.max) }] }),
  ]
}
