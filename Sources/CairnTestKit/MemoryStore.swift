import CairnCore
import Foundation
import Synchronization

/// The content store contract in memory: the reference implementation the conformance
/// suite is checked against, and the fast store for unit tests of the layers above.
public final class MemoryStore: ReplicaStore {
  struct Blob {
    var data: Data
    var info: BlobInfo
  }

  struct Ingest {
    var data = Data()
    var status: IngestStatus
  }

  struct State {
    var blobs: [Digest: Blob] = [:]
    var ingests: [Bytewise: Ingest] = [:]  // by ref, as bytes
  }

  public let limits: Limits
  let clock: WallClock
  let state = Mutex(State())
  let locks = LockTable()
  let events = EventHub<IngestEvent>()

  public init(limits: Limits = .default, clock: @escaping WallClock = { Timestamp.now() }) {
    self.limits = limits
    self.clock = clock
  }

  public func info(_ digest: Digest) async throws -> BlobInfo {
    guard let b = state.withLock({ $0.blobs[digest] }) else { throw ContentError.notFound("content \(digest): not found") }
    return b.info
  }

  public func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    let now = clock()
    return try state.withLock { s throws(ContentError) -> BlobInfo in
      guard var b = s.blobs[digest] else { throw ContentError.notFound("content \(digest): not found") }
      let merged = try LabelRules.applyUpdate(current: b.info.labels, requested: labels, fieldPaths: fieldPaths)
      try LabelRules.validateStored(merged, limits: limits)
      b.info.labels = merged
      b.info.updatedAt = now
      s.blobs[digest] = b
      return b.info
    }
  }

  public func adoptLabels(_ digest: Digest, labels: [String: String], updatedAt: Timestamp) async throws -> Bool {
    try LabelRules.validateStored(labels, limits: limits)
    return try state.withLock { s throws(ContentError) -> Bool in
      guard var b = s.blobs[digest] else { throw ContentError.notFound("content \(digest): not found") }
      guard updatedAt > b.info.updatedAt else { return false }
      b.info.labels = labels
      b.info.updatedAt = updatedAt
      s.blobs[digest] = b
      return true
    }
  }

  public func list(_ filter: Filter) async throws -> [BlobInfo] {
    state.withLock { $0.blobs.values.map(\.info) }.filter { filter.matches($0) }.sorted { $0.digest < $1.digest }
  }

  public func delete(_ digest: Digest) async throws {
    let removed = state.withLock { $0.blobs.removeValue(forKey: digest) }
    if removed == nil { throw ContentError.notFound("content \(digest): not found") }
  }

  public func delete(_ digest: Digest, unlessLabeled prefix: String) async throws -> Bool {
    try state.withLock { s throws(ContentError) -> Bool in
      guard let b = s.blobs[digest] else { throw ContentError.notFound("content \(digest): not found") }
      if b.info.labels.keys.contains(where: { $0.hasPrefix(prefix) }) { return false }
      s.blobs[digest] = nil
      return true
    }
  }

  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader {
    guard let b = state.withLock({ $0.blobs[digest] }) else { throw ContentError.notFound("content \(digest): not found") }
    let (start, length) = try ReadRange.resolve(blobSize: Int64(b.data.count), offset: offset, size: size)
    let chunk = Int64(limits.readChunkBytes)
    let position = Mutex(start)
    let end = start + length
    let data = b.data
    return BlobReader(blobSize: Int64(data.count), offset: start, length: length) {
      position.withLock { pos -> Data? in
        guard pos < end else { return nil }
        let n = min(chunk, end - pos)
        defer { pos += n }
        return data.subdata(in: Int(pos)..<Int(pos + n))
      }
    }
  }

  public func status(ref: String) async throws -> IngestStatus {
    try RefRules.validate(ref, limits: limits)
    guard let i = state.withLock({ $0.ingests[Bytewise(ref)] }) else { throw ContentError.notFound("ingest ref \(quoted(ref)): not found") }
    return i.status
  }

  public func listStatuses(_ filter: Filter) async throws -> [IngestStatus] {
    state.withLock { $0.ingests.values.map(\.status) }.filter { filter.matches($0) }.sorted { $0.ref.bytewisePrecedes($1.ref) }
  }

  public func abort(ref: String) async throws {
    try RefRules.validate(ref, limits: limits)
    let removed = state.withLock { $0.ingests.removeValue(forKey: Bytewise(ref)) }
    if removed == nil { throw ContentError.notFound("ingest ref \(quoted(ref)): not found") }
    events.publish(.aborted(ref: ref))
  }

  public func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter {
    try RefRules.validate(ref, limits: limits)
    if let expected, state.withLock({ $0.blobs[expected] }) != nil {
      throw ContentError.alreadyExists("content \(expected): already exists")
    }
    guard await locks.acquire(ref, timeout: limits.lockWait(expecting: expected)) else {
      throw ContentError.unavailable("ref \(ref) locked: another writer holds it")
    }
    // The writer we waited for may have committed the very blob.
    if let expected, state.withLock({ $0.blobs[expected] }) != nil {
      locks.release(ref)
      throw ContentError.alreadyExists("content \(expected): already exists")
    }
    let now = clock()
    let status = state.withLock { s -> IngestStatus in
      if var existing = s.ingests[Bytewise(ref)], !(total > 0 && existing.status.total > 0 && total != existing.status.total) {
        if total > 0 { existing.status.total = total }
        if let expected { existing.status.expected = expected }
        s.ingests[Bytewise(ref)] = existing
        return existing.status
      }
      let fresh = IngestStatus(ref: ref, offset: 0, total: total, expected: expected, startedAt: now, updatedAt: now)
      s.ingests[Bytewise(ref)] = Ingest(status: fresh)
      return fresh
    }
    events.publish(.progress(status))
    return MemoryIngestWriter(store: self, ref: ref)
  }

  public func ingestEvents() -> AsyncStream<IngestEvent> { events.subscribe() }
}

