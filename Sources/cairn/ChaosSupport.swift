import ArgumentParser
import CairnChaos
import CairnClient
import CairnCore
import Foundation
import Synchronization

struct ChaosCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "chaos",
    abstract: "The chaos harness's client side: workload, verification after the heal, checker (chaos/README.md).",
    subcommands: [ChaosWorkload.self, ChaosVerify.self, ChaosCheck.self])
}

/// Nodes as `ID=HOST:PORT,...`, in order.
func parseNodeList(_ text: String) throws -> [(id: String, address: String)] {
  try text.split(separator: ",").map { item in
    let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
      throw ValidationError("--nodes wants ID=HOST:PORT,...; got \(item)")
    }
    return (parts[0], parts[1])
  }
}

/// Appends history lines; each line is flushed, so a killed run keeps what it saw.
final class HistoryLog: Sendable {
  private let handle: Mutex<FileHandle>
  init(path: String) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
      throw ValidationError("cannot create \(path)")
    }
    handle = Mutex(h)
  }
  func append(_ e: HistoryEvent) {
    let line = Data((HistoryFile.encode(e) + "\n").utf8)
    handle.withLock { $0.write(line) }
  }
}

struct OperationTimeout: Error {}

/// Runs `body`, giving up after `seconds` (a paused node answers nothing, ever).
func withTimeout<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
  try await withThrowingTaskGroup(of: T.self) { group in
    group.addTask { try await body() }
    group.addTask {
      try await Task.sleep(for: .seconds(seconds))
      throw OperationTimeout()
    }
    defer { group.cancelAll() }
    return try await group.next()!
  }
}

/// Pseudo-random bytes, the same for the same seed (GeneratedSource drained).
func generatedBytes(size: Int64, seed: UInt64) async throws -> Data {
  let source = GeneratedSource(size: size, seed: seed)
  var data = Data(capacity: Int(size))
  while let chunk = try await source.next(maxBytes: 1 << 20) { data.append(chunk) }
  return data
}

/// A source that fails after `cut` bytes: an upload interrupted half-way, to be resumed.
final class InterruptedSource: BlobSource, @unchecked Sendable {
  let inner: DataSource
  let cut: Int64
  var sent: Int64 = 0
  struct Interrupted: Error {}
  init(_ data: Data, cut: Int64) {
    inner = DataSource(data)
    self.cut = cut
  }
  func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 {
    sent = try await inner.prepare(resumeAt: offset, digest: digest)
    return sent
  }
  func next(maxBytes: Int) async throws -> Data? {
    guard sent < cut else { throw Interrupted() }
    let chunk = try await inner.next(maxBytes: Int(min(Int64(maxBytes), cut - sent)))
    sent += Int64(chunk?.count ?? 0)
    return chunk
  }
}

/// Weighted blob sizes: `1k:50,64k:30,16m:4`.
struct SizeMix {
  var choices: [(Int64, Int)]
  init(_ text: String) throws {
    choices = try text.split(separator: ",").map { item in
      let p = item.split(separator: ":")
      guard p.count == 2, let size = ByteSize.parse(String(p[0])), size > 0, let w = Int(p[1]), w > 0 else {
        throw ValidationError("--sizes wants SIZE:WEIGHT,...; got \(item)")
      }
      return (size, w)
    }
  }
  func pick(_ r: inout some RandomNumberGenerator) -> Int64 {
    var x = Int.random(in: 0..<choices.map(\.1).reduce(0, +), using: &r)
    for (size, w) in choices {
      if x < w { return size }
      x -= w
    }
    return choices[0].0
  }
}

/// The workload's running tally, printed as progress.
struct Tally {
  var writes: [HistoryEvent.Outcome: Int] = [:]
  var reads: [HistoryEvent.Outcome: Int] = [:]
  var deletes: [HistoryEvent.Outcome: Int] = [:]
  var bytes: Int64 = 0
  var line: String {
    func f(_ d: [HistoryEvent.Outcome: Int]) -> String {
      d.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", ")
    }
    return "writes: \(f(writes)); reads: \(f(reads))\(deletes.isEmpty ? "" : "; deletes: \(f(deletes))"); \(bytes >> 20) MiB acknowledged"
  }
}
