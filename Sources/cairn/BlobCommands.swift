import ArgumentParser
import CairnClient
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Put: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Upload a file (or - for stdin) and print its digest.",
    discussion: "Rerunning with the same --ref resumes an interrupted upload from where the server stands.")

  @OptionGroup var client: ClientOptions
  @Argument(help: "File to upload, or - for standard input.") var file: String
  @Option(help: "Ref (upload name) to write under; default: put-<file name>-<size>, or for stdin a new ref per run.") var ref: String?
  @Option(help: "Expected digest: the server refuses content that does not match.") var digest: String?
  @Option(name: .customLong("label"), help: "KEY=VALUE label set at commit (repeatable; modern API).")
  var labels: [String] = []

  func run() async throws {
    let source: any BlobSource
    var size: Int64 = 0
    if file == "-" {
      source = StreamSource(fd: 0)
    } else {
      do {
        let f = try FileSource(path: file)
        size = f.size
        source = f
      } catch { throw failLocally(error) }
    }
    let expected = try digest.map(digestArgument)
    // Standard input cannot be read twice, so its upload cannot resume: each run takes a
    // ref of its own (two at once must not share a lock), and a failed one is aborted.
    let stdinRef = file == "-" && self.ref == nil
    let ref = self.ref ?? (stdinRef ? "put-stdin-\(getpid())-\(Timestamp.now().totalNanoseconds)" : "put-\((file as NSString).lastPathComponent)-\(size)")
    let labels = try parseLabels(self.labels)
    let bar = ProgressBar("put \(ref)", total: size > 0 ? size : nil)
    let result: UploadResult
    do {
      result = try await client.run { c in
        try await c.write(ref: ref, source: source, size: size, expected: expected, labels: labels) { bar.update($0) }
      }
    } catch {
      // A content that does not hash to --digest will not on a rerun either: its upload is
      // dropped rather than left behind to be resumed, and the user is told so.
      // (`client.run` has turned the server's status into the exit code 100 + N.)
      let wrongContent = expected != nil && (error as? ExitCode)?.rawValue == 100 + Int32(ContentError.Code.failedPrecondition.rawValue)
      if stdinRef || wrongContent {
        // Best effort: the upload's failure is what the user needs to hear, and the server
        // expires a left-over upload after ingest_expiry.
        let aborted = (try? await client.run { try await $0.abort(ref: ref) }) != nil
        if wrongContent && aborted {
          FileHandle.standardError.write(Data("cairn: the upload under ref \(ref) was aborted: its content does not match --digest\n".utf8))
        }
      }
      throw error
    }
    bar.finish()
    if result.resumedFrom > 0 {
      FileHandle.standardError.write(Data("resumed at \(formatBytes(result.resumedFrom))\n".utf8))
    }
    if result.alreadyExisted {
      FileHandle.standardError.write(Data("already stored\n".utf8))
    }
    print(result.digest)
  }
}

func parseLabels(_ pairs: [String]) throws -> [String: String] {
  var out: [String: String] = [:]
  for p in pairs {
    guard let eq = p.firstIndex(of: "=") else { throw ValidationError("label \(p) is not KEY=VALUE") }
    out[String(p[..<eq])] = String(p[p.index(after: eq)...])
  }
  return out
}

struct Get: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Download a blob; a whole-blob download is verified against its digest.",
    discussion: """
      With -o FILE the bytes go to FILE.partial, renamed to FILE once verified; a download that was \
      interrupted continues from the FILE.partial it left. Standard output must not be a terminal \
      unless -o - asks for it.
      """)

  @OptionGroup var client: ClientOptions
  @Argument(help: "Digest of the blob.") var digest: String
  @Option(name: .shortAndLong, help: "Output file; - for standard output (the default when it is not a terminal).") var output: String?
  @Option(help: "First byte to read.") var offset: Int64 = 0
  @Option(help: "Bytes to read (0 = to the end).") var size: Int64 = 0

  func run() async throws {
    let d = try digestArgument(digest)
    guard offset >= 0, size >= 0 else { throw failLocally(ContentError.invalidArgument("--offset and --size cannot be negative")) }
    if output == nil && isatty(1) == 1 {
      throw failLocally(ContentError.invalidArgument("standard output is a terminal: give -o FILE, or -o - to write the bytes there anyway"))
    }
    let file = output == "-" ? nil : output
    let partial = file.map { $0 + ".partial" }
    // Only a whole-blob download resumes: its .partial holds the blob's first bytes.
    let resumable = offset == 0 && size == 0
    let fd: Int32 = partial.map { open($0, O_RDWR | O_CREAT | O_CLOEXEC | (resumable ? 0 : O_TRUNC), 0o644) } ?? 1
    if fd < 0 { throw failLocally(ContentError.internalError("cannot create \(partial!): \(String(cString: strerror(errno)))")) }
    defer { if fd != 1 { close(fd) } }
    let sink = HashingSink(fd: fd, algorithm: d.algorithm)
    if partial != nil && resumable {
      do { try sink.resume() } catch { throw failLocally(error) }
    }
    let resumedAt = sink.written
    let (info, read): (BlobInfo, Int64) = try await client.run { c in
      let info = try await c.info(digest)
      if resumedAt > info.size { try sink.restart() }
      let from = resumable ? sink.written : offset
      if resumedAt > 0 && sink.written > 0 {
        FileHandle.standardError.write(Data("cairn: continuing \(partial!) at \(formatBytes(from)) of \(formatBytes(info.size))\n".utf8))
      }
      let bar = ProgressBar("get", total: size > 0 ? min(size, info.size - from) : info.size - min(info.size, from))
      bar.update(0)
      var n: Int64 = 0
      if !(resumable && from >= info.size) {
        n = try await c.read(digest, offset: from, size: size) { chunk in
          try sink.write(chunk)
          bar.update(sink.written - from)
        }
      }
      bar.finish()
      return (info, from + n)
    }
    if (resumable || offset == 0) && read == info.size {
      let actual = sink.digest()
      if actual != d {
        if let partial { unlink(partial) }
        throw fail(ContentError.dataLoss("downloaded bytes hash to \(actual), not \(d)\(partial == nil ? "" : "; \(partial!) removed")"))
      }
    }
    if let partial, let file, rename(partial, file) != 0 {
      throw failLocally(ContentError.internalError("renaming \(partial) to \(file): \(String(cString: strerror(errno)))"))
    }
  }
}

