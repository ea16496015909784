import CairnCluster
import CairnCore
import CairnDisk
import Foundation
import Logging
import NIOPosix
import Synchronization

/// Durable notes that a replica missed a blob: `hints/<node>/<algorithm>:<hex>`, one empty
/// file each, durable (directory fsynced) before `add` returns. The files are read once,
/// at start; afterwards the index in memory answers `pending` and `count`, and only adds
/// and removals touch the disk, on NIO's blocking-I/O pool (never on an event loop).
/// Delivery is a loop that streams the blob to the replica once it is live again and then
/// removes the note.
///
/// A hint that could not be made durable (a full disk) stays in memory and is delivered
/// while the node runs; after a restart anti-entropy finds the missing copy instead. So
/// `add` throws for the caller to log, and never fails the write that needed it.
final class Hints: Sendable {
  let root: String
  private let index: Mutex<[NodeID: Set<Digest>]>

  init(root: String, logger: Logger) throws {
    self.root = root + "/hints"
    try DurableFiles.makeDirectory(self.root)
    var found: [NodeID: Set<Digest>] = [:]
    for n in try DurableFiles.list(self.root) {
      let dir = self.root + "/" + n
      for name in try DurableFiles.list(dir) {
        guard let digest = try? Digest(parsing: name) else {
          // Not a name this node writes: say so rather than drop it silently.
          logger.warning("ignoring \(dir)/\(name): not a hint (a file named after a digest)")
          continue
        }
        found[NodeID(n), default: []].insert(digest)
      }
    }
    index = Mutex(found)
  }

  private func directory(_ node: NodeID) -> String {
    // Node ids are configuration, not client input; still, keep them to one path segment.
    root + "/" + node.name.replacingOccurrences(of: "/", with: "_")
  }

  /// Notes that `node` misses `digest`; throws if the note is not durable (it is kept in
  /// memory all the same).
  func add(_ digest: Digest, for node: NodeID) async throws {
    let inserted = index.withLock { $0[node, default: []].insert(digest).inserted }
    guard inserted else { return }
    let dir = directory(node)
    try await Self.onPool {
      try DurableFiles.makeDirectory(dir)
      try DurableFiles.create(dir + "/" + digest.description)
    }
  }

  /// Forgets the note; throws if its file could not be removed (it comes back after a
  /// restart, and delivering it again is harmless).
  func remove(_ digest: Digest, for node: NodeID) async throws {
    index.withLock { i in
      i[node]?.remove(digest)
      if i[node]?.isEmpty == true { i[node] = nil }
    }
    let path = directory(node) + "/" + digest.description
    try await Self.onPool { try DurableFiles.remove(path) }
  }

  /// Every pending hint, by target node.
  func pending() -> [NodeID: Set<Digest>] { index.withLock { $0 } }

  var count: Int { index.withLock { $0.values.reduce(0) { $0 + $1.count } } }

  /// Blocking file work off the event loops; a pool already shut down (the node is
  /// stopping) is an error too.
  static func onPool(_ work: @escaping @Sendable () throws -> Void) async throws {
    try await NIOThreadPool.singleton.runIfActive { try work() }
  }
}
