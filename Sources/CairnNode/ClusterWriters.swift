import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import Foundation
import GRPCCore
import Synchronization

/// The writer of a ref this node owns: the local ingest, with a commit that is fenced by
/// ownership, answers ALREADY_EXISTS for a blob anywhere in the cluster (as one store
/// would), and returns only once the write quorum of replicas holds the blob durably.
/// Appended bytes are mirrored to the ref's next owner as they arrive (IngestMirror), so
/// that the upload survives this node's death.
final class OwnedWriter: IngestWriter {
  let inner: any IngestWriter
  let store: ClusterStore
  /// The ref's owner, when it passed this upload on (its disk is full; Delegation.swift).
  let delegatedBy: NodeID?
  private let mirror = Mutex<IngestMirror?>(nil)
  /// The node that forwarded this upload (OwnerWrite), watched for its death.
  private let forwarder = Mutex<(node: NodeID, watch: DeathWatch?, dead: Bool)?>(nil)
  var ref: String { inner.ref }

  init(inner: any IngestWriter, store: ClusterStore, delegatedBy: NodeID? = nil) {
    self.inner = inner
    self.store = store
    self.delegatedBy = delegatedBy
  }

  /// An upload forwarded by `node` lets go of the ref once `node` is declared dead: its
  /// stream may hang open for as long as its link lets packets out but not in (chaos
  /// one-way: a client's retries through other nodes met this lock for 18 s). The ingest
  /// stays, and the retry resumes it. Only a death declared after the upload opened counts:
  /// a node that just restarted may still be dead in this node's view while it forwards
  /// (a watch that fired at once failed such healthy uploads in membership-change).
  func releaseRef(whenDead node: NodeID) {
    forwarder.withLock { $0 = (node, nil, false) }
    let watch = store.node.watchNextDeath(of: node) { [weak self] in
      guard let self else { return }
      self.forwarder.withLock { $0?.dead = true }
      Task { await self.close() }
    }
    forwarder.withLock { $0?.watch = watch }
  }

  /// UNAVAILABLE once the forwarding node is declared dead (the client retries elsewhere
  /// and resumes), instead of the closed writer's own error.
  private func unlessForwarderDead<T>(_ body: () async throws -> T) async throws -> T {
    do {
      if let f = forwarder.withLock({ $0 }), f.dead { throw Self.forwarderDied(f.node) }
      return try await body()
    } catch {
      if let f = forwarder.withLock({ $0 }), f.dead { throw Self.forwarderDied(f.node) }
      throw error
    }
  }

  private static func forwarderDied(_ node: NodeID) -> ContentError {
    .unavailable("this upload came through \(node), which the cluster declared dead; retry: it resumes where it stopped")
  }

  func state() async throws -> WriterState { try await unlessForwarderDead { try await inner.state() } }
  func setExpectations(total: Int64?, expected: Digest?) async throws -> WriterState {
    try await unlessForwarderDead { try await inner.setExpectations(total: total, expected: expected) }
  }

  func append(_ data: Data) async throws -> WriterState {
    try await unlessForwarderDead {
      let state = try await inner.append(data)
      await mirror(from: state.status.offset - Int64(data.count), state.status)?.forward(data)
      return state
    }
  }

  /// The next owner restarts its copy when the owner's next stream starts at offset 0.
  func truncate() async throws -> WriterState {
    try await unlessForwarderDead {
      await endMirror(drop: false)
      return try await inner.truncate()
    }
  }

