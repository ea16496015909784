import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension DiskStore {
  enum CommitOutcome: Sendable {
    /// Linked; durable once the pending directory syncs have been waited for.
    case committed(Digest, at: Timestamp, pending: [(String, UInt64)])
    case exists(Digest)
  }

  /// Resumes the ingest directory a previous writer (or a previous run of the node) left
  /// for `ref`, re-hashing its data so that it reports exactly the bytes that survived; or
  /// starts a new ingest as an unnamed file.
  ///
  /// A new ingest gets its directory only when it must outlive its stream or a crash (see
  /// `materialize`): most uploads are committed by the stream that started them, and on
  /// ext4 every inode created and deleted costs more CPU than the upload itself (profiled:
  /// 40% of a small-blob commit went to inode allocation). An unnamed file committed as a
  /// blob costs one inode, the blob's own.
  static func openIngest(
    layout: DiskLayout, ref: String, total: Int64, expected: Digest?, now: Timestamp
  ) throws(ContentError) -> OpenedIngest {
    let files = IngestFiles(dir: layout.ingestDir(ref: ref))
    let algorithm = expected?.algorithm ?? .sha256
    if POSIX.exists(files.dir) {
      if let resumed = try resume(files: files, ref: ref, total: total, expected: expected, algorithm: algorithm) {
        return resumed
      }
      try POSIX.removeTree(files.dir)  // unusable leftovers: start afresh
    }
    let status = IngestStatus(ref: ref, offset: 0, total: total, expected: expected, startedAt: now, updatedAt: now)
    if let fd = try POSIX.openUnnamed(in: layout.ingestRoot) {
      return OpenedIngest(files: files, fd: fd, digester: Digester(algorithm), status: status, materialized: false)
    }
    // No O_TMPFILE on this filesystem: a named ingest from the start.
    try POSIX.mkdir(files.dir)
    try writeMetadata(files, status)
    let fd = try POSIX.open(files.data, O_RDWR | O_CREAT | O_TRUNC)
    return OpenedIngest(files: files, fd: fd, digester: Digester(algorithm), status: status, materialized: true)
  }

  /// Gives an unnamed ingest its directory (containerd's layout: ref, startedat, total,
  /// expected, data) so that it can be resumed by a later stream or after a restart.
  static func materialize(_ files: IngestFiles, fd: Int32, status: IngestStatus) throws(ContentError) {
    if POSIX.exists(files.dir) { try POSIX.removeTree(files.dir) }
    try POSIX.mkdir(files.dir)
    try writeMetadata(files, status)
    guard try POSIX.linkNoReplace(fd: fd, files.data) else {
      throw ContentError(.internalError, "ingest data appeared while materializing", detail: files.data)
    }
  }

  private static func writeMetadata(_ files: IngestFiles, _ status: IngestStatus) throws(ContentError) {
    try POSIX.writeFile(files.ref, Data(status.ref.utf8))
    try POSIX.writeFile(files.startedAt, Data(status.startedAt.rfc3339.utf8))
    if status.total > 0 { try POSIX.writeFile(files.total, Data(String(status.total).utf8)) }
    if let e = status.expected { try POSIX.writeFile(files.expected, Data(e.description.utf8)) }
  }

  private static func resume(
    files: IngestFiles, ref: String, total: Int64, expected: Digest?, algorithm: DigestAlgorithm
  ) throws(ContentError) -> OpenedIngest? {
    guard var status = try? files.readStatus(), status.ref.bytewiseEquals(ref) else { return nil }
    // A different declared size is a different upload.
    if total > 0 && status.total > 0 && total != status.total { return nil }
    if total > 0 { status.total = total }
    if let expected { status.expected = expected }
    let fd = try POSIX.open(files.data, O_RDWR)
    do throws(ContentError) {
      let digester = try rehash(fd: fd, length: status.offset, algorithm: algorithm, path: files.data)
      return OpenedIngest(files: files, fd: fd, digester: digester, status: status, materialized: true)
    } catch {
      POSIX.close(fd)
      throw error
    }
  }

  static func rehash(fd: Int32, length: Int64, algorithm: DigestAlgorithm, path: String) throws(ContentError) -> Digester {
    var d = Digester(algorithm)
    var pos: Int64 = 0
    while pos < length {
      let chunk = try POSIX.pread(fd, count: Int(min(4 << 20, length - pos)), at: pos, path: path)
      if chunk.isEmpty { break }
      d.update(chunk)
      pos += Int64(chunk.count)
    }
    return d
  }

  /// The crash-safe commit: verify size and digest, stamp the commit time, fsync the file
  /// (data and inode), link it into blobs/ (atomically failing if the blob exists), then
  /// fsync the directory together with concurrent commits (the caller waits for the
  /// returned pending syncs). Until that fsync returns the commit is not acknowledged;
  /// after a crash the blob is either absent or whole.
  func commitIngest(
    fd: Int32, files: IngestFiles, size: Int64, written: Int64, digester: Digester, expected: Digest?,
    labels: [String: String], createdAt: Timestamp?
  ) async throws -> CommitOutcome {
    let (layout, now, groupSync) = (self.layout, createdAt ?? clock(), self.groupSync)
    try LabelRules.validateStored(labels, limits: limits)
    let outcome: CommitOutcome = try await io.run {
      if size > 0 && size != written {
        throw ContentError.failedPrecondition("unexpected commit size \(written), expected \(size)")
      }
      var actual = digester.digest()
      if let expected, expected.algorithm != actual.algorithm {
        actual = try DiskStore.rehash(fd: fd, length: written, algorithm: expected.algorithm, path: files.data).digest()
      }
      if let expected, expected != actual {
        throw ContentError.failedPrecondition("unexpected commit digest \(actual), expected \(expected)")
      }
      let target = layout.blobPath(actual)
      if POSIX.exists(target) { return CommitOutcome.exists(actual) }
      try POSIX.setTimes(fd, now, path: files.data)
      _ = fchmod(fd, 0o444)  // committed content is read-only, as in containerd
      try POSIX.fsync(fd, path: files.data)
      var metaTemp: String?
      if !labels.isEmpty {
        let tmp = layout.metaPath(actual) + ".commit.tmp"
        try DurableFiles.replace(tmp, try BlobMeta(labels: labels, updatedAt: now.rfc3339).encoded())
        metaTemp = tmp
      }
      guard try POSIX.linkNoReplace(fd: fd, target) else {
        if let metaTemp { try? POSIX.unlink(metaTemp) }
        return CommitOutcome.exists(actual)
      }
      if let metaTemp { try POSIX.rename(metaTemp, layout.metaPath(actual)) }
      var dirs = [layout.blobDir(actual.algorithm)]
      if metaTemp != nil { dirs.append(layout.metaDir(actual.algorithm)) }
      return CommitOutcome.committed(actual, at: now, pending: try groupSync.enterAll(dirs))
    }
    return outcome
  }
}
