import Foundation

/// The content store contract, modelled on containerd's content.Store. The disk store,
/// the in-memory test store and (later) the cluster all implement it; the gRPC adapters
/// and the conformance suite only ever see this protocol.
public protocol ContentStore: Sendable {
  var limits: Limits { get }

  /// NOT_FOUND if absent.
  func info(_ digest: Digest) async throws -> BlobInfo

  /// Updates labels per LabelRules.applyUpdate. NOT_FOUND if absent.
  func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo

  /// Every committed blob that matches the filter, in digest order.
  func list(_ filter: Filter) async throws -> [BlobInfo]

  /// NOT_FOUND if absent.
  func delete(_ digest: Digest) async throws

  /// Deletes the blob unless one of its label keys starts with `prefix`, decided
  /// atomically with label updates: a client's claim (ScopedStore) racing the last
  /// release keeps the blob. Returns false if the blob was kept. NOT_FOUND if absent.
  func delete(_ digest: Digest, unlessLabeled prefix: String) async throws -> Bool

  /// A reader over [offset, offset+length) of the blob; see ReadRange.resolve.
  func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader

  /// NOT_FOUND if there is no ingest for the ref.
  func status(ref: String) async throws -> IngestStatus

  func listStatuses(_ filter: Filter) async throws -> [IngestStatus]

  /// Removes the ingest and its data, even while a writer holds it (the writer then
  /// fails). NOT_FOUND if there is no ingest for the ref.
  func abort(ref: String) async throws

  /// Begins or resumes the ingest of `ref` and takes its lock: UNAVAILABLE if another
  /// writer holds it (after waiting Limits.lockWaitSeconds for it to be released);
  /// ALREADY_EXISTS if `expected` is already committed.
  func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter

  /// A stream of every ingest event from now on (progress, commit, abort).
  func ingestEvents() -> AsyncStream<IngestEvent>
}

/// A node's own store, as replication needs it: a copy arrives with its labels and the time
/// they were set on the node that sent it, and on every replica the later setting wins, so
/// a copy that was on its way while an Update ran cannot undo the Update.
public protocol ReplicaStore: ContentStore {
  /// Takes `labels` as the blob's labels, stamped `updatedAt`, if its own were set before
  /// that; true if it did. NOT_FOUND if the blob is not here.
  func adoptLabels(_ digest: Digest, labels: [String: String], updatedAt: Timestamp) async throws -> Bool
  /// Whether `bytes` more would take the store past its high watermark (an upload
  /// started here now would be refused with RESOURCE_EXHAUSTED).
  func isFull(adding bytes: Int64) -> Bool
}

extension ReplicaStore {
  public func isFull(adding bytes: Int64) -> Bool { false }
}

extension ContentStore {
  /// Whether the blob is committed: Info, with NOT_FOUND as false and any other failure
  /// thrown. (Through a ScopedStore or an agent, a true answer also claims the blob.)
  public func exists(_ digest: Digest) async throws -> Bool {
    do {
      _ = try await info(digest)
      return true
    } catch let e as ContentError where e.code == .notFound {
      return false
    }
  }

  /// For stores whose every caller is one client (no claims can race): check, then delete.
  public func delete(_ digest: Digest, unlessLabeled prefix: String) async throws -> Bool {
    if try await info(digest).labels.keys.contains(where: { $0.bytewiseHasPrefix(prefix) }) { return false }
    try await delete(digest)
    return true
  }
}

/// The lock holder of one ref. Calls are sequential (one Write stream drives it); status
/// may be read concurrently by other RPCs through the store.
public protocol IngestWriter: AnyObject, Sendable {
  var ref: String { get }

  func state() async throws -> WriterState

  /// Sets the expected total (0 = unknown) and digest the commit will be checked against.
  func setExpectations(total: Int64?, expected: Digest?) async throws -> WriterState

  /// Appends at the current offset.
  func append(_ data: Data) async throws -> WriterState

  /// Discards everything written so far (offset back to 0).
  func truncate() async throws -> WriterState

  /// Verifies size (if > 0) and digest (if given), stores the blob durably, removes the
  /// ingest and releases the lock. FAILED_PRECONDITION on a mismatch (the ingest stays,
  /// resumable); ALREADY_EXISTS if the blob is already committed (the ingest is removed).
  /// `createdAt` (nil = now) is the blob's creation time: a replica keeps the one the
  /// blob got on the node that committed it first, so Info agrees on every node.
  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState

  /// Releases the lock and keeps the ingest for a later resume. Idempotent.
  func close() async
}

extension IngestWriter {
  public func commit(size: Int64, expected: Digest?, labels: [String: String]) async throws -> WriterState {
    try await commit(size: size, expected: expected, labels: labels, createdAt: nil)
  }
}

/// A stream of a blob's bytes in bounded chunks.
public struct BlobReader: Sendable, AsyncSequence {
  public typealias Element = Data
  /// The blob's full size.
  public let blobSize: Int64
  /// The first byte this reader returns and how many it returns.
  public let offset: Int64
  public let length: Int64
  private let next: @Sendable () async throws -> Data?

  public init(blobSize: Int64, offset: Int64, length: Int64, next: @escaping @Sendable () async throws -> Data?) {
    self.blobSize = blobSize
    self.offset = offset
    self.length = length
    self.next = next
  }

  public struct AsyncIterator: AsyncIteratorProtocol {
    let next: @Sendable () async throws -> Data?
    public mutating func next() async throws -> Data? { try await next() }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(next: next) }
}

/// containerd's Read range rules.
public enum ReadRange {
  /// Negative offset reads from 0; size <= 0, or a range past the end, reads to the end;
  /// an offset past the end is OUT_OF_RANGE. Returns (offset, length).
  public static func resolve(blobSize: Int64, offset: Int64, size: Int64) throws(ContentError) -> (Int64, Int64) {
    let start = max(0, offset)
    if start > blobSize {
      throw .outOfRange("read offset \(start) is past the end of the blob (size \(blobSize))")
    }
    let remaining = blobSize - start
    let length = size <= 0 ? remaining : min(size, remaining)
    return (start, length)
  }
}
