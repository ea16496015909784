import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Repair with real processes on loopback: hinted handoff and anti-entropy bring every
/// blob back to R replicas, a wiped node is refilled, a Delete a node missed reaches it,
/// and a read repairs the replica it found lacking. Nodes compare every second here
/// (`--repair-interval 1`); the printed times and byte counts go to docs/benchmarks.md.
@Suite(.serialized, .timeLimit(.minutes(6))) struct RepairProcessTests {
  static let fast = ["--repair-interval", "1"]

  /// Blobs of 1–8 KiB written through the given nodes, one client per node.
  func writeBlobs(_ cluster: ClusterProcesses, count: Int, through nodes: [Int], seed: UInt64) async throws -> [(Digest, Int)] {
    var out: [(Digest, Int)] = []
    try await withThrowingTaskGroup(of: [(Digest, Int)].self) { group in
      for (k, node) in nodes.enumerated() {
        group.addTask {
          try await ContentClient.with(address: cluster.address(node)) { client in
            var mine: [(Digest, Int)] = []
            for i in stride(from: k, to: count, by: nodes.count) {
              let data = StoreConformance.bytes(1024 + (i * 997) % 7168, seed: seed &+ UInt64(i))
              // As a client does while views converge around a failure (putRetrying).
              let deadline = Date().addingTimeInterval(10)
              while true {
                do {
                  _ = try await client.write(ref: "repair-\(seed)-\(i)", source: DataSource(data), size: Int64(data.count))
                  break
                } catch let e as ContentError where e.code == .unavailable && Date() < deadline {
                  continue
                }
              }
              mine.append((Digest.of(data), data.count))
            }
            return mine
          }
        }
      }
      for try await part in group { out += part }
    }
    return out
  }

  func replicas(_ d: Digest, of cluster: ClusterProcesses, r: Int) -> [Int] {
    let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
    return ring.replicas(of: d, count: r).map { cluster.ids.firstIndex(of: $0.name)! }
  }

  func repair(_ cluster: ClusterProcesses, _ i: Int) async throws -> Cairn_Peer_V1_RepairStatus {
    try await status(cluster.address(i)).repair
  }

  /// A node killed while 250 blobs are written comes back; every blob reaches its R
  /// replicas (hints first, anti-entropy for the rest), moving little more than the
  /// minimum: the bytes of the blobs the node is a replica of.
  @Test func nodeDownDuringWritesGetsEveryBlobBack() async throws {
    try await withCluster(
      try await converged(ClusterProcesses.start(count: 4, replicas: 3, writeQuorum: 2, extraArgs: Self.fast))
    ) { cluster in
      await cluster.nodes[3].stop(SIGKILL)
      try await waitUntil("the others declare n4 dead") {
        try await (0..<3).asyncMap { member(try await status(cluster.address($0)), "n4")?.status }.allSatisfy { $0 == .dead }
      }
      // 250 (it was 500): in a debug build on CI's two cores each write costs about half a
      // second of CPU here, and the claim does not grow with the count.
      let blobs = try await writeBlobs(cluster, count: 250, through: [0, 1, 2], seed: 7000)
      let owed = blobs.filter { replicas($0.0, of: cluster, r: 3).contains(3) }
      let minimum = owed.reduce(0) { $0 + $1.1 }
      let restarted = Date()
      try await cluster.nodes[3].start()
      try await waitUntil("n4 holds the \(owed.count) blobs it is a replica of", timeout: 180) {
        owed.allSatisfy { cluster.holds(3, digest: $0.0.hex) }
      }
      let seconds = Date().timeIntervalSince(restarted)
      for (d, _) in blobs {
        for node in replicas(d, of: cluster, r: 3) { #expect(cluster.holds(node, digest: d.hex), "\(d) missing on n\(node + 1)") }
      }
      let received = try await repair(cluster, 3).bytesReceived
      print(
        "repair: n4 down during \(blobs.count) writes, back after restart in \(String(format: "%.2f", seconds)) s: \(owed.count) blobs, \(received) bytes received for \(minimum) needed (\(String(format: "%.2f", Double(received) / Double(minimum)))x)"
      )
      #expect(received >= UInt64(minimum))
      #expect(received <= 2 * UInt64(minimum), "repair moved more than twice the minimum")
    }
  }

  /// A node whose data directory is wiped is refilled by anti-entropy alone (no node has
  /// a hint for it: it was up for every write), each blob fetched exactly once.
  @Test func wipedNodeIsRefilledByAntiEntropy() async throws {
    try await withCluster(
      try await converged(ClusterProcesses.start(count: 3, replicas: 3, writeQuorum: 2, extraArgs: Self.fast))
    ) { cluster in
      let blobs = try await writeBlobs(cluster, count: 200, through: [0, 1], seed: 8000)
      try await waitUntil("every blob on every node", timeout: 60) {
        blobs.allSatisfy { b in (0..<3).allSatisfy { cluster.holds($0, digest: b.0.hex) } }
      }
      await cluster.nodes[2].stop(SIGKILL)
      try FileManager.default.removeItem(atPath: cluster.nodes[2].dataDir)
      let restarted = Date()
      try await cluster.nodes[2].start()
      for i in 0..<2 { #expect(try await status(cluster.address(i)).hintsPending == 0) }
      try await waitUntil("the wiped n3 holds every blob again", timeout: 180) {
        blobs.allSatisfy { cluster.holds(2, digest: $0.0.hex) }
      }
      let seconds = Date().timeIntervalSince(restarted)
      let r = try await repair(cluster, 2)
      let minimum = blobs.reduce(0) { $0 + $1.1 }
      print(
        "repair: wiped n3 refilled by anti-entropy in \(String(format: "%.2f", seconds)) s: \(r.blobsPulled) blobs, \(r.bytesPulled) bytes pulled for \(minimum) needed"
      )
      #expect(r.blobsPulled == UInt64(blobs.count))
      #expect(r.bytesPulled == UInt64(minimum))
      for (d, _) in blobs.prefix(20) {
        let data = try await ContentClient.with(address: cluster.address(2)) { try await $0.readAll(d.description) }
        #expect(Digest.of(data) == d)
      }
    }
  }

  /// Blobs deleted while a node was down stay deleted once it returns: its copies die by
  /// the tombstones anti-entropy brings, and nothing comes back on the other nodes.
  @Test func deleteMissedByADownNodeSticks() async throws {
    try await withCluster(
      try await converged(ClusterProcesses.start(count: 3, replicas: 3, writeQuorum: 2, extraArgs: Self.fast))
    ) { cluster in
      let blobs = try await writeBlobs(cluster, count: 20, through: [0], seed: 9000)
      try await waitUntil("every blob on every node", timeout: 60) {
        blobs.allSatisfy { b in (0..<3).allSatisfy { cluster.holds($0, digest: b.0.hex) } }
      }
      await cluster.nodes[2].stop(SIGKILL)
      let (deleted, kept) = (blobs.prefix(10).map(\.0), blobs.dropFirst(10).map(\.0))
      try await ContentClient.with(address: cluster.address(0)) { c in
        for d in deleted { try await c.delete(d.description) }
      }
      for d in deleted { #expect(!cluster.holds(0, digest: d.hex) && !cluster.holds(1, digest: d.hex)) }
      try await cluster.nodes[2].start()
      try await waitUntil("n3 applied the tombstones it missed", timeout: 120) {
        deleted.allSatisfy { !cluster.holds(2, digest: $0.hex) }
      }
      // Two more full rounds on every node: nothing comes back anywhere.
      let rounds = try await (0..<3).asyncMap { try await repair(cluster, $0).rounds }
      try await waitUntil("two more anti-entropy rounds on every node", timeout: 60) {
        try await (0..<3).asyncMap { try await repair(cluster, $0).rounds }.enumerated().allSatisfy { $0.element >= rounds[$0.offset] + 2 }
      }
      for d in deleted {
        for i in 0..<3 {
          #expect(!cluster.holds(i, digest: d.hex), "\(d) came back on n\(i + 1)")
          let address = cluster.address(i)
          await #expect(throws: ContentError.self) {
            _ = try await ContentClient.with(address: address) { try await $0.info(d.description) }
          }
        }
      }
      for d in kept { for i in 0..<3 { #expect(cluster.holds(i, digest: d.hex)) } }
      #expect(try await repair(cluster, 2).tombstonesApplied == UInt64(deleted.count))
    }
  }

  /// With anti-entropy off, reads through a wiped replica fetch from the others and
  /// schedule its repair: the node ends up holding what was read.
  @Test func readRepairsTheReplicaThatLacked() async throws {
    try await withCluster(
      try await converged(
        ClusterProcesses.start(count: 3, replicas: 3, writeQuorum: 2, extraArgs: ["--repair-interval", "0"]))
    ) { cluster in
      let blobs = try await writeBlobs(cluster, count: 30, through: [0], seed: 9500)
      try await waitUntil("every blob on every node", timeout: 60) {
        blobs.allSatisfy { b in (0..<3).allSatisfy { cluster.holds($0, digest: b.0.hex) } }
      }
      await cluster.nodes[2].stop(SIGKILL)
      try FileManager.default.removeItem(atPath: cluster.nodes[2].dataDir)
      try await cluster.nodes[2].start()
      _ = try await converged(cluster)
      try await ContentClient.with(address: cluster.address(2)) { c in
        for (d, _) in blobs {
          let data = try await c.readAll(d.description)
          #expect(Digest.of(data) == d)
        }
      }
      try await waitUntil("read repair refilled n3", timeout: 60) {
        blobs.allSatisfy { cluster.holds(2, digest: $0.0.hex) }
      }
      #expect(try await repair(cluster, 2).rounds == 0, "anti-entropy ran although it is off")
    }
  }

  /// A 256 MiB upload whose bytes carry their block number (so no two blocks are equal).
  static func bigUpload() -> Data {
    let block = StoreConformance.bytes(4 << 20, seed: 31)
    var data = Data()
    for i in 0..<64 {
      var b = block
      b.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(i)) { Data($0) })
      data.append(b)
    }
    return data
  }

  /// Ingest failover inside the cluster: a client uploads 256 MiB through n1 to a ref n2
  /// owns, and n2 is killed at 96 MiB. n1 moves the upload to the ref's next owner, which
  /// holds the mirrored bytes, resends what the mirror lacked from its own tail, and the
  /// client's single Write stream commits the right blob without an error. The next owner
  /// is n1 itself (the upload continues in its own store) or n3 (forwarded again).
  @Test(arguments: ["n1", "n3"]) func forwardedUploadMovesToTheNextOwner(next: String) async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = try #require(
        (0..<1000).map { "moved-\($0)" }.first {
          ring.preferenceList(at: Ring.position(ofRef: $0), count: 2).map(\.name) == ["n2", next]
        })
      let data = Self.bigUpload()
      let killedAt = Counter()
      let owner = cluster.nodes[1]
      let r = try await ContentClient.with(address: cluster.address(0)) { c in
        try await c.write(ref: ref, source: DataSource(data), size: Int64(data.count)) { offset in
          if offset >= 96 << 20, killedAt.setOnce(offset) { owner.signal(SIGKILL) }
        }
      }
      let reached = try #require(killedAt.value, "the owner was never killed")
      #expect(r.digest == Digest.of(data))
      #expect(r.resumedFrom == 0, "the client had to resume")
      let log = try String(contentsOfFile: cluster.nodes[0].logPath, encoding: .utf8)
      let moved = try #require(
        log.split(separator: "\n").first { $0.contains("its forwarded upload moved to \(next)") },
        "n1 did not say it moved the upload to \(next)")
      print("forwarded upload: owner killed at \(reached) acknowledged bytes of \(data.count); n1: \(moved)")
      let back = try await ContentClient.with(address: cluster.address(2)) { try await $0.readAll(r.digest.description) }
      #expect(Digest.of(back) == r.digest)
    }
  }

  /// Ingest failover for a client connected to the owner itself: the owner is killed in the
  /// middle of a 256 MiB upload, the client's stream dies with it; the client resumes
  /// through another node, which forwards to the ref's next owner, and that node holds the
  /// mirrored bytes: the client resends at most about one mirror lag (8 MiB) and commits
  /// the right blob.
  @Test func uploadSurvivesItsOwnersDeath() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = try #require((0..<1000).map { "failover-\($0)" }.first { ring.owner(ofRef: $0) { _ in true } == "n2" })
      let data = Self.bigUpload()
      let lag: Int64 = 8 << 20
      let killedAt = Counter()
      let owner = cluster.nodes[1]
      try await ContentClient.with(address: cluster.address(1)) { c in
        do {
          _ = try await c.write(ref: ref, source: DataSource(data), size: Int64(data.count)) { offset in
            if offset >= 96 << 20, killedAt.setOnce(offset) { owner.signal(SIGKILL) }
          }
          Issue.record("the upload finished although the node it went to was killed")
        } catch let e as ContentError {
          #expect(e.code == .unavailable, "\(e)")
        }
      }
      let reached = try #require(killedAt.value)
      var result: UploadResult?
      let deadline = Date().addingTimeInterval(60)
      while result == nil {
        do {
          result = try await ContentClient.with(address: cluster.address(0)) {
            try await $0.write(ref: ref, source: DataSource(data), size: Int64(data.count))
          }
        } catch let e as ContentError where e.code == .unavailable && Date() < deadline {
          continue
        }
      }
      let r = try #require(result)
      let resent = max(0, reached - r.resumedFrom)
      print(
        "ingest failover: owner killed at \(reached) acknowledged bytes of \(data.count); the resumed upload started at \(r.resumedFrom): \(resent) bytes resent (mirror lag \(lag))"
      )
      #expect(r.digest == Digest.of(data))
      #expect(r.resumedFrom > 0, "the client had to start over")
      #expect(resent <= 2 * lag, "resent \(resent) bytes")
      let back = try await ContentClient.with(address: cluster.address(2)) { try await $0.readAll(r.digest.description) }
      #expect(Digest.of(back) == r.digest)
    }
  }
}

