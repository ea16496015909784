import CairnServer
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// An HTTP answer.
public struct AdminResponse: Sendable {
  public var status: HTTPResponseStatus
  public var contentType: String
  public var body: [UInt8]

  /// Extra response headers (a challenge with 401).
  public var headers: [(String, String)] = []

  public init(status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: [UInt8]) {
    self.status = status
    self.contentType = contentType
    self.body = body
  }

  public init(status: HTTPResponseStatus = .ok, text: String) {
    self.init(status: status, body: Array(text.utf8))
  }
}

/// What the admin port serves, supplied by the node.
public struct AdminRoutes: Sendable {
  public var metrics: NodeMetrics
  /// nil = ready; otherwise why not.
  public var notReadyReason: @Sendable () async -> String?
  /// The dashboard's data (JSON).
  public var status: @Sendable () async -> [UInt8]
  /// Whether a request's `authorization` header lets it see more than the probes
  /// (/metrics, /api/status, the dashboard); always true on an open node.
  public var authorized: @Sendable (_ authorization: String?) -> Bool

  public init(
    metrics: NodeMetrics, notReadyReason: @escaping @Sendable () async -> String?, status: @escaping @Sendable () async -> [UInt8],
    authorized: @escaping @Sendable (String?) -> Bool = { _ in true }
  ) {
    self.metrics = metrics
    self.notReadyReason = notReadyReason
    self.status = status
    self.authorized = authorized
  }

  /// The probes answer anyone (a kubelet has no token); the rest show the cluster and
  /// need a credential when the node has tokens.
  static let probes: Set<String> = ["/healthz", "/readyz"]

  func answer(method: HTTPMethod, path: String, authorization: String? = nil) async -> AdminResponse {
    guard method == .GET || method == .HEAD else { return AdminResponse(status: .methodNotAllowed, text: "GET only\n") }
    let route = path.split(separator: "?").first.map(String.init) ?? path
    if !Self.probes.contains(route) && !authorized(authorization) {
      var r = AdminResponse(
        status: .unauthorized,
        text: "this page needs a token with the monitor or admin permission: authorization: Bearer TOKEN (a browser: user cairn, password TOKEN)\n")
      r.headers = [("www-authenticate", "Basic realm=\"cairn\", charset=\"UTF-8\"")]
      return r
    }
    switch route {
    case "/metrics":
      return AdminResponse(contentType: "text/plain; version=0.0.4; charset=utf-8", body: await metrics.scrape())
    case "/healthz":
      return AdminResponse(text: "ok\n")
    case "/readyz":
      if let reason = await notReadyReason() { return AdminResponse(status: .serviceUnavailable, text: "not ready: \(reason)\n") }
      return AdminResponse(text: "ready\n")
    case "/", "/index.html":
      return AdminResponse(contentType: "text/html; charset=utf-8", body: Array(Dashboard.html.utf8))
    case "/api/status":
      return AdminResponse(contentType: "application/json", body: await status())
    default:
      return AdminResponse(status: .notFound, text: "no such page; try /, /metrics, /healthz, /readyz, /api/status\n")
    }
  }
}

/// The admin HTTP/1.1 port (plain HTTP: it carries no blob data and no secrets; bind it to
/// a private address). A swift-service-lifecycle Service.
public final class AdminServer: Service, Sendable {
  let host: String
  let port: Int
  let routes: AdminRoutes
  let logger: Logger
  private let bound: EventLoopPromise<SocketAddress>

  public init(host: String, port: Int, routes: AdminRoutes, logger: Logger) {
    self.host = host
    self.port = port
    self.routes = routes
    self.logger = logger
    bound = MultiThreadedEventLoopGroup.singleton.next().makePromise()
  }

  /// The bound address, once listening.
  public var address: SocketAddress { get async throws { try await bound.futureResult.get() } }

  public func run() async throws {
    let routes = self.routes
    let channel: any Channel
    do {
      channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
          channel.pipeline.configureHTTPServerPipeline().flatMap {
            channel.pipeline.addHandler(AdminHandler(routes: routes))
          }
        }
        .bind(host: host, port: port).get()
    } catch {
      bound.fail(error)
      throw error
    }
    bound.succeed(channel.localAddress!)
    await withGracefulShutdownHandler {
      try? await channel.closeFuture.get()
    } onGracefulShutdown: {
      channel.close(promise: nil)
    }
  }
}

private final class AdminHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart
  let routes: AdminRoutes

  init(routes: AdminRoutes) { self.routes = routes }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard case .head(let head) = unwrapInboundIn(data) else { return }
    let channel = context.channel
    let routes = self.routes
    Task {
      let r = await routes.answer(method: head.method, path: head.uri, authorization: head.headers["authorization"].first)
      var headers = HTTPHeaders()
      for (name, value) in r.headers { headers.add(name: name, value: value) }
      headers.add(name: "content-type", value: r.contentType)
      headers.add(name: "content-length", value: "\(r.body.count)")
      headers.add(name: "cache-control", value: "no-store")
      let keepAlive = head.isKeepAlive
      if !keepAlive { headers.add(name: "connection", value: "close") }
      let responseHead = HTTPResponseHead(version: head.version, status: r.status, headers: headers)
      channel.write(HTTPServerResponsePart.head(responseHead), promise: nil)
      if head.method != .HEAD {
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: r.body))), promise: nil)
      }
      channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
        if !keepAlive { channel.close(promise: nil) }
      }
    }
  }
}
