import CairnCluster
import CairnCore
import Foundation
import Synchronization

/// The writer of a ref another node owns, outliving that owner: a ForwardedWriter that,
/// when the owner dies under it, moves to the ref's next owner instead of failing the
/// client. The next owner holds what the dead one mirrored to it (IngestMirror, at most
/// `ingest_mirror_lag` behind what the owner had taken); this writer keeps the last bytes it
/// sent (its tail: that lag plus one message) and resends from wherever the next owner
/// stands. The client sees a slow append, not an error.
///
/// What still reaches the client, as before: an owner that answers (its errors are its
/// answers: a lock, a full disk, a wrong offset); an owner that does not answer but is not
/// declared dead within `ClusterNode.ownerDeathWait` (a partition the rest of the cluster
/// does not see); a next owner further behind than the tail reaches (no mirror, or one that
/// had stopped); a COMMIT in flight when the owner died (it may have taken effect: asked
/// again, the client hears ALREADY_EXISTS, which containerd takes as done); and a third
/// owner death in one upload.
actor FailoverWriter: IngestWriter {
  nonisolated let ref: String
  private let store: ClusterStore
  private var inner: any IngestWriter
  private var owner: NodeID
  private var total: Int64
  private var expected: Digest?
  /// The last bytes sent, [tailStart, tailStart + tail.count), taken from the node's
  /// `failoverTails` budget.
  private var tail = Data()
  private var tailStart: Int64 = 0
  private let tailLimit: Int
  /// Where the next append goes (the owner's offset after the last answer).
  private var offset: Int64 = 0
  /// A truncate is answered locally and takes effect at the next append (ForwardedWriter).
  private var truncatePending = false
  private var failovers = 0

  static let maxFailovers = 2
  /// Resent bytes go in messages of this size (well under any message limit).
  static let resendChunkBytes = 1 << 20

  init(first: ForwardedWriter, owner: NodeID, store: ClusterStore, total: Int64, expected: Digest?, offset: Int64) {
    ref = first.ref
    inner = first
    self.owner = owner
    self.store = store
    self.total = total
    self.expected = expected
    self.offset = offset
    tailStart = offset
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
      keep(data, from: start, reaching: state.status.offset)
      return state
    } catch {
      return try await failOver(after: error, pending: data)
    }
  }

  func truncate() async throws -> WriterState {
    let state = try await again { try await $0.truncate() }
    truncatePending = true
    reset(at: 0)
    return state
  }

  /// Not moved: a COMMIT whose owner died may have taken effect (see above).
  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    try await inner.commit(size: size, expected: expected, labels: labels, createdAt: createdAt)
  }

  func close() async {
    reset(at: offset)
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
    guard failure.code == .unavailable || failure.code == .deadlineExceeded, failovers < Self.maxFailovers else { throw error }
    let node = store.node
    guard await node.isGone(owner, probingWith: ref) else { throw error }
    guard let next = node.view.owner(ofRef: ref), next != owner else { throw error }
    await inner.close()
    failovers += 1
    let dead = owner
    owner = next
    inner = try await openOnNextOwner(next)
    var state = try await inner.state()
    if truncatePending { state = try await inner.truncate() }
    let bytes = tail + pending
    let first = tailStart  // the offset of bytes' first byte
    let have = state.status.offset
    node.logger.info(
      "owner \(dead) of ref \(quoted(ref)) is gone: its forwarded upload moved to \(next), which holds \(have) of \(offset + Int64(pending.count)) bytes")
    guard have >= first, have <= first + Int64(bytes.count) else {
      reset(at: have)
      throw ContentError.unavailable(
        "the owner of ref \(quoted(ref)) died; its next owner \(next) holds \(have) bytes, which this node cannot continue from: resend from there (Status tells)")
    }
    var at = Int(have - first)
    while at < bytes.count {
      let end = min(bytes.count, at + Self.resendChunkBytes)
      state = try await inner.append(bytes.subdata(in: at..<end))
      truncatePending = false
      at = end
    }
    reset(at: first)
    keep(bytes, from: first, reaching: state.status.offset)
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
        try await Task.sleep(nanoseconds: UInt64.random(in: 50_000_000...150_000_000))
      }
    }
  }

  /// Adds `data` (written at `start`; the owner now stands at `end`) to the tail, within
  /// the writer's limit and the node's budget. A tail that cannot be kept is dropped: this
  /// upload then fails as it would without failover.
  private func keep(_ data: Data, from start: Int64, reaching end: Int64) {
    offset = end
    guard tailLimit > 0, start + Int64(data.count) == end else { return reset(at: end) }
    if start != tailStart + Int64(tail.count) { reset(at: start) }
    let kept = data.count > tailLimit ? Data(data.suffix(tailLimit)) : data
    if kept.count < data.count { reset(at: end - Int64(kept.count)) }
    guard store.node.failoverTails.take(kept.count) else { return reset(at: end) }
    tail.append(kept)
    if tail.count > tailLimit { dropFront(tail.count - tailLimit) }
  }

  /// Forgets the tail; the next bytes kept start at `start`.
  private func reset(at start: Int64) {
    dropFront(tail.count)
    tailStart = start
  }

  private func dropFront(_ n: Int) {
    guard n > 0 else { return }
    tail = Data(tail.dropFirst(n))  // a fresh Data: indices from 0 again
    tailStart += Int64(n)
    store.node.failoverTails.give(n)
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