extension RepairProcessTests {
  /// The ref's next owner, holding the upload's mirror, commits it as its replica when it
  /// is one: it receives no Replicate bytes for the blob, while the third replica receives
  /// the whole blob once.
  @Test func mirrorCommitsAsAReplica() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3, replicas: 3))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = "mirror-commit"
      let order = ring.preferenceList(at: Ring.position(ofRef: ref), count: 3).map { cluster.ids.firstIndex(of: $0.name)! }
      let (owner, successor, third) = (order[0], order[1], order[2])
      let before = try await (0..<3).asyncMap { try await repair(cluster, $0).bytesReceived }
      let data = StoreConformance.bytes(4 << 20, seed: 55)
      let r = try await put(cluster.address(owner), data, ref: ref)
      try await waitUntil("every node holds the blob") { (0..<3).allSatisfy { cluster.holds($0, digest: r.digest.hex) } }
      let after = try await (0..<3).asyncMap { try await repair(cluster, $0).bytesReceived }
      #expect(after[successor] == before[successor], "the next owner received the blob again")
      #expect(after[third] - before[third] == UInt64(data.count))
      #expect(Digest.of(try await get(cluster.address(successor), r.digest)) == r.digest)
    }
  }
}

final class Counter: @unchecked Sendable {
  private let lock = NSLock()
  private var stored: Int64?
  /// Records `v` the first time; true then.
  func setOnce(_ v: Int64) -> Bool {
    lock.withLock {
      guard stored == nil else { return false }
      stored = v
      return true
    }
  }
  var value: Int64? { lock.withLock { stored } }
}