/// Writes bytes to a descriptor while hashing them.
final class HashingSink: @unchecked Sendable {
  let fd: Int32
  var digester: Digester
  var written: Int64 = 0
  init(fd: Int32, algorithm: DigestAlgorithm) {
    self.fd = fd
    digester = Digester(algorithm)
  }
  func write(_ data: Data) throws {
    digester.update(data)
    try data.withUnsafeBytes { buf in
      var off = 0
      while off < buf.count {
        let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
        if n < 0 {
          if errno == EINTR { continue }
          throw ContentError.internalError("write output: \(String(cString: strerror(errno)))")
        }
        off += n
      }
    }
    written += Int64(data.count)
  }
  func digest() -> Digest { digester.digest() }

  /// Takes the bytes already in the file (an interrupted download's) as written: hashes
  /// them and moves to their end.
  func resume() throws {
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    guard lseek(fd, 0, SEEK_SET) == 0 else { throw ContentError.internalError("seek: \(String(cString: strerror(errno)))") }
    while true {
      let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 {
        if errno == EINTR { continue }
        throw ContentError.internalError("reading the partial download: \(String(cString: strerror(errno)))")
      }
      if n == 0 { break }
      digester.update(Data(buffer[..<n]))
      written += Int64(n)
    }
  }

  /// Starts over in an empty file (a partial download longer than the blob is not its start).
  func restart() throws {
    guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
      throw ContentError.internalError("truncating the partial download: \(String(cString: strerror(errno)))")
    }
    digester = Digester(digester.algorithm)
    written = 0
  }
}

struct Info: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show a blob's size, timestamps and labels.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Digest of the blob.") var digest: String
  @Flag(help: "As a JSON object (digest, size, created, updated, labels), for scripts.") var json = false

  func run() async throws {
    _ = try digestArgument(digest)
    let info = try await client.run { try await $0.info(digest) }
    if json { return try JSONOutput.print(JSONOutput.Blob(info)) }
    print("digest:  \(info.digest)")
    print("size:    \(info.size) (\(formatBytes(info.size)))")
    print("created: \(info.createdAt)")
    print("updated: \(info.updatedAt)")
    for (k, v) in info.labels.sorted(by: { $0.key < $1.key }) { print("label:   \(k)=\(v)") }
  }
}

struct List: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ls",
    abstract: "List blobs, optionally filtered (containerd filters: digest==D, labels.KEY==V, \",\" = and; several = or).")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Filters.") var filters: [String] = []
  @Flag(name: .shortAndLong, help: "Print digests only.") var quiet = false
  @Flag(help: "As a JSON array of objects (digest, size, created, updated, labels), for scripts.") var json = false

  func run() async throws {
    let infos = try await client.run { try await $0.list(filters: filters) }
    if json { return try JSONOutput.print(infos.map(JSONOutput.Blob.init)) }
    if quiet {
      for i in infos { print(i.digest) }
      return
    }
    print("DIGEST".padding(toLength: 72, withPad: " ", startingAt: 0) + "SIZE".padding(toLength: 12, withPad: " ", startingAt: 0) + "CREATED                         LABELS")
    for i in infos {
      let labels = i.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
      print(
        i.digest.description.padding(toLength: 72, withPad: " ", startingAt: 0)
          + formatBytes(i.size).padding(toLength: 12, withPad: " ", startingAt: 0)
          + i.createdAt.rfc3339.padding(toLength: 32, withPad: " ", startingAt: 0) + labels)
    }
  }
}

struct Remove: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete blobs.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Digests.") var digests: [String]

  func run() async throws {
    for d in digests { _ = try digestArgument(d) }
    try await client.run { c in
      for d in digests { try await c.delete(d) }
    }
  }
}

struct Label: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Set (KEY=VALUE) or remove (KEY=) labels of a blob; other labels are kept.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Digest of the blob.") var digest: String
  @Argument(help: "KEY=VALUE pairs.") var pairs: [String]

  func run() async throws {
    _ = try digestArgument(digest)
    let labels = try parseLabels(pairs)
    let info = try await client.run { c in
      try await c.update(digest, labels: labels, fieldPaths: labels.keys.sorted().map { "labels.\($0)" })
    }
    for (k, v) in info.labels.sorted(by: { $0.key < $1.key }) { print("\(k)=\(v)") }
  }
}

struct Health: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Ask a node whether it serves (gRPC health Check, which needs no credential): for probes and health checks.",
    discussion: "Prints SERVING or NOT_SERVING; exit 0 when serving, 1 when not, 100+N when the node could not be asked.")
  @OptionGroup var client: ClientOptions

  func run() async throws {
    let serving = try await client.run { try await $0.isServing() }
    print(serving ? "SERVING" : "NOT_SERVING")
    if !serving { throw ExitCode(1) }
  }
}
