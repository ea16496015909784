import CairnCore

/// What every node of one cluster must agree on, plus this node's own identity. Nodes
/// exchange `fingerprint` with every gossip message and refuse peers whose fingerprint
/// differs: two rings built from different peer lists or replica counts would place the
/// same digest on different nodes, and mixing them silently would lose blobs.
public struct ClusterConfig: Sendable, Hashable {
  public var me: NodeID
  /// Every node of the cluster (this one included), id → advertised address.
  public var peers: [NodeID: String]
  public var replicas: Int
  public var writeQuorum: Int
  public var vnodesPerNode: Int
  public var swim: SWIM.Config
  /// Raised by one with every membership change; the highest epoch wins across the
  /// cluster (Membership adopts it). At most `maxEpoch`.
  public var epoch: UInt64

  /// A million membership changes a second for a thousand centuries stay below it; a
  /// config beyond it (a peer's corruption or lie) is refused, and `epoch + 1` never
  /// overflows.
  public static let maxEpoch: UInt64 = 1 << 53

  /// Every node builds a ring of peers × vnodes points from a config a peer may send: at
  /// most 1000 nodes (2M points at the default 2048 vnodes, about 32 MB), node ids of at
  /// most 255 bytes and addresses of at most 1024.
  public static let maxPeers = 1000
  public static let maxNodeIDBytes = 255
  public static let maxAddressBytes = 1024

  /// R defaults to 3 (or the cluster size if smaller), W to 2 (or R if smaller).
  /// `departed`: a config adopted from the cluster after this node was removed from it
  /// (the node hands its blobs off and may then stop); otherwise `me` must be a peer.
  public init(
    me: NodeID, peers: [NodeID: String], replicas: Int? = nil, writeQuorum: Int? = nil,
    vnodesPerNode: Int = Ring.defaultVnodesPerNode, swim: SWIM.Config = ClusterConfig.defaultSWIM,
    epoch: UInt64 = 0, departed: Bool = false
  ) throws(ContentError) {
    guard peers[me] != nil || departed else {
      throw .invalidArgument("node id \(me) is not in the peer list (\(peers.keys.sorted().map(\.name).joined(separator: ", ")))")
    }
    guard peers.count <= Self.maxPeers else {
      throw .invalidArgument("\(peers.count) peers is more than a cluster may have (\(Self.maxPeers))")
    }
    for (id, address) in peers {
      guard (1...Self.maxNodeIDBytes).contains(id.name.utf8.count), (1...Self.maxAddressBytes).contains(address.utf8.count) else {
        throw .invalidArgument(
          "peer \(quoted(id.name, limit: 80)): a node id takes 1 to \(Self.maxNodeIDBytes) bytes, an address 1 to \(Self.maxAddressBytes)")
      }
    }
    let r = replicas ?? min(3, peers.count)
    let w = writeQuorum ?? min(2, r)
    guard r >= 1, r <= peers.count else {
      throw .invalidArgument("replicas must be between 1 and the number of peers (\(peers.count)), got \(r)")
    }
    guard w >= 1, w <= r else { throw .invalidArgument("write quorum must be between 1 and replicas (\(r)), got \(w)") }
    guard vnodesPerNode >= 1, vnodesPerNode <= 65536 else {
      throw .invalidArgument("vnodes must be between 1 and 65536, got \(vnodesPerNode)")
    }
    guard epoch <= Self.maxEpoch else { throw .invalidArgument("config epoch \(epoch) is beyond \(Self.maxEpoch)") }
    self.me = me
    self.peers = peers
    self.replicas = r
    self.writeQuorum = w
    self.vnodesPerNode = vnodesPerNode
    self.swim = swim
    self.epoch = epoch
  }

  /// Whether this node is one of the peers (false after it was removed).
  public var isMember: Bool { peers[me] != nil }

  /// What two configs must share for one to replace the other.
  public var compatibility: String { "replicas=\(replicas) write_quorum=\(writeQuorum) vnodes=\(vnodesPerNode)" }

