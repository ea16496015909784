import CairnCore
import CairnProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import CairnTransport
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a node listens. containerd's proxy client only speaks unix sockets, so a node
/// usually listens on both.
public struct ListenConfig: Sendable {
  public var tcp: (host: String, port: Int)?
  public var unixPath: String?
  /// The client every call on the unix socket is, unless it sends a `cairn-client`
  /// header: one socket per containerd host gives each host its own view (ScopedStore).
  public var unixClient: ClientID?
  /// The socket file's permissions (owner and group by default: the socket is a
  /// credential, anyone who can open it has every permission).
  public var unixMode: mode_t = 0o660
  /// TLS on the TCP listener.
  public var tls: ServerTLS?
  /// Bounds on connections and on buffered request bytes.
  public var connections = ConnectionLimits()

  public init(
    tcp: (host: String, port: Int)?, unixPath: String?, unixClient: ClientID? = nil, unixMode: mode_t = 0o660, tls: ServerTLS? = nil,
    connections: ConnectionLimits = ConnectionLimits()
  ) {
    self.tcp = tcp
    self.unixPath = unixPath
    self.unixClient = unixClient
    self.unixMode = unixMode
    self.tls = tls
    self.connections = connections
  }
}

/// Both Content APIs and health, served from one store on every configured listener, as
/// a swift-service-lifecycle Service: a graceful shutdown stops accepting calls, marks the
/// node NOT_SERVING and lets in-flight calls finish (the ServiceGroup's deadline cancels
/// the rest; a cancelled Write keeps its ingest resumable).
public final class ContentServer: Service, Sendable {
  public let store: any ContentStore
  public let health: HealthState
  private let watches = WatchRegistry()
  private let servers: [GRPCServer<HTTP2ServerTransport.Posix>]
  private let unixPath: String?
  private let unixMode: mode_t
  public let metrics: NodeMetrics
  public let access: AccessControl
  private let logger: Logger
  private let maintenance: [@Sendable () async -> Void]
  private let runningJobs = Mutex(Jobs())
  /// Request bytes held in memory, node-wide (`max_buffered_bytes`).
  public let budget: InboundBudget
  public let admission: ConnectionAdmission

  /// Maintenance jobs end when the server stops, however it is stopped.
  private struct Jobs {
    var tasks: [Task<Void, Never>] = []
    var isStopped = false
    mutating func append(_ t: Task<Void, Never>) { tasks.append(t) }
    mutating func stop() -> [Task<Void, Never>] {
      isStopped = true
      defer { tasks = [] }
      return tasks
    }
  }

  /// `maintenance` jobs run until shutdown (e.g. ingest expiry, the membership protocol);
  /// `extraServices` are served beside the content APIs (the cluster's peer protocol).
  public init(
    store: any ContentStore, listen: ListenConfig, logger: Logger = Logger(label: "cairn"),
    metrics: NodeMetrics = NodeMetrics(), access: AccessControl? = nil, health: HealthState = HealthState(),
    maintenance: [@Sendable () async -> Void] = [],
    extraServices: (WatchRegistry) -> [any RegistrableRPCService] = { _ in [] },
    extraInterceptors: [any ServerInterceptor] = []
  ) {
    self.store = store
    self.logger = logger
    self.maintenance = maintenance
    unixPath = listen.unixPath
    unixMode = listen.unixMode
    self.metrics = metrics
    self.health = health
    let access = access ?? AccessControl(metrics: metrics)
    self.access = access
    let limits = listen.connections
    let budget = InboundBudget(total: limits.maxBufferedBytes, perAddress: limits.maxBufferedBytesPerAddress)
    let admission = ConnectionAdmission(limits: limits) { metrics.recordLimitHit($0) }
    self.budget = budget
    self.admission = admission
    let services: [any RegistrableRPCService] = [
      ModernContentService(store: store),
      SeedContentService(unscoped: store, watches: watches, idleSeconds: access.settings.watchIdleSeconds),
      HealthService(state: health, watches: watches),
    ] + extraServices(watches)
    var addresses: [(GRPCNIOTransportCore.SocketAddress, ClientID?, ServerTLS?)] = []
    if let tcp = listen.tcp {
      addresses.append((tcp.host.contains(":") ? .ipv6(host: tcp.host, port: tcp.port) : .ipv4(host: tcp.host, port: tcp.port), nil, listen.tls))
    }
    if let path = listen.unixPath { addresses.append((.unixDomainSocket(path: path), listen.unixClient, nil)) }
    servers = addresses.map { address, client, tls in
      GRPCServer(
        transport: HTTP2ServerTransport.Posix(
          address: address, transportSecurity: .plaintext,
          config: Self.transportConfig(store.limits, connections: limits, tls: tls, admission: admission, budget: budget)),
        services: services,
        interceptors: [
          MetricsInterceptor(metrics: metrics, maxMessageBytes: store.limits.maxMessageBytes),
          AccessInterceptor(access: access, socketClient: client, isUnixSocket: address.unixDomainSocket != nil, budget: budget),
        ] + extraInterceptors)
    }
  }

