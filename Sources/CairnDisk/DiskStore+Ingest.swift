import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension DiskStore {
  enum CommitOutcome: Sendable {
    case committed(Digest, at: Timestamp)
    case exists(Digest)
  }

  /// Creates the ingest directory of `ref`, or resumes the one a previous writer (or a
  /// previous run of the node) left: the data's digest is recomputed from disk, so a
  /// resumed ingest reports exactly the bytes that survived.
  static func openIngest(
    layout: DiskLayout, ref: String, total: Int64, expected: Digest?, now: Timestamp
  ) throws(ContentError) -> OpenedIngest {
    let files = IngestFiles(dir: layout.ingestDir(ref: ref))
    let algorithm = expected?.algorithm ?? .sha256
    if !(try POSIX.mkdirNew(files.dir)) {
      if let resumed = try resume(files: files, ref: ref, total: total, expected: expected, algorithm: algorithm) {
        return resumed
      }
      try POSIX.removeTree(files.dir)  // unusable leftovers: start afresh
      try POSIX.mkdir(files.dir)
    }
    try POSIX.writeFile(files.ref, Data(ref.utf8))
    try POSIX.writeFile(files.startedAt, Data(now.rfc3339.utf8))
    if total > 0 { try POSIX.writeFile(files.total, Data(String(total).utf8)) }
    if let expected { try POSIX.writeFile(files.expected, Data(expected.description.utf8)) }
    let fd = try POSIX.open(files.data, O_RDWR | O_CREAT | O_TRUNC)
    return OpenedIngest(
      files: files, fd: fd, digester: Digester(algorithm),
      status: IngestStatus(
        ref: ref, offset: 0, total: total, expected: expected, startedAt: now, updatedAt: now))
  }

  private static func resume(
    files: IngestFiles, ref: String, total: Int64, expected: Digest?, algorithm: DigestAlgorithm
  ) throws(ContentError) -> OpenedIngest? {
    guard var status = try? files.readStatus(), status.ref == ref else { return nil }
    // A different declared size is a different upload.
    if total > 0 && status.total > 0 && total != status.total { return nil }
    if total > 0 { status.total = total }
    if let expected { status.expected = expected }
    let fd = try POSIX.open(files.data, O_RDWR)
    do throws(ContentError) {
      let digester = try rehash(fd: fd, length: status.offset, algorithm: algorithm, path: files.data)
      return OpenedIngest(files: files, fd: fd, digester: digester, status: status)
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

  /// The crash-safe commit: fdatasync the data, verify size and digest, stamp the commit
  /// time, link the data into blobs/ (atomically failing if the blob exists), then fsync
  /// the directory together with concurrent commits. Until that fsync returns the commit
  /// is not acknowledged; after a crash the blob is either absent or whole.
  func commitIngest(
    fd: Int32, files: IngestFiles, size: Int64, written: Int64, digester: Digester, expected: Digest?,
    labels: [String: String]
  ) async throws -> CommitOutcome {
    let (layout, now) = (self.layout, clock())
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
      try POSIX.fdatasync(fd, path: files.data)
      try POSIX.setTimes(fd, now, path: files.data)
      _ = fchmod(fd, 0o444)  // committed content is read-only, as in containerd
      var metaTemp: String?
      if !labels.isEmpty {
        let tmp = layout.metaPath(actual) + ".commit.tmp"
        try POSIX.writeFile(tmp, BlobMeta(labels: labels, updatedAt: now.rfc3339).encoded(), durable: true)
        metaTemp = tmp
      }
      guard try POSIX.linkNoReplace(files.data, target) else {
        if let metaTemp { try? POSIX.unlink(metaTemp) }
        return CommitOutcome.exists(actual)
      }
      if let metaTemp { try POSIX.rename(metaTemp, layout.metaPath(actual)) }
      return CommitOutcome.committed(actual, at: now)
    }
    if case .committed(let d, _) = outcome {
      var dirs: Set<String> = [layout.blobDir(d.algorithm)]
      if !labels.isEmpty { dirs.insert(layout.metaDir(d.algorithm)) }
      try await groupSync.sync(dirs)
    }
    return outcome
  }
}