/// Membership changes with real processes: a 4th node joins a loaded 3-node cluster and
/// receives its share, then a node leaves and hands its blobs off.
@Suite(.serialized, .timeLimit(.minutes(6))) struct MembershipChangeTests {
  /// Writers and readers through every node until stopped; UNAVAILABLE (views settling
  /// around a change) is retried as containerd retries it, and counted.
  final class Load: @unchecked Sendable {
    let lock = NSLock()
    var written: [(Digest, Int)] = []
    var errors: [String] = []
    var retries = 0
    var operations = 0
    var stopped = false

    func record(_ f: (Load) -> Void) { lock.withLock { f(self) } }
    var isStopped: Bool { lock.withLock { stopped } }
  }

  /// One writer-reader per address until the load is stopped: each writes a new blob, then
  /// reads back a random one already written.
  func runLoad(_ addresses: [String], _ load: Load, seed: UInt64) async {
    await withTaskGroup(of: Void.self) { group in
      for (k, address) in addresses.enumerated() {
        group.addTask {
          var i = 0
          while !load.isStopped {
            i += 1
            let data = StoreConformance.bytes(2048 + (i * 131) % 4096, seed: seed &+ UInt64(k * 100_000 + i))
            let ok = await self.retrying(load) {
              _ = try await ContentClient.with(address: address) {
                try await $0.write(ref: "load-\(seed)-\(k)-\(i)", source: DataSource(data), size: Int64(data.count))
              }
            }
            if ok { load.record { $0.written.append((Digest.of(data), data.count)) } }
            guard let (d, _) = load.lock.withLock({ load.written.randomElement() }) else { continue }
            _ = await self.retrying(load) {
              let back = try await ContentClient.with(address: address) { try await $0.readAll(d.description) }
              guard Digest.of(back) == d else { throw ContentError.dataLoss("read \(d) returned other bytes") }
            }
          }
        }
      }
    }
  }

  func retrying(_ load: Load, _ body: () async throws -> Void) async -> Bool {
    let deadline = Date().addingTimeInterval(20)
    while true {
      do {
        try await body()
        load.record { $0.operations += 1 }
        return true
      } catch let e as ContentError where e.code == .unavailable && Date() < deadline {
        load.record { $0.retries += 1 }
      } catch {
        load.record { $0.errors.append("\(error)") }
        return false
      }
    }
  }

  @Test func joinUnderLoadMovesAQuarterAndLeaveHandsOff() async throws {
    try await withCluster(
      try await converged(ClusterProcesses.start(count: 3, replicas: 3, writeQuorum: 2, extraArgs: ["--repair-interval", "1"]))
    ) { cluster in
      // A base of blobs, all on every node (3 nodes, R=3).
      var base: [(Digest, Int)] = []
      try await ContentClient.with(address: cluster.address(0)) { c in
        for i in 0..<100 {
          let data = StoreConformance.bytes(8192 + i * 37, seed: UInt64(60_000 + i))
          _ = try await c.write(ref: "base-\(i)", source: DataSource(data), size: Int64(data.count))
          base.append((Digest.of(data), data.count))
        }
      }
      let load = Load()
      let addresses = (0..<3).map { cluster.address($0) }
      let loadTask = Task { await runLoad(addresses, load, seed: 77) }

      // n4 joins through n1 while the load runs.
      try await waitUntil("the load has written 30 blobs") { load.lock.withLock { load.written.count >= 30 } }
      let beforeJoin = base + load.lock.withLock { load.written }
      let port = try freeLoopbackPorts(1)[0]
      let n4 = ServerProcess(
        dataDir: cluster.dir.path + "/n4", listen: "127.0.0.1:\(port)",
        extraArgs: ["--node-id", "n4", "--join", cluster.address(0), "--repair-interval", "1"])
      try await n4.start()
      try await stopping(n4) {
        let a4 = "127.0.0.1:\(port)"
        try await waitUntil("every node on config epoch 1 with 4 members", timeout: 60) {
          for a in addresses + [a4] {
            let s = try await status(a)
            guard s.configEpoch == 1, s.members.count == 4 else { return false }
          }
          return true
        }
        let ring = Ring(nodes: ["n1", "n2", "n3", "n4"])
        let owed = base.filter { ring.replicas(of: $0.0, count: 3).contains("n4") }
        try await waitUntil("n4 holds its share of the base blobs", timeout: 120) {
          owed.allSatisfy { FileManager.default.fileExists(atPath: "\(n4.dataDir)/blobs/sha256/\($0.0.hex)") }
        }
        load.record { $0.stopped = true }
        await loadTask.value
        let written = load.lock.withLock { load.written }
        let all = base + written
        let dirs = cluster.nodes.map(\.dataDir) + [n4.dataDir]
        let ids: [NodeID] = ["n1", "n2", "n3", "n4"]
        try await waitUntil("every blob on exactly its 3 new replicas", timeout: 120) {
          all.allSatisfy { b in
            let replicas = Set(ring.replicas(of: b.0, count: 3))
            return ids.indices.allSatisfy { i in
              FileManager.default.fileExists(atPath: "\(dirs[i])/blobs/sha256/\(b.0.hex)") == replicas.contains(ids[i])
            }
          }
        }
        // Moved: what n4 fetched to fill its share (anti-entropy, read repair), against the
        // copies stored when it joined (blobs written since reach it as commits).
        let n4Status = try await status(a4).repair
        let moved = n4Status.bytesPulled
        let stored = beforeJoin.reduce(0) { $0 + $1.1 } * 3
        let fraction = Double(moved) / Double(stored)
        let (ops, retries, errors) = load.lock.withLock { (load.operations, load.retries, load.errors) }
        print(
          "membership: n4 joined under load: fetched \(moved) bytes (\(n4Status.blobsPulled) blobs) of the \(stored) bytes stored when it joined (\(String(format: "%.3f", fraction))), \(n4Status.bytesReceived) bytes received in all; load: \(ops) operations, \(retries) UNAVAILABLE retried, \(errors.count) errors"
        )
        #expect(errors.isEmpty, "\(errors.prefix(3))")
        #expect(fraction > 0.15 && fraction < 0.40, "n4 received \(fraction) of the stored bytes")

        // n2 leaves: it hands its blobs off; every blob ends on its 3 replicas among n1, n3, n4.
        _ = try await runCairn(["cluster", "leave", "n2", "--address", cluster.address(0)])
        let after = Ring(nodes: ["n1", "n3", "n4"])
        try await waitUntil("n2 removed and its blobs handed off", timeout: 120) {
          let s = try await status(cluster.address(1))
          return !s.member && s.repair.handoffPending == 0 && s.repair.rounds > 0
            && all.allSatisfy { !FileManager.default.fileExists(atPath: "\(dirs[1])/blobs/sha256/\($0.0.hex)") }
        }
        await cluster.nodes[1].stop(SIGKILL)
        try await waitUntil("every blob on n1, n3 and n4", timeout: 120) {
          all.allSatisfy { b in
            after.replicas(of: b.0, count: 3).allSatisfy { n in
              FileManager.default.fileExists(atPath: "\(dirs[ids.firstIndex(of: n)!])/blobs/sha256/\(b.0.hex)")
            }
          }
        }
        for (d, _) in all.prefix(30) {
          let back = try await ContentClient.with(address: a4) { try await $0.readAll(d.description) }
          #expect(Digest.of(back) == d)
        }
      }
    }
  }
}
