import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Small files that must outlive a crash once their call returns: a node's hints,
/// tombstones and adopted cluster config. Every step is checked, so a full or failing disk
/// is the caller's error (a Delete whose tombstone is not durable fails), never a silent
/// "done"; each write is a temp file, fdatasync, rename, and an fsync of the directory.
/// Blocking: call them from a thread pool.
public enum DurableFiles {
  /// Replaces `path` with `data`: after a crash it holds the old or the new bytes.
  public static func write(_ path: String, _ data: Data) throws(ContentError) {
    try replace(path, data)
    try POSIX.fsyncDirectory(parent(of: path))
  }

  /// `write` without the directory fsync, for a caller that batches those (the disk
  /// store's GroupSync): `path` holds the old or the new bytes once its directory is synced.
  /// `<path>.tmp` is the temp file; whoever owns the directory removes strays at start.
  public static func replace(_ path: String, _ data: Data) throws(ContentError) {
    let temp = path + ".tmp"
    try POSIX.writeFile(temp, data, sync: true)
    try POSIX.rename(temp, path)
  }

  /// An empty marker file whose name survives a crash.
  public static func create(_ path: String) throws(ContentError) {
    POSIX.close(try POSIX.open(path, O_CREAT | O_WRONLY))
    try POSIX.fsyncDirectory(parent(of: path))
  }

  /// Removes `path` (gone already is fine); the removal itself is durable when `durable`.
  public static func remove(_ path: String, durable: Bool = false) throws(ContentError) {
    try POSIX.unlink(path)
    if durable { try POSIX.fsyncDirectory(parent(of: path)) }
  }

  /// A directory (and its parents) whose entry survives a crash.
  public static func makeDirectory(_ path: String) throws(ContentError) {
    if POSIX.exists(path) { return }
    try POSIX.mkdirs(path)
    try POSIX.fsyncDirectory(parent(of: path))
  }

  public static func read(_ path: String, limit: Int = 1 << 20) throws(ContentError) -> Data { try POSIX.readFile(path, limit: limit) }

  public static func list(_ path: String) throws(ContentError) -> [String] { try POSIX.listDirectory(path) }

  public static func exists(_ path: String) -> Bool { POSIX.exists(path) }

  private static func parent(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }
}
