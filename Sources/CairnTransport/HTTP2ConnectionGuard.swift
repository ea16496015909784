import NIOCore
import NIOHTTP2

/// Sits in front of NIOHTTP2 and keeps well-behaved grpc-go peers (containerd) from
/// tripping NIOHTTP2's abuse guards, which grpc-swift does not let us configure:
///
/// - **PING.** NIOHTTP2 allows 200 control frames per 30 s, then closes the connection with
///   ENHANCE_YOUR_CALM. grpc-go sends a bandwidth-estimation PING whenever data arrives and
///   none is outstanding (clients reading, servers receiving uploads), so one connection
///   exceeds that in seconds. The guard answers PINGs itself (up to `maxPingsPerSecond`;
///   more pass through to NIOHTTP2's own guard). Used on both sides: Cairn's server facing
///   containerd, and Cairn's client facing containerd's server.
/// - **RST_STREAM.** NIOHTTP2 allows 200 resets per 30 s. grpc-go resets a stream whenever
///   the server's response ends before the client has finished with it: containerd's
///   ReaderAt cancels every 1 MiB Read call once it has its bytes, and a failed Write
///   (ALREADY_EXISTS at commit is routine) is reset by the client. Reading one 1 GiB layer
///   is a thousand resets. A reset of a stream the server has already ended is only the
///   client's goodbye: if the client had ended too, the stream is closed and the frame is
///   dropped; otherwise it becomes the client's end of stream (an empty DATA frame with
///   END_STREAM), which closes the stream the same way. Resets of streams the server is
///   still serving are real cancellations and pass through, so the rapid-reset protection
///   (open a stream, reset it at once) stays in force. (Server role only: a client passes
///   the server's resets through.)
///
/// It follows frame boundaries in both directions with a FrameScanner, which reads only
/// headers: the bytes themselves pass through as slices of the buffers they came in.
public final class HTTP2ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer
  public typealias InboundOut = ByteBuffer
  public typealias OutboundIn = IOData
  public typealias OutboundOut = IOData

  public enum Role: Sendable { case server, client }

  /// Puts a guard directly in front of the channel's HTTP/2 handler (after TLS, if any,
  /// so that it sees frames).
  /// (and its ResetRaceFilter directly behind it).
  public static func install(on channel: any Channel, role: Role, maxPingsPerSecond: Int) -> EventLoopFuture<Void> {
    channel.eventLoop.makeCompletedFuture {
      let ops = channel.pipeline.syncOperations
      let http2 = try ops.handler(type: NIOHTTP2Handler.self)
      let guardHandler = HTTP2ConnectionGuard(role: role, maxPingsPerSecond: maxPingsPerSecond)
      try ops.addHandler(guardHandler, position: .before(http2))
      try ops.addHandler(ResetRaceFilter(resets: guardHandler.peerResets), position: .after(http2))
    }
  }

  private struct StreamEnds {
    var client = false
    var server = false
  }

  private let maxPingsPerSecond: Int
  // The client opens with the 24-byte preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
  private var inbound: FrameScanner
  private var outbound: FrameScanner
  /// Whether resets are interpreted (server role, plain byte buffers).
  private var tracking: Bool
  private var streams: [UInt32: StreamEnds] = [:]
  private var windowStart = NIODeadline.now()
  /// Streams whose reset this guard let through to NIOHTTP2 (see ResetRaceFilter).
  let peerResets = PeerResets()
  private var pingsInWindow = 0

  init(role: Role, maxPingsPerSecond: Int) {
    self.maxPingsPerSecond = maxPingsPerSecond
    inbound = FrameScanner(preface: role == .server ? 24 : 0)
    outbound = FrameScanner(preface: role == .client ? 24 : 0)
    tracking = role == .server
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var acks: [[UInt8]] = []
    inbound.scan(
      unwrapInboundIn(data),
      decide: { self.inboundDisposition($0) },
      kept: { _, opaque in acks.append([0, 0, 8, 0x6, 0x1, 0, 0, 0, 0] + opaque) },
      emit: { context.fireChannelRead(self.wrapInboundOut($0)) })
    for ack in acks {
      var b = context.channel.allocator.buffer(capacity: 17)
      b.writeBytes(ack)
      context.writeAndFlush(wrapOutboundOut(.byteBuffer(b)), promise: nil)
    }
  }

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if tracking {
      switch unwrapOutboundIn(data) {
      case .byteBuffer(let buffer):
        outbound.scan(buffer, decide: { self.sawOutbound($0); return (.forward, false) }, emit: { _ in })
      case .fileRegion:
        // Not used by gRPC; if it ever is, stop interpreting streams rather than guess.
        tracking = false
        streams = [:]
      }
    }
    context.write(data, promise: promise)
  }

  private func inboundDisposition(_ f: FrameHeader) -> (FrameScanner.Disposition, keepBody: Bool) {
    switch f.type {
    case .headers:
      if tracking && f.streamID % 2 == 1 {
        var s = streams[f.streamID] ?? StreamEnds()
        if f.endStream { s.client = true }
        streams[f.streamID] = s
        forgetIfClosed(f.streamID)
      }
    case .data:
      if tracking && f.endStream, streams[f.streamID] != nil {
        streams[f.streamID]!.client = true
        forgetIfClosed(f.streamID)
      }
    case .ping:
      if !f.ack && f.length == 8 && allowPing() { return (.drop, true) }  // answered when its body is in
    case .rstStream:
      guard tracking else {
        peerResets.record(f.streamID)
        break
      }
      guard let s = streams[f.streamID] else { return (.drop, false) }  // closed on both sides already
      streams[f.streamID] = nil
      if s.server {
        if s.client { return (.drop, false) }
        let id = f.streamID
        let endStream: [UInt8] = [0, 0, 0, 0x0, 0x1, UInt8(id >> 24 & 0x7f), UInt8(id >> 16 & 0xff), UInt8(id >> 8 & 0xff), UInt8(id & 0xff)]
        return (.replace(endStream), false)
      }
      peerResets.record(f.streamID)
    default:
      break
    }
    return (.forward, false)
  }

  private func sawOutbound(_ f: FrameHeader) {
    switch f.type {
    case .headers, .data:
      if f.endStream, streams[f.streamID] != nil {
        streams[f.streamID]!.server = true
        forgetIfClosed(f.streamID)
      }
    case .rstStream:
      streams[f.streamID] = nil
    default:
      break
    }
  }

  private func forgetIfClosed(_ id: UInt32) {
    if let s = streams[id], s.client && s.server { streams[id] = nil }
  }

  private func allowPing() -> Bool {
    let now = NIODeadline.now()
    if now - windowStart > .seconds(1) {
      windowStart = now
      pingsInWindow = 0
    }
    pingsInWindow += 1
    return pingsInWindow <= maxPingsPerSecond
  }
}

