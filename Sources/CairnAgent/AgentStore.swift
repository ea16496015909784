import CairnClient
import CairnCore
import CairnDisk
import Foundation
import Logging
import Synchronization

/// What containerd on one host talks to (`cairn agent`, a unix socket beside it). Ingests
/// stay on this host: containerd streams the bytes into a local ingest, and at COMMIT,
/// once the digest is known and verified, the agent publishes the blob to the cluster:
/// if the cluster already has it (another host pulled the same layer) it only claims it,
/// and no byte crosses the network again. Blob calls (Info, List, Update, Delete) go to
/// the cluster under this host's client identity, so containerd's garbage collector sees
/// and deletes only this host's blobs. Reads come from the local cache when it has the
/// blob, else from the cluster, resuming on another node if one fails mid-stream.
public struct AgentStore: ContentStore {
  public let local: DiskStore
  public let cluster: ClusterClient
  public let cache: BlobCache
  public let counters = AgentCounters()
  let logger: Logger
  private let fills = Flights()

  public init(local: DiskStore, cluster: ClusterClient, cache: BlobCache, logger: Logger = Logger(label: "cairn-agent")) {
    self.local = local
    self.cluster = cluster
    self.cache = cache
    self.logger = logger
  }

  public var limits: Limits { local.limits }

  // MARK: Blobs, from the cluster

  public func info(_ digest: Digest) async throws -> BlobInfo {
    try await cluster.call { try await $0.info(digest.description) }
  }

