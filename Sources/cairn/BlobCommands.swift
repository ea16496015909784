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
      if stdinRef { try? await client.run { try await $0.abort(ref: ref) } }
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
    abstract: "Download a blob; a whole-blob download is verified against its digest.")

  @OptionGroup var client: ClientOptions
  @Argument(help: "Digest of the blob.") var digest: String
  @Option(name: .shortAndLong, help: "Output file (default: standard output).") var output: String?
  @Option(help: "First byte to read.") var offset: Int64 = 0
  @Option(help: "Bytes to read (0 = to the end).") var size: Int64 = 0

  func run() async throws {
    let d = try digestArgument(digest)
    let partial = output.map { $0 + ".partial" }
    let fd: Int32 = partial.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } ?? 1
    if fd < 0 { throw failLocally(ContentError.internalError("cannot create \(partial!): \(String(cString: strerror(errno)))")) }
    defer { if fd != 1 { close(fd) } }
    let sink = HashingSink(fd: fd, algorithm: d.algorithm)
    let (info, read): (BlobInfo, Int64) = try await client.run { c in
      let info = try await c.info(digest)
      let bar = ProgressBar("get", total: size > 0 ? min(size, info.size - offset) : info.size - max(0, offset))
      let n = try await c.read(digest, offset: offset, size: size) { chunk in
        try sink.write(chunk)
        bar.update(sink.written)
      }
      bar.finish()
      return (info, n)
    }
    if offset <= 0 && read == info.size {
      let actual = sink.digest()
      if actual != d {
        if let partial { unlink(partial) }
        throw fail(ContentError.dataLoss("downloaded bytes hash to \(actual), not \(d)"))
      }
    }
    if let partial, let output { rename(partial, output) }
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
}

struct Info: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show a blob's size, timestamps and labels.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Digest of the blob.") var digest: String

  func run() async throws {
    _ = try digestArgument(digest)
    let info = try await client.run { try await $0.info(digest) }
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

  func run() async throws {
    let infos = try await client.run { try await $0.list(filters: filters) }
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
