import ArgumentParser
import CairnClient
import CairnCore
import Foundation
import Synchronization

/// The thundering herd of an image cache: many hosts start the same big layer at once.
struct Herd: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Read one blob with many concurrent clients, each on its own connection, and time it against one reader.",
    discussion: """
      First one reader alone, then --readers at once (connections opened beforehand). Every \
      reader checks the digest of what it got. Against a cluster node, also reports how many \
      fetches from other nodes each phase started (cluster status's remote fetches): through a \
      node without a replica, concurrent readers should share one.
      """)

  @OptionGroup var client: ClientOptions
  @Option(help: "Concurrent readers.") var readers: Int = 32
  @Flag(help: "Print one JSON object instead of a table.") var json = false
  @Argument(help: "The blob's digest.") var digest: String

  struct Report: Codable {
    var digest: String
    var bytes: Int64
    var singleSeconds: Double
    var singleFetches: UInt64?
    var readers: Int
    var herdSeconds: Double
    var herdFetches: UInt64?
    var slowestReaderSeconds: Double
  }

  func run() async throws {
    guard readers > 0 else { throw ValidationError("--readers must be positive") }
    let d: Digest
    do { d = try Digest(parsing: digest) } catch { throw ValidationError(error.message) }
    let (address, api, n) = (client.address, client.api, readers)
    let fetches: @Sendable () async -> UInt64? = {
      try? await ContentClient.with(address: address) { try await $0.clusterStatus().remoteFetches }
    }
    let report: Report = try await client.run { c in
      let size = try await c.info(d.description).size
      let f0 = await fetches()
      let t0 = ContinuousClock.now
      let got = try await c.readAll(d.description)
      guard Digest.of(got) == d else { throw ContentError.dataLoss("single read did not match \(d)") }
      let single = (ContinuousClock.now - t0).seconds
      let f1 = await fetches()
      let bar = ProgressBar("herd", total: size * Int64(n))
      let clients = try (0..<n).map { _ in try ContentClient.connect(address: address, api: api) }
      let runners = clients.map { c in Task { try? await c.runConnections() } }
      defer {
        for c in clients { c.close() }
        for r in runners { r.cancel() }
      }
      // Open every connection before the herd starts, so that it starts at once.
      for c in clients { _ = try await c.info(d.description) }
      let t1 = ContinuousClock.now
      let slowest = try await withThrowingTaskGroup(of: Double.self) { group in
        for c in clients {
          group.addTask {
            let started = ContinuousClock.now
            let hasher = Mutex(Digester(d.algorithm))
            let n = try await c.read(d.description) { chunk in
              hasher.withLock { $0.update(chunk) }
              bar.advance(Int64(chunk.count))
            }
            guard n == size, hasher.withLock { $0.digest() } == d else { throw ContentError.dataLoss("a reader got bytes that do not match \(d)") }
            return (ContinuousClock.now - started).seconds
          }
        }
        return try await group.reduce(0) { max($0, $1) }
      }
      let herd = (ContinuousClock.now - t1).seconds
      bar.finish()
      let f2 = await fetches()
      return Report(
        digest: d.description, bytes: size, singleSeconds: single, singleFetches: f1.flatMap { a in f0.map { a - $0 } },
        readers: n, herdSeconds: herd, herdFetches: f2.flatMap { a in f1.map { a - $0 } }, slowestReaderSeconds: slowest)
    }
    if json {
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys]
      print(String(decoding: try e.encode(report), as: UTF8.self))
      return
    }
    let mib = Double(report.bytes) / 1_048_576
    print("blob \(report.digest), \(formatBytes(report.bytes))")
    print("                      seconds    MiB/s per reader    total MiB/s    fetches from other nodes")
    print(String(format: "1 reader           %10.2f %19.1f %14.1f    %@", report.singleSeconds, mib / report.singleSeconds, mib / report.singleSeconds, report.singleFetches.map(String.init) ?? "-"))
    print(String(format: "%3d readers at once %9.2f %19.1f %14.1f    %@", n, report.herdSeconds, mib / report.slowestReaderSeconds, mib * Double(n) / report.herdSeconds, report.herdFetches.map(String.init) ?? "-"))
  }
}

extension Duration {
  var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
