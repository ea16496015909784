import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Bytes to upload. A source is driven by one upload at a time.
public protocol BlobSource: AnyObject, Sendable {
  /// The server holds `offset` bytes whose digest is `digest` (a resumed ingest). Position
  /// the source after them if they are this source's first bytes and return `offset`;
  /// otherwise return 0 to upload from the start.
  func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64
  /// The next bytes, at most `maxBytes`; nil at the end.
  func next(maxBytes: Int) async throws -> Data?
}

/// A file read with pread; it can resume anywhere its prefix matches.
public final class FileSource: BlobSource, @unchecked Sendable {
  let fd: Int32
  let path: String
  var position: Int64 = 0
  public let size: Int64

  public init(path: String) throws {
    self.path = path
    fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw ContentError.notFound("cannot open \(path): \(String(cString: strerror(errno)))") }
    var st = stat()
    fstat(fd, &st)
    size = Int64(st.st_size)
  }

  deinit { close(fd) }

  public func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 {
    position = 0
    guard offset > 0, offset <= size else { return 0 }
    var d = Digester(digest.algorithm)
    while position < offset, let chunk = try await next(maxBytes: Int(min(4 << 20, offset - position))) {
      d.update(chunk)
    }
    if d.digest() == digest { return offset }
    position = 0
    return 0
  }

  public func next(maxBytes: Int) async throws -> Data? {
    guard position < size else { return nil }
    var data = Data(count: Int(min(Int64(maxBytes), size - position)))
    let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(position)) }
    if n < 0 { throw ContentError.internalError("read \(path): \(String(cString: strerror(errno)))") }
    if n == 0 { return nil }
    if n < data.count { data.removeSubrange(n...) }
    position += Int64(n)
    return data
  }
}

/// Standard input (or any descriptor): read once, front to back. It resumes only when
/// its first bytes hash to what the server holds; otherwise the upload must restart
/// under a new ref (the consumed bytes cannot be re-read).
public final class StreamSource: BlobSource, @unchecked Sendable {
  let fd: Int32
  var pending = Data()
  var eof = false

  public init(fd: Int32 = 0) { self.fd = fd }

  public func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 {
    guard offset > 0 else { return 0 }
    var d = Digester(digest.algorithm)
    var consumed: Int64 = 0
    while consumed < offset, let chunk = try await next(maxBytes: Int(min(1 << 20, offset - consumed))) {
      d.update(chunk)
      consumed += Int64(chunk.count)
    }
    guard consumed == offset, d.digest() == digest else {
      throw ContentError.failedPrecondition(
        "the server holds \(offset) bytes for this ref that differ from this input; abort the ref or use another")
    }
    return offset
  }

  public func next(maxBytes: Int) async throws -> Data? {
    var out = Data()
    while out.count < maxBytes && !eof {
      var buf = Data(count: maxBytes - out.count)
      let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n < 0 {
        if errno == EINTR { continue }
        throw ContentError.internalError("read stdin: \(String(cString: strerror(errno)))")
      }
      if n == 0 { eof = true; break }
      out.append(buf.prefix(n))
    }
    return out.isEmpty ? nil : out
  }
}

/// Bytes in memory.
public final class DataSource: BlobSource, @unchecked Sendable {
  let data: Data
  var position = 0

  public init(_ data: Data) { self.data = data }

  public func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 {
    if offset > 0, offset <= Int64(data.count), Digest.of(data.prefix(Int(offset)), algorithm: digest.algorithm) == digest {
      position = Int(offset)
      return offset
    }
    position = 0
    return 0
  }

  public func next(maxBytes: Int) async throws -> Data? {
    guard position < data.count else { return nil }
    let n = min(maxBytes, data.count - position)
    defer { position += n }
    return data.subdata(in: position..<position + n)
  }
}

/// Deterministic pseudo-random bytes of a given size (xorshift per seed): benchmark data
/// that is distinct per blob and costs the client almost no CPU.
public final class GeneratedSource: BlobSource, @unchecked Sendable {
  public let size: Int64
  var state: UInt64
  var position: Int64 = 0
  let seed: UInt64

  public init(size: Int64, seed: UInt64) {
    self.size = size
    self.seed = seed
    state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
  }

  public func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 { 0 }

  public func next(maxBytes: Int) async throws -> Data? {
    guard position < size else { return nil }
    let n = Int(min(Int64(maxBytes), size - position))
    var words = [UInt64](repeating: 0, count: (n + 7) / 8)
    var x = state
    for i in words.indices {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      words[i] = x
    }
    state = x
    position += Int64(n)
    return words.withUnsafeBytes { Data($0.prefix(n)) }
  }
}
