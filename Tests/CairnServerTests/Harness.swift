import CairnClient
import CairnCore
import CairnDisk
import CairnProto
import CairnServer
import CairnTestKit
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// A node in this process on real sockets (TCP on an ephemeral port and a unix socket).
final class TestNode: Sendable {
  let dir: TemporaryDirectory
  let store: DiskStore
  let server: ContentServer
  let tcp: String
  let unix: String
  private let task: Task<Void, any Error>

  static func start(limits: Limits = TestNode.limits) async throws -> TestNode {
    let dir = try TemporaryDirectory()
    let store = try await DiskStore.open(root: dir.path + "/data", limits: limits)
    let unixPath = dir.path + "/cairn.sock"
    let server = ContentServer(store: store, listen: ListenConfig(tcp: ("127.0.0.1", 0), unixPath: unixPath))
    let task = Task { try await server.run() }
    let addresses = try await server.listeningAddresses()
    return TestNode(
      dir: dir, store: store, server: server, tcp: addresses.first { !$0.hasPrefix("unix") }!,
      unix: "unix://" + unixPath, task: task)
  }

  /// A generous lock wait: a released lock is handed over at once, so the wait only bounds
  /// how late a disconnect is noticed (tests of contention start nodes with a short one).
  static var limits: Limits {
    var l = Limits()
    l.lockWaitSeconds = 30
    return l
  }

  static var contentionLimits: Limits {
    var l = Limits()
    l.lockWaitSeconds = 0.2
    return l
  }

  private init(dir: TemporaryDirectory, store: DiskStore, server: ContentServer, tcp: String, unix: String, task: Task<Void, any Error>) {
    self.dir = dir
    self.store = store
    self.server = server
    self.tcp = tcp
    self.unix = unix
    self.task = task
  }

  func stop() async {
    server.stop()
    _ = try? await task.value
    await store.shutdown()
  }

  /// A raw gRPC client, for tests that need to send exact messages.
  func withRaw<T: Sendable>(
    unixSocket: Bool = false, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
  ) async throws -> T {
    let target: any ResolvableTarget
    if unixSocket {
      target = .unixDomainSocket(path: String(unix.dropFirst("unix://".count)))
    } else {
      let parts = tcp.split(separator: ":")
      target = .ipv4(host: String(parts[0]), port: Int(parts[1])!)
    }
    let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
    return try await withGRPCClient(transport: transport, handleClient: body)
  }
}

typealias ModernAPI = Containerd_Services_Content_V1_Content
typealias SeedAPI = Containerd_V1_Content

/// The gRPC status code an operation failed with (nil if it succeeded).
func statusCode(_ body: () async throws -> Void) async -> RPCError.Code? {
  do {
    try await body()
    return nil
  } catch let e as RPCError {
    return e.code
  } catch {
    return .unknown
  }
}

/// The ContentError code a client call failed with (nil if it succeeded).
func contentCode(_ body: () async throws -> Void) async -> ContentError.Code? {
  do {
    try await body()
    return nil
  } catch let e as ContentError {
    return e.code
  } catch {
    return .unknown
  }
}

/// Sends `requests` on one Write stream and collects responses until the server ends it.
func modernWrite(
  _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ requests: [Containerd_Services_Content_V1_WriteContentRequest]
) async throws -> [Containerd_Services_Content_V1_WriteContentResponse] {
  let req = StreamingClientRequest<Containerd_Services_Content_V1_WriteContentRequest> { w in
    for r in requests { try await w.write(r) }
  }
  return try await ModernAPI.Client(wrapping: client).write(request: req) { response in
    var out: [Containerd_Services_Content_V1_WriteContentResponse] = []
    for try await m in response.messages { out.append(m) }
    return out
  }
}

func seedWrite(
  _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ requests: [Containerd_V1_WriteRequest]
) async throws -> [Containerd_V1_WriteResponse] {
  let req = StreamingClientRequest<Containerd_V1_WriteRequest> { w in
    for r in requests { try await w.write(r) }
  }
  return try await SeedAPI.Client(wrapping: client).write(request: req) { response in
    var out: [Containerd_V1_WriteResponse] = []
    for try await m in response.messages { out.append(m) }
    return out
  }
}

func bytes(_ n: Int, seed: UInt64) -> Data { StoreConformance.bytes(n, seed: seed) }
