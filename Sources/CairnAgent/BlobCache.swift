import CairnCore
import CairnDisk
import Foundation

/// The agent's bounded local copies of blobs: the ones this host wrote (containerd pulls a
/// layer, then reads it to unpack). Least recently used copies go first once the total
/// passes `maxBytes`; the cluster keeps the real copies, so eviction loses nothing.
public actor BlobCache {
  private let store: DiskStore
  public let maxBytes: Int64
  private var entries: [Digest: (size: Int64, used: UInt64)] = [:]
  private var clock: UInt64 = 0
  public private(set) var totalBytes: Int64 = 0
  public private(set) var hits = 0
  public private(set) var evictions = 0

  public init(store: DiskStore, maxBytes: Int64) {
    self.store = store
    self.maxBytes = maxBytes
  }

  /// Indexes what a previous run left on disk, oldest first.
  public func load() async throws {
    for info in try await store.list(.always).sorted(by: { $0.updatedAt < $1.updatedAt }) {
      note(info.digest, size: info.size)
    }
    await trim()
  }

  /// A reader from the local copy, if there is one.
  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader? {
    guard entries[digest] != nil else { return nil }
    do {
      let reader = try await store.read(digest, offset: offset, size: size)
      hits += 1
      note(digest, size: reader.blobSize)
      return reader
    } catch let e as ContentError where e.code == .notFound {
      forget(digest)
      return nil
    }
  }

  /// A blob committed locally (and published to the cluster) joins the cache.
  public func added(_ digest: Digest, size: Int64) async {
    note(digest, size: size)
    await trim()
  }

  public func evict(_ digest: Digest) async {
    forget(digest)
    try? await store.delete(digest)
  }

  private func note(_ digest: Digest, size: Int64) {
    clock += 1
    if entries[digest] == nil { totalBytes += size }
    entries[digest] = (size, clock)
  }

  private func forget(_ digest: Digest) {
    if let e = entries.removeValue(forKey: digest) { totalBytes -= e.size }
  }

  private func trim() async {
    while totalBytes > maxBytes, let oldest = entries.min(by: { $0.value.used < $1.value.used })?.key {
      evictions += 1
      await evict(oldest)
    }
  }
}
