import CairnCore
import CairnProto
import GRPCCore
import Synchronization

/// Whether the node serves, shared by the health service and the shutdown path.
public final class HealthState: Sendable {
  private let serving = Mutex(true)
  private let stopped = Mutex(false)
  private let changes = EventHub<Bool>()

  public init() {}

  public var isServing: Bool { serving.withLock { $0 } }

  /// NOT_SERVING for good: the node is shutting down (later readiness updates are ignored).
  public func shutDown() {
    stopped.withLock { $0 = true }
    set(serving: false)
  }

  public func set(serving value: Bool) {
    if value && stopped.withLock({ $0 }) { return }
    let changed = serving.withLock { s -> Bool in
      defer { s = value }
      return s != value
    }
    if changed { changes.publish(value) }
  }

  func updates() -> AsyncStream<Bool> { changes.subscribe() }
}

/// grpc.health.v1.Health: "" and each Cairn service name report the node's state.
struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  let state: HealthState
  let watches: WatchRegistry
  static let services: Set<String> = ["", "containerd.v1.Content", "containerd.services.content.v1.Content"]

  private func status(_ serving: Bool) -> Grpc_Health_V1_HealthCheckResponse {
    .with { $0.status = serving ? .serving : .notServing }
  }

  func check(request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext) async throws
    -> Grpc_Health_V1_HealthCheckResponse
  {
    guard Self.services.contains(request.service) else {
      throw RPCError(code: .notFound, message: "unknown service \(quoted(request.service))")
    }
    return status(state.isServing)
  }

  func watch(
    request: Grpc_Health_V1_HealthCheckRequest, response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    guard Self.services.contains(request.service) else {
      try await response.write(.with { $0.status = .serviceUnknown })
      return
    }
    try await watchRPC(watches: watches) {
      let updates = state.updates()
      var last = state.isServing
      try await response.write(status(last))
      for await serving in updates where serving != last {
        last = serving
        try await response.write(status(serving))
      }
    }
  }
}
