import CCairnSys
import CairnCore
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The durable single-node content store: containerd's content/local layout, crash-safe
/// commits (fsync data, verify, link into blobs/, group-fsync the directory), resumable
/// ingests that survive restarts, and one writer per ref.
public final class DiskStore: ReplicaStore {
  public let limits: Limits
  let layout: DiskLayout
  let io: BlockingIO
  let clock: WallClock
  let events = EventHub<IngestEvent>()
  let groupSync: GroupSync
  private let refLocks = LockTable()
  private let metaLocks = LockTable()
  private let active = Mutex<[Bytewise: DiskIngestWriter]>([:])  // by ref, as bytes
  let usageCache = Mutex<(Double, StoreUsage)?>(nil)
  func activeWriterCount() -> Int { active.withLock { $0.count } }

  public var root: String { layout.root }
  /// Where a committed blob's bytes are (containerd's layout: blobs/<alg>/<hex>).
  public func blobPath(_ digest: Digest) -> String { layout.blobPath(digest) }

  /// Opens (creating if needed) the store at `root`, and cleans up what a crash left:
  /// half-created ingest directories and temporary metadata files.
  public static func open(
    root: String, limits: Limits = .default, ioThreads: Int = 8,
    clock: @escaping WallClock = { Timestamp.now() }, logger: Logger = Logger(label: "cairn.disk")
  ) async throws -> DiskStore {
    let io = BlockingIO(threads: ioThreads)
    let layout = DiskLayout(root: root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root)
    let lock = try await io.run {
      try layout.create()
      let lock = try DataDirectoryLock(root: layout.root)
      try DiskStore.recover(layout, logger: logger)
      return lock
    }
    return DiskStore(layout: layout, io: io, limits: limits, clock: clock, lock: lock, logger: logger)
  }

  /// Held while the store is open (one process per data directory).
  private let lock: DataDirectoryLock

  /// Where the store reports files it drops or ignores (a crash's leftovers, damage).
  let logger: Logger

  private init(layout: DiskLayout, io: BlockingIO, limits: Limits, clock: @escaping WallClock, lock: DataDirectoryLock, logger: Logger) {
    self.lock = lock
    self.logger = logger
    self.layout = layout
    self.io = io
    self.limits = limits
    self.clock = clock
    groupSync = GroupSync()
  }

  public func shutdown() async {
    await io.shutdown()
    lock.release()
  }

  private static func recover(_ layout: DiskLayout, logger: Logger) throws(ContentError) {
    for name in try POSIX.listDirectory(layout.ingestRoot) {
      let files = IngestFiles(dir: layout.ingestRoot + "/" + name)
      if !POSIX.exists(files.ref) || !POSIX.exists(files.data) {
        // Its creation never finished, so no Write was answered for it.
        logger.notice("removing \(files.dir): an ingest whose creation a crash interrupted")
        try POSIX.removeTree(files.dir)
      }
    }
    for alg in DigestAlgorithm.allCases {
      for name in try POSIX.listDirectory(layout.metaDir(alg)) where name.hasSuffix(".tmp") {
        logger.notice("removing \(layout.metaDir(alg))/\(name): a label update or commit a crash interrupted")
        try POSIX.unlink(layout.metaDir(alg) + "/" + name)
      }
    }
  }

  // MARK: Committed blobs

  public func info(_ digest: Digest) async throws -> BlobInfo {
    let (layout, limits) = (self.layout, self.limits)
    return try await io.run {
      let st: POSIX.FileStat
      do throws(ContentError) {
        st = try POSIX.stat(layout.blobPath(digest))
      } catch {
        if error.code == .notFound { throw ContentError.notFound("content \(digest): not found") }
        throw error
      }
      return BlobMeta.info(digest, blob: st, meta: try BlobMeta.read(layout.metaPath(digest), limits: limits))
    }
  }

