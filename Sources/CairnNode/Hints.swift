import CairnCluster
import CairnCore
import Foundation
import NIOPosix
import Synchronization

/// Durable notes that a replica missed a blob: `hints/<node>/<algorithm>:<hex>`, one empty
/// file each, durable (directory fsynced) before `add` returns. The files are read once,
/// at start; afterwards the index in memory answers `pending` and `count`, and only adds
/// and removals touch the disk, on NIO's blocking-I/O pool (never on an event loop).
/// Delivery is a loop that streams the blob to the replica once it is live again and then
/// removes the note.
final class Hints: Sendable {
  let root: URL
  private let index: Mutex<[NodeID: Set<Digest>]>

  init(root: String) throws {
    self.root = URL(fileURLWithPath: root).appendingPathComponent("hints")
    try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
    var found: [NodeID: Set<Digest>] = [:]
    for n in (try? FileManager.default.contentsOfDirectory(atPath: self.root.path)) ?? [] {
      let names = (try? FileManager.default.contentsOfDirectory(atPath: self.root.appendingPathComponent(n).path)) ?? []
      let digests = Set(names.compactMap { try? Digest(parsing: $0) })
      if !digests.isEmpty { found[NodeID(n)] = digests }
    }
    index = Mutex(found)
  }

  private func directory(_ node: NodeID) -> URL {
    // Node ids are configuration, not client input; still, keep them to one path segment.
    root.appendingPathComponent(node.name.replacingOccurrences(of: "/", with: "_"))
  }

  func add(_ digest: Digest, for node: NodeID) async {
    let inserted = index.withLock { $0[node, default: []].insert(digest).inserted }
    guard inserted else { return }
    let dir = directory(node)
    // The entry is what must survive a crash: the empty file needs no fsync, its
    // directory does.
    try? await NIOThreadPool.singleton.runIfActive {
      try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
      let fd = open(dir.appendingPathComponent(digest.description).path, O_CREAT | O_WRONLY, 0o644)
      if fd >= 0 { close(fd) }
      let dfd = open(dir.path, O_RDONLY | O_DIRECTORY)
      if dfd >= 0 {
        fsync(dfd)
        close(dfd)
      }
    }
  }

  func remove(_ digest: Digest, for node: NodeID) async {
    index.withLock { i in
      i[node]?.remove(digest)
      if i[node]?.isEmpty == true { i[node] = nil }
    }
    let path = directory(node).appendingPathComponent(digest.description).path
    try? await NIOThreadPool.singleton.runIfActive { _ = unlink(path) }
  }

  /// Every pending hint, by target node.
  func pending() -> [NodeID: Set<Digest>] { index.withLock { $0 } }

  var count: Int { index.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
