import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import Foundation
import GRPCCore
import Synchronization

/// A range of a blob streamed from other nodes: from the first candidate, and when it
/// fails mid-stream (killed, hung past keepalive, stream cut), from the next one at the
/// offset reached, so the reader never notices.
actor FailoverStream {
  private let node: ClusterNode
  private let digest: Digest
  private let candidates: [NodeID]
  private var index = 0
  private var position: Int64
  private var remaining: Int64
  private var current: BoundedPipe<Data>?
  private var lastError: ContentError?

  init(node: ClusterNode, digest: Digest, candidates: [NodeID], offset: Int64, length: Int64) {
    self.node = node
    self.digest = digest
    self.candidates = candidates
    position = offset
    remaining = length
  }

  func next() async throws -> Data? {
    while remaining > 0 {
      let pipe: BoundedPipe<Data>
      if let current {
        pipe = current
      } else {
        guard index < candidates.count else {
          throw ContentError.unavailable(
            "no replica could serve \(digest) from offset \(position)\(lastError.map { ": \($0.message)" } ?? "")")
        }
        pipe = open(candidates[index])
        current = pipe
      }
      do {
        guard let chunk = try await pipe.next() else {
          throw ContentError.unavailable("\(candidates[index]) ended the stream at offset \(position)")
        }
        if chunk.isEmpty { continue }
        let piece = Int64(chunk.count) > remaining ? chunk.prefix(Int(remaining)) : chunk
        position += Int64(piece.count)
        remaining -= Int64(piece.count)
        return piece
      } catch {
        lastError = ContentError.from(error)
        node.logger.warning("read of \(digest) from \(candidates[index]) failed at offset \(position), failing over: \(lastError!.message)")
        pipe.cancel()
        current = nil
        index += 1
      }
    }
    return nil
  }

  private func open(_ peer: NodeID) -> BoundedPipe<Data> {
    let pipe = BoundedPipe<Data>(capacity: 4)
    let request = Containerd_Services_Content_V1_ReadContentRequest.with {
      $0.digest = digest.description
      $0.offset = position
      $0.size = remaining
    }
    let peers = node.peers
    let node = self.node
    Task {
      // A peer declared dead mid-stream: fail over now rather than when (if) its connection
      // gives up; the call itself ends at its deadline.
      let watch = node.watchDeath(of: peer) {
        pipe.finish(ContentError.unavailable("\(peer) was declared dead while it sent the blob"))
      }
      defer { watch.cancel() }
      do {
        try await peers.call(peer) { api in
          try await api.localRead(request: ClientRequest(message: request), options: PeerClients.transfer(request.size)) { r in
            for try await m in r.messages {
              guard await pipe.send(m.data) else { return }
            }
          }
        }
        pipe.finish()
      } catch {
        pipe.finish(error)
      }
    }
    return pipe
  }
}

/// Concurrent remote reads of one digest share one fetch: the first starts a transfer of
/// the whole blob into memory, and every reader (those that came later too, while it
/// lasts) reads its range from what has arrived. Blobs over maxCoalescedFetchBytes, or
/// past the total budget, are streamed per reader instead.
final class FetchCoalescer: Sendable {
  private struct State {
    var flights: [Digest: Flight] = [:]
    var bytesInFlight: Int64 = 0
  }

  private let state = Mutex(State())
  private let limits: Limits

  init(limits: Limits) { self.limits = limits }

