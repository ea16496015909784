import NIOCore
import NIOHPACK
import NIOHTTP2
import Synchronization

/// Bounds the request bytes a node holds in memory: every gRPC message a client sends
/// reserves its size when its 5-byte length prefix arrives and releases it when its call
/// takes it (or the stream ends). Without this a node buffers up to one maximum message
/// per stream in gRPC's deframer and more in each call's inbound queue, for every stream
/// of every connection: thousands of streams × 33 MiB.
///
/// A stream whose next message does not fit waits *before* reading it: it stops reading,
/// so HTTP/2 flow control holds the sender. A message is reserved whole at its start, so
/// once admitted it always completes (no deadlock between half-received messages).
/// Per-address shares keep one host from taking the whole budget. Waiters are served in
/// arrival order.
///
/// A waiting stream still has its HTTP/2 window open: the sender may have up to one window
/// (8 MiB) in flight, which NIOHTTP2 holds until the stream reads again. So the number of
/// waiting streams is bounded too (`maxWaiting`, `maxWaitingPerAddress`); a stream that
/// would pass it is refused (RESOURCE_EXHAUSTED naming the limit) instead of waiting. The
/// node then holds at most `total` + `maxWaiting` × window of request bytes.
public final class InboundBudget: Sendable {
  /// The metadata key by which a call finds its stream's account (set by the transport,
  /// never by the client: any such header a client sends is removed).
  public static let header = "cairn-stream-budget"

  public let total: Int
  public let perAddress: Int
  public let maxWaiting: Int
  public let maxWaitingPerAddress: Int

  /// What `reserve` decided.
  public enum Admission: Equatable, Sendable {
    case admitted
    /// `resume` runs once the bytes are reserved.
    case waiting
    /// Too many streams wait already: the stream must fail, naming this limit.
    case refused(String)
  }

  private struct Account {
    let address: String
    /// Reservations of messages received and not yet taken, oldest first.
    var reserved: [Int] = []
    var waiting: (bytes: Int, resume: @Sendable () -> Void)?
  }

  private struct State {
    var used = 0
    var byAddress: [String: Int] = [:]
    var accounts: [UInt64: Account] = [:]
    var waiters: [UInt64] = []
    var next: UInt64 = 0
  }

  private let state = Mutex(State())

  public init(total: Int, perAddress: Int, maxWaiting: Int = 16, maxWaitingPerAddress: Int = 4) {
    self.total = total
    self.perAddress = min(perAddress, total)
    self.maxWaiting = maxWaiting
    self.maxWaitingPerAddress = min(maxWaitingPerAddress, maxWaiting)
  }

  /// Bytes reserved now (all streams), and streams waiting for room.
  public var usage: (bytes: Int, waiting: Int) { state.withLock { ($0.used, $0.waiters.count) } }

  /// A new stream's account.
  public func open(address: String) -> UInt64 {
    state.withLock { s in
      s.next += 1
      s.accounts[s.next] = Account(address: address)
      return s.next
    }
  }

  /// Whether a message of `bytes` can ever be admitted (larger ones are refused by gRPC's
  /// own size limit before they are buffered, so they pass unaccounted).
  public func admissible(_ bytes: Int) -> Bool { bytes <= perAddress }

  /// Reserves a message's bytes; if they do not fit now, remembers `resume`, which runs
  /// (on any thread) once they are reserved, and says `.waiting` (or `.refused` when too
  /// many streams wait already).
  public func reserve(_ id: UInt64, _ bytes: Int, resume: @escaping @Sendable () -> Void) -> Admission {
    let (admission, resumes) = state.withLock { s -> (Admission, [(UInt64, @Sendable () -> Void)]) in
      guard var account = s.accounts[id] else { return (.admitted, []) }
      // Behind earlier waiters, in order; whatever fits now goes at once.
      account.waiting = (bytes, resume)
      s.accounts[id] = account
      s.waiters.append(id)
      let granted = grant(&s)
      guard s.waiters.contains(id) else { return (.admitted, granted) }
      let sameAddress = s.waiters.count { s.accounts[$0]?.address == account.address }
      let refusal =
        s.waiters.count > maxWaiting ? "max_buffered_bytes" : sameAddress > maxWaitingPerAddress ? "max_buffered_bytes_per_address" : nil
      if let refusal {
        s.waiters.removeAll { $0 == id }
        s.accounts[id]?.waiting = nil
        return (.refused(refusal), granted)
      }
      return (.waiting, granted)
    }
    for (other, r) in resumes where other != id { r() }
    return admission
  }

