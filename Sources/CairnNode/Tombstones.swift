import CairnCluster
import CairnCore
import CairnDisk
import Foundation
import Logging
import NIOPosix
import Synchronization

/// Durable deletions: `tombstones/<algorithm>:<hex>`, each holding its deletion time in
/// nanoseconds, fsynced (file and directory) before `record` returns. They keep a replica
/// transfer already under way, a hint, or anti-entropy with a node that missed the Delete
/// from bringing the blob back. Read once at start; the ledger in memory answers queries
/// and tracks which replicas confirmed each one (re-learned after a restart), so that
/// `collect` forgets a tombstone only once it is old enough and applied everywhere.
///
/// Only a node that held a copy records a durable tombstone: a Delete that found no copy
/// anywhere fails with NOT_FOUND, and must then not delete anything later. Every node a
/// Delete reaches also remembers it for a while in memory (`noteRecent`), so that a
/// transfer to it already under way is refused rather than landing after the Delete.
final class Tombstones: Sendable {
  static let recentRetentionNanoseconds: Int64 = 10 * 60 * 1_000_000_000
  static let recentCapacity = 100_000

  /// More tombstones than this and the oldest are forgotten early (a named bound: every
  /// Delete of a digest leaves one on every live node for the retention period).
  static let capacity = 1_000_000

  let root: String
  private let ledger: Mutex<TombstoneLedger>
  private let recent = Mutex<[Digest: Int64]>([:])
  private let logger: Logger
  /// The node's hybrid logical clock's reading: what a deletion time is compared with. Not
  /// the wall clock: a node whose wall clock ran a day ahead took every Delete it heard as
  /// ten minutes old already, forgot it, and accepted a transfer of the deleted blob.
  private let now: @Sendable () -> Int64

  init(root: String, logger: Logger, now: @escaping @Sendable () -> Int64) throws {
    self.logger = logger
    self.now = now
    self.root = root + "/tombstones"
    try DurableFiles.makeDirectory(self.root)
    var found = TombstoneLedger()
    for name in try DurableFiles.list(self.root) {
      let file = self.root + "/" + name
      if name.hasSuffix(".tmp") {
        // A tombstone whose write a crash interrupted: its Delete never answered.
        logger.notice("removing \(file): a tombstone write a crash interrupted")
        try DurableFiles.remove(file)
        continue
      }
      guard let d = try? Digest(parsing: name) else {
        logger.warning("ignoring \(file): not a tombstone (a file this node did not write)")
        continue
      }
      guard let at = Int64(String(decoding: try DurableFiles.read(file, limit: 64), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
        // Written with rename over fsynced bytes, so this is damage, not a torn write.
        logger.error("ignoring the tombstone \(file): its content is not a deletion time")
        continue
      }
      found.record(d, at: at)
    }
    ledger = Mutex(found)
  }

  private func path(_ digest: Digest) -> String { root + "/" + digest.description }

  /// Remembers that `digest` was deleted at `at`; durable when it returns. Throws if it is
  /// not: the ledger is then as before, and the caller must not delete the copy.
  func record(_ digest: Digest, at: Timestamp) async throws {
    let nanos = at.totalNanoseconds
    var overflow: [Digest] = []
    var previous: Int64?
    let isNew = ledger.withLock { l in
      previous = l.deletedAt(digest)
      let isNew = l.record(digest, at: nanos)
      if isNew && l.stones.count > Self.capacity {
        overflow = l.stones.sorted { $0.value.deletedAt < $1.value.deletedAt }.prefix(l.stones.count - Self.capacity).map(\.key)
        for d in overflow { l.remove(d) }
      }
      return isNew
    }
    guard isNew else { return }
    let file = path(digest)
    do {
      try await Hints.onPool { try DurableFiles.write(file, Data("\(nanos)\n".utf8)) }
    } catch {
      ledger.withLock { l in
        guard l.deletedAt(digest) == nanos else { return }  // a later record won meanwhile
        l.remove(digest)
        if let previous { _ = l.record(digest, at: previous) }
      }
      throw ContentError.from(error)
    }
    if !overflow.isEmpty { await unlink(overflow) }
  }

  /// A Delete reached this node at `at` (with or without a copy here).
  func noteRecent(_ digest: Digest, at: Timestamp) {
    let nanos = at.totalNanoseconds
    recent.withLock { r in
      r[digest] = max(r[digest] ?? 0, nanos)
      if r.count > Self.recentCapacity {
        let horizon = now().addingSaturating(-Self.recentRetentionNanoseconds)
        r = r.filter { $0.value >= horizon }
        while r.count > Self.recentCapacity, let oldest = r.min(by: { $0.value < $1.value }) { r[oldest.key] = nil }
      }
    }
  }

  /// Whether a copy of the blob created at `createdAt` is dead: deleted at or after it.
  func deletedSince(_ digest: Digest, createdAt: Timestamp) -> Bool {
    let created = createdAt.totalNanoseconds
    if let at = ledger.withLock({ $0.deletedAt(digest) }), at >= created { return true }
    guard let at = recent.withLock({ $0[digest] }) else { return false }
    return at >= created && at.addingSaturating(Self.recentRetentionNanoseconds) >= now()
  }

  func deletedAt(_ digest: Digest) -> Int64? { ledger.withLock { $0.deletedAt(digest) } }

  /// Every tombstone, as anti-entropy entries.
  func entries() -> [RepairEntry] {
    ledger.withLock { l in l.stones.map { RepairEntry(digest: $0.key, state: .deleted, at: $0.value.deletedAt) } }
  }

  func confirm(_ digests: [Digest], by node: NodeID) {
    ledger.withLock { $0.confirm(digests, by: node) }
  }

  /// Forgets the tombstones the ledger allows to, and those older than this node's copy
  /// (`present`: creation times of the local blobs); returns how many.
  func collect(retentionSeconds: Double, view: ClusterView, present: [Digest: Int64]) async -> Int {
    let now = self.now()
    let gone = ledger.withLock { l in
      let gone = Set(l.collectable(now: now, retention: Int64(retentionSeconds * 1e9), view: view))
        .union(l.superseded(byCopiesCreatedAt: present))
      for d in gone { l.remove(d) }
      return Array(gone)
    }
    if !gone.isEmpty { await unlink(gone) }
    return gone.count
  }

  /// Drops a tombstone whose Delete was refused elsewhere (ForgetTombstone).
  func forget(_ digest: Digest) async {
    _ = recent.withLock { $0.removeValue(forKey: digest) }
    let had = ledger.withLock { l in
      defer { l.remove(digest) }
      return l.deletedAt(digest) != nil
    }
    if had { await unlink([digest]) }
  }

  var count: Int { ledger.withLock { $0.stones.count } }

  /// Removes forgotten tombstones' files. One that cannot be removed is logged and comes
  /// back after a restart, to be collected again.
  private func unlink(_ digests: [Digest]) async {
    let paths = digests.map(path)
    do {
      try await Hints.onPool { for p in paths { try DurableFiles.remove(p) } }
    } catch {
      logger.warning("removing forgotten tombstones failed: \(ContentError.from(error).message)")
    }
  }
}
