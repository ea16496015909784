import CairnCluster
import CairnCore
import Foundation
import Synchronization

/// The writer of a ref another node owns, outliving that owner: a ForwardedWriter that,
/// when the owner dies under it, moves to the ref's next owner instead of failing the
/// client. The next owner holds what the dead one mirrored to it (IngestMirror, at most
/// `ingest_mirror_lag` behind what the owner had taken); this writer keeps the last bytes it
/// sent (its tail: that lag plus one message), each answered append with the digest the
/// owner reported at its end, and resends from wherever the next owner stands, if that is
/// such a point and its digest there is the same (so the next owner's bytes are the
/// client's, not an older upload's of the same ref). The client sees a slow append, not an
/// error.
///
/// What still reaches the client, as before: an owner that answers (its errors are its
/// answers: a lock, a full disk, a wrong offset); an owner that does not answer but is not
/// declared dead within `ClusterNode.ownerDeathWait` (a partition the rest of the cluster
/// does not see); a next owner further behind than the tail reaches (no mirror, or one that
/// had stopped, or whose bytes differ: a truncate or an Abort it had not heard of); a
/// COMMIT in flight when the owner died (it may have taken effect: asked
/// again, the client hears ALREADY_EXISTS, which containerd takes as done); and a third
/// owner death in one upload.
actor FailoverWriter: IngestWriter {
  /// One answered append: its bytes, and the digest of everything before its end.
  private struct Piece {
    var start: Int64
    var data: Data
    var digestAfter: Digest
    var end: Int64 { start + Int64(data.count) }
  }

  nonisolated let ref: String
  private let store: ClusterStore
  private var inner: any IngestWriter
  private var owner: NodeID
  private var total: Int64
  private var expected: Digest?
  /// The tail: answered appends, oldest first, contiguous from `front` (the offset where
  /// they begin and the digest of the bytes before it); their bytes come from the node's
  /// `failoverTails` budget.
  private var pieces: [Piece] = []
  /// Pieces before this index are gone (dropped from the front without moving the rest).
  private var head = 0
  private var front: (offset: Int64, digest: Digest)
  private var tailBytes = 0
  private let tailLimit: Int
  /// Where the next append goes (the owner's offset after the last answer).
  private var offset: Int64
  /// A truncate is answered locally and takes effect at the next append (ForwardedWriter).
  private var truncatePending = false
  private var failovers = 0

  static let maxFailovers = 2
  /// Resent bytes go in messages of at most this size (well under any message limit).
  static let resendChunkBytes = 1 << 20
  /// The pause between opens on a next owner that has not seen the death yet, drawn in
  /// this range (nanoseconds) so that many moved uploads do not ask in step.
  static let reopenPauseNanoseconds: ClosedRange<UInt64> = 50_000_000...150_000_000

  init(first: ForwardedWriter, owner: NodeID, store: ClusterStore, total: Int64, expected: Digest?, opened: WriterState) {
    ref = first.ref
    inner = first
    self.owner = owner
    self.store = store
    self.total = total
    self.expected = expected
    offset = opened.status.offset
    front = (opened.status.offset, opened.digest)
    let node = store.node
    tailLimit = node.repairConfig.mirrorLagBytes > 0 ? node.repairConfig.mirrorLagBytes + node.local.limits.maxMessageBytes : 0
  }

  func state() async throws -> WriterState {
    try await again { try await $0.state() }
  }

  func setExpectations(total newTotal: Int64?, expected newExpected: Digest?) async throws -> WriterState {
    if let newTotal, newTotal > 0 { total = newTotal }
    if let newExpected { expected = newExpected }
    return try await again { try await $0.setExpectations(total: newTotal, expected: newExpected) }
  }

  func append(_ data: Data) async throws -> WriterState {
    let start = truncatePending ? 0 : offset
    do {
      let state = try await inner.append(data)
      truncatePending = false
      keep(data, from: start, answered: state)
      return state
    } catch {
      return try await failOver(after: error, pending: data)
    }
  }

  func truncate() async throws -> WriterState {
    let state = try await again { try await $0.truncate() }
    truncatePending = true
    offset = 0
    reset(at: 0, digest: state.digest)
    return state
  }

  /// Not moved: a COMMIT whose owner died may have taken effect (see above).
  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    try await inner.commit(size: size, expected: expected, labels: labels, createdAt: createdAt)
  }

  func close() async {
    reset(at: front.offset, digest: front.digest)
    await inner.close()
  }

  // MARK: Failover

  /// `call` on the current writer, and once more on the next owner's if the owner died.
  private func again(_ call: (any IngestWriter) async throws -> WriterState) async throws -> WriterState {
    do {
      return try await call(inner)
    } catch {
      _ = try await failOver(after: error, pending: Data())
      return try await call(inner)
    }
  }

  /// If the owner is gone: opens the ref on its next owner and brings that one from where
  /// it stands to the end of `pending` (the bytes of an append that got no answer, which
  /// belong right after `offset`), from the tail. Rethrows `error` otherwise.
  private func failOver(after error: any Error, pending: Data) async throws -> WriterState {
    let failure = ContentError.from(error)
    let node = store.node
    guard failure.code == .unavailable || failure.code == .deadlineExceeded, failovers < Self.maxFailovers,
      owner != node.config.me
    else { throw error }
    guard await node.isGone(owner, probingWith: ref) else { throw error }
    guard let next = node.view.owner(ofRef: ref), next != owner else { throw error }
    await inner.close()
    failovers += 1
    let dead = owner
    owner = next
    inner = try await openOnNextOwner(next)
    var state = try await inner.state()
    if truncatePending { state = try await inner.truncate() }
    let have = state.status.offset
    node.logger.info(
      "owner \(dead) of ref \(quoted(ref)) is gone: its forwarded upload moved to \(next), which holds \(have) of \(offset &+ Int64(pending.count)) bytes")
    // The next owner must stand where this writer knows the bytes before, and hold those
    // bytes (same digest); an ingest that started over (0 bytes of a begun upload) was
    // aborted meanwhile.
    let from: Int
    if have == front.offset && state.digest == front.digest {
      from = head
    } else if let i = pieces[head...].firstIndex(where: { $0.end == have }), pieces[i].digestAfter == state.digest {
      from = i + 1
    } else {
      from = -1
    }
    guard from >= head, have > 0 || offset == 0 || truncatePending else {
      reset(at: have, digest: state.digest)
      offset = have
      throw ContentError.unavailable(
        "the owner of ref \(quoted(ref)) died; its next owner \(next) holds \(have) bytes this node cannot continue from: resend from there (Status tells)")
    }
    let resend = pieces[from...].map(\.data) + [pending]
    reset(at: have, digest: state.digest)
    offset = have
    for data in resend {
      var at = data.startIndex
      while at < data.endIndex {
        let end = min(data.endIndex, at + Self.resendChunkBytes)
        let part = data[at..<end]
        let start = truncatePending ? 0 : offset
        state = try await inner.append(part)
        truncatePending = false
        keep(part, from: start, answered: state)
        at = end
      }
    }
    return state
  }

  /// The ref's writer on `next`. The next owner may not have declared the old one dead yet
  /// (views converge within about a probe round) and refuses the ref until it has: asked
  /// again, with a jittered pause, within `deathWaitSeconds`.
  private func openOnNextOwner(_ next: NodeID) async throws -> any IngestWriter {
    let node = store.node
    let deadline = Monotonic.nanoseconds + Int64(node.deathWaitSeconds * 1e9)
    while true {
      do {
        return try await store.openUnwrapped(ref: ref, total: total, expected: expected, owner: next)
      } catch let e as ContentError where e.code == .unavailable && Monotonic.nanoseconds < deadline {
        guard node.view.owner(ofRef: ref) == next else { throw e }
        try await Task.sleep(nanoseconds: UInt64.random(in: Self.reopenPauseNanoseconds))
      }
    }
  }

  /// Records an answered append (its bytes written at `start`) in the tail, within the
  /// writer's limit and the node's budget; the oldest pieces go first. A tail that cannot
  /// be kept is dropped: this upload then fails as it would without failover.
  private func keep(_ data: Data, from start: Int64, answered state: WriterState) {
    offset = state.status.offset
    let tailEnd = head < pieces.count ? pieces[pieces.count - 1].end : front.offset
    let (end, overflow) = start.addingReportingOverflow(Int64(data.count))
    guard tailLimit > 0, !overflow, end == offset, start == tailEnd, store.node.failoverTails.take(data.count) else {
      return reset(at: offset, digest: state.digest)
    }
    pieces.append(Piece(start: start, data: data, digestAfter: state.digest))
    tailBytes += data.count
    while tailBytes > tailLimit, head < pieces.count {
      let oldest = pieces[head]
      pieces[head].data = Data()
      head += 1
      front = (oldest.end, oldest.digestAfter)
      tailBytes -= oldest.data.count
      store.node.failoverTails.give(oldest.data.count)
    }
    if head > 64 && 2 * head > pieces.count {
      pieces.removeFirst(head)
      head = 0
    }
  }

  /// Forgets the tail; the next piece kept starts at `offset`, after bytes of `digest`.
  private func reset(at offset: Int64, digest: Digest) {
    store.node.failoverTails.give(tailBytes)
    pieces = []
    head = 0
    tailBytes = 0
    front = (offset, digest)
  }
}

/// Bytes held by every FailoverWriter's tail on a node, at most `Limits.failoverTailBudgetBytes`.
final class ByteBudget: Sendable {
  let limit: Int64
  private let used = Atomic<Int64>(0)

  init(limit: Int64) { self.limit = limit }

  var inUse: Int64 { used.load(ordering: .relaxed) }

  func take(_ n: Int) -> Bool {
    let n = Int64(n)
    while true {
      let now = used.load(ordering: .relaxed)
      guard now + n <= limit else { return false }
      if used.compareExchange(expected: now, desired: now + n, ordering: .relaxed).exchanged { return true }
    }
  }

  func give(_ n: Int) { used.subtract(Int64(n), ordering: .relaxed) }
}