  /// The call took its oldest message.
  public func consumed(_ id: UInt64) {
    let resumes = state.withLock { s -> [@Sendable () -> Void] in
      guard var account = s.accounts[id], !account.reserved.isEmpty else { return [] }
      let bytes = account.reserved.removeFirst()
      s.accounts[id] = account
      Self.give(bytes, account.address, &s)
      return grant(&s).map(\.1)
    }
    for r in resumes { r() }
  }

  /// The stream ended: everything it held is released.
  public func close(_ id: UInt64) {
    let resumes = state.withLock { s -> [@Sendable () -> Void] in
      guard let account = s.accounts.removeValue(forKey: id) else { return [] }
      for bytes in account.reserved { Self.give(bytes, account.address, &s) }
      s.waiters.removeAll { $0 == id }
      return grant(&s).map(\.1)
    }
    for r in resumes { r() }
  }

  private static func take(_ bytes: Int, _ address: String, _ s: inout State) {
    s.used += bytes
    s.byAddress[address, default: 0] += bytes
  }

  private static func give(_ bytes: Int, _ address: String, _ s: inout State) {
    s.used -= bytes
    let left = s.byAddress[address, default: bytes] - bytes
    s.byAddress[address] = left > 0 ? left : nil
  }

  /// Admits waiters in order; one blocked only by its own address's share is skipped, one
  /// blocked by the total stops the scan (so large messages are not starved).
  private func grant(_ s: inout State) -> [(UInt64, @Sendable () -> Void)] {
    var resumes: [(UInt64, @Sendable () -> Void)] = []
    var kept: [UInt64] = []
    var blocked = false
    for id in s.waiters {
      guard var account = s.accounts[id], let w = account.waiting else { continue }
      if blocked || s.used + w.bytes > total {
        blocked = true
        kept.append(id)
        continue
      }
      guard s.byAddress[account.address, default: 0] + w.bytes <= perAddress else {
        kept.append(id)
        continue
      }
      Self.take(w.bytes, account.address, &s)
      account.reserved.append(w.bytes)
      account.waiting = nil
      s.accounts[id] = account
      resumes.append((id, w.resume))
    }
    s.waiters = kept
    return resumes
  }
}

