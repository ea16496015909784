import CairnCore
import NIOPosix

/// The store's own threads for blocking file I/O. Swift's cooperative pool has one thread
/// per core (two here); a blocking fsync there would stall every RPC on the node.
public final class BlockingIO: Sendable {
  private let pool: NIOThreadPool
  public let threads: Int

  /// `threads` bounds concurrent blocking calls; fsyncs of concurrent commits run in
  /// parallel here, and the filesystem's journal batches them.
  public init(threads: Int = 8) {
    self.threads = threads
    pool = NIOThreadPool(numberOfThreads: threads)
    pool.start()
  }

  public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    do {
      return try await pool.runIfActive(body)
    } catch let e as ContentError {
      throw e
    } catch is NIOThreadPoolError.ThreadPoolInactive {
      throw ContentError.unavailable("store is shutting down")
    }
  }

  /// Runs `body` even if the calling task is cancelled: for cleanup that must happen
  /// (closing a file, keeping an interrupted upload resumable). `run` would skip the work
  /// when its caller is already cancelled, as it is when a client disconnects.
  public func runToCompletion<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await Task { try await self.run(body) }.value
  }

  public func shutdown() async {
    try? await pool.shutdownGracefully()
  }
}