  /// The next epoch's config: `add` joins (id → address), `remove` leaves. INVALID_ARGUMENT
  /// for a change that would leave fewer nodes than R, or that changes nothing.
  public func changing(add: [NodeID: String], remove: Set<NodeID>) throws(ContentError) -> ClusterConfig {
    var next = peers
    for (id, address) in add {
      guard address.contains(":") else { throw .invalidArgument("address \(quoted(address)) of \(id) is not HOST:PORT") }
      next[id] = address
    }
    for id in remove {
      guard next.removeValue(forKey: id) != nil else { throw .invalidArgument("\(id) is not a member") }
    }
    if next == peers { throw .invalidArgument("the change leaves the peer list as it is") }
    guard epoch < Self.maxEpoch else { throw .failedPrecondition("config epoch \(epoch) is at its limit") }
    guard next.count >= replicas else {
      throw .invalidArgument("\(next.count) nodes would remain, fewer than the \(replicas) replicas each blob needs")
    }
    return try ClusterConfig(
      me: me, peers: next, replicas: replicas, writeQuorum: writeQuorum, vnodesPerNode: vnodesPerNode, swim: swim,
      epoch: epoch + 1, departed: true)
  }

  /// Another node's config, adopted by this one (`me` stays).
  public func adopting(peers: [NodeID: String], epoch: UInt64) throws(ContentError) -> ClusterConfig {
    try ClusterConfig(
      me: me, peers: peers, replicas: replicas, writeQuorum: writeQuorum, vnodesPerNode: vnodesPerNode, swim: swim,
      epoch: epoch, departed: true)
  }

  /// Failure detection tuned for a LAN: a dead node is declared dead about 1.5 s after
  /// it stops answering, so that the refs it owned move within the 3 s failover target.
  public static let defaultSWIM: SWIM.Config = {
    var c = SWIM.Config()
    c.probeInterval = 250_000_000
    c.probeTimeout = 100_000_000
    c.suspicionTimeout = 1_000_000_000
    return c
  }()

  /// `n1=127.0.0.1:7411,n2=127.0.0.1:7412`: ids and addresses, comma separated.
  public static func parsePeers(_ text: String) throws(ContentError) -> [NodeID: String] {
    var out: [NodeID: String] = [:]
    for item in text.split(separator: ",") {
      let part = item.trimmingCharacters(in: " ")
      guard let eq = part.firstIndex(of: "="), eq != part.startIndex, part.index(after: eq) != part.endIndex else {
        throw .invalidArgument("peer \(quoted(String(part))) is not ID=HOST:PORT")
      }
      let id = NodeID(String(part[..<eq]))
      let address = String(part[part.index(after: eq)...])
      guard address.contains(":") else { throw .invalidArgument("peer \(id): address \(quoted(address)) is not HOST:PORT") }
      if out[id] != nil { throw .invalidArgument("peer \(id) is listed twice") }
      out[id] = address
    }
    if out.isEmpty { throw .invalidArgument("the peer list is empty") }
    return out
  }

  /// What must match between nodes, in a readable canonical form.
  public var canonicalDescription: String {
    let list = peers.keys.sorted().map { "\($0)=\(peers[$0]!)" }.joined(separator: ",")
    return "peers=\(list) replicas=\(replicas) write_quorum=\(writeQuorum) vnodes=\(vnodesPerNode) epoch=\(epoch)"
  }

  /// 16 hex digits of the sha256 of `canonicalDescription`.
  public var fingerprint: String {
    String(Digest.of(Array(canonicalDescription.utf8)).hex.prefix(16))
  }
}

extension Substring {
  fileprivate func trimmingCharacters(in c: Character) -> Substring {
    var s = self
    while s.first == c { s = s.dropFirst() }
    while s.last == c { s = s.dropLast() }
    return s
  }
}

/// Peer discovery through a Kubernetes headless service: the service's name resolves to
/// one address per pod, and each address's reverse name is the pod's stable DNS name
/// (`cairn-0.cairn.ns.svc.cluster.local` for pod `cairn-0` of StatefulSet `cairn`). The
/// node id is that name's first label (the pod's hostname) and the peer address is the name
/// itself, so both survive pod restarts that change IPs, and every node derives the same
/// peer list (and fingerprint).
public enum DNSDiscovery {
  public static func peers(fromNames names: [String], port: Int) throws(ContentError) -> [NodeID: String] {
    var out: [NodeID: String] = [:]
    for raw in names {
      let name = raw.hasSuffix(".") ? String(raw.dropLast()) : raw
      guard let label = name.split(separator: ".").first, !label.isEmpty else {
        throw .invalidArgument("reverse DNS name \(quoted(raw)) has no host label")
      }
      let id = NodeID(String(label))
      let address = "\(name):\(port)"
      if let other = out[id], other != address {
        throw .invalidArgument("two peers share the id \(id): \(other) and \(address)")
      }
      out[id] = address
    }
    return out
  }
}
