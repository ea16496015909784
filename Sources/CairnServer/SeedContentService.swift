import CairnCore
import CairnProto
import Foundation
import GRPCCore
import SwiftProtobuf

/// containerd.v1.Content, the seed API, over any ContentStore. Its comments are the spec:
/// Status is a watch, Write has STAT/WRITE/COMMIT/ABORT.
struct SeedContentService: Seed.SimpleServiceProtocol {
  let unscoped: any ContentStore
  /// The calling client's view (ClientScope).
  var store: any ContentStore { ClientScope.store(unscoped) }
  let watches: WatchRegistry
  /// A watch with nothing to send for this long ends (limit watch_idle_timeout).
  var idleSeconds: Double = 0

  func info(request: Containerd_V1_InfoRequest, context: ServerContext) async throws -> Containerd_V1_InfoResponse {
    try await rpc {
      let info = try await store.info(try Digest(parsing: request.digest))
      return .with {
        $0.digest = info.digest.description
        $0.size = info.size
        $0.committedAt = .init(info.createdAt)
      }
    }
  }

  func read(
    request: Containerd_V1_ReadRequest, response: RPCWriter<Containerd_V1_ReadResponse>, context: ServerContext
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

  /// Streams the matching ingests, then their progress, until every matched ingest has
  /// been committed or aborted, or the client goes away. Ingests that start matching while
  /// the watch is open join it; a watch that matches nothing ends at once.
  func status(
    request: Containerd_V1_StatusRequest, response: RPCWriter<Containerd_V1_StatusResponse>,
    context: ServerContext
  ) async throws {
    let idleSeconds = self.idleSeconds
    try await watchRPC(watches: watches) { try await withIdleLimitIfSet(idleSeconds, limit: "watch_idle_timeout") { clock in
      let query = try StatusWatchQuery(refs: request.refs, prefixes: request.prefix, limits: store.limits)
      // Subscribe before the snapshot so that nothing between the two is missed.
      let events = store.ingestEvents()
      var watch = StatusWatch(query: query, limit: store.limits.maxWatchedRefs)
      for s in try await store.listStatuses(.always) {
        if let update = try watch.onSnapshot(s) { try await response.write(.init(update)) }
      }
      if watch.isDone { return }
      clock.set(idle: true)
      for await event in events {
        if let update = try watch.onEvent(event) {
          try await response.write(.init(update))
          clock.set(idle: true)
        }
        if watch.isDone { return }
      }
      // The events end before the watch only when this watcher fell too far behind (its
      // queue of pending events filled up) or the node is shutting down.
      throw RPCError(code: .unavailable, message: "the watch fell behind the node's events (or the node is stopping); watch again")
    } }
  }

  func write(
    request: RPCAsyncSequence<Containerd_V1_WriteRequest, any Error>,
    response: RPCWriter<Containerd_V1_WriteResponse>, context: ServerContext
  ) async throws {
    try await rpc {
      try await WriteStreamDriver(store: store).run(request) { m throws(ContentError) in
        let action: WriteStep.Action =
          switch m.action {
          case .stat: .stat
          case .write: .write
          case .commit: .commit
          case .abort: .abort
          case .UNRECOGNIZED(let n): throw .invalidArgument("\(n) is not a valid action")  // as containerd
          }
        return WriteStep(
          action: action, ref: m.ref, total: m.expectedSize, expected: m.expectedDigest, offset: m.offset,
          data: m.data)
      } respond: { state, action in
        try await response.write(.with {
          $0.action =
            switch action {
            case .stat: .stat
            case .write: .write
            case .commit: .commit
            case .abort: .abort
            }
          $0.offset = state.status.offset
          $0.digest = action == .abort ? "" : state.digest.description
          $0.startedAt = .init(state.status.startedAt)
          $0.updatedAt = .init(state.status.updatedAt)
        })
      }
    }
  }
}
