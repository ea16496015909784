import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// Issue 15, finding 6: "durable when it returns" held only when the disk did. Tombstones,
/// hints and the adopted cluster config were written with every error discarded, so a
/// Delete answered OK with no durable tombstone. Here a real node's tombstone (or config)
/// cannot be written: a directory stands where the helper's temp file goes, which fails
/// the write as a full disk would (and works when the tests run as root, unlike chmod).
@Suite struct DurabilityTests {
  static func block(_ path: String) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
  }

  static func log(_ node: ServerProcess) throws -> String { try String(contentsOfFile: node.logPath, encoding: .utf8) }

  /// A one-node cluster: tombstones and the cluster config exist in cluster mode only,
  /// and one node is light enough to run beside every other suite on 2 cores.
  static func singleNode(_ name: String) async throws -> (ServerProcess, TemporaryDirectory) {
    let dir = try TemporaryDirectory(name)
    let port = try freeLoopbackPorts(1)[0]
    let node = ServerProcess(
      dataDir: dir.path + "/n1", listen: "127.0.0.1:\(port)", extraArgs: ["--node-id", "n1", "--peers", "n1=127.0.0.1:\(port)"])
    try await node.start()
    try await waitUntil("n1 serves") { try await ContentClient.with(address: node.tcpAddress) { try await $0.isServing() } }
    return (node, dir)
  }

  @Test func aDeleteWhoseTombstoneIsNotDurableFails() async throws {
    let (node, dir) = try await Self.singleNode("cairn-durable-delete")
    defer { Task { _ = await node.stop(SIGKILL); _ = dir } }
    let data = Data("a blob whose Delete cannot be recorded".utf8)
    let digest = try await ContentClient.with(address: node.tcpAddress) {
      try await $0.write(ref: "durable-delete", source: DataSource(data), size: Int64(data.count)).digest
    }
    let blocker = "\(node.dataDir)/tombstones/\(digest).tmp"
    try Self.block(blocker)
    do {
      try await ContentClient.with(address: node.tcpAddress) { try await $0.delete(digest.description) }
      Issue.record("the Delete answered OK with no durable tombstone")
    } catch let e as ContentError {
      // The caller is told what failed, not where the node keeps its files; the log says.
      #expect(e.code == .internalError && !e.message.contains(node.dataDir), "\(e)")
    }
    #expect(try Self.log(node).contains("tombstones/\(digest).tmp"), "the failing file is named in the log")
    // Nothing was deleted: the copy is there and readable.
    #expect(FileManager.default.fileExists(atPath: "\(node.dataDir)/blobs/sha256/\(digest.hex)"), "the copy went without its tombstone")
    #expect(try await ContentClient.with(address: node.tcpAddress) { try await $0.readAll(digest.description) } == data)

    // Once the disk takes it, the Delete succeeds, its tombstone is on disk, and the blob
    // stays deleted across a restart.
    try FileManager.default.removeItem(atPath: blocker)
    try await ContentClient.with(address: node.tcpAddress) { try await $0.delete(digest.description) }
    let stone = try String(contentsOfFile: "\(node.dataDir)/tombstones/\(digest)", encoding: .utf8)
    #expect(Int64(stone.trimmingCharacters(in: .whitespacesAndNewlines)) != nil, "the tombstone: \(stone)")
    #expect(!FileManager.default.fileExists(atPath: "\(node.dataDir)/blobs/sha256/\(digest.hex)"))
  }

  @Test func aMembershipChangeThatCannotBeKeptFails() async throws {
    let (node, dir) = try await Self.singleNode("cairn-durable-config")
    defer { Task { _ = await node.stop(SIGKILL); _ = dir } }
    let before = try await ContentClient.with(address: node.tcpAddress) { try await $0.clusterStatus() }.configEpoch
    let blocker = node.dataDir + "/cluster-config.json.tmp"
    try Self.block(blocker)
    do {
      _ = try await ContentClient.with(address: node.tcpAddress) { try await $0.changeMembership(add: ["n2": "127.0.0.1:1"], remove: []) }
      Issue.record("the change answered OK though a restart would forget it")
    } catch let e as ContentError {
      #expect(e.code == .internalError && !e.message.contains(node.dataDir), "\(e)")
    }
    #expect(try await ContentClient.with(address: node.tcpAddress) { try await $0.clusterStatus() }.configEpoch == before, "adopted without keeping it")
    #expect(try Self.log(node).contains("not adopted: writing"), "the failure is logged")
    #expect(try Self.log(node).contains("cluster-config.json"), "the failing file is named in the log")

    try FileManager.default.removeItem(atPath: blocker)
    let after = try await ContentClient.with(address: node.tcpAddress) { try await $0.changeMembership(add: ["n2": "127.0.0.1:1"], remove: []) }
    #expect(after.epoch == before + 1)
    let kept = try String(contentsOfFile: node.dataDir + "/cluster-config.json", encoding: .utf8)
    #expect(kept.contains("\"n2\""), "\(kept)")
  }

  /// A node's own files that it cannot use are named in its log, not skipped in silence.
  @Test func damagedFilesAreLoggedAtStart() async throws {
    let dir = try TemporaryDirectory("cairn-damaged")
    let port = try freeLoopbackPorts(1)[0]
    let args = ["--node-id", "n1", "--peers", "n1=127.0.0.1:\(port)"]
    let data = dir.path + "/n1"
    let first = ServerProcess(dataDir: data, listen: "127.0.0.1:\(port)", extraArgs: args)
    try await first.start()
    _ = await first.stop()
    let digest = "sha256:" + String(repeating: "ab", count: 32)
    try Data("not a time\n".utf8).write(to: URL(fileURLWithPath: "\(data)/tombstones/\(digest)"))
    try Data("{ not json".utf8).write(to: URL(fileURLWithPath: "\(data)/cluster-config.json"))
    try Data().write(to: URL(fileURLWithPath: "\(data)/tombstones/\(digest).tmp"))
    let second = ServerProcess(dataDir: data, listen: "127.0.0.1:\(port)", extraArgs: args)
    try await second.start()
    defer { Task { _ = await second.stop(SIGKILL) } }
    let log = try Self.log(second).split(separator: "\n")
    #expect(log.contains { $0.contains("ignoring the tombstone") && $0.contains(digest) }, "\(log.suffix(20))")
    #expect(log.contains { $0.contains("cluster-config.json: not a cluster config") }, "\(log.suffix(20))")
    #expect(log.contains { $0.contains("removing") && $0.contains("\(digest).tmp") }, "\(log.suffix(20))")
    #expect(!FileManager.default.fileExists(atPath: "\(data)/tombstones/\(digest).tmp"))
  }
}
