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
  private var local: ModernContentService { ModernContentService(store: node.local) }

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
      let d = try Digest(parsing: request.digest)
      if request.unlessLabelPrefix.isEmpty {
        try await node.deleteLocally(d)
        return Cairn_Peer_V1_LocalDeleteResponse()
      }
      let deleted = try await node.deleteLocally(d, unlessLabeled: request.unlessLabelPrefix)
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
      for await e in events { try await response.write(.init(e)) }
    }
  }

  func ownerWrite(
    request: RPCAsyncSequence<Containerd_Services_Content_V1_WriteContentRequest, any Error>,
    response: RPCWriter<Containerd_Services_Content_V1_WriteContentResponse>, context: ServerContext
  ) async throws {
    try await ModernContentService(store: ClusterStore(node: node, servesOwnerWrites: true))
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
    let h = first.header
    guard h.clusterFingerprint == node.config.fingerprint else {
      throw ContentError.failedPrecondition(
        "cluster config fingerprint \(h.clusterFingerprint) differs from \(node.config.me)'s \(node.config.fingerprint)")
    }
    // Fencing: a blob written under a ref is taken only from the ref's owner in this
    // node's view. (Hinted handoff carries no ref: the blob was acknowledged already.)
    if !h.ref.isEmpty {
      let view = node.view
      let owner = view.owner(ofRef: h.ref)
      guard owner?.name == h.owner else {
        throw ContentError.unavailable(
          "\(node.config.me) refuses a replica of \(h.digest) from \(h.owner): in view \(view.version) ref \(quoted(h.ref)) is owned by \(owner?.name ?? "none")")
      }
    }
    let digest = try Digest(parsing: h.digest)
    let existed = Cairn_Peer_V1_ReplicateResponse.with { $0.alreadyExisted = true }
    let createdAt = h.hasCreatedAt ? Timestamp(h.createdAt) : nil
    // Deleted while this transfer was on its way: the deletion wins. Not an acknowledgement:
    // the sender records a hint, which it drops once its own copy is gone too.
    try refuseIfDeleted(digest, createdAt: createdAt)
    let ref = "\(ClusterNode.replicaRefPrefix)\(digest)/\(h.owner)"
    let writer: any IngestWriter
    do {
      writer = try await node.local.openWriter(ref: ref, total: h.size, expected: digest)
    } catch let e as ContentError where e.code == .alreadyExists {
      return existed
    }
    do {
      if try await writer.state().status.offset > 0 { _ = try await writer.truncate() }
      if !first.data.isEmpty { _ = try await writer.append(first.data) }
      while let m = try await messages.next() {
        _ = try await writer.append(m.data)
      }
      _ = try await writer.commit(size: h.size, expected: digest, labels: h.labels, createdAt: createdAt)
    } catch let e as ContentError where e.code == .alreadyExists {
      await writer.close()
      return existed
    } catch {
      await writer.close()
      try? await node.local.abort(ref: ref)
      throw error
    }
    await writer.close()
    // A Delete that fanned out while the bytes were arriving found nothing here to delete.
    do {
      try refuseIfDeleted(digest, createdAt: createdAt)
    } catch {
      try? await node.local.delete(digest)
      throw error
    }
    return .init()
  }

  private func refuseIfDeleted(_ digest: Digest, createdAt: Timestamp?) throws(ContentError) {
    if let createdAt, node.tombstones.deletedSince(digest, createdAt: createdAt) {
      throw .failedPrecondition("\(node.config.me) refuses \(digest): it was deleted after its creation at \(createdAt)")
    }
  }

  func gossip(request: Cairn_Peer_V1_GossipRequest, context: ServerContext) async throws -> Cairn_Peer_V1_GossipResponse {
    do {
      try await node.membership.receive(request)
    } catch {
      throw RPCError(error)
    }
    return .init()
  }

  func clusterStatus(request: Cairn_Peer_V1_ClusterStatusRequest, context: ServerContext) async throws
    -> Cairn_Peer_V1_ClusterStatusResponse
  {
    node.statusReport()
  }
}
