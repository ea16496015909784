import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A small tmpfs mounted for one test (root only: CI runs as root), unmounted after.
final class SmallDisk: @unchecked Sendable {
  let dir: TemporaryDirectory
  var path: String { dir.path + "/fs" }

  init(megabytes: Int) async throws {
    dir = try TemporaryDirectory("cairn-disk")
    try FileManager.default.createDirectory(atPath: dir.path + "/fs", withIntermediateDirectories: true)
    let (code, _, err) = try await runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", dir.path + "/fs"])
    guard code == 0 else { throw ServerProcessError("mount tmpfs failed: \(err)") }
  }

  func unmount() async {
    _ = try? await runTool("/bin/umount", ["-l", path])
  }
}

func withSmallDisk<T: Sendable>(megabytes: Int, _ body: (SmallDisk) async throws -> T) async throws -> T {
  let disk = try await SmallDisk(megabytes: megabytes)
  do {
    let result = try await body(disk)
    await disk.unmount()
    return result
  } catch {
    await disk.unmount()
    throw error
  }
}

/// A node whose disk fills: writes get RESOURCE_EXHAUSTED naming the limit, every
/// acknowledged blob stays intact, and writes work again once space is freed.
@Suite(.serialized, .timeLimit(.minutes(3)), .enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
struct CapacityProcessTests {
  @Test func highWatermarkRefusesWritesAndSpaceComesBack() async throws {
    try await withSmallDisk(megabytes: 32) { disk in
      let node = ServerProcess(dataDir: disk.path + "/data", extraArgs: ["--disk-high-watermark", "0.8"])
      try await node.start()
      try await stopping(node) {
        var acked: [(Digest, Data)] = []
        var refusal: ContentError?
        try await ContentClient.with(address: node.tcpAddress) { c in
          for i in 0..<64 where refusal == nil {
            let data = StoreConformance.bytes(1 << 20, seed: UInt64(2000 + i))
            do {
              _ = try await c.write(ref: "fill-\(i)", source: DataSource(data), size: Int64(data.count))
              acked.append((Digest.of(data), data))
            } catch let e as ContentError {
              refusal = e
            }
          }
        }
        let e = try #require(refusal, "64 MiB went onto a 32 MiB disk without a refusal")
        #expect(e.code == .resourceExhausted, "\(e)")
        #expect(e.message.contains("disk_high_watermark"), "\(e.message)")
        #expect(acked.count >= 16, "only \(acked.count) MiB accepted below an 80% watermark of 32 MiB")
        print("capacity: \(acked.count) x 1 MiB acknowledged on a 32 MiB tmpfs with an 80% watermark, then: \(e.message)")
        try await ContentClient.with(address: node.tcpAddress) { c in
          for (d, data) in acked { #expect(try await c.readAll(d.description) == data) }
          for (d, _) in acked.prefix(6) { try await c.delete(d.description) }
          let data = StoreConformance.bytes(1 << 20, seed: 3000)
          let r = try await c.write(ref: "after-delete", source: DataSource(data), size: Int64(data.count))
          #expect(r.digest == Digest.of(data))
          for (d, data) in acked.dropFirst(6) { #expect(try await c.readAll(d.description) == data) }
        }
      }
    }
  }

  /// With no watermark, the disk itself fills in the middle of an upload (ENOSPC): the
  /// client gets RESOURCE_EXHAUSTED, and once space returns the upload resumes at the
  /// offset it reached and commits the right blob.
  @Test func fullDiskMidUploadResumesWhenSpaceReturns() async throws {
    try await withSmallDisk(megabytes: 24) { disk in
      let filler = disk.path + "/filler"
      FileManager.default.createFile(atPath: filler, contents: Data(count: 8 << 20))
      let node = ServerProcess(dataDir: disk.path + "/data", extraArgs: ["--disk-high-watermark", "1"])
      try await node.start()
      try await stopping(node) {
        let data = StoreConformance.bytes(20 << 20, seed: 4000)
        try await ContentClient.with(address: node.tcpAddress) { c in
          do {
            _ = try await c.write(ref: "big", source: DataSource(data), size: Int64(data.count))
            Issue.record("a 20 MiB upload fit on a 24 MiB disk holding 8 MiB")
          } catch let e as ContentError {
            #expect(e.code == .resourceExhausted, "\(e)")
          }
          let reached = try await c.status(ref: "big").offset
          #expect(reached > 0 && reached < Int64(data.count))
          try FileManager.default.removeItem(atPath: filler)
          let r = try await c.write(ref: "big", source: DataSource(data), size: Int64(data.count))
          #expect(r.digest == Digest.of(data))
          #expect(r.resumedFrom == reached, "resumed from \(r.resumedFrom), the ingest had \(reached)")
          #expect(try await c.readAll(r.digest.description) == data)
          print("capacity: disk full at \(reached) of \(data.count) bytes; the resumed upload started there and committed")
        }
      }
    }
  }
}
