import CairnCluster
import CairnCore
import CairnProto
import CairnServer
import Foundation
import GRPCCore
import SwiftProtobuf

/// The server side of the peer protocol. The Local* calls are the plain content adapter
/// over this node's own store; OwnerWrite is the content adapter's Write over the cluster
/// store in owner mode; Replicate, Gossip and ClusterStatus are the cluster's own.
struct PeerService: Cairn_Peer_V1_Peer.SimpleServiceProtocol {
  let node: ClusterNode
  let watches: WatchRegistry
  private var local: ModernContentService { ModernContentService(store: node.local, forPeers: true) }

  init(node: ClusterNode, watches: WatchRegistry) {
    self.node = node
    self.watches = watches
  }

  func localInfo(request: Containerd_Services_Content_V1_InfoRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_InfoResponse
  { try await local.info(request: request, context: context) }

  func localUpdate(request: Containerd_Services_Content_V1_UpdateRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_UpdateResponse
  { try await local.update(request: request, context: context) }

  func localList(
    request: Containerd_Services_Content_V1_ListContentRequest,
    response: RPCWriter<Containerd_Services_Content_V1_ListContentResponse>, context: ServerContext
  ) async throws { try await local.list(request: request, response: response, context: context) }

  func localDelete(request: Cairn_Peer_V1_LocalDeleteRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_LocalDeleteResponse
  {
    try await rpc {
      let (d, deletedAt) = try request.decoded()
      var at = node.clock.stamp()
      if let deletedAt {
        // The coordinator's time; it may not run ahead of this node's clock (it would
        // outrank commits that follow it here).
        try node.clock.admit(deletedAt, "deleted_at")
        at = deletedAt
      }
      if request.unlessLabelPrefix.isEmpty {
        try await node.deleteLocally(d, at: at)
        return Cairn_Peer_V1_LocalDeleteResponse()
      }
      let deleted = try await node.deleteLocally(d, at: at, unlessLabeled: request.unlessLabelPrefix)
      return .with { $0.kept = !deleted }
    }
  }

  func localRead(
    request: Containerd_Services_Content_V1_ReadContentRequest,
    response: RPCWriter<Containerd_Services_Content_V1_ReadContentResponse>, context: ServerContext
  ) async throws { try await local.read(request: request, response: response, context: context) }

  func localStatus(request: Containerd_Services_Content_V1_StatusRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_StatusResponse
  { try await local.status(request: request, context: context) }

  func localListStatuses(request: Containerd_Services_Content_V1_ListStatusesRequest, context: ServerContext)
    async throws -> Containerd_Services_Content_V1_ListStatusesResponse
  { try await local.listStatuses(request: request, context: context) }

  func localAbort(request: Containerd_Services_Content_V1_AbortRequest, context: ServerContext) async throws
    -> Google_Protobuf_Empty
  { try await local.abort(request: request, context: context) }

  func localEvents(
    request: Cairn_Peer_V1_EventsRequest, response: RPCWriter<Cairn_Peer_V1_IngestEventMessage>,
    context: ServerContext
  ) async throws {
    let events = node.local.ingestEvents()
    try await watchRPC(watches: watches) {
      try await response.write(.with { $0.kind = .subscribed })
      for await e in events where node.isClientEvent(e) { try await response.write(.init(e)) }
    }
  }

  func ownerWrite(
    request: RPCAsyncSequence<Containerd_Services_Content_V1_WriteContentRequest, any Error>,
    response: RPCWriter<Containerd_Services_Content_V1_WriteContentResponse>, context: ServerContext
  ) async throws {
    try await ModernContentService(store: ClusterStore(node: node, servesOwnerWrites: true), forPeers: true)
      .write(request: request, response: response, context: context)
  }

  func replicate(request: RPCAsyncSequence<Cairn_Peer_V1_ReplicateRequest, any Error>, context: ServerContext)
    async throws -> Cairn_Peer_V1_ReplicateResponse
  {
    do {
      return try await receiveReplica(request)
    } catch let e as ContentError {
      throw RPCError(e)
    }
  }

  private func receiveReplica(_ request: RPCAsyncSequence<Cairn_Peer_V1_ReplicateRequest, any Error>) async throws
    -> Cairn_Peer_V1_ReplicateResponse
  {
    var messages = request.makeAsyncIterator()
    guard let first = try await messages.next(), first.hasHeader else {
      throw ContentError.invalidArgument("a replication stream starts with a header")
    }
    try CallContext.requireSender(first.header.owner, in: "a replica of \(quoted(first.header.digest, limit: 80))")
    var pending: Data? = first.data
    let existed = try await node.acceptReplica(first.header) {
      if let p = pending {
        pending = nil
        return p
      }
      return try await messages.next()?.data
    }
    return .with { $0.alreadyExisted = existed }
  }

  func gossip(request: Cairn_Peer_V1_GossipRequest, context: ServerContext) async throws -> Cairn_Peer_V1_GossipResponse {
    do {
      try CallContext.requireSender(request.from, in: "gossip")
      return try await node.membership.receive(request)
    } catch {
      throw RPCError(error)
    }
  }

  func getClusterConfig(request: Cairn_Peer_V1_GetClusterConfigRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_ClusterConfigMessage
  {
    .init(node.config)
  }

  func changeMembership(request: Cairn_Peer_V1_ChangeMembershipRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_ClusterConfigMessage
  {
    try await rpc {
      let config = node.config
      guard config.isMember else {
        throw ContentError.failedPrecondition("\(config.me) was removed from the cluster; ask a member")
      }
      var add: [NodeID: String] = [:]
      for (id, address) in request.add { add[NodeID(id)] = address }
      let remove = Set(request.remove.map { NodeID($0) })
      // An operator changes anything; a peer only itself (a node joining through
      // `cairn serve --join`, or leaving).
      if let caller = CallContext.current, !caller.trusted, !caller.grant.allows(.admin) {
        let me = caller.peer.map { NodeID($0) }
        guard let me, Set(add.keys).union(remove).allSatisfy({ $0 == me }) else {
          throw ContentError.permissionDenied(
            "\(caller.key) may add or remove only itself; membership changes need an operator credential (cairn certs issue --role operator, or a token with admin)")
        }
      }
      let next: ClusterConfig = try await node.changeMembership(add: add, remove: remove)
      return Cairn_Peer_V1_ClusterConfigMessage(next)
    }
  }

  func repairSummary(request: Cairn_Peer_V1_RepairSummaryRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_RepairSummaryResponse
  {
    try await rpc {
      try CallContext.requireSender(request.from, in: "a repair request")
      try checkFingerprint(request.clusterFingerprint)
      let peer = NodeID(request.from)
      let view = node.view
      let shared = try await node.repairInventory().values.filter { AntiEntropy.shared($0.digest, view.me, peer, in: view) }
      return .with { $0.buckets = AntiEntropy.summary(shared) }
    }
  }

  func repairEntries(request: Cairn_Peer_V1_RepairEntriesRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_RepairEntriesResponse
  {
    try await rpc {
      try CallContext.requireSender(request.from, in: "a repair request")
      try checkFingerprint(request.clusterFingerprint)
      guard request.digests.count <= ClusterNode.maxRepairEntriesPerCall else {
        throw ContentError.invalidArgument("at most \(ClusterNode.maxRepairEntriesPerCall) digests per RepairEntries call")
      }
      let peer = NodeID(request.from)
      let view = node.view
      let inventory = try await node.repairInventory()
      let buckets = Set(request.buckets.map(Int.init))
      var out: [RepairEntry] = []
      if !buckets.isEmpty {
        out = inventory.values.filter {
          buckets.contains(AntiEntropy.bucket(of: $0.digest)) && AntiEntropy.shared($0.digest, view.me, peer, in: view)
        }
      }
      for text in request.digests {
        if let e = inventory[try Digest(parsing: text)] { out.append(e) }
      }
      return .with { $0.entries = out.map(Cairn_Peer_V1_RepairEntry.init) }
    }
  }

  func repairPull(request: Cairn_Peer_V1_RepairPullRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_RepairPullResponse
  {
    try await rpc {
      var scheduled: UInt32 = 0
      for text in request.digests.prefix(ClusterNode.maxRepairEntriesPerCall) {
        if node.scheduleRepair(try Digest(parsing: text)) { scheduled += 1 }
      }
      return .with { $0.scheduled = scheduled }
    }
  }

  func forgetTombstone(request: Cairn_Peer_V1_ForgetTombstoneRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_ForgetTombstoneResponse
  {
    try await rpc {
      await node.tombstones.forget(try Digest(parsing: request.digest))
      return .init()
    }
  }

  func mirrorIngest(request: RPCAsyncSequence<Cairn_Peer_V1_MirrorIngestRequest, any Error>, context: ServerContext)
    async throws -> Cairn_Peer_V1_MirrorIngestResponse
  {
    try await rpc { try await node.receiveMirror(request) }
  }

  private func checkFingerprint(_ theirs: String) throws(ContentError) {
    guard theirs == node.config.fingerprint else {
      throw .failedPrecondition(
        "cluster config fingerprint \(theirs) differs from \(node.config.me)'s \(node.config.fingerprint)")
    }
  }

  func clusterStatus(request: Cairn_Peer_V1_ClusterStatusRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_ClusterStatusResponse
  {
    await node.fullStatus()
  }

  func members(request: Cairn_Peer_V1_MembersRequest, context: ServerContext) async throws -> Cairn_Peer_V1_MembersResponse {
    let members = node.view.members.values.sorted { $0.id.name < $1.id.name }
    return .with { $0.members = members.map(Cairn_Peer_V1_MemberState.init) }
  }
}
