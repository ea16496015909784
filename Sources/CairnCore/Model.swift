/// A committed blob as the Info/List calls describe it.
public struct BlobInfo: Hashable, Sendable {
  public var digest: Digest
  public var size: Int64
  public var createdAt: Timestamp
  public var updatedAt: Timestamp
  public var labels: [String: String]

  public init(
    digest: Digest, size: Int64, createdAt: Timestamp, updatedAt: Timestamp,
    labels: [String: String] = [:]
  ) {
    self.digest = digest
    self.size = size
    self.createdAt = createdAt
    self.updatedAt = updatedAt
    self.labels = labels
  }
}

/// An ingest (an upload in progress) as Status/ListStatuses describe it.
public struct IngestStatus: Hashable, Sendable {
  public var ref: String
  public var offset: Int64
  /// Expected total size, 0 when unknown.
  public var total: Int64
  public var expected: Digest?
  public var startedAt: Timestamp
  public var updatedAt: Timestamp

  public init(
    ref: String, offset: Int64, total: Int64, expected: Digest?, startedAt: Timestamp,
    updatedAt: Timestamp
  ) {
    self.ref = ref
    self.offset = offset
    self.total = total
    self.expected = expected
    self.startedAt = startedAt
    self.updatedAt = updatedAt
  }
}

/// What a writer reports after each step: the ingest's status plus the digest of the
/// bytes written so far.
public struct WriterState: Hashable, Sendable {
  public var status: IngestStatus
  public var digest: Digest

  public init(status: IngestStatus, digest: Digest) {
    self.status = status
    self.digest = digest
  }
}

/// Something that happened to an ingest; the seed API's Status watch is built on these.
public enum IngestEvent: Hashable, Sendable {
  case progress(IngestStatus)
  case committed(ref: String, digest: Digest, size: Int64)
  case aborted(ref: String)

  public var ref: String {
    switch self {
    case .progress(let s): s.ref
    case .committed(let ref, _, _), .aborted(let ref): ref
    }
  }
}

/// Validates refs: opaque, non-empty, bounded strings. They are never used as paths.
public enum RefRules {
  public static func validate(_ ref: String, limits: Limits = .default) throws(ContentError) {
    if ref.isEmpty { throw .invalidArgument("ref must not be empty") }
    if ref.utf8.count > limits.maxRefBytes {
      throw .invalidArgument(
        "ref is \(ref.utf8.count) bytes, over the limit maxRefBytes=\(limits.maxRefBytes)")
    }
    if ref.utf8.contains(0) { throw .invalidArgument("ref must not contain NUL bytes") }
  }

  /// The name of a ref's ingest directory: the hex sha256 of the ref, as containerd's
  /// content/local does, so that any ref (`../../etc/passwd`, 4 KiB of slashes) becomes a
  /// fixed-length, path-safe name.
  public static func ingestKey(_ ref: String) -> String {
    Digest.of(Array(ref.utf8)).hex
  }
}
