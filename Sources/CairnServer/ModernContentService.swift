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

  public init(store: any ContentStore) { unscoped = store }

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
      let info = try await store.update(d, labels: request.info.labels, fieldPaths: paths)
      return .with { $0.info = .init(info) }
    }
  }

  public func list(
    request: Containerd_Services_Content_V1_ListContentRequest,
    response: RPCWriter<Containerd_Services_Content_V1_ListContentResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      let infos = try await store.list(try Filter.parse(request.filters, limits: store.limits))
      let batchSize = store.limits.listBatchSize
      for start in stride(from: 0, to: infos.count, by: batchSize) {
        let batch = infos[start..<min(start + batchSize, infos.count)]
        try await response.write(.with { $0.info = batch.map { .init($0) } })
      }
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
      let all = try await store.listStatuses(try Filter.parse(request.filters, limits: store.limits))
      return .with { $0.statuses = all.map { .init($0) } }
    }
  }

  public func write(
    request: RPCAsyncSequence<Containerd_Services_Content_V1_WriteContentRequest, any Error>,
    response: RPCWriter<Containerd_Services_Content_V1_WriteContentResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      try await WriteStreamDriver(store: store).run(request) { m in
        WriteStep(
          action: m.action == .commit ? .commit : m.action == .write ? .write : .stat,
          ref: m.ref, total: m.total, expected: m.expected, offset: m.offset, data: m.data, labels: m.labels)
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
