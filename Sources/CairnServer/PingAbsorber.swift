import NIOCore
import Synchronization

/// Answers the client's HTTP/2 PINGs before they reach NIOHTTP2.
///
/// Why: NIOHTTP2 allows a peer 200 control frames (PING, SETTINGS) per 30 seconds and then
/// closes the connection with ENHANCE_YOUR_CALM. grpc-go clients, containerd among them,
/// send a bandwidth-estimation PING whenever data arrives and none is outstanding, so one
/// containerd connection reading blobs exceeds that in seconds, and every call on the
/// connection fails with "the connection is draining". grpc-swift does not expose the
/// limit. This handler sits in front of the HTTP/2 handler, parses frame boundaries in the
/// inbound byte stream, removes PING frames and writes their ACKs itself (at most
/// `maxPingsPerSecond`; past that, pings pass through to NIOHTTP2's own guard).
final class PingAbsorber: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private static let preface = 24  // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
  private let maxPingsPerSecond: Int
  private var prefaceRemaining = PingAbsorber.preface
  /// Bytes of the current frame still to pass through unparsed.
  private var passRemaining = 0
  /// An incomplete frame header (or PING) carried over to the next read.
  private var pending = ByteBuffer()
  private var windowStart = NIODeadline.now()
  private var pingsInWindow = 0

  init(maxPingsPerSecond: Int) {
    self.maxPingsPerSecond = maxPingsPerSecond
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var input = unwrapInboundIn(data)
    var output = context.channel.allocator.buffer(capacity: input.readableBytes)
    if pending.readableBytes > 0 {
      var joined = pending
      joined.writeBuffer(&input)
      input = joined
      pending.clear()
    }
    while input.readableBytes > 0 {
      if prefaceRemaining > 0 {
        let n = min(prefaceRemaining, input.readableBytes)
        var slice = input.readSlice(length: n)!
        output.writeBuffer(&slice)
        prefaceRemaining -= n
        continue
      }
      if passRemaining > 0 {
        let n = min(passRemaining, input.readableBytes)
        var slice = input.readSlice(length: n)!
        output.writeBuffer(&slice)
        passRemaining -= n
        continue
      }
      // At a frame boundary: need the 9-byte header.
      guard input.readableBytes >= 9 else {
        pending.writeBuffer(&input)
        break
      }
      let start = input.readerIndex
      let length =
        Int(input.getInteger(at: start, as: UInt8.self)!) << 16
        | Int(input.getInteger(at: start + 1, as: UInt8.self)!) << 8
        | Int(input.getInteger(at: start + 2, as: UInt8.self)!)
      let type = input.getInteger(at: start + 3, as: UInt8.self)!
      let flags = input.getInteger(at: start + 4, as: UInt8.self)!
      let isPing = type == 0x6 && flags & 0x1 == 0 && length == 8
      if isPing && allowPing() {
        guard input.readableBytes >= 17 else {
          pending.writeBuffer(&input)
          break
        }
        input.moveReaderIndex(forwardBy: 9)
        let opaque = input.readSlice(length: 8)!
        var ack = context.channel.allocator.buffer(capacity: 17)
        ack.writeBytes([0, 0, 8, 0x6, 0x1, 0, 0, 0, 0])
        ack.writeImmutableBuffer(opaque)
        context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
        continue
      }
      passRemaining = 9 + length
    }
    if output.readableBytes > 0 {
      context.fireChannelRead(wrapInboundOut(output))
    }
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
