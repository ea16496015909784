import CairnCluster
import CairnCore
import Foundation
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

  let root: URL
  private let ledger: Mutex<TombstoneLedger>
  private let recent = Mutex<[Digest: Int64]>([:])

  init(root: String) throws {
    self.root = URL(fileURLWithPath: root).appendingPathComponent("tombstones")
    try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
    var found = TombstoneLedger()
    for name in (try? FileManager.default.contentsOfDirectory(atPath: self.root.path)) ?? [] {
      guard let d = try? Digest(parsing: name),
        let text = try? String(contentsOf: self.root.appendingPathComponent(name), encoding: .utf8),
        let at = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
      else { continue }  // a torn write of a tombstone being recorded: its Delete never answered
      found.record(d, at: at)
    }
    ledger = Mutex(found)
  }

  private func path(_ digest: Digest) -> String { root.appendingPathComponent(digest.description).path }

  /// Remembers that `digest` was deleted at `at`; durable when it returns.
  func record(_ digest: Digest, at: Timestamp) async {
    let nanos = at.totalNanoseconds
    var overflow: [Digest] = []
    let isNew = ledger.withLock { l in
      let isNew = l.record(digest, at: nanos)
      if isNew && l.stones.count > Self.capacity {
        overflow = l.stones.sorted { $0.value.deletedAt < $1.value.deletedAt }.prefix(l.stones.count - Self.capacity).map(\.key)
        for d in overflow { l.remove(d) }
      }
      return isNew
    }
    guard isNew else { return }
    let file = path(digest)
    let dir = root.path
    try? await NIOThreadPool.singleton.runIfActive {
      let tmp = file + ".tmp"
      let fd = open(tmp, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
      guard fd >= 0 else { return }
      let bytes = Array("\(nanos)\n".utf8)
      _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      fsync(fd)
      close(fd)
      rename(tmp, file)
      let dfd = open(dir, O_RDONLY | O_DIRECTORY)
      if dfd >= 0 {
        fsync(dfd)
        close(dfd)
      }
    }
    if !overflow.isEmpty { await unlink(overflow) }
  }

  /// A Delete reached this node at `at` (with or without a copy here).
  func noteRecent(_ digest: Digest, at: Timestamp) {
    let nanos = at.totalNanoseconds
    recent.withLock { r in
      r[digest] = max(r[digest] ?? 0, nanos)
      if r.count > Self.recentCapacity {
        let horizon = Timestamp.now().totalNanoseconds - Self.recentRetentionNanoseconds
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
    return at >= created && at + Self.recentRetentionNanoseconds >= Timestamp.now().totalNanoseconds
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
    let now = Timestamp.now().totalNanoseconds
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

  private func unlink(_ digests: [Digest]) async {
    let paths = digests.map(path)
    try? await NIOThreadPool.singleton.runIfActive { for p in paths { _ = Foundation.unlink(p) } }
  }
}