/// One HTTP/2 stream's side of the budget: finds gRPC message boundaries in the request's
/// DATA frames (the 5-byte prefix: a flag and a 32-bit length), reserves each message's
/// bytes as it starts, and while a message waits for room, holds the frames already
/// delivered and asks for no more. Tags the request's HEADERS with its account so the call
/// can report each message it takes (`InboundBudget.consumed`).
public final class BudgetedStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
  public typealias InboundIn = HTTP2Frame.FramePayload
  public typealias InboundOut = HTTP2Frame.FramePayload
  public typealias OutboundIn = HTTP2Frame.FramePayload
  public typealias OutboundOut = HTTP2Frame.FramePayload

  private let budget: InboundBudget
  private var id: UInt64?
  /// The length prefix gathered so far, and body bytes of the current message still to come.
  private var prefix: [UInt8] = []
  private var remaining = 0
  /// Frames held while a message waits for room, the first one partly scanned.
  private var held: [HTTP2Frame.FramePayload] = []
  private var scanned = 0
  private var waiting = false
  private var readPending = false
  private var tagged = false
  /// Response headers went out (a refusal is then trailers, not a trailers-only answer);
  /// the call is over (trailers sent): nothing more is read.
  private var answered = false
  private var over = false

  public init(budget: InboundBudget) { self.budget = budget }

  /// Puts the handler first in an accepted stream's pipeline.
  public static func install(on stream: any Channel, budget: InboundBudget) -> EventLoopFuture<Void> {
    stream.eventLoop.makeCompletedFuture {
      try stream.pipeline.syncOperations.addHandler(BudgetedStreamHandler(budget: budget), position: .first)
    }
  }

  public func handlerAdded(context: ChannelHandlerContext) {
    let address = context.channel.parent?.remoteAddress?.ipAddress ?? "unix"
    id = budget.open(address: address)
  }

  public func handlerRemoved(context: ChannelHandlerContext) { release() }

  public func channelInactive(context: ChannelHandlerContext) {
    release()
    context.fireChannelInactive()
  }

  private func release() {
    if let id { budget.close(id) }
    id = nil
    held = []
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if over { return }
    let frame = unwrapInboundIn(data)
    if !tagged, case .headers(var h) = frame, let id {
      tagged = true
      h.headers.remove(name: InboundBudget.header)
      h.headers.add(name: InboundBudget.header, value: String(id))
      context.fireChannelRead(wrapInboundOut(.headers(h)))
      return
    }
    held.append(frame)
    if !waiting { drain(context, resumed: false) }
  }

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard case .headers(let h) = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
    answered = true
    guard h.endStream else { return context.write(data, promise: promise) }
    // The call's trailers: it is over. What its client still sends (a refused caller may go
    // on sending) is dropped, neither buffered nor counted, and a stream its client keeps
    // open is reset later: at once (or a second later, on a loaded machine), grpc-swift
    // clients reported the reset instead of the status.
    finish(context)
    context.write(data, promise: promise)
  }

  /// How long a stream whose call is over may stay open for its client to see the trailers.
  static let lingerAfterTrailers: TimeAmount = .seconds(10)

  private func finish(_ context: ChannelHandlerContext) {
    over = true
    waiting = false
    release()
    if readPending {
      readPending = false
      context.read()
    }
    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
    context.eventLoop.scheduleTask(in: Self.lingerAfterTrailers) { bound.value.close(promise: nil) }
  }

  public func read(context: ChannelHandlerContext) {
    if waiting && !over {
      readPending = true
    } else {
      context.read()
    }
  }

  /// Scans and forwards held frames until one needs room it cannot have yet. After a
  /// wait, it completes the read batch and asks for the reads it held back.
  private func drain(_ context: ChannelHandlerContext, resumed: Bool) {
    while !held.isEmpty {
      if case .data(let d) = held[0], case .byteBuffer(let buffer) = d.data {
        if !scan(buffer, context) { return }
      }
      scanned = 0
      context.fireChannelRead(wrapInboundOut(held.removeFirst()))
    }
    if resumed { context.fireChannelReadComplete() }
    if readPending {
      readPending = false
      context.read()
    }
  }

  /// Walks the message boundaries of one frame from `scanned`; false if it stopped to wait.
  private func scan(_ buffer: ByteBuffer, _ context: ChannelHandlerContext) -> Bool {
    let bytes = buffer.readableBytesView
    while scanned < bytes.count {
      if remaining > 0 {
        let take = min(remaining, bytes.count - scanned)
        remaining -= take
        scanned += take
        continue
      }
      while prefix.count < 5 && scanned < bytes.count {
        prefix.append(bytes[bytes.startIndex + scanned])
        scanned += 1
      }
      guard prefix.count == 5 else { break }
      let length = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
      let size = length + 5
      if let id, budget.admissible(size) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let ctx = NIOLoopBound(context, eventLoop: loop)
        switch budget.reserve(id, size, resume: { loop.execute { handler.value.resume(ctx.value) } }) {
        case .admitted: break
        case .waiting:
          waiting = true
          return false
        case .refused(let limit):
          refuse(context, limit: limit)
          return false
        }
      }
      prefix = []
      remaining = length
    }
    return true
  }

  /// Ends the call with RESOURCE_EXHAUSTED naming the limit, as gRPC trailers, and drops
  /// the rest of its request.
  private func refuse(_ context: ChannelHandlerContext, limit: String) {
    held = []
    var headers = HPACKHeaders()
    if !answered {
      headers.add(name: ":status", value: "200")
      headers.add(name: "content-type", value: "application/grpc")
    }
    headers.add(name: "grpc-status", value: "8")
    headers.add(
      name: "grpc-message",
      value: "too many streams wait for room to buffer their requests (limit \(limit)); retry with backoff")
    context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
    finish(context)
  }

  /// Room was made for the message the stream waited on: carry on where it stopped.
  private func resume(_ context: ChannelHandlerContext) {
    guard waiting, id != nil else { return }
    waiting = false
    let length = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
    prefix = []
    remaining = length
    drain(context, resumed: true)
  }
}
