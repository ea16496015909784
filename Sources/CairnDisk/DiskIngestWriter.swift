import CCairnSys
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The holder of one ref's lock and its open ingest file. One Write stream drives it
/// (calls are sequential); other RPCs only read its snapshot.
actor DiskIngestWriter: IngestWriter {
  nonisolated let ref: String
  private let store: DiskStore
  private let files: IngestFiles
  private var fd: Int32
  private var digester: Digester
  private var offset: Int64
  private var total: Int64
  private var expected: Digest?
  private let startedAt: Timestamp
  private var updatedAt: Timestamp
  /// Whether the ingest has its directory yet (see DiskStore.openIngest).
  private var materialized: Bool
  /// Bytes already handed to the kernel's writeback, so the fsync at commit is short.
  private var writebackMark: Int64
  private var ended = false
  private var aborted = false
  private var stepsInFlight = 0

  /// How much new data triggers an early writeback.
  static let writebackWindow: Int64 = 8 << 20
  /// An unnamed ingest gets its directory (and so survives a crash) once it holds this
  /// much data or has been open this long: re-sending a small, young upload is cheap.
  static let materializeBytes: Int64 = 16 << 20
  static let materializeSeconds: Double = 2
  /// Messages at least this big are hashed and written on two threads at once.
  static let parallelHashBytes = 256 << 10

  init(store: DiskStore, opened: OpenedIngest) {
    self.store = store
    ref = opened.status.ref
    files = opened.files
    fd = opened.fd
    digester = opened.digester
    offset = opened.status.offset
    total = opened.status.total
    expected = opened.status.expected
    startedAt = opened.status.startedAt
    updatedAt = opened.status.updatedAt
    materialized = opened.materialized
    writebackMark = opened.status.offset
  }

  func snapshot() -> IngestStatus {
    IngestStatus(
      ref: ref, offset: offset, total: total, expected: expected, startedAt: startedAt,
      updatedAt: updatedAt)
  }

  func state() throws -> WriterState {
    try checkUsable()
    return WriterState(status: snapshot(), digest: digester.digest())
  }

  private func checkUsable() throws(ContentError) {
    if aborted { throw .notFound("ingest ref \(quoted(ref)) was aborted") }
    if ended { throw .failedPrecondition("writer for ref \(quoted(ref)) is closed") }
  }

  func setExpectations(total: Int64?, expected: Digest?) throws -> WriterState {
    try checkUsable()
    if let total { self.total = total }
    if let expected { self.expected = expected }
    return WriterState(status: snapshot(), digest: digester.digest())
  }

  func append(_ data: Data) async throws -> WriterState {
    try await step { try await appendStep(data) }
  }

  private func appendStep(_ data: Data) async throws -> WriterState {
    try store.checkSpace(adding: Int64(data.count))
    let now = store.clock()
    let end = offset + Int64(data.count)
    let materialize =
      !materialized
      && (end >= Self.materializeBytes || now.totalNanoseconds - startedAt.totalNanoseconds > Int64(Self.materializeSeconds * 1e9))
    let (fd, at, digester, mark, files) = (self.fd, offset, self.digester, writebackMark, self.files)
    let status = IngestStatus(ref: ref, offset: end, total: total, expected: expected, startedAt: startedAt, updatedAt: now)
    let io = store.io
    let write: @Sendable () throws -> Int64 = {
      do {
        try POSIX.pwriteAll(fd, data, at: at, path: files.data)
        if materialize { try DiskStore.materialize(files, fd: fd, status: status) }
      } catch {
        // A full disk stops a write part-way: drop the new bytes (the ingest stays at
        // `at`), which also frees the room its metadata needs to be kept for a resume.
        _ = ftruncate(fd, off_t(at))
        throw error
      }
      guard end - mark >= DiskIngestWriter.writebackWindow else { return mark }
      _ = cairn_start_writeback(fd, mark, end - mark)
      return end
    }
    let hash: @Sendable () -> Digester = {
      var d = digester
      d.update(data)
      return d
    }
    let updated: Digester
    let newMark: Int64
    if data.count >= Self.parallelHashBytes {
      // Hashing (~1.2 ms per MiB) and copying into the page cache (~0.5 ms) on two threads:
      // clients wait for each answer, so the shorter the step, the faster the upload.
      async let written = io.run(write)
      async let hashed = io.run(hash)
      (updated, newMark) = try await (hashed, written)
    } else {
      (updated, newMark) = try await io.run { (hash(), try write()) }
    }
    if materialize { materialized = true }
    self.digester = updated
    writebackMark = newMark
    offset = end
    updatedAt = now
    store.events.publish(.progress(snapshot()))
    return WriterState(status: snapshot(), digest: updated.digest())
  }

  func truncate() async throws -> WriterState {
    try await step { try await truncateStep() }
  }

  private func truncateStep() async throws -> WriterState {
    let (fd, path) = (self.fd, files.data)
    try await store.io.run { try POSIX.truncate(fd, to: 0, path: path) }
    digester = Digester(digester.algorithm)
    offset = 0
    writebackMark = 0
    updatedAt = store.clock()
    store.events.publish(.progress(snapshot()))
    return WriterState(status: snapshot(), digest: digester.digest())
  }

  /// An Abort of this ref from any stream while this writer holds it. Idle, the writer ends
  /// now (the ingest goes, the lock is free); in the middle of a step (an append or a
  /// commit awaiting the disk), removing files under it would fail that step with an error
  /// of the wrong kind, so the step finishes and the writer ends when its stream closes it.
  /// The ingest is gone before the lock is released either way, so a next holder of the
  /// ref never loses its files to this Abort. False if the writer had ended already.
  func abortHeld() async -> Bool {
    guard !ended else { return false }
    aborted = true
    if stepsInFlight == 0 { await end(keepIngest: false) }
    return true
  }

  /// Runs one step of the stream with `stepsInFlight` counted (see abortHeld).
  private func step<T>(_ body: () async throws -> T) async throws -> T {
    try checkUsable()
    stepsInFlight += 1
    defer { stepsInFlight -= 1 }
    return try await body()
  }

  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    try await step { try await commitStep(size: size, expected: expected, labels: labels, createdAt: createdAt) }
  }

  private func commitStep(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    let outcome: DiskStore.CommitOutcome
    do {
      outcome = try await store.commitIngest(
        fd: fd, files: files, size: size, written: offset, digester: digester, expected: expected,
        labels: labels, createdAt: createdAt)
    } catch {
      await end(keepIngest: !aborted)
      throw error
    }
    switch outcome {
    case .exists(let d):
      await end(keepIngest: false)
      // The upload ended with its content stored (by another): a Status watch that follows
      // the ref ends, as on a commit (`cairn status --watch` waited forever here).
      store.events.publish(.committed(ref: ref, digest: d, size: offset))
      throw ContentError.alreadyExists("content \(d): already exists")
    case .committed(let d, let at, let pending):
      do {
        try await store.groupSync.waitAll(pending)
      } catch {
        await end(keepIngest: false)
        throw error
      }
      updatedAt = at
      await end(keepIngest: false)
      store.events.publish(.committed(ref: ref, digest: d, size: offset))
      return WriterState(status: snapshot(), digest: d)
    }
  }

  func close() async {
    await end(keepIngest: !aborted)
  }

  /// Ends the writer once: a kept ingest gets its directory (if it had none) and its
  /// update time; otherwise its directory goes. Closes the file and releases the lock.
  private func end(keepIngest: Bool) async {
    guard !ended else { return }
    ended = true
    let (fd, files, status, materialized) = (self.fd, self.files, snapshot(), self.materialized)
    if !keepIngest && !materialized {
      // An unnamed ingest leaves nothing on disk to tidy, and closing it is quick (it holds
      // at most materializeBytes): no trip to the I/O threads.
      POSIX.close(fd)
      self.fd = -1
      store.released(self)
      return
    }
    do {
      try await store.io.runToCompletion {
        defer { POSIX.close(fd) }
        if keepIngest {
          if !materialized { try DiskStore.materialize(files, fd: fd, status: status) }
          // As in containerd, the total declared when the ingest was created stands; later
          // messages only inform this stream's commit.
          try POSIX.writeFile(files.updatedAt, Data(status.updatedAt.rfc3339.utf8))
        } else if materialized {
          try POSIX.removeTree(files.dir)
        }
      }
    } catch {
      // The stream is over either way; what is lost is a resumable upload (or its directory
      // stays for the stale-ingest sweep), never an acknowledged blob.
      let what = keepIngest ? "keeping the interrupted upload of ref" : "removing the ingest of ref"
      store.logger.error("\(what) \(quoted(status.ref)) failed: \(ContentError.from(error).message)")
    }
    self.fd = -1
    store.released(self)
  }
}

/// What opening an ingest on disk produced, handed to the writer.
struct OpenedIngest: Sendable {
  var files: IngestFiles
  var fd: Int32
  var digester: Digester
  var status: IngestStatus
  /// False for a new ingest that is still an unnamed file.
  var materialized: Bool
}
