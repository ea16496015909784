import CairnCore
import Foundation

/// What a store holds, for metrics and the dashboard.
public struct StoreUsage: Sendable, Hashable {
  public var blobs: Int = 0
  public var storedBytes: Int64 = 0
  public var diskUsedBytes: Int64 = 0
  public var diskCapacityBytes: Int64 = 0
  public var activeIngests: Int = 0
  public init() {}
}

extension DiskStore {
  public var activeIngestCount: Int { activeWriterCount() }

  /// Counts the blobs directory (one lstat per blob, on the I/O threads). Scrapes and
  /// dashboards call this every few seconds, so a count younger than `maxAge` is reused.
  public func usage(maxAge: Double = 5) async -> StoreUsage {
    let now = Monotonic.seconds
    var u: StoreUsage
    if let (at, cached) = usageCache.withLock({ $0 }), now - at < maxAge {
      u = cached
    } else {
      let layout = self.layout
      u = (try? await io.run { () -> StoreUsage in
        var u = StoreUsage()
        for alg in DigestAlgorithm.allCases {
          let dir = layout.blobDir(alg)
          for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var st = stat()
            guard lstat(dir + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            u.blobs += 1
            u.storedBytes += Int64(st.st_size)
          }
        }
        return u
      }) ?? StoreUsage()
      usageCache.withLock { $0 = (now, u) }
    }
    if let (used, capacity) = diskUsage() {
      u.diskUsedBytes = used
      u.diskCapacityBytes = capacity
    }
    u.activeIngests = activeIngestCount
    return u
  }
}
