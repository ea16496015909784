import NIOCore
import NIOHTTP2
import Synchronization

/// The bounds on a node's connections, each with the name of its config key.
public struct ConnectionLimits: Sendable, Hashable {
  /// TCP connections open at once (`max_connections`) and from one remote address
  /// (`max_connections_per_address`); more are closed as they arrive.
  public var maxConnections = 4096
  public var maxConnectionsPerAddress = 128
  /// Seconds a new connection has to complete its TLS handshake and send the HTTP/2
  /// preface (`handshake_timeout`).
  public var handshakeTimeoutSeconds = 10.0
  /// Request bytes received but not yet taken by their calls: node-wide
  /// (`max_buffered_bytes`) and per remote address (`max_buffered_bytes_per_address`).
  public var maxBufferedBytes = 1 << 30
  public var maxBufferedBytesPerAddress = 256 << 20
  /// Seconds a connection without calls stays open (`connection_idle_timeout`), after
  /// which one is asked to go away (`connection_max_age`) and how long its calls then get
  /// (`connection_max_age_grace`); 0 = never.
  public var idleSeconds = 300.0
  public var maxAgeSeconds = 86400.0
  public var maxAgeGraceSeconds = 3600.0

  public init() {}
}

/// Counts open connections, in total and per remote address.
public final class ConnectionAdmission: Sendable {
  private let limits: ConnectionLimits
  private let open = Mutex<(total: Int, byAddress: [String: Int])>((0, [:]))
  /// Called with the limit's name whenever a connection is refused.
  private let onRefusal: @Sendable (String) -> Void

  public init(limits: ConnectionLimits, onRefusal: @escaping @Sendable (String) -> Void = { _ in }) {
    self.limits = limits
    self.onRefusal = onRefusal
  }

  /// Admits one more connection from `address`, or names the limit it would pass.
  public func admit(_ address: String) -> String? {
    let refused = open.withLock { o -> String? in
      if o.total >= limits.maxConnections { return "max_connections" }
      if o.byAddress[address, default: 0] >= limits.maxConnectionsPerAddress { return "max_connections_per_address" }
      o.total += 1
      o.byAddress[address, default: 0] += 1
      return nil
    }
    if let refused { onRefusal(refused) }
    return refused
  }

  public func release(_ address: String) {
    open.withLock { o in
      o.total -= 1
      let n = o.byAddress[address, default: 1] - 1
      o.byAddress[address] = n > 0 ? n : nil
    }
  }

  public var openConnections: Int { open.withLock { $0.total } }

  /// Admits a newly accepted connection (closing it if a limit is reached) and releases it
  /// when it closes. The unix socket is not counted: its callers are local.
  public func guardConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
    guard let address = channel.remoteAddress?.ipAddress else { return channel.eventLoop.makeSucceededVoidFuture() }
    if let limit = admit(address) {
      // A failed initializer alone leaves the connection open (and silent).
      channel.close(promise: nil)
      return channel.eventLoop.makeFailedFuture(ConnectionRefused(limit: limit, address: address))
    }
    channel.closeFuture.whenComplete { _ in self.release(address) }
    return channel.eventLoop.makeSucceededVoidFuture()
  }
}

public struct ConnectionRefused: Error, CustomStringConvertible {
  public let limit: String
  public let address: String
  public var description: String { "connection from \(address) refused: limit \(limit)" }
}

/// Closes a connection that has not completed its TLS handshake and sent the HTTP/2
/// preface and a frame header within the timeout; sits after TLS, so it counts
/// decrypted bytes. Removes itself once they arrived: nothing on the hot path.
public final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer
  public typealias InboundOut = ByteBuffer

  /// The client preface (24 bytes) and the header of its first frame (SETTINGS).
  static let required = 24 + 9
  private let timeout: TimeAmount
  private var received = 0
  private var deadline: Scheduled<Void>?

  public init(seconds: Double) { timeout = .nanoseconds(Int64(seconds * 1e9)) }

  /// Puts a deadline directly in front of the channel's HTTP/2 handler.
  public static func install(on channel: any Channel, seconds: Double) -> EventLoopFuture<Void> {
    channel.eventLoop.makeCompletedFuture {
      let ops = channel.pipeline.syncOperations
      try ops.addHandler(HandshakeDeadline(seconds: seconds), position: .before(try ops.handler(type: NIOHTTP2Handler.self)))
    }
  }

  public func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive { arm(context) }
  }

  public func channelActive(context: ChannelHandlerContext) {
    arm(context)
    context.fireChannelActive()
  }

  private func arm(_ context: ChannelHandlerContext) {
    guard deadline == nil else { return }
    let channel = context.channel
    deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    received += unwrapInboundIn(data).readableBytes
    context.fireChannelRead(data)
    if received >= Self.required {
      deadline?.cancel()
      deadline = nil
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    deadline?.cancel()
    deadline = nil
  }
}
