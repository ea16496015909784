import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import CairnTransport

/// The transport's bounds on an in-memory channel: buffered request bytes, connections per
/// address, the handshake deadline.
@Suite struct BoundsTests {
  /// A gRPC message: flag, 32-bit length, body.
  static func message(_ length: Int) -> [UInt8] {
    [0, UInt8(length >> 24 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
      + [UInt8](repeating: 7, count: length)
  }

  static func data(_ bytes: [UInt8]) -> HTTP2Frame.FramePayload { .data(.init(data: .byteBuffer(ByteBuffer(bytes: bytes)))) }

  /// Counts the reads that reach the channel (the handler holds some back while it waits).
  final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
      reads += 1
      context.read()
    }
  }

  /// A stream whose next message does not fit stops reading until a call takes an earlier
  /// one; nothing is lost, order is kept, and everything is released when the stream ends.
  @Test func aStreamWaitsForRoomAndResumesInOrder() throws {
    let budget = InboundBudget(total: 100, perAddress: 100)
    let counter = ReadCounter()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandlers([counter, BudgetedStreamHandler(budget: budget)])
    // The client's own tag is replaced by the transport's.
    var headers = HPACKHeaders([(":path", "/x.Y/Z")])
    headers.add(name: InboundBudget.header, value: "999")
    try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers)))
    guard case .headers(let seen) = try channel.readInbound(as: HTTP2Frame.FramePayload.self) else {
      Issue.record("headers not forwarded")
      return
    }
    let tags = seen.headers[InboundBudget.header]
    #expect(tags.count == 1 && tags != ["999"], "\(tags)")
    let id = try #require(UInt64(tags[0]))

    // 65 bytes fit; the next 65 do not (130 > 100): held, and reads stop.
    try channel.writeInbound(Self.data(Self.message(60)))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) != nil)
    #expect(budget.usage.bytes == 65)
    // A second message whose prefix is split across two frames.
    let second = Self.message(60)
    try channel.writeInbound(Self.data(Array(second[0..<3])))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) != nil, "a partial prefix reserves nothing yet")
    try channel.writeInbound(Self.data(Array(second[3...])))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) == nil, "held while it waits for room")
    #expect(budget.usage.waiting == 1)
    let readsBefore = counter.reads
    channel.read()
    #expect(counter.reads == readsBefore, "no reads while waiting: flow control holds the sender")

    // The call takes the first message: room for the second.
    budget.consumed(id)
    channel.embeddedEventLoop.run()
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) != nil)
    #expect(budget.usage == (65, 0))
    #expect(counter.reads == readsBefore + 1, "the held read goes out")

    _ = try channel.finish()
    #expect(budget.usage == (0, 0), "the stream's reservations are released at its end")
  }

  /// A call that is over (its trailers went out: a refused caller, an error) releases what
  /// its stream reserved and closes the stream, whatever its client goes on sending.
  @Test func aFinishedCallReleasesAndClosesItsStream() throws {
    let budget = InboundBudget(total: 100, perAddress: 100)
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(BudgetedStreamHandler(budget: budget))
    try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: HPACKHeaders([(":path", "/x.Y/Z")]))))
    _ = try channel.readInbound(as: HTTP2Frame.FramePayload.self)
    // A length prefix announcing 90 bytes, then nothing: reserved, never taken.
    try channel.writeInbound(Self.data(Array(Self.message(90)[0..<7])))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) != nil)
    #expect(budget.usage.bytes == 95)
    try channel.writeOutbound(HTTP2Frame.FramePayload.headers(.init(headers: HPACKHeaders([("grpc-status", "16")]), endStream: true)))
    #expect(budget.usage == (0, 0), "released when the call ended")
    try channel.writeInbound(Self.data(Self.message(50)))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) == nil && budget.usage == (0, 0), "what the client still sends is dropped")
    channel.embeddedEventLoop.advanceTime(by: BudgetedStreamHandler.lingerAfterTrailers)
    #expect(!channel.isActive, "and the stream is closed")
  }

  /// Shares per address: one address at its share waits while another is admitted.
  @Test func oneAddressCannotTakeEveryoneElsesRoom() {
    let budget = InboundBudget(total: 100, perAddress: 60)
    let a = budget.open(address: "a")
    let a2 = budget.open(address: "a")
    let b = budget.open(address: "b")
    let resumed = Box()
    #expect(budget.reserve(a, 50) {} == .admitted)
    #expect(budget.reserve(a2, 20) { resumed.value += 1 } == .waiting, "a is at its share")
    #expect(budget.reserve(b, 40) {} == .admitted, "b is not held up by a's waiter")
    budget.consumed(a)
    #expect(resumed.value == 1 && budget.usage == (60, 0))
    budget.close(a2)
    budget.close(b)
    #expect(budget.usage == (0, 0))
    #expect(!budget.admissible(61), "larger than a share: passed through to gRPC's size limit")
  }

  final class Box: @unchecked Sendable { var value = 0 }

  /// Waiting streams are bounded (each still has an HTTP/2 window open): past the bound a
  /// stream is refused with RESOURCE_EXHAUSTED trailers naming the limit, and drops its request.
  @Test func tooManyWaitingStreamsAreRefused() throws {
    let budget = InboundBudget(total: 100, perAddress: 100, maxWaiting: 1, maxWaitingPerAddress: 1)
    let holder = budget.open(address: "x")
    #expect(budget.reserve(holder, 100) {} == .admitted)
    let waiter = budget.open(address: "y")
    #expect(budget.reserve(waiter, 10) {} == .waiting)
    #expect(budget.reserve(budget.open(address: "z"), 10) {} == .refused("max_buffered_bytes"))

    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(BudgetedStreamHandler(budget: budget))
    try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: HPACKHeaders([(":path", "/x.Y/Z")]))))
    _ = try channel.readInbound(as: HTTP2Frame.FramePayload.self)
    try channel.writeInbound(Self.data(Self.message(10)))
    #expect(try channel.readInbound(as: HTTP2Frame.FramePayload.self) == nil, "the request is dropped")
    guard case .headers(let trailers) = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) else {
      Issue.record("no trailers")
      return
    }
    #expect(trailers.endStream && trailers.headers.first(name: "grpc-status") == "8")
    #expect(trailers.headers.first(name: "grpc-message")?.contains("max_buffered_bytes") == true)
    #expect(trailers.headers.first(name: ":status") == "200", "a trailers-only answer: nothing was sent before")
    #expect(channel.isActive, "open a moment, for the client to take its status")
    channel.embeddedEventLoop.advanceTime(by: BudgetedStreamHandler.lingerAfterTrailers)
    #expect(!channel.isActive, "then the stream is closed")
    budget.close(holder)
    budget.close(waiter)
    #expect(budget.usage == (0, 0))
  }

  @Test func connectionsAreCountedPerAddress() {
    var limits = ConnectionLimits()
    limits.maxConnections = 3
    limits.maxConnectionsPerAddress = 2
    let refusals = Box()
    let admission = ConnectionAdmission(limits: limits) { _ in refusals.value += 1 }
    #expect(admission.admit("a") == nil && admission.admit("a") == nil)
    #expect(admission.admit("a") == "max_connections_per_address")
    #expect(admission.admit("b") == nil)
    #expect(admission.admit("c") == "max_connections")
    admission.release("a")
    #expect(admission.admit("a") == nil && admission.openConnections == 3 && refusals.value == 2)
  }

  /// A connection that sends nothing is closed at the deadline; one that sends the
  /// preface and a frame header keeps going, without the deadline in its pipeline.
  @Test func theHandshakeHasADeadline() throws {
    let silent = EmbeddedChannel(handler: HandshakeDeadline(seconds: 1))
    try silent.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    silent.embeddedEventLoop.advanceTime(by: .milliseconds(999))
    #expect(silent.isActive)
    silent.embeddedEventLoop.advanceTime(by: .milliseconds(2))
    #expect(!silent.isActive, "closed at the deadline")

    let talker = EmbeddedChannel(handler: HandshakeDeadline(seconds: 1))
    try talker.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    try talker.writeInbound(ByteBuffer(bytes: [UInt8](repeating: 0, count: 20)))
    try talker.writeInbound(ByteBuffer(bytes: [UInt8](repeating: 0, count: 13)))
    talker.embeddedEventLoop.advanceTime(by: .seconds(5))
    #expect(talker.isActive)
    #expect(throws: (any Error).self) { try talker.pipeline.syncOperations.handler(type: HandshakeDeadline.self) }
    _ = try talker.finish()
  }
}
