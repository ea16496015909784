import CairnCluster
import CairnCore
import CairnProto
import CairnServer
import Foundation
import GRPCCore
import Synchronization

/// The owner's side of ingest failover: the bytes of an upload, as they arrive, streamed to
/// the ref's next owner (`MirrorIngest`). At most `lagBytes` may be queued and unsent;
/// an append waits beyond that, so a client whose owner dies resends at most about that
/// much (plus what the HTTP/2 window held). A mirror that fails stops: the upload goes on
/// without it (the client would resend from further back, never get wrong bytes).
final class IngestMirror: Sendable {
  let ref: String
  let successor: NodeID
  private let chunks: AsyncStream<Cairn_Peer_V1_MirrorIngestRequest>.Continuation
  private let flow: ByteWindow
  private let call: Task<Cairn_Peer_V1_MirrorIngestResponse?, Never>

  /// Starts mirroring an ingest that stands at `offset` on this node.
  init(node: ClusterNode, successor: NodeID, ref: String, offset: Int64, total: Int64, expected: Digest?, lagBytes: Int) {
    self.ref = ref
    self.successor = successor
    let (stream, continuation) = AsyncStream.makeStream(of: Cairn_Peer_V1_MirrorIngestRequest.self)
    chunks = continuation
    continuation.yield(.with {
      $0.header = .with {
        $0.ref = ref
        $0.offset = offset
        $0.total = total
        $0.expected = expected?.description ?? ""
        $0.owner = node.config.me.name
        $0.clusterFingerprint = node.config.fingerprint
      }
    })
    let flow = ByteWindow(limit: lagBytes)
    self.flow = flow
    let (peers, logger) = (node.peers, node.logger)
    call = Task {
      do {
        // A successor declared dead ends the mirror: appends and the commit stop waiting for it.
        return try await node.untilDead(successor) {
          try await peers.call(successor) { api in
            try await api.mirrorIngest(options: PeerClients.options()) { writer in
              for await m in stream {
                try await writer.write(m)
                flow.release(m.data.count)
              }
            }
          }
        }
      } catch {
        logger.warning("mirror of ingest \(quoted(ref)) to \(successor) stopped: \(ContentError.from(error).message)")
        continuation.finish()
        flow.close()
        return nil
      }
    }
  }

  /// Queues bytes the owner just appended; waits while more than `lagBytes` are unsent.
  func forward(_ data: Data) async {
    if await flow.acquire(data.count) { chunks.yield(.with { $0.data = data }) }
  }

  /// Ends the stream: `drop` when the upload was committed or aborted, else the mirror
  /// keeps its copy (the client may resume later, through either node).
  func finish(drop: Bool) async {
    chunks.yield(.with { $0.end = drop ? .drop : .keep })
    chunks.finish()
    _ = await call.value
  }

  /// Asks the next owner, a replica of the committed blob, to commit its copy; true once
  /// the blob is durable there. False (the caller replicates as usual) if the mirror had
  /// failed or the commit was refused; the next owner then drops its copy.
  func commit(_ digest: Digest, size: Int64, labels: [String: String], createdAt: Timestamp) async -> Bool {
    chunks.yield(.with {
      $0.end = .commit
      $0.commit = .with {
        $0.digest = digest.description
        $0.size = size
        $0.labels = labels
        $0.createdAt = .init(createdAt)
      }
    })
    chunks.finish()
    return await call.value?.committed ?? false
  }
}

/// Bytes in flight, at most `limit` (one item may pass when fewer are in flight, however
/// big). `acquire` waits for room; false once closed.
final class ByteWindow: Sendable {
  private struct State {
    var inFlight = 0
    var waiters: [CheckedContinuation<Void, Never>] = []
    var closed = false
  }

  private let limit: Int
  private let state = Mutex(State())

  init(limit: Int) { self.limit = limit }

  func acquire(_ bytes: Int) async -> Bool {
    while true {
      let granted: Bool? = state.withLock { s in
        if s.closed { return false }
        guard s.inFlight <= limit else { return nil }
        s.inFlight += bytes
        return true
      }
      if let granted { return granted }
      await withCheckedContinuation { c in
        let ready = state.withLock { s in
          if s.closed || s.inFlight <= limit { return true }
          s.waiters.append(c)
          return false
        }
        if ready { c.resume() }
      }
    }
  }

  func release(_ bytes: Int) { update { $0.inFlight -= bytes } }

  func close() { update { $0.closed = true } }

  private func update(_ change: (inout State) -> Void) {
    let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      change(&s)
      guard s.closed || s.inFlight <= limit else { return [] }
      defer { s.waiters = [] }
      return s.waiters
    }
    for c in wake { c.resume() }
  }
}

extension ClusterNode {
  /// The node that would own `ref` if this one died: where its uploads are mirrored.
  func successor(ofRef ref: String) -> NodeID? {
    let view = self.view
    return view.ring.preferenceList(at: Ring.position(ofRef: ref), count: 2) { $0 == config.me || view.isLive($0) }
      .first { $0 != config.me }
  }