  public func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    try await cluster.call { try await $0.update(digest.description, labels: labels, fieldPaths: fieldPaths) }
  }

  public func list(_ filter: Filter) async throws -> [BlobInfo] {
    try await cluster.call { try await $0.list(filters: filter.sources) }
  }

  public func delete(_ digest: Digest) async throws {
    try await cluster.call { try await $0.delete(digest.description) }
    await cache.evict(digest)
  }

  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader {
    if let cached = try await cache.read(digest, offset: offset, size: size) { return cached }
    let blobSize = try await info(digest).size
    // containerd reads a blob in many small ranged calls (32 KiB each for an export): fetch
    // it once into the cache, shared by every concurrent reader, and serve them all locally.
    if blobSize <= cache.maxBytes / 2 {
      try await fills.fill(digest) { try await fetchIntoCache(digest) }
      if let cached = try await cache.read(digest, offset: offset, size: size) { return cached }
    }
    return try await stream(digest, blobSize: blobSize, offset: offset, size: size)
  }

  /// Downloads the whole blob into a local ingest and commits it (verified) to the cache.
  private func fetchIntoCache(_ digest: Digest) async throws {
    let writer: any IngestWriter
    do {
      writer = try await local.openWriter(ref: "cairn-agent/cache/\(digest)", total: 0, expected: digest)
    } catch let e as ContentError where e.code == .alreadyExists {
      // On disk but not indexed (a previous run's copy): index it.
      await cache.added(digest, size: try await local.info(digest).size)
      return
    }
    do {
      // A partial fill left by an earlier failure starts over: its bytes are unverified
      // until COMMIT, and resuming on top of a bad prefix would fail the same way forever.
      _ = try await writer.truncate()
      let received = Atomic<Int64>(0)
      try await cluster.call { client in
        let at = received.load(ordering: .relaxed)
        try await client.read(digest.description, offset: at) { chunk in
          _ = try await writer.append(chunk)
          received.add(Int64(chunk.count), ordering: .relaxed)
          counters.readBytes.add(Int64(chunk.count), ordering: .relaxed)
        }
      }
      let done = try await writer.commit(size: received.load(ordering: .relaxed), expected: digest, labels: [:])
      await writer.close()
      await cache.added(digest, size: done.status.offset)
    } catch let e as ContentError where e.code == .alreadyExists {
      await writer.close()
    } catch {
      await writer.close()
      throw error
    }
  }

  /// Streams straight from the cluster (blobs too big for the cache), resuming on another
  /// node at the last byte received if one fails mid-stream.
  private func stream(_ digest: Digest, blobSize: Int64, offset: Int64, size: Int64) async throws -> BlobReader {
    let (start, length) = try ReadRange.resolve(blobSize: blobSize, offset: offset, size: size)
    let pipe = BoundedPipe<Data>(capacity: 4)
    let position = Atomic<Int64>(start)
    let end = start + length
    let pump = Task { [cluster, counters] in
      do {
        try await cluster.call { client in
          let at = position.load(ordering: .relaxed)
          if at >= end { return }
          try await client.read(digest.description, offset: at, size: end - at) { chunk in
            guard await pipe.send(chunk) else { throw CancellationError() }
            position.add(Int64(chunk.count), ordering: .relaxed)
            counters.readBytes.add(Int64(chunk.count), ordering: .relaxed)
          }
        }
        pipe.finish()
      } catch {
        pipe.finish(error)
      }
    }
    return BlobReader(blobSize: blobSize, offset: start, length: length) {
      do {
        return try await pipe.next()
      } catch {
        pump.cancel()
        throw error
      }
    }
  }

  // MARK: Ingests, on this host

  public func status(ref: String) async throws -> IngestStatus { try await local.status(ref: ref) }
  public func listStatuses(_ filter: Filter) async throws -> [IngestStatus] { try await local.listStatuses(filter) }
  public func abort(ref: String) async throws { try await local.abort(ref: ref) }
  public func ingestEvents() -> AsyncStream<IngestEvent> { local.ingestEvents() }

  public func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter {
    if let expected {
      // containerd asks Info first; a writer that names a blob the cluster has gets
      // ALREADY_EXISTS (and this host now holds it) without sending a byte.
      if try await exists(expected) {
        throw ContentError.alreadyExists("content \(expected): already exists")
      }
    }
    do {
      let inner = try await local.openWriter(ref: ref, total: total, expected: expected)
      return DelegatingWriter(ref: ref, inner: inner) { inner, c in try await commitPublishing(inner, c) }
    } catch let e as ContentError where e.code == .alreadyExists {
      // Cached here but not in the cluster (deleted there since): publish it again.
      if let expected { try await publish(expected, labels: [:]) }
      throw e
    }
  }

  // MARK: Publishing

  /// A local COMMIT that also publishes the blob to the cluster. containerd treats
  /// ALREADY_EXISTS as success, so that answer too waits until the cluster holds the blob.
  private func commitPublishing(_ inner: any IngestWriter, _ c: DelegatingWriter.Commit) async throws -> WriterState {
    let done: WriterState
    do {
      done = try await inner.commit(size: c.size, expected: c.expected, labels: c.labels, createdAt: c.createdAt)
    } catch let e as ContentError where e.code == .alreadyExists {
      if let d = c.digest { try await publish(d, labels: c.labels) }
      throw e
    }
    try await publish(done.digest, labels: c.labels)
    return done
  }

  /// Makes sure the cluster holds the locally committed blob for this host: a claim if it
  /// is there already, else an upload (resumed on another node if one fails).
  func publish(_ digest: Digest, labels: [String: String]) async throws {
    if try await exists(digest) {
      counters.deduplicated.add(1, ordering: .relaxed)
      logger.info("claimed \(digest): already in the cluster, no bytes sent")
      await cache.added(digest, size: try await local.info(digest).size)
      return
    }
    let path = local.blobPath(digest)
    let result = try await cluster.call { client in
      try await client.write(
        ref: "cairn-agent/publish/\(digest)", source: try FileSource(path: path), expected: digest, labels: labels)
    }
    if result.alreadyExisted {
      counters.deduplicated.add(1, ordering: .relaxed)
      logger.info("claimed \(digest): committed meanwhile by another client")
    } else {
      counters.publishedBytes.add(result.size - result.resumedFrom, ordering: .relaxed)
      logger.info("published \(digest): \(result.size - result.resumedFrom) bytes sent")
    }
    await cache.added(digest, size: result.size)
  }
}

/// One fetch per digest at a time: concurrent readers of a blob the cache lacks wait for
/// the same download instead of each starting one.
final class Flights: Sendable {
  private let running = Mutex<[Digest: Task<Void, any Error>]>([:])

  func fill(_ digest: Digest, _ fetch: @escaping @Sendable () async throws -> Void) async throws {
    let task = running.withLock { r in
      if let t = r[digest] { return t }
      let t = Task { try await fetch() }
      r[digest] = t
      return t
    }
    defer { running.withLock { r in if r[digest] == task { r[digest] = nil } } }
    try await task.value
  }
}

/// What the agent did, for its log line and the tests.
public final class AgentCounters: Sendable {
  /// Blob bytes uploaded to the cluster at commit.
  public let publishedBytes = Atomic<Int64>(0)
  /// Commits that found the blob already in the cluster and sent no bytes.
  public let deduplicated = Atomic<Int>(0)
  /// Bytes read from the cluster (cache misses).
  public let readBytes = Atomic<Int64>(0)
}