  func close() async {
    forwarder.withLock { $0?.watch }?.cancel()
    // An aborted ingest (Abort fanned out while this writer was open, possibly before the
    // mirror's first bytes reached the next owner) must not survive there.
    let kept = (try? await inner.state()) != nil
    await endMirror(drop: !kept)
    await inner.close()
  }

  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    // The stream has ended: nothing hangs any more, and the commit is not interrupted.
    forwarder.withLock { $0?.watch }?.cancel()
    return try await unlessForwarderDead {
      try await commitOwned(size: size, expected: expected, labels: labels, createdAt: createdAt)
    }
  }

  private func commitOwned(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws
    -> WriterState
  {
    let node = store.node
    try node.requireOwnership(of: ref, delegatedBy: delegatedBy)
    let before = try await inner.state()
    let complete = (size <= 0 || size == before.status.offset) && (expected == nil || expected == before.digest)
    if complete, try await store.exists(before.digest) {
      // As content/local does: the ingest goes, the caller learns the blob is there.
      await endMirror(drop: true)
      // Abort while holding the ref, then release it (the other order could remove the
      // ingest of the ref's next writer).
      try? await store.local.abort(ref: ref)
      await inner.close()
      throw ContentError.alreadyExists("content \(before.digest) already exists")
    }
    let committed: WriterState
    do {
      committed = try await inner.commit(size: size, expected: expected, labels: labels, createdAt: createdAt)
    } catch let e as ContentError where e.code == .alreadyExists {
      // Here already (a commit that missed its quorum left it): durable first, then say so.
      do {
        try await store.ensureDurable(before.digest)
      } catch let gone as ContentError where gone.code == .notFound {
        // A Delete of the digest ran between the local commit's check and now (gc-storm:
        // a Write answered NOT_FOUND, an error of the wrong kind): the bytes went with the
        // ingest, and the client uploads them again.
        throw ContentError.unavailable("content \(before.digest) was deleted while this upload committed; upload it again")
      }
      throw e
    }
    let view = node.view
    // The next owner holds the bytes already: if it is one of the blob's replicas it
    // commits them as its replica (one transfer fewer); otherwise its copy goes. Either
    // way before the client hears of the commit (a Status right after must not find it).
    var holders: Set<NodeID> = []
    if let m = takeMirror() {
      if view.replicas(of: committed.digest).contains(m.successor) {
        if await m.commit(committed.digest, size: committed.status.offset, labels: labels, createdAt: committed.status.updatedAt) {
          holders.insert(m.successor)
        }
      } else {
        await m.finish(drop: true)
      }
    }
    try await node.replicate(
      committed.digest, size: committed.status.offset, labels: labels, createdAt: committed.status.updatedAt,
      ref: ref, view: view, alreadyOn: holders, delegatedBy: delegatedBy)
    return committed
  }

  /// The mirror of this writer's session, started at the first append (at `offset`).
  private func mirror(from offset: Int64, _ status: IngestStatus) -> IngestMirror? {
    let node = store.node
    let lag = node.repairConfig.mirrorLagBytes
    guard lag > 0, delegatedBy == nil else { return nil }
    return mirror.withLock { m in
      if let m { return m }
      guard let successor = node.successor(ofRef: ref) else { return nil }
      let started = IngestMirror(
        node: node, successor: successor, ref: ref, offset: offset, total: status.total, expected: status.expected,
        lagBytes: lag)
      m = started
      return started
    }
  }

  private func takeMirror() -> IngestMirror? {
    mirror.withLock { m in
      defer { m = nil }
      return m
    }
  }

  private func endMirror(drop: Bool) async {
    await takeMirror()?.finish(drop: drop)
  }
}

