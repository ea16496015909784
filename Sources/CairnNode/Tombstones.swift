import CairnCore
import Synchronization

/// Recent deletions, so that a replica transfer already under way when a Delete fans out
/// cannot bring the blob back: a replica refuses, or removes right after its commit, a
/// blob created before a deletion of its digest. In memory and bounded (the durable,
/// replicated tombstones that also cover nodes that were down are the repair issue's).
final class Tombstones: Sendable {
  /// How long a deletion is remembered, and how many at most.
  static let retentionNanoseconds: Int64 = 10 * 60 * 1_000_000_000
  static let capacity = 100_000

  private let deleted = Mutex<[Digest: Timestamp]>([:])

  func record(_ digest: Digest, at time: Timestamp = .now()) {
    deleted.withLock { d in
      d[digest] = time
      if d.count > Self.capacity {
        let horizon = time.totalNanoseconds - Self.retentionNanoseconds
        d = d.filter { $0.value.totalNanoseconds >= horizon }
        while d.count > Self.capacity, let oldest = d.min(by: { $0.value < $1.value }) { d[oldest.key] = nil }
      }
    }
  }

  /// Whether the blob, created at `createdAt`, was deleted since.
  func deletedSince(_ digest: Digest, createdAt: Timestamp) -> Bool {
    deleted.withLock { d in
      guard let at = d[digest] else { return false }
      return at >= createdAt && at.totalNanoseconds + Self.retentionNanoseconds >= Timestamp.now().totalNanoseconds
    }
  }
}
