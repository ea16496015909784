import CairnCore

/// One node's picture of the cluster at one moment: the static ring of every configured
/// node, plus who is live in this node's membership view and that view's version. All
/// placement decisions go through it, so a node decides consistently within one view.
public struct ClusterView: Sendable {
  public let config: ClusterConfig
  public let ring: Ring
  public private(set) var members: [NodeID: Member]
  /// This node's membership version (SWIM's), raised on every change it learns of.
  public private(set) var version: UInt64

  public init(config: ClusterConfig, members: [NodeID: Member], version: UInt64) {
    self.config = config
    ring = Ring(nodes: config.peers.keys, vnodesPerNode: config.vnodesPerNode)
    self.members = members
    self.version = version
  }

  public mutating func update(members: [NodeID: Member], version: UInt64) {
    self.members = members
    self.version = version
  }

  public var me: NodeID { config.me }

  /// A node removed from the cluster no longer hears from the members (they refuse its
  /// gossip); it takes every member for live, so that it can hand its blobs off.
  public func isLive(_ id: NodeID) -> Bool {
    config.isMember ? members[id]?.isLive ?? false : config.peers[id] != nil
  }

  public func address(of id: NodeID) -> String? { members[id]?.address ?? config.peers[id] }

  /// The ref's owner: the first live node of the ref's own preference list.
  public func owner(ofRef ref: String) -> NodeID? {
    ring.owner(ofRef: ref, isLive: isLive)
  }

  /// The node after the ref's owner in the ref's preference list (live ones, this node
  /// included): the one that takes the ref over when its owner dies, and that a full
  /// owner passes the ref's uploads to.
  public func nextOwner(ofRef ref: String) -> NodeID? {
    let order = ring.preferenceList(at: Ring.position(ofRef: ref), count: 2) { $0 == me || isLive($0) }
    return order.count == 2 ? order[1] : nil
  }

  /// The digest's replica set: the first R distinct nodes clockwise, live or not (a dead
  /// replica gets a hint; its place in the write quorum may go to a stand-in).
  public func replicas(of digest: Digest) -> [NodeID] {
    ring.replicas(of: digest, count: config.replicas)
  }

  /// The nodes whose copies count toward a digest's write quorum: its R replicas, then the
  /// next W nodes of its preference list, its stand-ins (a sloppy quorum, as in Dynamo).
  /// When replicas are out of reach (a partition, a full disk), a commit makes the blob
  /// durable on stand-ins instead of failing; the replicas it missed get hints, and a
  /// stand-in keeps its copy until every replica holds the blob (handoff). W stand-ins are
  /// enough for any W copies, and no more are ever asked, so that a NOT_FOUND needs
  /// answers from R + 1 nodes, not from every node.
  public func quorumSlots(of digest: Digest) -> [NodeID] {
    ring.replicas(of: digest, count: config.replicas + config.writeQuorum)
  }

  /// The digest's stand-ins: its quorum slots after the replicas, in preference order.
  public func standIns(of digest: Digest) -> [NodeID] {
    Array(quorumSlots(of: digest).dropFirst(config.replicas))
  }

  /// The digest's primary: its first live replica (this node counts as live). It gets
  /// every blob before the commit is acknowledged and every label Update, so Info asks it
  /// first.
  public func primary(of digest: Digest) -> NodeID? {
    replicas(of: digest).first { $0 == me || isLive($0) }
  }

  /// Whether the nodes that said they lack `digest` are enough to call it absent. An
  /// acknowledged blob is on at least W of its quorum slots (replicas or stand-ins), so any
  /// K - W + 1 of those K nodes include one that holds it (with 3 nodes, R=3, W=2: any 2;
  /// with 5 or more: any 4 of the 5 slots). Fewer answers (a partition, dead nodes) cannot
  /// tell "absent" from "out of reach", and the answer must be UNAVAILABLE, not NOT_FOUND.
  public func absenceIsCertain(of digest: Digest, lackedBy: Set<NodeID>) -> Bool {
    let slots = quorumSlots(of: digest)
    let answered = slots.filter(lackedBy.contains).count
    return answered >= slots.count - min(slots.count, config.writeQuorum) + 1
  }

  /// Where to look for a digest: its live replicas in preference order, then every other
  /// live node (copies left by owners that were not replicas), this node excluded.
  public func readOrder(of digest: Digest) -> [NodeID] {
    let all = ring.preferenceList(at: Ring.position(of: digest), count: ring.nodes.count)
    return all.filter { $0 != me && isLive($0) }
  }

  /// Every live node but this one, for fan-out queries.
  public var livePeers: [NodeID] {
    ring.nodes.filter { $0 != me && isLive($0) }
  }
}