  public func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    let now = clock()
    return try await rewriteMeta(digest) { current throws(ContentError) in
      let merged = try LabelRules.applyUpdate(current: current.labels, requested: labels, fieldPaths: fieldPaths)
      return BlobMeta(labels: merged, updatedAt: now.rfc3339)
    }.info
  }

  public func adoptLabels(_ digest: Digest, labels: [String: String], updatedAt: Timestamp) async throws -> Bool {
    try await rewriteMeta(digest) { current in
      updatedAt > current.updatedAt ? BlobMeta(labels: labels, updatedAt: updatedAt.rfc3339) : nil
    }.rewritten
  }

  /// Replaces the blob's metadata with what `decide` makes of the current labels (nil:
  /// leave it), durably, under the blob's metadata lock.
  private func rewriteMeta(
    _ digest: Digest, _ decide: @escaping @Sendable (BlobInfo) throws(ContentError) -> BlobMeta?
  ) async throws -> (info: BlobInfo, rewritten: Bool) {
    let key = digest.description
    guard await metaLocks.acquire(key, timeout: limits.metadataLockWaitSeconds) else {
      throw ContentError.unavailable("metadata of \(digest) is busy (limit metadata_lock_wait)")
    }
    defer { metaLocks.release(key) }
    let (layout, limits, groupSync) = (self.layout, self.limits, self.groupSync)
    let (info, pending) = try await io.run { () throws -> ((BlobInfo, Bool), [(String, UInt64)]) in
      let st: POSIX.FileStat
      do throws(ContentError) {
        st = try POSIX.stat(layout.blobPath(digest))
      } catch {
        if error.code == .notFound { throw ContentError.notFound("content \(digest): not found") }
        throw error
      }
      let current = BlobMeta.info(digest, blob: st, meta: try BlobMeta.read(layout.metaPath(digest), limits: limits))
      guard let meta = try decide(current) else { return ((current, false), []) }
      try LabelRules.validateStored(meta.labels, limits: limits)
      try DurableFiles.replace(layout.metaPath(digest), try meta.encoded())
      let pending = try groupSync.enterAll([layout.metaDir(digest.algorithm)])
      return ((BlobMeta.info(digest, blob: st, meta: meta), true), pending)
    }
    try await groupSync.waitAll(pending)
    return info
  }

  public func list(_ filter: Filter) async throws -> [BlobInfo] {
    let (layout, limits, logger) = (self.layout, self.limits, self.logger)
    return try await io.run {
      var out: [BlobInfo] = []
      for alg in DigestAlgorithm.allCases {
        for name in try POSIX.listDirectory(layout.blobDir(alg)) {
          guard let digest = try? Digest(parsing: alg.rawValue + ":" + name) else { continue }
          guard let st = try? POSIX.stat(layout.blobPath(digest)) else { continue }  // deleted meanwhile
          let meta: BlobMeta?
          do throws(ContentError) {
            meta = try BlobMeta.read(layout.metaPath(digest), limits: limits)
          } catch {
            // Info on this digest answers the error; a listing shows the blob unlabelled.
            logger.error("listing \(digest) without its labels: \(error.message)")
            meta = nil
          }
          let info = BlobMeta.info(digest, blob: st, meta: meta)
          if filter.matches(info) { out.append(info) }
          if filter.exhausted { return out }
        }
      }
      return out.sorted { $0.digest < $1.digest }
    }
  }

  public func delete(_ digest: Digest) async throws {
    let (layout, groupSync) = (self.layout, self.groupSync)
    let pending = try await io.run {
      guard try POSIX.unlink(layout.blobPath(digest)) else { throw ContentError.notFound("content \(digest): not found") }
      try POSIX.unlink(layout.metaPath(digest))
      return try groupSync.enterAll([layout.blobDir(digest.algorithm)])
    }
    try await groupSync.waitAll(pending)
  }

  /// Under the metadata lock that Update takes, so the labels checked are the latest.
  public func delete(_ digest: Digest, unlessLabeled prefix: String) async throws -> Bool {
    let key = digest.description
    guard await metaLocks.acquire(key, timeout: limits.metadataLockWaitSeconds) else {
      throw ContentError.unavailable("metadata of \(digest) is busy (limit metadata_lock_wait)")
    }
    defer { metaLocks.release(key) }
    if try await info(digest).labels.keys.contains(where: { $0.hasPrefix(prefix) }) { return false }
    try await delete(digest)
    return true
  }

  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader {
    let path = layout.blobPath(digest)
    let chunk = Int64(limits.readChunkBytes)
    // Opening also reads the first chunk: a 1 MiB ReadAt (containerd's reader) costs one
    // trip to the I/O threads.
    let (fd, blobSize, start, length, first) = try await io.run {
      let fd: Int32
      do throws(ContentError) {
        fd = try POSIX.open(path, O_RDONLY)
      } catch {
        if error.code == .notFound { throw ContentError.notFound("content \(digest): not found") }
        throw error
      }
      do throws(ContentError) {
        let blobSize = try POSIX.fstat(fd, path: path).size
        let (start, length) = try ReadRange.resolve(blobSize: blobSize, offset: offset, size: size)
        if length > chunk { _ = cairn_advise_sequential(fd) }
        let first = length > 0 ? try POSIX.pread(fd, count: Int(min(chunk, length)), at: start, path: path) : Data()
        return (fd, blobSize, start, length, first)
      } catch {
        POSIX.close(fd)
        throw error
      }
    }
    let cursor = ReadCursor(fd: fd, pending: first)
    cursor.position.store(start, ordering: .relaxed)
    let end = start + length
    let io = self.io
    return BlobReader(blobSize: blobSize, offset: start, length: length) {
      let pos = cursor.position.load(ordering: .relaxed)
      guard pos < end else { return nil }
      let data: Data
      if let pending = cursor.takePending() {
        data = pending
      } else {
        let n = Int(min(chunk, end - pos))
        data = try await io.run { try POSIX.pread(cursor.fd, count: n, at: pos, path: path) }
      }
      if data.isEmpty { throw ContentError.dataLoss("content \(digest) is shorter than its recorded size") }
      cursor.position.store(pos + Int64(data.count), ordering: .relaxed)
      return data
    }
  }

  // MARK: Ingests

  public func status(ref: String) async throws -> IngestStatus {
    try RefRules.validate(ref, limits: limits)
    if let w = active.withLock({ $0[Bytewise(ref)] }) { return await w.snapshot() }
    let files = IngestFiles(dir: layout.ingestDir(ref: ref))
    let status = try? await io.run { try files.readStatus() }
    guard let status, status.ref.bytewiseEquals(ref) else {
      throw ContentError.notFound("ingest ref \(quoted(ref)): not found")
    }
    return status
  }

  public func listStatuses(_ filter: Filter) async throws -> [IngestStatus] {
    let layout = self.layout
    let onDisk = try await io.run {
      try POSIX.listDirectory(layout.ingestRoot).compactMap {
        try? IngestFiles(dir: layout.ingestRoot + "/" + $0).readStatus()
      }
    }
    // Held ingests report their live state; new ones have no directory yet.
    let writers = active.withLock { $0 }
    var statuses: [Bytewise: IngestStatus] = [:]
    for s in onDisk where writers[Bytewise(s.ref)] == nil { statuses[Bytewise(s.ref)] = s }
    for (ref, w) in writers { statuses[ref] = await w.snapshot() }
    return statuses.values.filter { filter.matches($0) }.sorted { $0.ref.bytewisePrecedes($1.ref) }
  }

  /// How long an Abort waits for a ref's lock before it looks again for a writer holding
  /// the ref (one may be opening, or ending and keeping its ingest).
  static let abortLookAgainSeconds = 0.05

  public func abort(ref: String) async throws {
    try RefRules.validate(ref, limits: limits)
    // Files are removed only by whoever holds the ref's lock: the writer that holds it, or
    // this call once it has the lock itself. Removing them beside a holder made the next
    // writer of the ref fail with NOT_FOUND on its own ingest files (issue 17).
    while true {
      if let writer = active.withLock({ $0[Bytewise(ref)] }), await writer.abortHeld() { break }
      // Holding the lock means no writer is active (a writer leaves `active` before it
      // releases the lock). A short wait, then look again: a writer may be opening, or
      // ending and keeping its ingest.
      guard await refLocks.acquire(ref, timeout: Self.abortLookAgainSeconds) else { continue }
      defer { refLocks.release(ref) }
      let dir = layout.ingestDir(ref: ref)
      guard try await io.run({ try POSIX.removeTree(dir) }) else {
        throw ContentError.notFound("ingest ref \(quoted(ref)): not found")
      }
      break
    }
    events.publish(.aborted(ref: ref))
  }

  /// Bytes in use and the capacity of the filesystem holding the store.
  public func diskUsage() -> (used: Int64, capacity: Int64)? {
    var s = statvfs()
    guard statvfs(layout.root, &s) == 0 else { return nil }
    let capacity = Int64(s.f_blocks) * Int64(s.f_frsize)
    return (capacity - Int64(s.f_bavail) * Int64(s.f_frsize), capacity)
  }

  public func isFull(adding bytes: Int64) -> Bool {
    do {
      try checkSpace(adding: bytes)
      return false
    } catch {
      return true
    }
  }

  /// RESOURCE_EXHAUSTED if writing `bytes` more would take the filesystem past the high
  /// watermark. Checked before an upload starts and before each append, never at commit.
  func checkSpace(adding bytes: Int64) throws(ContentError) {
    guard limits.diskHighWatermark < 1, let (used, capacity) = diskUsage(), capacity > 0 else { return }
    let limit = Int64(Double(capacity) * limits.diskHighWatermark)
    // `bytes` may be a client's announced total (Int64.max): compared, never added.
    guard bytes > limit - used else { return }
    let percent = String(format: "%.1f", Double(used) / Double(capacity) * 100)
    throw ContentError(
      .resourceExhausted,
      "this node's disk is \(percent)% full (\(used) of \(capacity) bytes), at its high watermark (limit disk_high_watermark = \(limits.diskHighWatermark)); this write needs \(bytes) more bytes. Free space or add capacity: the upload resumes where it stopped",
      detail: root)
  }

  public func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter {
    try RefRules.validate(ref, limits: limits)
    try checkSpace(adding: 0)
    if active.withLock({ $0.count }) >= limits.maxActiveIngests {
      throw ContentError.resourceExhausted(
        "\(limits.maxActiveIngests) ingests are open on this node (limit max_active_ingests)")
    }
    guard await refLocks.acquire(ref, timeout: limits.lockWait(expecting: expected)) else {
      throw ContentError.unavailable("ref \(ref) locked: another writer holds it")
    }
    do {
      let (layout, now) = (self.layout, clock())
      let opened = try await io.run {
        if let expected, POSIX.exists(layout.blobPath(expected)) {
          throw ContentError.alreadyExists("content \(expected): already exists")
        }
        return try DiskStore.openIngest(layout: layout, ref: ref, total: total, expected: expected, now: now)
      }
      let writer = DiskIngestWriter(store: self, opened: opened)
      active.withLock { $0[Bytewise(ref)] = writer }
      events.publish(.progress(opened.status))
      return writer
    } catch {
      refLocks.release(ref)
      throw error
    }
  }

  public func ingestEvents() -> AsyncStream<IngestEvent> { events.subscribe() }

  /// Called by a writer when it ends.
  func released(_ writer: DiskIngestWriter) {
    active.withLock { if $0[Bytewise(writer.ref)] === writer { $0[Bytewise(writer.ref)] = nil } }
    refLocks.release(writer.ref)
  }

  /// Removes ingests that no writer holds and that have not been updated for `age`
  /// seconds. Returns the refs removed.
  public func expireIngests(olderThan age: Double) async throws -> [String] {
    let cutoff = clock().adding(seconds: -age)
    var removed: [String] = []
    for s in try await listStatuses(.always) where s.updatedAt < cutoff {
      guard refLocks.tryAcquire(s.ref) else { continue }  // a writer just took it
      defer { refLocks.release(s.ref) }
      let dir = layout.ingestDir(ref: s.ref)
      if (try? await io.run { try POSIX.removeTree(dir) }) == true {
        removed.append(s.ref)
        events.publish(.aborted(ref: s.ref))
      }
    }
    return removed
  }

  /// Group-commit counters: directory fsyncs issued and commits/updates they served.
  public func groupCommitCounters() -> (syncs: Int, served: Int) { groupSync.counters() }
}

/// An open blob file and the read position of one Read stream; closing is tied to the
/// stream's lifetime.
final class ReadCursor: Sendable {
  let fd: Int32
  let position = Atomic<Int64>(0)
  private let pending: Mutex<Data?>
  init(fd: Int32, pending: Data) {
    self.fd = fd
    self.pending = Mutex(pending.isEmpty ? nil : pending)
  }
  func takePending() -> Data? { pending.withLock { p in defer { p = nil }; return p } }
  deinit { POSIX.close(fd) }
}