final class MemoryIngestWriter: IngestWriter {
  let ref: String
  let store: MemoryStore
  let ended = Mutex(false)

  init(store: MemoryStore, ref: String) {
    self.store = store
    self.ref = ref
  }

  private func withIngest<T>(_ body: (inout MemoryStore.Ingest) throws(ContentError) -> T) throws(ContentError) -> T {
    if ended.withLock({ $0 }) { throw ContentError.failedPrecondition("writer for ref \(quoted(ref)) is closed") }
    return try store.state.withLock { s throws(ContentError) -> T in
      guard var i = s.ingests[Bytewise(ref)] else { throw ContentError.notFound("ingest ref \(quoted(ref)) was aborted") }
      let r = try body(&i)
      s.ingests[Bytewise(ref)] = i
      return r
    }
  }

  private func current(_ i: MemoryStore.Ingest) -> WriterState {
    WriterState(status: i.status, digest: Digest.of(i.data, algorithm: i.status.expected?.algorithm ?? .sha256))
  }

  func state() async throws -> WriterState { try withIngest { current($0) } }

  func setExpectations(total: Int64?, expected: Digest?) async throws -> WriterState {
    try withIngest { i in
      if let total { i.status.total = total }
      if let expected { i.status.expected = expected }
      return current(i)
    }
  }

  func append(_ data: Data) async throws -> WriterState {
    let now = store.clock()
    let s = try withIngest { i in
      i.data.append(data)
      i.status.offset = Int64(i.data.count)
      i.status.updatedAt = now
      return current(i)
    }
    store.events.publish(.progress(s.status))
    return s
  }

  func truncate() async throws -> WriterState {
    let now = store.clock()
    let s = try withIngest { i in
      i.data = Data()
      i.status.offset = 0
      i.status.updatedAt = now
      return current(i)
    }
    store.events.publish(.progress(s.status))
    return s
  }

  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    defer { end() }
    let ingest = try withIngest { $0 }
    if size > 0 && size != ingest.status.offset {
      throw ContentError.failedPrecondition("unexpected commit size \(ingest.status.offset), expected \(size)")
    }
    let actual = Digest.of(ingest.data, algorithm: expected?.algorithm ?? .sha256)
    if let expected, expected != actual {
      throw ContentError.failedPrecondition("unexpected commit digest \(actual), expected \(expected)")
    }
    let now = createdAt ?? store.clock()
    try LabelRules.validateStored(labels, limits: store.limits)
    let exists = store.state.withLock { s -> Bool in
      s.ingests[Bytewise(ref)] = nil
      if s.blobs[actual] != nil { return true }
      s.blobs[actual] = MemoryStore.Blob(
        data: ingest.data,
        info: BlobInfo(digest: actual, size: Int64(ingest.data.count), createdAt: now, updatedAt: now, labels: labels))
      return false
    }
    // Either way the upload ended with its content stored: watchers see it end.
    store.events.publish(.committed(ref: ref, digest: actual, size: ingest.status.offset))
    if exists { throw ContentError.alreadyExists("content \(actual): already exists") }
    var status = ingest.status
    status.updatedAt = now
    return WriterState(status: status, digest: actual)
  }

  func close() async { end() }

  private func end() {
    let first = ended.withLock { e -> Bool in
      defer { e = true }
      return !e
    }
    if first { store.locks.release(ref) }
  }
}
