import CairnCluster
import CairnCore
import Foundation

// Peer messages to and from domain values: everything a peer sends becomes a domain value
// here, checked, before any node logic sees it (the fuzz target `peer-messages` decodes
// arbitrary bytes as every one of these messages through these functions).

extension Cairn_Peer_V1_MemberState {
  public init(_ m: Member) {
    self.init()
    id = m.id.name
    address = m.address
    incarnation = m.incarnation
    status = m.status == .alive ? .alive : m.status == .suspect ? .suspect : .dead
  }

  public var member: Member {
    Member(
      id: NodeID(id), address: address, incarnation: incarnation,
      status: status == .dead ? .dead : status == .suspect ? .suspect : .alive)
  }
}

extension Cairn_Peer_V1_GossipRequest {
  public init(_ message: SWIM.Message, from: NodeID, config: ClusterConfig) {
    self.init()
    self.from = from.name
    clusterFingerprint = config.fingerprint
    configEpoch = config.epoch
    switch message {
    case .ping(let s, let updates, let fullSync):
      kind = .ping
      seq = s
      self.updates = updates.map { .init($0) }
      self.fullSync = fullSync
    case .pingRequest(let s, let t, let updates):
      kind = .pingRequest
      seq = s
      target = t.name
      self.updates = updates.map { .init($0) }
    case .ack(let s, let t, let updates):
      kind = .ack
      seq = s
      target = t.name
      self.updates = updates.map { .init($0) }
    }
  }

  /// The SWIM message, once its epoch and incarnations are within their bounds
  /// (INVALID_ARGUMENT otherwise: a refutation at the bound would overflow).
  public func swimMessage() throws(ContentError) -> SWIM.Message {
    guard configEpoch <= ClusterConfig.maxEpoch, updates.allSatisfy({ $0.incarnation <= SWIM.maxIncarnation }) else {
      throw .invalidArgument("gossip from \(quoted(from, limit: 80)) carries an epoch or incarnation beyond its bound")
    }
    let members = updates.map(\.member)
    switch kind {
    case .pingRequest: return .pingRequest(seq: seq, target: NodeID(target), updates: members)
    case .ack: return .ack(seq: seq, target: NodeID(target), updates: members)
    default: return .ping(seq: seq, updates: members, fullSync: fullSync)
    }
  }
}

extension Cairn_Peer_V1_ClusterConfigMessage {
  public init(_ c: ClusterConfig) {
    self.init()
    epoch = c.epoch
    peers = Dictionary(uniqueKeysWithValues: c.peers.map { ($0.key.name, $0.value) })
    replicas = UInt32(c.replicas)
    writeQuorum = UInt32(c.writeQuorum)
    vnodes = UInt32(c.vnodesPerNode)
  }

  /// The peer list; node ids are compared as the strings they are, so two spellings that
  /// Swift deems equal keep the last address rather than trapping.
  public var peerList: [NodeID: String] {
    Dictionary(peers.map { (NodeID($0.key), $0.value) }) { _, last in last }
  }
}

extension Cairn_Peer_V1_IngestEventMessage {
  public init(_ event: IngestEvent) {
    self.init()
    switch event {
    case .progress(let s):
      kind = .progress
      status = .init(s)
      ref = s.ref
    case .committed(let r, let d, let n):
      kind = .committed
      ref = r
      digest = d.description
      size = n
    case .aborted(let r):
      kind = .aborted
      ref = r
    }
  }
}

extension IngestEvent {
  /// nil for a message that is no event (unknown kind, unparsable digest or status).
  public init?(_ m: Cairn_Peer_V1_IngestEventMessage) {
    switch m.kind {
    case .progress:
      guard let s = try? IngestStatus(m.status) else { return nil }
      self = .progress(s)
    case .committed:
      guard let d = try? Digest(parsing: m.digest) else { return nil }
      self = .committed(ref: m.ref, digest: d, size: m.size)
    case .aborted:
      self = .aborted(ref: m.ref)
    default:
      return nil
    }
  }
}

extension RepairEntry {
  /// nil for an entry whose digest does not parse.
  public init?(_ m: Cairn_Peer_V1_RepairEntry) {
    guard let d = try? Digest(parsing: m.digest) else { return nil }
    self.init(digest: d, state: m.deleted ? .deleted : .present, at: m.atNanos, size: m.size)
  }
}

extension Cairn_Peer_V1_RepairEntry {
  public init(_ e: RepairEntry) {
    self.init()
    digest = e.digest.description
    deleted = e.state == .deleted
    atNanos = e.at
    size = e.size
  }
}

/// A replica a peer offers (a commit's copy, a hint, a handoff, a repair), checked.
public struct ReplicaOffer: Sendable, Hashable {
  public var digest: Digest
  public var size: Int64
  /// The creation time on the sender, if it sent one (a valid calendar time).
  public var createdAt: Timestamp?
  public var labels: [String: String]
  /// When the sender last set the labels, if it said (a valid calendar time).
  public var labelsUpdatedAt: Timestamp?
  /// The ref of the commit it belongs to; empty for hints, handoffs and repairs.
  public var ref: String
  public var owner: String
  /// The ref's owner that passed the upload to the sender (its disk was full); empty if none.
  public var delegatedBy: String
  public var clusterFingerprint: String
}

extension Cairn_Peer_V1_ReplicateHeader {
  public func offer() throws(ContentError) -> ReplicaOffer {
    guard size >= 0 else { throw .invalidArgument("a replica's size \(size) is negative") }
    let d = try Digest(parsing: digest)
    let created = hasCreatedAt ? try Timestamp(validating: createdAt.seconds, nanos: createdAt.nanos, "created_at") : nil
    let labelled =
      hasLabelsUpdatedAt
      ? try Timestamp(validating: labelsUpdatedAt.seconds, nanos: labelsUpdatedAt.nanos, "labels_updated_at") : nil
    return ReplicaOffer(
      digest: d, size: size, createdAt: created, labels: labels, labelsUpdatedAt: labelled, ref: ref, owner: owner,
      delegatedBy: delegatedBy, clusterFingerprint: clusterFingerprint)
  }
}

extension Cairn_Peer_V1_LocalDeleteRequest {
  /// The digest and the coordinator's deletion time, if it sent one.
  public func decoded() throws(ContentError) -> (digest: Digest, deletedAt: Timestamp?) {
    let d = try Digest(parsing: digest)
    guard hasDeletedAt else { return (d, nil) }
    return (d, try Timestamp(validating: deletedAt.seconds, nanos: deletedAt.nanos, "deleted_at"))
  }
}

/// The opening of an ingest mirror stream, checked.
public struct MirrorOpening: Sendable, Hashable {
  public var ref: String
  public var expected: Digest?
  public var total: Int64
  public var offset: Int64
}

extension Cairn_Peer_V1_MirrorIngestHeader {
  public func opening() throws(ContentError) -> MirrorOpening {
    guard total >= 0, offset >= 0 else {
      throw .invalidArgument("a mirror's total \(total) or offset \(offset) is negative")
    }
    return MirrorOpening(ref: ref, expected: try Digest.parseOptional(expected), total: total, offset: offset)
  }
}

extension Cairn_Peer_V1_MirrorCommit {
  /// The committed digest and the owner's creation time.
  public func decoded() throws(ContentError) -> (digest: Digest, createdAt: Timestamp) {
    (try Digest(parsing: digest), try Timestamp(validating: createdAt.seconds, nanos: createdAt.nanos, "created_at"))
  }
}
