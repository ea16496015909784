import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A pipe from a child process's output to the test, read with plain read(2).
///
/// Foundation's `FileHandle.availableData` ends the whole test process with a fatal error
/// when a read fails (CI lost a run to it: "Fatal access conflict detected" inside
/// availableData, on a reader thread of ServerProcess). Here a failed read is the end of
/// the output, and the pipe is close-on-exec, so another child spawned at the same time
/// does not inherit the write end and hold the reader's end-of-file back.
public final class OutputPipe: @unchecked Sendable {
  /// The write end, for `Process.standardOutput`/`standardError`.
  public let writeHandle: FileHandle
  private let readFD: Int32

  public init() throws {
    var fds: [Int32] = [-1, -1]
    // (pipe2 is not in Swift's Glibc module; a child spawned between these two calls could
    // still inherit the ends, which costs only a late end-of-file.)
    guard pipe(&fds) == 0 else { throw ServerProcessError("pipe: \(String(cString: strerror(errno)))") }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    readFD = fds[0]
    writeHandle = FileHandle(fileDescriptor: fds[1], closeOnDealloc: true)
  }

  /// Closes this process's copy of the write end (the child has its own): call it once the
  /// child runs, or the reader never sees end-of-file.
  public func childStarted() {
    try? writeHandle.close()  // the child holds its own copy; failing to close ours only delays EOF
  }

  /// The next bytes the child wrote; nil at end-of-file or on a read error.
  public func read() -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = buffer.withUnsafeMutableBytes { Glibc.read(readFD, $0.baseAddress, $0.count) }
      if n > 0 { return Array(buffer.prefix(n)) }
      if n < 0 && errno == EINTR { continue }
      return nil
    }
  }

  /// Everything until end-of-file.
  public func readToEnd() -> [UInt8] {
    var all: [UInt8] = []
    while let chunk = read() { all += chunk }
    return all
  }

  /// `read()` on a thread of its own. A test's task must never block: the cooperative
  /// pool has one thread per core (two in CI), and the tasks it runs include in-process
  /// clusters' handlers and failure detectors; a test blocked on a child's output starved
  /// a parallel suite's 3-node cluster into DEADLINE_EXCEEDED and closed streams.
  public func nextChunk() async -> [UInt8]? {
    await withCheckedContinuation { c in Thread.detachNewThread { c.resume(returning: self.read()) } }
  }

  /// `readToEnd()` on a thread of its own (see `nextChunk`).
  public func readAll() async -> [UInt8] {
    await withCheckedContinuation { c in Thread.detachNewThread { c.resume(returning: self.readToEnd()) } }
  }

  /// What the pipe carries until `text` appears in it (or it ends).
  public func read(until text: String) async -> Data {
    var data = Data()
    while !String(decoding: data, as: UTF8.self).contains(text) {
      guard let chunk = await nextChunk() else { break }
      data.append(contentsOf: chunk)
    }
    return data
  }

  /// Calls `line` for each line on a thread of its own, then `done` at end-of-file.
  public func readLines(_ line: @escaping @Sendable (String) -> Void, done: @escaping @Sendable () -> Void) {
    Thread.detachNewThread { [self] in
      var buffer: [UInt8] = []
      while let chunk = read() {
        buffer += chunk
        while let nl = buffer.firstIndex(of: 0x0a) {
          line(String(decoding: buffer[..<nl], as: UTF8.self))
          buffer.removeSubrange(...nl)
        }
      }
      done()
    }
  }

  deinit { close(readFD) }
}
