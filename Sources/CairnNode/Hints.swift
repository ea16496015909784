import CairnCluster
import CairnCore
import Foundation

/// Durable notes that a replica missed a blob: `hints/<node>/<algorithm>:<hex>`, one empty
/// file each, written before the commit is acknowledged. Delivery is a loop that streams
/// the blob to the replica once it is live again and then removes the note.
final class Hints: Sendable {
  let root: URL

  init(root: String) throws {
    self.root = URL(fileURLWithPath: root).appendingPathComponent("hints")
    try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
  }

  private func directory(_ node: NodeID) -> URL {
    // Node ids are configuration, not client input; still, keep them to one path segment.
    root.appendingPathComponent(node.name.replacingOccurrences(of: "/", with: "_"))
  }

  func add(_ digest: Digest, for node: NodeID) {
    let dir = directory(node)
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(digest.description).path
    let fd = open(path, O_CREAT | O_WRONLY, 0o644)
    if fd >= 0 {
      fsync(fd)
      close(fd)
    }
    let dfd = open(dir.path, O_RDONLY | O_DIRECTORY)
    if dfd >= 0 {
      fsync(dfd)
      close(dfd)
    }
  }

  func remove(_ digest: Digest, for node: NodeID) {
    unlink(directory(node).appendingPathComponent(digest.description).path)
  }

  /// Every pending hint, by target node.
  func pending() -> [NodeID: [Digest]] {
    var out: [NodeID: [Digest]] = [:]
    let nodes = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
    for n in nodes {
      let names = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(n).path)) ?? []
      let digests = names.compactMap { try? Digest(parsing: $0) }
      if !digests.isEmpty { out[NodeID(n)] = digests }
    }
    return out
  }

  var count: Int { pending().values.reduce(0) { $0 + $1.count } }
}