/// The writer of a ref another node owns: the Write stream continues on the owner, over
/// the peer protocol's OwnerWrite, one message per call. Errors are the owner's (the same
/// codes a single node would return), or UNAVAILABLE if the owner cannot be reached.
actor ForwardedWriter: IngestWriter {
  nonisolated let ref: String
  private let owner: NodeID
  private let requests: AsyncStream<Containerd_Services_Content_V1_WriteContentRequest>.Continuation
  private let responses: BoundedPipe<Containerd_Services_Content_V1_WriteContentResponse>
  private let call: Task<Void, Never>
  private var expected: Digest?
  private var offset: Int64 = 0
  private var truncatePending = false
  private var last: WriterState?
  private let ownerDeath: DeathWatch
  private let ownerDied: OneShot<Void>

  private init(
    ref: String, owner: NodeID, expected: Digest?,
    requests: AsyncStream<Containerd_Services_Content_V1_WriteContentRequest>.Continuation,
    responses: BoundedPipe<Containerd_Services_Content_V1_WriteContentResponse>, call: Task<Void, Never>,
    ownerDeath: DeathWatch, ownerDied: OneShot<Void>
  ) {
    self.ownerDeath = ownerDeath
    self.ownerDied = ownerDied
    self.ref = ref
    self.owner = owner
    self.expected = expected
    self.requests = requests
    self.responses = responses
    self.call = call
  }

  static func open(node: ClusterNode, owner: NodeID, ref: String, total: Int64, expected: Digest?) async throws -> ForwardedWriter {
    let api = try node.peers.api(owner)
    let (stream, continuation) = AsyncStream.makeStream(of: Containerd_Services_Content_V1_WriteContentRequest.self)
    let responses = BoundedPipe<Containerd_Services_Content_V1_WriteContentResponse>(capacity: 2)
    let address = "\(owner) (owner of the ref)"
    let call = Task {
      do {
        try await api.ownerWrite(options: PeerClients.options()) { writer in
          for await request in stream { try await writer.write(request) }
        } onResponse: { response in
          for try await message in response.messages {
            guard await responses.send(message) else { break }
          }
        }
        responses.finish()
      } catch {
        responses.finish(ContentError(rpcFailure: error, reaching: address))
      }
    }
    // An owner that vanishes (partition, stopped process) may leave the stream hanging
    // longer than membership takes to declare it dead; then the client hears at once.
    // (The call is left to fail by itself: cancelling it from outside trips grpc-swift; see
    // ClusterNode.untilDead. close() does not wait for it then.)
    let ownerDied = OneShot<Void>()
    let ownerDeath = node.watchDeath(of: owner) {
      responses.finish(ContentError.unavailable("owner \(owner) of ref \(quoted(ref)) was declared dead; retry"))
      ownerDied.fulfil(())
    }
    let writer = ForwardedWriter(
      ref: ref, owner: owner, expected: expected, requests: continuation, responses: responses, call: call,
      ownerDeath: ownerDeath, ownerDied: ownerDied)
    do {
      _ = try await writer.exchange(.with {
        $0.action = .stat
        $0.ref = ref
        $0.total = total
        $0.expected = expected?.description ?? ""
      })
    } catch {
      await writer.close()
      throw error
    }
    return writer
  }

  func state() async throws -> WriterState {
    if let last { return last }
    return try await exchange(.with { $0.action = .stat })
  }

  func setExpectations(total: Int64?, expected newExpected: Digest?) async throws -> WriterState {
    if let newExpected { expected = newExpected }
    return try await exchange(.with {
      $0.action = .stat
      $0.total = total ?? 0
      $0.expected = newExpected?.description ?? ""
    })
  }

  func append(_ data: Data) async throws -> WriterState {
    let at = truncatePending ? 0 : offset
    truncatePending = false
    return try await exchange(.with {
      $0.action = .write
      $0.offset = at
      $0.data = data
    })
  }

  /// The owner truncates when the next WRITE arrives at offset 0 (containerd's rule).
  func truncate() async throws -> WriterState {
    truncatePending = true
    var s = try await state()
    s.status.offset = 0
    s.digest = Digest.of(Data(), algorithm: s.digest.algorithm)
    return s
  }

  /// The owner stamps the creation time.
  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    let state = try await exchange(.with {
      $0.action = .commit
      $0.total = size
      $0.offset = offset
      $0.expected = expected?.description ?? ""
      $0.labels = labels
    })
    requests.finish()
    return state
  }

  func close() async {
    ownerDeath.cancel()
    requests.finish()
    responses.cancel()
    // Whichever comes first: the call ends, or its owner was declared dead.
    let call = self.call
    let ended = OneShot<Void>()
    let died = ownerDied
    Task { await call.value; ended.fulfil(()) }
    Task { await died.value; ended.fulfil(()) }
    await ended.value
    died.fulfil(())  // releases the waiter above when the call ended first
  }

  /// A writer dropped without close still ends its stream, so the owner frees the ref.
  deinit {
    ownerDeath.cancel()
    requests.finish()
    responses.cancel()
  }

  private func exchange(_ request: Containerd_Services_Content_V1_WriteContentRequest) async throws -> WriterState {
    requests.yield(request)
    guard let m = try await responses.next() else {
      throw ContentError.unavailable("owner \(owner) ended the write stream of \(quoted(ref)) early")
    }
    let state = WriterState(
      status: IngestStatus(
        ref: ref, offset: m.offset, total: m.total, expected: expected, startedAt: Timestamp(m.startedAt),
        updatedAt: Timestamp(m.updatedAt)),
      digest: try Digest(parsing: m.digest))
    offset = m.offset
    last = state
    return state
  }
}
