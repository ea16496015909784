import ArgumentParser
import CairnClient
import CairnCore
import Foundation
import Histogram
import Synchronization

struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure write (and read) throughput and latency against Cairn or containerd.",
    discussion: """
      Writes --count blobs of --size bytes with --concurrency parallel uploads over one \
      connection (distinct pseudo-random content, so nothing deduplicates), then with --read \
      reads each back. Reports MiB/s, blobs/s and latency percentiles (HdrHistogram). \
      Against containerd give --namespace.
      """)

  @OptionGroup var client: ClientOptions
  @Option(help: "Bytes per blob (or with a unit: 4k, 64KiB, 1MiB).") var size: String = "4k"
  @Option(help: "Number of blobs.") var count: Int = 1000
  @Option(help: "Uploads (and reads) in flight at once.") var concurrency: Int = 1
  @Flag(help: "Also read every blob back.") var read = false
  @Flag(help: "Keep the blobs (default: delete them afterwards; modern API only).") var keep = false
  @Flag(help: "Print one JSON object instead of a table.") var json = false
  @Option(help: "Bytes per Write message.") var chunk: String = "1m"
  @Option(help: "Refs are PREFIX-0, PREFIX-1, ... (default bench-RANDOM); pick a prefix with `cairn cluster locate --ref` to choose the owning node.")
  var refPrefix: String?
  @Flag(help: "Label each blob containerd.io/gc.root at commit, so that a containerd daemon's garbage collector keeps it until it is read back (a daemon collects unreferenced content).")
  var gcRootLabel = false

  func run() async throws {
    guard let blobSize = ByteSize.parse(size), blobSize >= 0, let chunkBytes = ByteSize.parse(chunk), chunkBytes > 0 else {
      throw ValidationError("sizes look like 4096, 4k, 64m or 1g")
    }
    guard count > 0, concurrency > 0 else { throw ValidationError("--count and --concurrency must be positive") }
    let runID = UInt64.random(in: 1...UInt64(UInt32.max))
    let total = blobSize * Int64(count)
    let (countV, concurrencyV, readV, keepV) = (count, concurrency, read, keep)
    let prefix = refPrefix ?? "bench-\(runID)"
    let labels = gcRootLabel ? ["containerd.io/gc.root": Timestamp.now().rfc3339] : [:]
    let report: BenchReport = try await client.run { c in
      let bar = ProgressBar("write", total: total)
      let write = try await Self.phase(count: countV, concurrency: concurrencyV, bytesPerItem: blobSize, bar: bar) { i in
        let source = GeneratedSource(size: blobSize, seed: runID &* 1_000_003 &+ UInt64(i))
        let r = try await c.write(
          ref: "\(prefix)-\(i)", source: source, size: blobSize, labels: labels, chunkBytes: Int(chunkBytes),
          resume: false)
        return r.digest
      }
      bar.finish()
      var readResult: PhaseResult?
      if readV {
        let rbar = ProgressBar("read", total: total)
        let digests = write.digests
        readResult = try await Self.phase(count: countV, concurrency: concurrencyV, bytesPerItem: blobSize, bar: rbar) { i in
          let d = digests[i]!
          let n = try await c.read(d.description) { _ in }
          guard n == blobSize else { throw ContentError.dataLoss("read \(n) bytes of \(d), want \(blobSize)") }
          return d
        }
        rbar.finish()
      }
      if !keepV && c.api == .modern {
        for d in write.digests.values { try? await c.delete(d.description) }
      }
      return BenchReport(
        address: c.address.description, api: c.api.rawValue, size: blobSize, count: countV,
        concurrency: concurrencyV, write: write.stats, read: readResult?.stats)
    }
    if json {
      let enc = JSONEncoder()
      enc.outputFormatting = [.sortedKeys]
      print(String(decoding: try enc.encode(report), as: UTF8.self))
    } else {
      report.printTable()
    }
  }

  struct PhaseResult {
    var stats: PhaseStats
    var digests: [Int: Digest]
  }

  /// Runs `count` operations with `concurrency` in flight and measures each.
  static func phase(
    count: Int, concurrency: Int, bytesPerItem: Int64, bar: ProgressBar,
    _ op: @escaping @Sendable (Int) async throws -> Digest
  ) async throws -> PhaseResult {
    let counters = Counters()
    let start = ContinuousClock.now
    let results = try await withThrowingTaskGroup(of: ([UInt64], [Int: Digest]).self) { group in
      for _ in 0..<concurrency {
        group.addTask {
          var lat: [UInt64] = []
          var digests: [Int: Digest] = [:]
          while true {
            let i = counters.next.add(1, ordering: .relaxed).oldValue
            if i >= count { break }
            let t0 = ContinuousClock.now
            digests[i] = try await op(i)
            let dt = ContinuousClock.now - t0
            lat.append(UInt64(dt.components.seconds) * 1_000_000 + UInt64(dt.components.attoseconds / 1_000_000_000_000))
            bar.update(counters.done.add(bytesPerItem, ordering: .relaxed).newValue)
          }
          return (lat, digests)
        }
      }
      var all: ([UInt64], [Int: Digest]) = ([], [:])
      for try await (l, d) in group {
        all.0 += l
        all.1.merge(d) { a, _ in a }
      }
      return all
    }
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    var h = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    for l in results.0 { _ = h.record(l) }
    let bytes = Double(bytesPerItem) * Double(count)
    return PhaseResult(
      stats: PhaseStats(
        seconds: seconds, mibPerSecond: bytes / 1_048_576 / seconds, blobsPerSecond: Double(count) / seconds,
        p50us: h.valueAtPercentile(50), p90us: h.valueAtPercentile(90), p99us: h.valueAtPercentile(99),
        maxus: h.max),
      digests: results.1)
  }
}

struct PhaseStats: Codable {
  var seconds: Double
  var mibPerSecond: Double
  var blobsPerSecond: Double
  var p50us: UInt64
  var p90us: UInt64
  var p99us: UInt64
  var maxus: UInt64
}

struct BenchReport: Codable {
  var address: String
  var api: String
  var size: Int64
  var count: Int
  var concurrency: Int
  var write: PhaseStats
  var read: PhaseStats?

  func printTable() {
    print("cairn bench: \(count) x \(formatBytes(size)), concurrency \(concurrency), \(api) API at \(address)")
    print("phase   seconds    MiB/s     blobs/s   p50 ms   p90 ms   p99 ms   max ms")
    func row(_ name: String, _ s: PhaseStats) {
      print(
        String(
          format: "%-6@ %8.2f %9.1f %11.1f %8.2f %8.2f %8.2f %8.2f", name as NSString, s.seconds, s.mibPerSecond,
          s.blobsPerSecond, Double(s.p50us) / 1000, Double(s.p90us) / 1000, Double(s.p99us) / 1000,
          Double(s.maxus) / 1000))
    }
    row("write", write)
    if let read { row("read", read) }
  }
}

final class Counters: Sendable {
  let next = Atomic<Int>(0)
  let done = Atomic<Int64>(0)
}
