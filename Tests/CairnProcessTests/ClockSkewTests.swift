import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15, finding 3: a wrong clock poisoned a digest. Three real nodes, one whose wall
/// clock runs a day ahead and one a day behind (libfaketime; their timers keep real time),
/// take Deletes and uploads: every blob uploaded again after its Delete stays readable on
/// every node through repair rounds, and nothing deleted comes back.
@Suite(.serialized) struct ClockSkewTests {
  static let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

  static func skewed(_ offset: String) -> [String: String] {
    ["LD_PRELOAD": faketime, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"]
  }

  @Test func aDayOffEitherWayPoisonsNoDigest() async throws {
    guard FileManager.default.fileExists(atPath: Self.faketime) else {
      Issue.record("libfaketime is not installed (Debian's faketime package; .ci/run installs it)")
      return
    }
    // n1 true, n2 a day ahead, n3 a day behind.
    let cluster = try await ClusterProcesses.start(
      count: 3, extraArgs: ["--repair-interval", "1"], perNodeEnv: [1: Self.skewed("+1d"), 2: Self.skewed("-1d")])
    defer { Task { await cluster.stopAll() } }
    let (n1, n2, n3) = (cluster.address(0), cluster.address(1), cluster.address(2))
    do {
      // Three processes under LD_PRELOAD start slowly beside the rest of the clusters phase.
      try await waitUntil("every node is ready (its clock has heard its peers)", timeout: 60) {
        for a in [n1, n2, n3] where !(try await ContentClient.with(address: a) { try await $0.isServing() }) { return false }
        return true
      }
    } catch {
      for (i, node) in cluster.nodes.enumerated() {
        let log = (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
        Issue.record("n\(i + 1)'s log ends:\n\(log.split(separator: "\n").suffix(20).joined(separator: "\n"))")
      }
      throw error
    }
    // As a careful client: UNAVAILABLE is retried (under CI load SWIM may suspect a node
    // for a moment), but never a replica's refusal of an upload as deleted after it: that
    // is the poisoning this test is about, even when it would pass in a second.
    func put(_ data: Data, via address: String, ref: String) async throws -> Digest {
      try await retryingUnavailable(timeout: 20, unless: { $0.message.contains("deleted after its creation") }) {
        try await ContentClient.with(address: address) { try await $0.write(ref: ref, source: DataSource(data), size: Int64(data.count)).digest }
      }
    }
    func delete(_ d: Digest, via address: String) async throws {
      try await retryingUnavailable(timeout: 20) { try await ContentClient.with(address: address) { try await $0.delete(d.description) } }
    }
    func readable(_ d: Digest) async -> [Bool] {
      var out: [Bool] = []
      for a in [n1, n2, n3] { out.append((try? await ContentClient.with(address: a) { try await $0.readAll(d.description) }) != nil) }
      return out
    }
    // Deleted through the node a day ahead, uploaded again through the others (the old
    // code refused such an upload for a day, "deleted after its creation", whenever the
    // ref's owner was a node with a sane clock: several refs, so that owners vary), and the
    // other way round.
    defer {
      if let dir = ProcessInfo.processInfo.environment["CAIRN_KEEP_LOGS"] {
        for (i, node) in cluster.nodes.enumerated() { try? FileManager.default.copyItem(atPath: node.logPath, toPath: "\(dir)/n\(i + 1).log") }
      }
    }
    let a = Data("layer a".utf8)
    let da = try await put(a, via: n1, ref: "a-first")
    for i in 0..<6 {
      try await delete(da, via: n2)
      #expect(try await put(a, via: [n1, n3][i % 2], ref: "a-again-\(i)") == da, "upload \(i) after the Delete")
    }
    let b = Data("layer b".utf8)
    let db = try await put(b, via: n2, ref: "b1")
    try await delete(db, via: n3)
    #expect(try await put(b, via: n2, ref: "b2") == db)
    // Deleted and left deleted, through either skewed node.
    let c = try await put(Data("layer c".utf8), via: n3, ref: "c1")
    try await delete(c, via: n2)
    let e = try await put(Data("layer e".utf8), via: n2, ref: "e1")
    try await delete(e, via: n3)

    // Through repair rounds on every node.
    let start = try await ContentClient.with(address: n1) { try await $0.clusterStatus() }.repair.rounds
    try await waitUntil("three anti-entropy rounds pass", timeout: 60) {
      try await ContentClient.with(address: n1) { try await $0.clusterStatus() }.repair.rounds >= start + 3
    }
    #expect(await readable(da) == [true, true, true], "uploaded again after its Delete: readable everywhere")
    #expect(await readable(db) == [true, true, true])
    try await waitUntil("both live blobs are back on every replica") {
      (0..<3).allSatisfy { cluster.holds($0, digest: da.hex) && cluster.holds($0, digest: db.hex) }
    }
    for d in [c, e] {
      #expect(await readable(d) == [false, false, false], "deleted stays deleted")
      #expect((0..<3).allSatisfy { !cluster.holds($0, digest: d.hex) }, "no copy came back")
    }
    // What the nodes say of their clocks.
    let s2 = try await ContentClient.with(address: n2) { try await $0.clusterStatus() }
    #expect(s2.clockOffsetNanos > 80_000_000_000_000, "n2's wall clock reads a day ahead of the cluster's median")
  }
}
