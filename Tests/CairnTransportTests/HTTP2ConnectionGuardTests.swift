import CairnCluster
import NIOCore
import NIOEmbedded
import NIOHTTP2
import Testing

@testable import CairnTransport

/// The guard on an in-memory channel: bytes in, bytes out, whatever the read boundaries.
@Suite struct HTTP2ConnectionGuardTests {
  static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

  static func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32, payload: [UInt8] = []) -> [UInt8] {
    let n = payload.count
    return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
            UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
  }

  static let ping = frame(0x6, stream: 0, payload: [1, 2, 3, 4, 5, 6, 7, 8])

  /// Sends `bytes` in pieces cut at `cuts`; returns what reached the next handler and what
  /// the guard wrote back.
  func run(_ chunks: [[UInt8]], role: HTTP2ConnectionGuard.Role = .server, outbound: [[UInt8]] = []) throws -> (inbound: [UInt8], written: [UInt8]) {
    let channel = EmbeddedChannel(handler: HTTP2ConnectionGuard(role: role, maxPingsPerSecond: 1000))
    var forwarded: [UInt8] = []
    for chunk in chunks {
      try channel.writeInbound(ByteBuffer(bytes: chunk))
      while var b = try channel.readInbound(as: ByteBuffer.self) { forwarded += b.readBytes(length: b.readableBytes)! }
    }
    for o in outbound { try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: o))) }
    var written: [UInt8] = []
    while let io = try channel.readOutbound(as: IOData.self) {
      if case .byteBuffer(var b) = io { written += b.readBytes(length: b.readableBytes)! }
    }
    _ = try channel.finish()
    return (forwarded, written)
  }

  /// A PING is answered by the guard and not passed on; every other byte passes on
  /// unchanged, however the stream is cut into reads.
  @Test func pingsAreAnsweredAndEverythingElsePassesUnderAnySplit() throws {
    let settings = Self.frame(0x4, stream: 0, payload: Array(repeating: 0, count: 12))
    let headers = Self.frame(0x1, flags: 0x4, stream: 1, payload: Array(repeating: 7, count: 40))
    let data = Self.frame(0x0, flags: 0x1, stream: 1, payload: (0..<3000).map { UInt8($0 % 251) })
    let stream = Self.preface + settings + headers + Self.ping + data + Self.ping
    let expected = Self.preface + settings + headers + data
    let ack = Self.frame(0x6, flags: 0x1, stream: 0, payload: [1, 2, 3, 4, 5, 6, 7, 8])
    var rng = SplitMix64(seed: 1)
    for _ in 0..<200 {
      var chunks: [[UInt8]] = []
      var i = 0
      while i < stream.count {
        let n = 1 + Int(rng.next() % 64 == 0 ? UInt64(stream.count) : rng.next() % 20)
        chunks.append(Array(stream[i..<min(stream.count, i + n)]))
        i += n
      }
      let (inbound, written) = try run(chunks)
      #expect(inbound == expected)
      #expect(written == ack + ack)
    }
  }

  /// A reset of a stream the server has ended is the client's goodbye: dropped when the
  /// client had ended too, an END_STREAM otherwise. A reset of a stream still being
  /// served is a real cancellation and passes.
  @Test func resetsOfFinishedStreams() throws {
    let h = { (s: UInt32, end: Bool) in Self.frame(0x1, flags: 0x4 | (end ? 1 : 0), stream: s) }
    let rst = { (s: UInt32) in Self.frame(0x3, stream: s, payload: [0, 0, 0, 8]) }
    let channel = EmbeddedChannel(handler: HTTP2ConnectionGuard(role: .server, maxPingsPerSecond: 1000))
    func inbound(_ bytes: [UInt8]) throws -> [UInt8] {
      try channel.writeInbound(ByteBuffer(bytes: bytes))
      var out: [UInt8] = []
      while var b = try channel.readInbound(as: ByteBuffer.self) { out += b.readBytes(length: b.readableBytes)! }
      return out
    }
    _ = try inbound(Self.preface)
    _ = try inbound(h(1, true) + h(3, false) + h(5, false))  // 1: client done; 3, 5: client still sending
    try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: h(1, true) + h(3, true))))  // server ends 1 and 3
    #expect(try inbound(rst(1)).isEmpty)
    #expect(try inbound(rst(3)) == Self.frame(0x0, flags: 0x1, stream: 3))
    #expect(try inbound(rst(5)) == rst(5))
    #expect(try inbound(rst(7)).isEmpty, "a reset of a stream that is closed or unknown is dropped")
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  /// A client passes the server's resets through and needs no preface on input.
  @Test func clientRole() throws {
    let rst = Self.frame(0x3, stream: 1, payload: [0, 0, 0, 0])
    let (inbound, written) = try run([Self.ping + rst], role: .client)
    #expect(inbound == rst)
    #expect(written == Self.frame(0x6, flags: 0x1, stream: 0, payload: [1, 2, 3, 4, 5, 6, 7, 8]))
  }

  /// NIOHTTP2's report that this side wrote to a stream the peer had reset (NoSuchStream)
  /// does not reach gRPC, which would close the connection with every call on it; the
  /// same report for a stream the peer never reset still does.
  @Test(arguments: [HTTP2ConnectionGuard.Role.server, .client])
  func aWriteRacingAPeersResetDoesNotCloseTheConnection(role: HTTP2ConnectionGuard.Role) throws {
    let guardHandler = HTTP2ConnectionGuard(role: role, maxPingsPerSecond: 1000)
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(guardHandler)
    try channel.pipeline.syncOperations.addHandler(ResetRaceFilter(resets: guardHandler.peerResets))
    let h = { (s: UInt32) in Self.frame(0x1, flags: 0x4, stream: s) }
    let rst = { (s: UInt32) in Self.frame(0x3, stream: s, payload: [0, 0, 0, 8]) }
    let opening = role == .server ? Self.preface + h(1) + h(3) : h(1) + h(3)
    try channel.writeInbound(ByteBuffer(bytes: opening + rst(1)))
    channel.pipeline.fireErrorCaught(NIOHTTP2Errors.noSuchStream(streamID: 1))
    try channel.throwIfErrorCaught()
    channel.pipeline.fireErrorCaught(NIOHTTP2Errors.noSuchStream(streamID: 3))
    #expect(throws: NIOHTTP2Errors.NoSuchStream.self) { try channel.throwIfErrorCaught() }
    _ = try? channel.finish()
  }

  /// The filter remembers the last PeerResets.capacity resets of a connection, no more.
  @Test func peerResetsAreBounded() {
    let resets = PeerResets()
    for id in stride(from: UInt32(1), through: UInt32(2 * PeerResets.capacity + 1), by: 2) { resets.record(id) }
    #expect(!resets.contains(1))
    #expect(resets.contains(3))
    #expect(resets.contains(UInt32(2 * PeerResets.capacity + 1)))
  }
}