/// The last `capacity` stream IDs the peer reset, on one connection (one event loop).
final class PeerResets {
  static let capacity = 1024
  private var ring: [UInt32] = []
  private var next = 0
  private var members: Set<UInt32> = []

  func record(_ id: UInt32) {
    guard members.insert(id).inserted else { return }
    if ring.count < Self.capacity {
      ring.append(id)
    } else {
      members.remove(ring[next])
      ring[next] = id
      next = (next + 1) % Self.capacity
    }
  }

  func contains(_ id: UInt32) -> Bool { members.contains(id) }
}

/// Sits directly behind NIOHTTP2's handler and keeps a lost race from closing a whole
/// connection. When the peer resets a stream (a client cancels a call, a server refuses
/// one) while this side's handler is still writing to it, NIOHTTP2 fails that write with
/// NoSuchStream and also reports it as a connection error; gRPC's connection handlers
/// close the connection on it, and every other call on the connection ends with "Stream
/// unexpectedly closed". Seen in CI: a node fetching a blob for 32 readers cancelled
/// slow calls to the replicas, whose servers then closed the connection the fetch was
/// streaming on. The write's own promise still fails; only the report of a stream the
/// peer had reset is dropped. Any other NoSuchStream (a frame for a stream that never
/// existed) still reaches gRPC.
public final class ResetRaceFilter: ChannelInboundHandler, RemovableChannelHandler {
  public typealias InboundIn = Any  // passes every read on untouched
  private let resets: PeerResets

  init(resets: PeerResets) { self.resets = resets }

  public func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let e = error as? NIOHTTP2Errors.NoSuchStream, let id = UInt32(exactly: Int(e.streamID)), resets.contains(id) { return }
    context.fireErrorCaught(error)
  }
}