  /// TLS, when on, is our own handler rather than the transport's: the transport can only
  /// require client certificates or not ask for them, and a node must ask (peers prove
  /// membership with one) without requiring them (clients may use tokens instead). It is
  /// also what makes the certificate reloadable.
  static func transportConfig(
    _ limits: Limits, connections: ConnectionLimits, tls: ServerTLS?, admission: ConnectionAdmission, budget: InboundBudget
  ) -> HTTP2ServerTransport.Posix.Config {
    .defaults { config in
      // The default 64 KiB window caps one upload near 125 MB/s; 8 MiB keeps the pipe full.
      config.http2.targetWindowSize = 8 << 20
      config.http2.maxFrameSize = 1 << 20
      config.http2.maxConcurrentStreams = limits.maxConcurrentStreams
      // Twice the limit: a message between the two reaches MetricsInterceptor, which refuses
      // it with RESOURCE_EXHAUSTED naming max_message_bytes (the transport would only reset).
      config.rpc.maxRequestPayloadSize = 2 * limits.maxMessageBytes
      // Clients of the Content API wait for each answer (containerd's writer sends a
      // message and waits for its response); delaying flushes to batch them only adds
      // latency to every round trip.
      config.connection.flushCoalescing = nil
      // grpc-go clients (containerd) ping whenever data arrives and reset every stream the
      // server ends first; NIOHTTP2 would close their connections (see the guard).
      // Every accepted connection: counted (max_connections, per address), given a
      // deadline for its handshake and preface, then TLS (first in the pipeline).
      config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
        admission.guardConnection(channel).flatMap {
          HandshakeDeadline.install(on: channel, seconds: connections.handshakeTimeoutSeconds)
        }.flatMap {
          HTTP2ConnectionGuard.install(on: channel, role: .server, maxPingsPerSecond: limits.maxAbsorbedPingsPerSecond)
        }.flatMapThrowing {
          try tls?.install(on: channel)
        }
      }
      config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in BudgetedStreamHandler.install(on: stream, budget: budget) }
      if connections.idleSeconds > 0 { config.connection.maxIdleTime = .milliseconds(Int64(connections.idleSeconds * 1000)) }
      if connections.maxAgeSeconds > 0 {
        config.connection.maxAge = .milliseconds(Int64(connections.maxAgeSeconds * 1000))
        config.connection.maxGraceTime = .milliseconds(Int64(connections.maxAgeGraceSeconds * 1000))
      }
      // Pings past the guard's budget reach gRPC's keepalive policing; its default (one
      // ping per 5 minutes, two strikes) would close a busy containerd connection too.
      config.connection.keepalive.clientBehavior = .init(
        minPingIntervalWithoutCalls: .milliseconds(limits.minClientPingIntervalMilliseconds), allowWithoutCalls: true)
    }
  }

  /// The bound addresses, once listening (port 0 becomes the real port).
  public func listeningAddresses() async throws -> [String] {
    var out: [String] = []
    for s in servers {
      guard let address = try await s.listeningAddress else { continue }
      if let ip = address.ipv4 {
        out.append("\(ip.host):\(ip.port)")
      } else if let ip = address.ipv6 {
        out.append("[\(ip.host)]:\(ip.port)")
      } else if let unix = address.unixDomainSocket {
        out.append("unix://\(unix.path)")
      }
    }
    return out
  }

  public func run() async throws {
    if let unixPath {
      // A socket another process listens on is not ours to take; one a previous run left
      // behind would make bind fail.
      if UnixSocket.accepts(unixPath) {
        throw ContentError.failedPrecondition("the unix socket \(unixPath) is in use by another process (a node or an agent listening on it)")
      }
      unlink(unixPath)
    }
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { group in
        for server in servers {
          group.addTask { try await server.serve() }
        }
        for job in maintenance {
          let task = Task { await job() }
          if runningJobs.withLock({ jobs in
            jobs.append(task)
            return jobs.isStopped
          }) { task.cancel() }
          // The group cancels this child when a server fails (its address in use): the
          // job must stop then too, or the group waits for it forever and the failure is
          // never reported (`cairn serve` on a busy port hung until SIGTERM).
          group.addTask { await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() } }
        }
        if let unixPath {
          group.addTask {
            // Restrictive permissions once the socket exists: owner and group only.
            for server in self.servers { _ = try? await server.listeningAddress }
            chmod(unixPath, self.unixMode)
          }
        }
      }
    } onGracefulShutdown: {
      self.logger.info("graceful shutdown: no new calls, finishing in-flight ones")
      self.stop()
    }
    if let unixPath { unlink(unixPath) }
  }

  /// Starts a graceful shutdown: NOT_SERVING, watches end, no new calls.
  public func stop() {
    for job in runningJobs.withLock({ $0.stop() }) { job.cancel() }
    health.shutDown()
    watches.closeAll()
    for server in servers { server.beginGracefulShutdown() }
  }
}

enum UnixSocket {
  /// Whether something accepts connections on the socket at `path`.
  static func accepts(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let size = socklen_t(MemoryLayout<sockaddr_un>.size)
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } } == 0
  }
}
