import CairnCore
import CairnProto
import Foundation
import GRPCCore
import SwiftProtobuf

/// containerd.services.content.v1.Content over any ContentStore: the same thin adapter as
/// containerd's contentserver.
public struct ModernContentService: Containerd_Services_Content_V1_Content.SimpleServiceProtocol {
  let unscoped: any ContentStore
  /// The calling client's view (ClientScope).
  var store: any ContentStore { ClientScope.store(unscoped) }

  /// Served to peers (the peer protocol's Local* calls and OwnerWrite): their requests may
  /// carry the reserved labels ScopedStore writes; a client's may not.
  let forPeers: Bool

  public init(store: any ContentStore, forPeers: Bool = false) {
    unscoped = store
    self.forPeers = forPeers
  }

  public func info(request: Containerd_Services_Content_V1_InfoRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_InfoResponse
  {
    try await rpc {
      let info = try await store.info(try Digest(parsing: request.digest))
      return .with { $0.info = .init(info) }
    }
  }

  public func update(request: Containerd_Services_Content_V1_UpdateRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_UpdateResponse
  {
    try await rpc {
      let d = try Digest(parsing: request.info.digest)
      let paths = request.hasUpdateMask ? request.updateMask.paths : []
      if !forPeers { try LabelRules.validateRequest(request.info.labels, limits: store.limits) }
      let info = try await store.update(d, labels: request.info.labels, fieldPaths: paths)
      return .with { $0.info = .init(info) }
    }
  }

  public func list(
    request: Containerd_Services_Content_V1_ListContentRequest,
    response: RPCWriter<Containerd_Services_Content_V1_ListContentResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      let filter = try Filter.parse(request.filters, limits: store.limits)
      let infos = try await store.list(filter)
      if filter.exhausted { throw filter.exhaustedError }
      // Batches bounded in count and in bytes: one blob's labels may take up to
      // max_metadata_bytes, and a message must stay under max_message_bytes.
      var batch: [Containerd_Services_Content_V1_Info] = []
      var bytes = 0
      for info in infos {
        let size = info.labels.reduce(128) { $0 + $1.key.utf8.count + $1.value.utf8.count + 8 }
        if !batch.isEmpty && (batch.count >= store.limits.listBatchSize || bytes + size > store.limits.listBatchBytes) {
          try await response.write(.with { $0.info = batch })
          (batch, bytes) = ([], 0)
        }
        batch.append(.init(info))
        bytes += size
      }
      if !batch.isEmpty { try await response.write(.with { $0.info = batch }) }
    }
  }

  public func delete(request: Containerd_Services_Content_V1_DeleteContentRequest, context: ServerContext) async throws
    -> Google_Protobuf_Empty
  {
    try await rpc {
      try await store.delete(try Digest(parsing: request.digest))
      return Google_Protobuf_Empty()
    }
  }

  public func read(
    request: Containerd_Services_Content_V1_ReadContentRequest,
    response: RPCWriter<Containerd_Services_Content_V1_ReadContentResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      try await streamBlob(store, digest: request.digest, offset: request.offset, size: request.size) { at, chunk in
        try await response.write(.with {
          $0.offset = at
          $0.data = chunk
        })
      }
    }
  }

  public func status(request: Containerd_Services_Content_V1_StatusRequest, context: ServerContext) async throws
    -> Containerd_Services_Content_V1_StatusResponse
  {
    try await rpc {
      let s = try await store.status(ref: request.ref)
      return .with { $0.status = .init(s) }
    }
  }

  public func listStatuses(request: Containerd_Services_Content_V1_ListStatusesRequest, context: ServerContext)
    async throws -> Containerd_Services_Content_V1_ListStatusesResponse
  {
    try await rpc {
      let filter = try Filter.parse(request.filters, limits: store.limits)
      let all = try await store.listStatuses(filter)
      if filter.exhausted { throw filter.exhaustedError }
      return .with { $0.statuses = all.map { .init($0) } }
    }
  }

  public func write(
    request: RPCAsyncSequence<Containerd_Services_Content_V1_WriteContentRequest, any Error>,
    response: RPCWriter<Containerd_Services_Content_V1_WriteContentResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      try await WriteStreamDriver(store: store, fromPeer: forPeers).run(request) { m throws(ContentError) in
        let action: WriteStep.Action =
          switch m.action {
          case .stat: .stat
          case .write: .write
          case .commit: .commit
          case .UNRECOGNIZED(let n): throw .invalidArgument("\(n) is not a valid action")  // as containerd
          }
        return WriteStep(
          action: action, ref: m.ref, total: m.total, expected: m.expected, offset: m.offset, data: m.data, labels: m.labels)
      } respond: { state, action in
        try await response.write(.with {
          $0.action = action == .commit ? .commit : action == .write ? .write : .stat
          $0.offset = state.status.offset
          $0.total = state.status.total
          $0.digest = state.digest.description
          $0.startedAt = .init(state.status.startedAt)
          $0.updatedAt = .init(state.status.updatedAt)
        })
      }
    }
  }

  public func abort(request: Containerd_Services_Content_V1_AbortRequest, context: ServerContext) async throws
    -> Google_Protobuf_Empty
  {
    try await rpc {
      try await store.abort(ref: request.ref)
      return Google_Protobuf_Empty()
    }
  }
}