  func read(_ digest: Digest, offset: Int64, size: Int64, node: ClusterNode) async throws -> BlobReader {
    let view = node.view
    let order = view.readOrder(of: digest)
    // The size comes first, from the first node that has the blob.
    let (blobSize, holders) = try await locate(digest, order: order, node: node)
    let (start, length) = try ReadRange.resolve(blobSize: blobSize, offset: offset, size: size)

    let flight = state.withLock { s -> (Flight, Bool)? in
      if let f = s.flights[digest] { return (f, false) }
      guard blobSize <= limits.maxCoalescedFetchBytes, s.bytesInFlight + blobSize <= limits.coalescedFetchBudgetBytes else {
        return nil
      }
      let f = Flight(size: blobSize)
      s.flights[digest] = f
      s.bytesInFlight += blobSize
      return (f, true)
    }
    guard let (flight, isNew) = flight else {
      node.remoteFetches.add(1, ordering: .relaxed)
      let stream = FailoverStream(node: node, digest: digest, candidates: holders, offset: start, length: length)
      return BlobReader(blobSize: blobSize, offset: start, length: length) { try await stream.next() }
    }
    if isNew {
      node.remoteFetches.add(1, ordering: .relaxed)
      let stream = FailoverStream(node: node, digest: digest, candidates: holders, offset: 0, length: blobSize)
      Task {
        do {
          while let chunk = try await stream.next() { flight.append(chunk) }
          flight.finish(nil)
        } catch {
          flight.finish(ContentError.from(error))
        }
        self.state.withLock { s in
          s.flights[digest] = nil
          s.bytesInFlight -= blobSize
        }
      }
    }
    let cursor = Mutex(start)
    let end = start + length
    return BlobReader(blobSize: blobSize, offset: start, length: length) {
      let at = cursor.withLock { $0 }
      if at >= end { return nil }
      let chunk = try await flight.bytes(at: at, upTo: end)
      cursor.withLock { $0 += Int64(chunk.count) }
      return chunk
    }
  }

  /// The blob's size and the nodes to fetch it from, the first one known to have it.
  private func locate(_ digest: Digest, order: [NodeID], node: ClusterNode) async throws -> (Int64, [NodeID]) {
    var lastError: ContentError?
    // This node asks others only when it lacks the blob itself.
    var lacking: Set<NodeID> = [node.view.me]
    for (i, peer) in order.enumerated() {
      do {
        let info = try await node.localInfo(of: digest, on: peer)
        return (info.size, Array(order[i...]))
      } catch {
        if error.code == .notFound { lacking.insert(peer) } else { lastError = error }
      }
    }
    guard node.view.absenceIsCertain(of: digest, lackedBy: lacking) else {
      throw ContentError.unavailable(
        "blob \(digest): too few of its replicas reachable to tell whether it exists"
          + (lastError.map { " (\($0.message))" } ?? ""))
    }
    throw ContentError.notFound("content digest \(digest): not found")
  }
}

/// The bytes of one blob as they arrive, for any number of readers.
final class Flight: Sendable {
  private struct State {
    var chunks: [Data] = []
    /// End offset of each chunk.
    var ends: [Int64] = []
    var done = false
    var failure: ContentError?
    var waiters: [CheckedContinuation<Void, Never>] = []
  }

  let size: Int64
  private let state = Mutex(State())

  init(size: Int64) { self.size = size }

  func append(_ chunk: Data) {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.chunks.append(chunk)
      s.ends.append((s.ends.last ?? 0) + Int64(chunk.count))
      defer { s.waiters = [] }
      return s.waiters
    }
    for w in waiters { w.resume() }
  }

  func finish(_ failure: ContentError?) {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.done = true
      s.failure = failure
      defer { s.waiters = [] }
      return s.waiters
    }
    for w in waiters { w.resume() }
  }

  /// Bytes from `offset` to the end of the chunk holding it (at most to `end`), waiting
  /// for them to arrive.
  func bytes(at offset: Int64, upTo end: Int64) async throws -> Data {
    while true {
      let answer = state.withLock { s -> Result<Data, ContentError>? in
        if let i = Self.chunkIndex(s.ends, offset) {
          let chunkStart = i == 0 ? 0 : s.ends[i - 1]
          let chunk = s.chunks[i]
          let from = chunk.startIndex + Int(offset - chunkStart)
          let to = chunk.startIndex + Int(min(s.ends[i], end) - chunkStart)
          return .success(chunk[from..<to])
        }
        if s.done { return .failure(s.failure ?? .unavailable("fetch ended before offset \(offset)")) }
        return nil
      }
      if let answer { return try answer.get() }
      await withCheckedContinuation { c in
        let now = state.withLock { s -> Bool in
          if s.done || Self.chunkIndex(s.ends, offset) != nil { return true }
          s.waiters.append(c)
          return false
        }
        if now { c.resume() }
      }
    }
  }

  /// The chunk holding byte `offset`, if it has arrived.
  private static func chunkIndex(_ ends: [Int64], _ offset: Int64) -> Int? {
    var lo = 0
    var hi = ends.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if ends[mid] <= offset { lo = mid + 1 } else { hi = mid }
    }
    return lo < ends.count ? lo : nil
  }
}
