import CCairnSys
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Thin, throwing wrappers over the POSIX calls the store makes. They block: call them only
/// from BlockingIO's threads. Errors become ContentErrors: a full disk is RESOURCE_EXHAUSTED,
/// a missing file NOT_FOUND, anything else INTERNAL naming the call. The path goes to the
/// error's detail (the node's log), never to the caller.
enum POSIX {
  static func error(_ call: String, _ path: String, _ err: Int32 = errno) -> ContentError {
    let text = String(cString: strerror(err))
    let detail = "\(call) \(path)"
    switch err {
    case ENOSPC, EDQUOT:
      return .init(.resourceExhausted, "disk full: \(call) of a file of the store: \(text)", detail: detail)
    case ENOENT:
      return .init(.notFound, "\(call) of a file of the store: \(text)", detail: detail)
    default:
      return .init(.internalError, "\(call) of a file of the store: \(text)", detail: detail)
    }
  }

  static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws(ContentError) -> Int32 {
    let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
    if fd < 0 { throw error("open", path) }
    return fd
  }

  static func close(_ fd: Int32) { _ = Glibc.close(fd) }

  static func pwriteAll(_ fd: Int32, _ data: Data, at offset: Int64, path: String) throws(ContentError) {
    let result: Int32 = data.withUnsafeBytes { buf in
      var done = 0
      while done < buf.count {
        let n = pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
        if n < 0 {
          if errno == EINTR { continue }
          return errno
        }
        done += n
      }
      return 0
    }
    if result != 0 { throw error("write", path, result) }
  }

  /// Reads up to `count` bytes at `offset`; fewer only at end of file.
  static func pread(_ fd: Int32, count: Int, at offset: Int64, path: String) throws(ContentError) -> Data {
    var data = Data(count: count)
    let result: (Int, Int32) = data.withUnsafeMutableBytes { buf in
      var done = 0
      while done < count {
        let n = Glibc.pread(fd, buf.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        if n < 0 {
          if errno == EINTR { continue }
          return (done, errno)
        }
        if n == 0 { break }
        done += n
      }
      return (done, 0)
    }
    if result.1 != 0 { throw error("read", path, result.1) }
    if result.0 < count { data.removeSubrange(result.0..<count) }
    return data
  }

  static func fdatasync(_ fd: Int32, path: String) throws(ContentError) {
    if Glibc.fdatasync(fd) != 0 { throw error("fdatasync", path) }
  }

  static func fsyncDirectory(_ path: String) throws(ContentError) {
    let fd = try open(path, O_RDONLY | O_DIRECTORY)
    defer { close(fd) }
    if Glibc.fsync(fd) != 0 { throw error("fsync", path) }
  }

  static func truncate(_ fd: Int32, to size: Int64, path: String) throws(ContentError) {
    if ftruncate(fd, off_t(size)) != 0 { throw error("ftruncate", path) }
  }

  struct FileStat {
    var size: Int64
    var mtime: Timestamp
    var isDirectory: Bool
  }

  static func stat(_ path: String) throws(ContentError) -> FileStat {
    var st = Glibc.stat()
    if fstatat(AT_FDCWD, path, &st, 0) != 0 { throw error("stat", path) }
    return FileStat(
      size: Int64(st.st_size),
      mtime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanos: Int32(st.st_mtim.tv_nsec)),
      isDirectory: (st.st_mode & S_IFMT) == S_IFDIR)
  }

