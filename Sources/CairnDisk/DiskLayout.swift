import CairnCore
import Foundation

/// Where things live under the store's root. `blobs/` and `ingest/` are containerd's
/// content/local layout (a containerd can read these blobs in place); `meta/` holds what
/// containerd keeps in its own database (labels, update times).
struct DiskLayout: Sendable {
  let root: String

  var blobsRoot: String { root + "/blobs" }
  var ingestRoot: String { root + "/ingest" }
  var metaRoot: String { root + "/meta" }

  func blobDir(_ alg: DigestAlgorithm) -> String { blobsRoot + "/" + alg.rawValue }
  func blobPath(_ d: Digest) -> String { blobDir(d.algorithm) + "/" + d.hex }
  func metaDir(_ alg: DigestAlgorithm) -> String { metaRoot + "/" + alg.rawValue }
  func metaPath(_ d: Digest) -> String { metaDir(d.algorithm) + "/" + d.hex }

  /// Refs never become paths: the directory is named by the ref's sha256.
  func ingestDir(ref: String) -> String { ingestRoot + "/" + RefRules.ingestKey(ref) }

  func create() throws(ContentError) {
    try POSIX.mkdirs(root)
    for dir in [blobsRoot, ingestRoot, metaRoot] { try POSIX.mkdir(dir) }
    for alg in DigestAlgorithm.allCases {
      try POSIX.mkdir(blobDir(alg))
      try POSIX.mkdir(metaDir(alg))
    }
  }
}

/// The files of one ingest directory, named as containerd names them.
struct IngestFiles: Sendable {
  let dir: String
  var data: String { dir + "/data" }
  var ref: String { dir + "/ref" }
  var startedAt: String { dir + "/startedat" }
  var updatedAt: String { dir + "/updatedat" }
  var total: String { dir + "/total" }
  var expected: String { dir + "/expected" }

  /// Reads an ingest's status from disk (for ingests no writer holds). NOT_FOUND if the
  /// directory is incomplete or gone.
  func readStatus() throws(ContentError) -> IngestStatus {
    let st = try POSIX.stat(data)
    let ref = try POSIX.readString(self.ref)
    let started = (try? POSIX.readString(startedAt)).flatMap { Timestamp(rfc3339: $0.trimmed) } ?? st.mtime
    var updated = (try? POSIX.readString(updatedAt)).flatMap { Timestamp(rfc3339: $0.trimmed) } ?? started
    if st.mtime > updated { updated = st.mtime }
    let total = (try? POSIX.readString(self.total)).flatMap { Int64($0.trimmed) } ?? 0
    let expected = (try? POSIX.readString(self.expected)).flatMap { try? Digest(parsing: $0.trimmed) }
    return IngestStatus(
      ref: ref, offset: st.size, total: total, expected: expected, startedAt: started,
      updatedAt: updated)
  }
}


extension String {
  var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
