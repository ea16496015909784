import CairnCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One process per data directory: `LOCK` in it is held with flock(2) for as long as the
/// store is open, and names the holder's pid. Two nodes on one directory would each think
/// they own every ingest and blob there (uploads through both failed with `link` errors).
/// The kernel drops the lock when its holder dies, so a crash never leaves it stale.
final class DataDirectoryLock: Sendable {
  private let fd: Mutex<Int32?>
  let path: String

  init(root: String) throws(ContentError) {
    path = root + "/LOCK"
    let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw POSIX.error("open", path) }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      let code = errno
      let holder = (try? POSIX.readString(path))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
      Glibc.close(fd)
      if code == EWOULDBLOCK {
        throw .failedPrecondition(
          "data directory \(root) is in use by process \(holder.isEmpty ? "(unknown pid)" : holder) (it holds \(path)); stop it, or give this node its own data directory")
      }
      throw POSIX.error("flock", path, code)
    }
    let pid = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pwrite(fd, pid, pid.count, 0)
    self.fd = Mutex(fd)
  }

  /// Lets another process (or a reopened store) have the directory.
  func release() {
    if let fd = fd.withLock({ f -> Int32? in defer { f = nil }; return f }) { Glibc.close(fd) }
  }

  deinit { release() }
}