  /// The next owner's side: keeps the mirrored bytes as a local ingest of the same ref.
  func receiveMirror(_ messages: RPCAsyncSequence<Cairn_Peer_V1_MirrorIngestRequest, any Error>) async throws
    -> Cairn_Peer_V1_MirrorIngestResponse
  {
    var iterator = messages.makeAsyncIterator()
    guard let first = try await iterator.next(), first.hasHeader else {
      throw ContentError.invalidArgument("a mirror stream starts with a header")
    }
    let h = first.header
    try CallContext.requireSender(h.owner, in: "a mirror of \(quoted(h.ref, limit: 80))")
    guard h.clusterFingerprint == config.fingerprint else {
      throw ContentError.failedPrecondition("cluster config fingerprint \(h.clusterFingerprint) differs from \(config.me)'s")
    }
    guard !ClusterNode.isReserved(h.ref) else { throw ContentError.invalidArgument("reserved ref \(quoted(h.ref))") }
    let opening = try h.opening()
    let expected = opening.expected
    mirroring(h.ref, true)
    defer { mirroring(h.ref, false) }
    let writer = try await local.openWriter(ref: h.ref, total: opening.total, expected: expected)
    // The writer holds the ref's lock here. An owner declared dead may leave its stream
    // hanging (chaos one-way: a node whose outbound link works and inbound does not kept
    // it open for 26 s), and this node, the ref's next owner, now owns the ref: the client's
    // retry must find the ingest, not wait on the lock. Closing keeps the ingest.
    let ownerDeath = watchDeath(of: NodeID(h.owner)) { Task { await writer.close() } }
    defer { ownerDeath.cancel() }
    var offset = try await writer.state().status.offset
    do {
      if opening.offset == 0 && offset > 0 {
        offset = try await writer.truncate().status.offset
      } else if opening.offset != offset {
        throw ContentError.failedPrecondition(
          "\(config.me) holds ingest \(quoted(h.ref)) at offset \(offset), the owner's stream starts at \(opening.offset)")
      }
      while let m = try await iterator.next() {
        if !m.data.isEmpty { offset = try await writer.append(m.data).status.offset }
        switch m.end {
        case .drop:
          await writer.close()
          try? await local.abort(ref: h.ref)
          return .with { $0.offset = offset }
        case .keep:
          await writer.close()
          return .with { $0.offset = offset }
        case .commit:
          return try await commitMirror(writer, header: h, m.commit)
        default:
          continue
        }
      }
    } catch {
      await writer.close()
      throw error
    }
    // The owner's stream broke off (it died, or lost its link): keep what arrived, so the
    // client resumes from here once this node owns the ref.
    await writer.close()
    return .with { $0.offset = offset }
  }

  /// The mirror becomes this node's replica of the committed blob, under the same checks
  /// a Replicate gets (fenced by the ref's owner in this node's view, tombstones); its
  /// bytes were hashed as they arrived, so the commit verifies the digest without reading
  /// them again. On any failure the mirror's ingest goes: the owner replicates as usual.
  private func commitMirror(
    _ writer: any IngestWriter, header h: Cairn_Peer_V1_MirrorIngestHeader, _ c: Cairn_Peer_V1_MirrorCommit
  ) async throws -> Cairn_Peer_V1_MirrorIngestResponse {
    do {
      try requireOwner(h.owner, of: h.ref, sending: "the commit of a mirror")
      let (digest, createdAt) = try c.decoded()
      try clock.admit(createdAt, "created_at")
      do {
        let state = try await guarding(digest) {
          try refuseIfDeleted(digest, createdAt: createdAt)
          return try await writer.commit(size: c.size, expected: digest, labels: c.labels, createdAt: createdAt)
        }
        await writer.close()
        return .with {
          $0.offset = state.status.offset
          $0.committed = true
        }
      } catch let e as ContentError where e.code == .alreadyExists {
        await writer.close()
        try? await local.abort(ref: h.ref)
        return .with { $0.committed = true }
      }
    } catch {
      await writer.close()
      try? await local.abort(ref: h.ref)
      throw error
    }
  }

  /// Marks `ref` as a mirror on this node (its ingest events stay out of watches: the
  /// owner's are the real ones), until a few seconds after its stream ends (events are
  /// delivered to the relay a little later than they happen).
  private func mirroring(_ ref: String, _ on: Bool) {
    if on {
      mirrors.withLock { $0[Bytewise(ref), default: 0] += 1 }
      return
    }
    Task {
      try? await Task.sleep(nanoseconds: 5_000_000_000)
      self.mirrors.withLock { m in
        m[Bytewise(ref), default: 1] -= 1
        if m[Bytewise(ref)] == 0 { m[Bytewise(ref)] = nil }
      }
    }
  }

  /// Whether an ingest event on this node's store is a mirror's, not a client's.
  func isMirror(_ ref: String) -> Bool { mirrors.withLock { $0[Bytewise(ref)] != nil } }
}
