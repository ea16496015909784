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
/// It follows frame boundaries in both directions: inbound bytes from the socket, and the
/// frames NIOHTTP2 writes out.
public final class HTTP2ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer
  public typealias InboundOut = ByteBuffer
  public typealias OutboundIn = IOData
  public typealias OutboundOut = IOData

  public enum Role: Sendable { case server, client }

  /// Puts a guard directly in front of the channel's HTTP/2 handler (after TLS, if any,
  /// so that it sees frames).
  public static func install(on channel: any Channel, role: Role, maxPingsPerSecond: Int) -> EventLoopFuture<Void> {
    channel.eventLoop.makeCompletedFuture {
      let ops = channel.pipeline.syncOperations
      try ops.addHandler(
        HTTP2ConnectionGuard(role: role, maxPingsPerSecond: maxPingsPerSecond),
        position: .before(try ops.handler(type: NIOHTTP2Handler.self)))
    }
  }

  private struct StreamEnds {
    var client = false
    var server = false
  }

  private let maxPingsPerSecond: Int
  // The client opens with the 24-byte preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
  private var inbound: FrameSplitter
  private var outbound: FrameSplitter
  /// Whether resets are interpreted (server role, plain byte buffers).
  private var tracking: Bool
  private var streams: [UInt32: StreamEnds] = [:]
  private var windowStart = NIODeadline.now()
  private var pingsInWindow = 0

  init(role: Role, maxPingsPerSecond: Int) {
    self.maxPingsPerSecond = maxPingsPerSecond
    inbound = FrameSplitter(preface: role == .server ? 24 : 0)
    outbound = FrameSplitter(preface: role == .client ? 24 : 0)
    tracking = role == .server
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var output = context.channel.allocator.buffer(capacity: 0)
    var replies = context.channel.allocator.buffer(capacity: 0)
    inbound.feed(unwrapInboundIn(data)) { frame in
      switch self.inboundVerdict(frame) {
      case .pass:
        output.writeImmutableBuffer(frame.bytes)
      case .drop:
        break
      case .replace(let bytes):
        output.writeBytes(bytes)
      case .reply(let bytes):
        replies.writeBytes(bytes)
      }
    }
    if replies.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(.byteBuffer(replies)), promise: nil) }
    if output.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(output)) }
  }

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let io = unwrapOutboundIn(data)
    if tracking {
      switch io {
      case .byteBuffer(let buffer):
        outbound.feed(buffer) { self.sawOutbound($0) }
      case .fileRegion:
        // Not used by gRPC; if it ever is, stop interpreting streams rather than guess.
        tracking = false
        streams = [:]
      }
    }
    context.write(data, promise: promise)
  }

  private enum Verdict {
    case pass, drop
    case replace([UInt8])
    case reply([UInt8])
  }

  private func inboundVerdict(_ f: Frame) -> Verdict {
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
      if !f.ack && f.length == 8 && allowPing() {
        var ack: [UInt8] = [0, 0, 8, 0x6, 0x1, 0, 0, 0, 0]
        ack += f.bytes.getBytes(at: f.bytes.readerIndex + 9, length: 8) ?? []
        return .reply(ack)
      }
    case .rstStream:
      guard tracking else { return .pass }
      guard let s = streams[f.streamID] else { return .drop }  // already closed on both sides
      if s.server {
        streams[f.streamID] = nil
        if s.client { return .drop }
        let id = f.streamID
        return .replace([0, 0, 0, 0x0, 0x1, UInt8(id >> 24 & 0x7f), UInt8(id >> 16 & 0xff), UInt8(id >> 8 & 0xff), UInt8(id & 0xff)])
      }
      streams[f.streamID] = nil
    default:
      break
    }
    return .pass
  }

  private func sawOutbound(_ f: Frame) {
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

/// One HTTP/2 frame: its header fields and all its bytes (header included).
struct Frame {
  enum Kind: UInt8 {
    case data = 0x0, headers = 0x1, priority = 0x2, rstStream = 0x3, settings = 0x4, pushPromise = 0x5
    case ping = 0x6, goAway = 0x7, windowUpdate = 0x8, continuation = 0x9, unknown = 0xff
  }

  var type: Kind
  var flags: UInt8
  var streamID: UInt32
  var length: Int
  var bytes: ByteBuffer

  /// END_STREAM on DATA and HEADERS; ACK on PING and SETTINGS (the same bit).
  var endStream: Bool { flags & 0x1 != 0 }
  var ack: Bool { flags & 0x1 != 0 }
}

/// Cuts a byte stream into whole HTTP/2 frames (after an optional connection preface),
/// carrying partial frames over to the next buffer.
struct FrameSplitter {
  private var prefaceRemaining: Int
  private var pending = ByteBuffer()

  init(preface: Int) { prefaceRemaining = preface }

  /// Calls `body` with every complete frame; the preface is passed as a pseudo-frame of
  /// kind `.unknown` with stream 0 so that it is forwarded untouched.
  mutating func feed(_ input: ByteBuffer, _ body: (Frame) -> Void) {
    var buffer: ByteBuffer
    if pending.readableBytes > 0 {
      pending.writeImmutableBuffer(input)
      buffer = pending
      pending = ByteBuffer()
    } else {
      buffer = input
    }
    if prefaceRemaining > 0 {
      let n = min(prefaceRemaining, buffer.readableBytes)
      body(Frame(type: .unknown, flags: 0, streamID: 0, length: n, bytes: buffer.readSlice(length: n)!))
      prefaceRemaining -= n
    }
    while buffer.readableBytes >= 9 {
      let start = buffer.readerIndex
      let length =
        Int(buffer.getInteger(at: start, as: UInt8.self)!) << 16
        | Int(buffer.getInteger(at: start + 1, as: UInt8.self)!) << 8
        | Int(buffer.getInteger(at: start + 2, as: UInt8.self)!)
      guard buffer.readableBytes >= 9 + length else { break }
      let type = Frame.Kind(rawValue: buffer.getInteger(at: start + 3, as: UInt8.self)!) ?? .unknown
      let flags = buffer.getInteger(at: start + 4, as: UInt8.self)!
      let stream = buffer.getInteger(at: start + 5, as: UInt32.self)! & 0x7fff_ffff
      body(Frame(type: type, flags: flags, streamID: stream, length: length, bytes: buffer.readSlice(length: 9 + length)!))
    }
    if buffer.readableBytes > 0 { pending = buffer }
  }
}