  static func fstat(_ fd: Int32, path: String) throws(ContentError) -> FileStat {
    var st = Glibc.stat()
    if Glibc.fstat(fd, &st) != 0 { throw error("fstat", path) }
    return FileStat(
      size: Int64(st.st_size),
      mtime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanos: Int32(st.st_mtim.tv_nsec)),
      isDirectory: (st.st_mode & S_IFMT) == S_IFDIR)
  }

  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  /// Sets access and modification time, exactly (the kernel's own timestamps are coarse).
  static func setTimes(_ fd: Int32, _ t: Timestamp, path: String) throws(ContentError) {
    var times = [
      timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanos)),
      timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanos)),
    ]
    if futimens(fd, &times) != 0 { throw error("futimens", path) }
  }

  static func mkdir(_ path: String, mode: mode_t = 0o755) throws(ContentError) {
    if Glibc.mkdir(path, mode) != 0 && errno != EEXIST { throw error("mkdir", path) }
  }

  /// mkdir that reports whether it created the directory.
  static func mkdirNew(_ path: String, mode: mode_t = 0o755) throws(ContentError) -> Bool {
    if Glibc.mkdir(path, mode) == 0 { return true }
    if errno == EEXIST { return false }
    throw error("mkdir", path)
  }

  static func mkdirs(_ path: String) throws(ContentError) {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
      current += "/" + part
      try mkdir(current)
    }
  }

  /// Names an open file `to` (works for unnamed O_TMPFILE files too); false if `to` exists.
  static func linkNoReplace(fd: Int32, _ to: String) throws(ContentError) -> Bool {
    if cairn_link_fd(fd, to) == 0 { return true }
    if errno == EEXIST { return false }
    throw error("link", to)
  }

  /// An unnamed file in `dir`, or nil where the filesystem has no O_TMPFILE.
  static func openUnnamed(in dir: String) throws(ContentError) -> Int32? {
    let fd = cairn_open_unnamed(dir, 0o644)
    if fd >= 0 { return fd }
    if errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL { return nil }
    throw error("open O_TMPFILE", dir)
  }

  static func fsync(_ fd: Int32, path: String) throws(ContentError) {
    if Glibc.fsync(fd) != 0 { throw error("fsync", path) }
  }

  static func rename(_ from: String, _ to: String) throws(ContentError) {
    if Glibc.rename(from, to) != 0 { throw error("rename", to) }
  }

  /// Unlinks; false if it was already gone.
  @discardableResult
  static func unlink(_ path: String) throws(ContentError) -> Bool {
    if Glibc.unlink(path) == 0 { return true }
    if errno == ENOENT { return false }
    throw error("unlink", path)
  }

  static func listDirectory(_ path: String) throws(ContentError) -> [String] {
    guard let dir = opendir(path) else { throw error("opendir", path) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafePointer(to: entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }

  /// Removes a directory tree (the store's own, flat directories only: no symlinks are
  /// followed). False if it did not exist.
  @discardableResult
  static func removeTree(_ path: String) throws(ContentError) -> Bool {
    var st = Glibc.stat()
    if lstat(path, &st) != 0 {
      if errno == ENOENT { return false }
      throw error("lstat", path)
    }
    if (st.st_mode & S_IFMT) == S_IFDIR {
      for name in try listDirectory(path) { try removeTree(path + "/" + name) }
      if rmdir(path) != 0 && errno != ENOENT { throw error("rmdir", path) }
    } else {
      try unlink(path)
    }
    return true
  }

  /// A small file whole; one larger than `limit` is DATA_LOSS (nothing Cairn writes is).
  static func readFile(_ path: String, limit: Int = 1 << 20) throws(ContentError) -> Data {
    let fd = try open(path, O_RDONLY)
    defer { close(fd) }
    let size = try fstat(fd, path: path).size
    guard size <= Int64(limit) else { throw ContentError(.dataLoss, "a file of the store is \(size) bytes, more than the \(limit) it may hold", detail: path) }
    return try pread(fd, count: Int(size), at: 0, path: path)
  }

  static func readString(_ path: String) throws(ContentError) -> String {
    String(decoding: try readFile(path), as: UTF8.self)
  }

  /// Writes a small file whole, with no promise about crashes (DurableFiles makes one).
  static func writeFile(_ path: String, _ data: Data, sync: Bool = false) throws(ContentError) {
    let fd = try open(path, O_WRONLY | O_CREAT | O_TRUNC)
    do {
      try pwriteAll(fd, data, at: 0, path: path)
      if sync { try fdatasync(fd, path: path) }
    } catch {
      close(fd)
      throw error
    }
    close(fd)
  }
}
