import CairnCore
import CairnServer
import Dispatch
import GRPCCore
import Synchronization

/// The node's hybrid logical clock (HybridClock fed the real wall and monotonic clocks):
/// the time of every commit this node stamps (its store's clock) and of every Delete it
/// coordinates. Every peer call carries the caller's reading and wall clock in
/// `cairn-hlc` (`READING,WALL`, nanoseconds) and every answer the callee's
/// (ClockInterceptors), so each node's clock passes the readings of the peers it hears
/// from, and refuses one that is more than `max_clock_skew` ahead of the cluster.
public final class ClusterClock: Sendable {
  public static let header = "cairn-hlc"
  /// The caller's node id, for the readings' bookkeeping where no credential names it
  /// (an open cluster).
  public static let nodeHeader = CallContext.nodeHeader

  private let state: Mutex<HybridClock>
  public let maxSkewSeconds: Double
  private let wall: @Sendable () -> Int64
  private let mono: @Sendable () -> Int64
  /// Peer readings refused for their skew, since start.
  let refusedReadings = Atomic<UInt64>(0)

  public init(
    maxSkewSeconds: Double, wall: @escaping @Sendable () -> Int64 = { Timestamp.now().totalNanoseconds },
    mono: @escaping @Sendable () -> Int64 = { Monotonic.nanoseconds }
  ) {
    self.maxSkewSeconds = maxSkewSeconds
    state = Mutex(HybridClock(maxSkew: Int64(maxSkewSeconds * 1e9)))
    self.wall = wall
    self.mono = mono
  }

  /// The time of an event on this node (a commit, a Delete it coordinates).
  public func stamp() -> Timestamp {
    let (w, m) = (wall(), mono())
    return Timestamp(totalNanoseconds: state.withLock { $0.stamp(wall: w, mono: m) })
  }

  public var reading: Int64 {
    let (w, m) = (wall(), mono())
    return state.withLock { $0.reading(wall: w, mono: m) }
  }

  /// What goes on the wire: `READING,WALL` (HybridClock.message).
  var header: String {
    let (w, m) = (wall(), mono())
    let (r, sent) = state.withLock { $0.message(wall: w, mono: m) }
    return "\(r),\(sent)"
  }

  /// A peer's `cairn-hlc` header (malformed ones are ignored: no reading, no vote).
  func observe(header: String, from peer: String) throws(ContentError) {
    let parts = header.split(separator: ",")
    guard parts.count == 2, let r = Int64(parts[0]), let p = Int64(parts[1]) else { return }
    try observe(r, peerWall: p, from: peer)
  }

  public var isSynced: Bool {
    let m = mono()
    return state.withLock { $0.isSynced(mono: m) }
  }

  /// The peers whose readings arrived recently.
  public var heard: Set<String> {
    let m = mono()
    return state.withLock { $0.heard(mono: m) }
  }

  /// A peer's reading; FAILED_PRECONDITION naming the limit when it is beyond the skew.
  func observe(_ remote: Int64, peerWall: Int64, from peer: String) throws(ContentError) {
    let (w, m) = (wall(), mono())
    guard let excess = state.withLock({ $0.observe(remote, peerWall: peerWall, from: peer, wall: w, mono: m) }) else { return }
    refusedReadings.add(1, ordering: .relaxed)
    throw .failedPrecondition(
      "\(peer)'s clock reads \(String(format: "%.1f", Double(excess) / 1e9)) s ahead of this cluster's (limit max_clock_skew = \(maxSkewSeconds) s): its message is refused")
  }

  /// A time a peer sent (a Delete's, a copy's creation) may not be beyond this node's
  /// clock by more than the skew: it would order events here.
  func admit(_ time: Timestamp, _ what: String) throws(ContentError) {
    let (w, m) = (wall(), mono())
    guard state.withLock({ $0.admits(time.totalNanoseconds, wall: w, mono: m) }) else {
      refusedReadings.add(1, ordering: .relaxed)
      throw .failedPrecondition("\(what) \(time) is beyond this node's clock by more than max_clock_skew = \(maxSkewSeconds) s")
    }
  }

  func admits(_ nanos: Int64) -> Bool {
    let (w, m) = (wall(), mono())
    return state.withLock { $0.admits(nanos, wall: w, mono: m) }
  }

  /// This node's wall clock against the cluster's median, and each peer's clock against
  /// this node's, in nanoseconds.
  func offsets() -> (wallFromMedian: Int64?, peers: [String: Int64]) {
    let (w, m) = (wall(), mono())
    return state.withLock { c in (c.median(wall: w, mono: m).map { w.addingSaturating(-$0) }, c.offsets(wall: w, mono: m)) }
  }

  /// The interceptors that carry readings on every peer call, both ways.
  public func serverInterceptor() -> any ServerInterceptor { ClockServerInterceptor(clock: self) }
  func clientInterceptor(me: String, peer: String) -> any ClientInterceptor { ClockClientInterceptor(clock: self, me: me, peer: peer) }
}

/// On every peer call this node serves: take the caller's reading (refusing the call if it
/// is beyond the skew), and answer with this node's.
struct ClockServerInterceptor: ServerInterceptor {
  let clock: ClusterClock

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    guard context.descriptor.service.fullyQualifiedService == "cairn.peer.v1.Peer" else { return try await next(request, context) }
    // The sender is the authenticated peer, or (in an open cluster) the node it says it is.
    let sender = CallContext.current?.node
    if let sender, let text = request.metadata[stringValues: ClusterClock.header].first(where: { _ in true }) {
      do { try clock.observe(header: text, from: sender) } catch { throw RPCError(error) }
    }
    var response = try await next(request, context)
    response.metadata.replaceOrAddString(clock.header, forKey: ClusterClock.header)
    return response
  }
}

/// On every peer call this node makes: send its reading, take the callee's.
struct ClockClientInterceptor: ClientInterceptor {
  let clock: ClusterClock
  let me: String
  let peer: String

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingClientRequest<Input>, context: ClientContext,
    next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
  ) async throws -> StreamingClientResponse<Output> {
    var request = request
    request.metadata.replaceOrAddString(clock.header, forKey: ClusterClock.header)
    request.metadata.replaceOrAddString(me, forKey: ClusterClock.nodeHeader)
    let response = try await next(request, context)
    if let text = response.metadata[stringValues: ClusterClock.header].first(where: { _ in true }) {
      do { try clock.observe(header: text, from: peer) } catch { throw RPCError(error) }
    }
    return response
  }
}
