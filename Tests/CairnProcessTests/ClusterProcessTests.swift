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

/// A source that sends its first chunk and then holds the stream open until released:
/// a writer that keeps its ref's lock.
final class HoldingSource: BlobSource, @unchecked Sendable {
  private let first: Data
  private var sent = false
  let (released, release) = AsyncStream.makeStream(of: Void.self)
  let (acked, ack) = AsyncStream.makeStream(of: Int64.self)

  init(_ first: Data) { self.first = first }

  func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 { 0 }

  func next(maxBytes: Int) async throws -> Data? {
    if !sent {
      sent = true
      return first
    }
    for await _ in released { break }
    throw CancellationError()
  }
}

func status(_ address: String) async throws -> Cairn_Peer_V1_ClusterStatusResponse {
  try await ContentClient.with(address: address) { try await $0.clusterStatus() }
}

func member(_ s: Cairn_Peer_V1_ClusterStatusResponse, _ id: String) -> Cairn_Peer_V1_MemberState? {
  s.members.first { $0.state.id == id }?.state
}

/// Every node connected to every other: the state a test starts from.
func converged(_ cluster: ClusterProcesses) async throws -> ClusterProcesses {
  try await waitUntil("every node connected to every other") {
    for i in cluster.ids.indices {
      let s = try await status(cluster.address(i))
      guard s.members.count == cluster.ids.count, s.members.allSatisfy({ $0.connected && $0.state.status == .alive }) else {
        return false
      }
    }
    return true
  }
  return cluster
}

/// Runs `body` with a started cluster and stops every node afterwards, also on failure
/// (a node left running would outlive the test process and hold its output open).
func withCluster<T: Sendable>(
  _ cluster: @autoclosure () async throws -> ClusterProcesses, _ body: (ClusterProcesses) async throws -> T
) async throws -> T {
  let c = try await cluster()
  do {
    let result = try await body(c)
    await c.stopAll()
    return result
  } catch {
    await c.stopAll()
    printLogTails(of: c)
    throw error
  }
}

/// A failed test's nodes say what they saw: the last warnings and errors of each node's
/// log (the logs go away with the cluster's directory).
func printLogTails(of cluster: ClusterProcesses, lines: Int = 12) {
  for (i, node) in cluster.nodes.enumerated() {
    let log = (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
    let notable = log.split(separator: "\n").filter { $0.contains("warning") || $0.contains("error") || $0.contains("critical") }
    print("--- \(cluster.ids[i]) log, last \(lines) warnings/errors of \(notable.count):\n" + notable.suffix(lines).joined(separator: "\n"))
  }
}

func stopping<T: Sendable>(_ node: ServerProcess, _ body: () async throws -> T) async throws -> T {
  do {
    let result = try await body()
    await node.stop(SIGKILL)
    return result
  } catch {
    await node.stop(SIGKILL)
    throw error
  }
}

func put(_ address: String, _ data: Data, ref: String) async throws -> UploadResult {
  try await ContentClient.with(address: address) { try await $0.write(ref: ref, source: DataSource(data), size: Int64(data.count)) }
}

/// As a client should while views converge after a failure (about a probe period after
/// one node declares a death, every node agrees): UNAVAILABLE is retried, for up to 10 s.
func putRetrying(_ address: String, _ data: Data, ref: String) async throws -> UploadResult {
  let deadline = Date().addingTimeInterval(10)
  while true {
    do {
      return try await put(address, data, ref: ref)
    } catch let e as ContentError where e.code == .unavailable && Date() < deadline {
      continue
    }
  }
}

func get(_ address: String, _ digest: Digest) async throws -> Data {
  try await ContentClient.with(address: address) { try await $0.readAll(digest.description) }
}

@Suite(.serialized, .timeLimit(.minutes(5))) struct ClusterProcessTests {
  /// A blob acknowledged through one node is readable through every other at once, and
  /// Info, List, Update and Delete see one store.
  @Test func readAfterAckThroughEveryNode() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      var blobs: [(Digest, Data)] = []
      for i in 0..<12 {
        let data = StoreConformance.bytes(1000 + i * 20_000, seed: UInt64(100 + i))
        let r = try await put(cluster.address(i % 3), data, ref: "rw-\(i)")
        #expect(r.digest == Digest.of(data))
        for j in 0..<3 where j != i % 3 {
          #expect(try await get(cluster.address(j), r.digest) == data, "blob \(i) through n\(j + 1)")
        }
        blobs.append((r.digest, data))
      }
      let (d0, _) = blobs[0]
      let infos = try await (0..<3).asyncMap { i in try await ContentClient.with(address: cluster.address(i)) { try await $0.info(d0.description) } }
      #expect(Set(infos).count == 1, "Info differs between nodes: \(infos)")
      let listed = try await ContentClient.with(address: cluster.address(2)) { try await $0.list() }
      #expect(Set(listed.map(\.digest)) == Set(blobs.map(\.0)))
      _ = try await ContentClient.with(address: cluster.address(0)) {
        try await $0.update(d0.description, labels: ["team": "build"], fieldPaths: ["labels.team"])
      }
      let labelled = try await ContentClient.with(address: cluster.address(1)) { try await $0.info(d0.description) }
      #expect(labelled.labels["team"] == "build")
      try await ContentClient.with(address: cluster.address(1)) { try await $0.delete(d0.description) }
      for i in 0..<3 {
        await #expect(throws: ContentError.self) {
          try await ContentClient.with(address: cluster.address(i)) { try await $0.info(d0.description) }
        }
        #expect(!cluster.holds(i, digest: d0.hex))
      }
      // R = 3 of 3 nodes: every node holds every other blob.
      for (d, _) in blobs.dropFirst() {
        #expect((0..<3).allSatisfy { cluster.holds($0, digest: d.hex) })
      }
    }
  }

  /// R=3, W=2: SIGKILL of a node loses no acknowledged blob; refs it owned move to a
  /// live node; when it returns, hinted handoff gives it what it missed.
  @Test func sigkillLosesNothingAndOwnershipMoves() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      var acked: [(Digest, Data)] = []
      for i in 0..<30 {
        let data = StoreConformance.bytes(500 + i * 7_000, seed: UInt64(300 + i))
        acked.append((try await put(cluster.address(i % 3), data, ref: "before-\(i)").digest, data))
      }
      // A ref n2 owns while everyone is alive.
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = (0...).lazy.map { "owned-by-n2-\($0)" }.first { ring.owner(ofRef: $0) { _ in true } == "n2" }!

      await cluster.nodes[1].stop(SIGKILL)
      let killedAt = Date()
      for (d, data) in acked {
        for i in [0, 2] { #expect(try await get(cluster.address(i), d) == data, "\(d) through n\(i + 1)") }
      }
      // Writes to n2's refs fail until the survivors declare it dead, then go to its successor.
      let payload = StoreConformance.bytes(4096, seed: 999)
      var firstSuccess: Double?
      while Date().timeIntervalSince(killedAt) < 30 {
        if (try? await put(cluster.address(0), payload, ref: ref)) != nil {
          firstSuccess = Date().timeIntervalSince(killedAt)
          break
        }
      }
      let failover = try #require(firstSuccess, "no write for a ref of the dead owner succeeded within 30 s")
      print("cluster failover: first successful write for a ref the killed node owned \(String(format: "%.2f", failover)) s after SIGKILL")
      acked.append((Digest.of(payload), payload))

      var whileDown: [Digest] = []
      for i in 0..<10 {
        let data = StoreConformance.bytes(3000 + i, seed: UInt64(500 + i))
        whileDown.append(try await putRetrying(cluster.address(i % 2 == 0 ? 0 : 2), data, ref: "during-\(i)").digest)
      }
      try await cluster.nodes[1].start()
      try await waitUntil("hints delivered to n2") {
        let a = try await status(cluster.address(0))
        let c = try await status(cluster.address(2))
        return a.hintsPending == 0 && c.hintsPending == 0
      }
      for d in whileDown { #expect(cluster.holds(1, digest: d.hex), "n2 did not receive \(d) by hinted handoff") }
      for (d, data) in acked { #expect(try await get(cluster.address(1), d) == data) }
    }
  }

  /// A paused node is suspected (or declared dead) by the others, and refutes it with a
  /// higher incarnation once it runs again.
  @Test func pausedNodeIsSuspectedThenRefutes() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let before = try #require(member(try await status(cluster.address(0)), "n3"))
      cluster.nodes[2].signal(SIGSTOP)
      try await waitUntil("n1 suspects n3") {
        member(try await status(cluster.address(0)), "n3")?.status != .alive
      }
      cluster.nodes[2].signal(SIGCONT)
      try await waitUntil("n3 refutes and is alive again in n1's view") {
        guard let m = member(try await status(cluster.address(0)), "n3") else { return false }
        return m.status == .alive && m.incarnation > before.incarnation
      }
    }
  }

  /// A second writer of a ref, through another node, gets UNAVAILABLE while the first
  /// (forwarded to the same owner) holds the lock.
  @Test func oneWriterPerRefAcrossNodes() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3, extraArgs: ["--lock-wait", "0.2"]))) { cluster in
      let source = HoldingSource(StoreConformance.bytes(10_000, seed: 1))
      let first = Task {
        try await ContentClient.with(address: cluster.address(0)) { c in
          try await c.write(ref: "contended", source: source, resume: false) { source.ack.yield($0) }
        }
      }
      for await offset in source.acked where offset > 0 { break }
      do {
        _ = try await put(cluster.address(1), StoreConformance.bytes(100, seed: 2), ref: "contended")
        Issue.record("second writer through n2 succeeded while the first held the ref")
      } catch let e as ContentError {
        #expect(e.code == .unavailable, "\(e)")
      }
      source.release.yield()
      _ = await first.result
    }
  }

  /// Concurrent reads of one blob through a node that holds no replica share one fetch
  /// (the thundering herd; scripts/bench-herd.sh measures it with 256 MiB).
  @Test func remoteReadsShareOneFetch() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3, replicas: 2))) { cluster in
      let data = StoreConformance.bytes(24 << 20, seed: 77)
      let d = try await put(cluster.address(0), data, ref: "shared").digest
      let replicas = Ring(nodes: cluster.ids.map { NodeID($0) }).replicas(of: d, count: 2)
      let outsider = try #require(cluster.ids.firstIndex { !replicas.contains(NodeID($0)) })
      #expect(!cluster.holds(outsider, digest: d.hex))
      let before = try await status(cluster.address(outsider)).remoteFetches
      // 32 readers on 4 connections, connected before the herd starts.
      let clients = try (0..<4).map { _ in try ContentClient.connect(address: cluster.address(outsider)) }
      let runners = clients.map { c in Task { try? await c.runConnections() } }
      defer { for c in clients { c.close() } }
      for c in clients { _ = try await c.info(d.description) }
      let reads = try await withThrowingTaskGroup(of: Digest.self) { group in
        for i in 0..<32 { group.addTask { Digest.of(try await clients[i % 4].readAll(d.description)) } }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      for r in runners { r.cancel() }
      #expect(reads.count == 32 && reads.allSatisfy { $0 == d })
      let after = try await status(cluster.address(outsider)).remoteFetches
      #expect(after - before == 1, "32 concurrent reads started \(after - before) fetches")
    }
  }

  /// A replica killed in the middle of a read: the read continues on the next replica at
  /// the same offset, and the client gets every byte. (Coalescing is off so that the
  /// transfer runs at the client's pace and is still going when the replica dies.)
  @Test func readFailsOverMidStream() async throws {
    try await withCluster(try await converged(
      ClusterProcesses.start(count: 3, replicas: 2, extraArgs: ["--max-coalesced-fetch-bytes", "0"]))) { cluster in
      let data = StoreConformance.bytes(64 << 20, seed: 78)
      let d = try await putRetrying(cluster.address(0), data, ref: "failover-read").digest
      let replicas = Ring(nodes: cluster.ids.map { NodeID($0) }).replicas(of: d, count: 2)
      let outsider = try #require(cluster.ids.firstIndex { !replicas.contains(NodeID($0)) })
      let serving = try #require(cluster.ids.firstIndex(of: replicas[0].name))
      let (firstChunk, gotFirst) = AsyncStream.makeStream(of: Void.self)
      let (resume, release) = AsyncStream.makeStream(of: Void.self)
      let received = DataBoxOf<Data>()
      let reader = Task {
        try await ContentClient.with(address: cluster.address(outsider)) { c in
          try await c.read(d.description) { chunk in
            received.append(chunk)
            if received.all.count == 1 {
              gotFirst.yield()
              for await _ in resume { break }
            }
          }
        }
      }
      for await _ in firstChunk { break }
      await cluster.nodes[serving].stop(SIGKILL)
      release.yield()
      let n = try await reader.value
      #expect(n == Int64(data.count))
      #expect(received.all.reduce(into: Data()) { $0.append($1) } == data, "bytes differ after failover")
    }
  }

  /// A node stopped with SIGTERM tells its peers it is leaving before it stops serving:
  /// as soon as it has exited, the others already hold it dead, so its refs have their next
  /// owners (a crashed node is noticed a suspicion timeout later: without the leave, n2 was
  /// still alive in both views here). Started again, it is alive again.
  @Test func aGracefulStopIsADeathTheOthersKnowAtOnce() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      #expect(await cluster.nodes[1].stop(SIGTERM) == 0)
      for i in [0, 2] {
        let seen = member(try await status(cluster.address(i)), "n2")?.status
        #expect(seen == .dead, "n\(i + 1) sees n2 \(seen.map { "\($0)" } ?? "nowhere") right after its graceful stop")
      }
      let data = StoreConformance.bytes(3000, seed: 80)
      let ref = (0..<1000).map { "left-\($0)" }.first { Ring(nodes: cluster.ids.map { NodeID($0) }).owner(ofRef: $0, isLive: { _ in true }) == NodeID("n2") }!
      #expect(try await put(cluster.address(0), data, ref: ref).digest == Digest.of(data), "a ref n2 owned has its next owner")
      try await cluster.nodes[1].start()
      try await waitUntil("n2 is alive again in n1's view") { member(try await status(cluster.address(0)), "n2")?.status == .alive }
    }
  }

  /// A cluster client given one node's address learns the other members from its
  /// `cluster status` and fails over to them when that node dies (without discovery it
  /// knew only the dead node and failed after its failover budget).
  @Test func aClientGivenOneAddressLearnsTheOthers() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let data = StoreConformance.bytes(100_000, seed: 79)
      let d = try await putRetrying(cluster.address(1), data, ref: "discovery").digest
      let client = try ClusterClient(addresses: [cluster.address(0)], client: nil, failoverSeconds: 20)
      #expect(try await client.call { try await $0.info(d.description) }.size == Int64(data.count))
      try await waitUntil("the client knows every member") { Set(client.addresses) == Set((0..<3).map(cluster.address)) }
      await cluster.nodes[0].stop(SIGKILL)
      #expect(try await client.call { try await $0.readAll(d.description) } == data)
      await client.close()
    }
  }

  /// The seed API's Status watch on one node follows an upload whose ref another node
  /// owns, sent through a third node, until it commits.
  @Test func statusWatchSeesIngestsOnOtherNodes() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let ring = Ring(nodes: cluster.ids.map { NodeID($0) })
      let ref = (0...).lazy.map { "watched-\($0)" }.first { ring.owner(ofRef: $0) { _ in true } == "n2" }!
      let source = HoldingSource(StoreConformance.bytes(5000, seed: 3))
      let upload = Task {
        try await ContentClient.with(address: cluster.address(2)) { c in
          try await c.write(ref: ref, source: source, resume: false) { source.ack.yield($0) }
        }
      }
      // The ingest exists on n2 once its first bytes are acknowledged.
      for await offset in source.acked where offset >= 5000 { break }
      let updates = DataBoxOf<IngestStatus>()
      let (started, didStart) = AsyncStream.makeStream(of: Void.self)
      let watch = Task {
        try await ContentClient.with(address: cluster.address(0), api: .seed) { c in
          try await c.watchStatus(refs: [ref]) { s in
            updates.append(s)
            didStart.yield()
          }
        }
      }
      for await _ in started { break }
      source.release.yield()
      _ = await upload.result
      // The upload was cut short (HoldingSource fails after its first chunk): finish the ref.
      _ = try await put(cluster.address(2), StoreConformance.bytes(7000, seed: 4), ref: ref)
      try await watch.value
      let seen = updates.all
      #expect(seen.contains { $0.offset == 5000 }, "watch through n1 missed the progress on n2: \(seen)")
      #expect(seen.last?.offset == 7000, "watch did not end with the committed size: \(seen)")
    }
  }

  /// `cairn demo` starts a working cluster in one command and stops it on SIGINT.
  @Test func demoStartsAndStopsACluster() async throws {
    let dir = try TemporaryDirectory()
    let base = try freeConsecutiveLoopbackPorts(3)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: ServerProcess.binary)
    let adminBase = try freeConsecutiveLoopbackPorts(3)
    p.arguments = ["demo", "--nodes", "3", "--base-port", String(base), "--admin-base-port", String(adminBase), "--data", dir.path + "/demo"]
    let out = try OutputPipe()
    p.standardOutput = out.writeHandle
    try p.run()
    out.childStarted()
    defer { if p.isRunning { kill(p.processIdentifier, SIGTERM) } }
    let text = String(decoding: await out.read(until: "Ctrl-C stops every node."), as: UTF8.self)
    #expect(text.contains("n3  127.0.0.1:\(base + 2)"))
    #expect(text.contains("dashboard http://127.0.0.1:\(adminBase + 2)/"), "\(text)")
    try await waitUntil("the demo cluster answers") {
      for port in base..<base + 3 {
        guard try await status("127.0.0.1:\(port)").members.allSatisfy({ $0.connected && $0.state.status == .alive }) else {
          return false
        }
      }
      return true
    }
    let data = StoreConformance.bytes(10_000, seed: 5)
    let d = try await put("127.0.0.1:\(base)", data, ref: "demo").digest
    #expect(try await get("127.0.0.1:\(base + 2)", d) == data)
    kill(p.processIdentifier, SIGINT)
    let rest = await out.readAll()
    #expect(await exitStatus(of: p) == 0)
    #expect(String(decoding: rest, as: UTF8.self).contains("stopped"))
    await #expect(throws: ContentError.self) { try await status("127.0.0.1:\(base)") }
  }

  /// DNS discovery end to end, as far as this machine's resolver allows: `localhost`
  /// resolves to 127.0.0.1, whose reverse name is `localhost`, so the node finds itself.
  @Test func discoversPeersThroughDNS() async throws {
    let dir = try TemporaryDirectory()
    let port = try freeLoopbackPorts(1)[0]
    let node = ServerProcess(
      dataDir: dir.path + "/data", listen: "127.0.0.1:\(port)",
      extraArgs: ["--discover-dns", "localhost:\(port)", "--cluster-size", "1", "--node-id", "localhost"])
    try await node.start()
    try await stopping(node) {
      // (Hosts whose ::1 is named ip6-localhost discover that name too.)
      #expect(node.lines.contains { $0.hasPrefix("cairn: discovered") && $0.contains("localhost") })
      let s = try await status("127.0.0.1:\(port)")
      #expect(s.members.contains { $0.state.id == "localhost" && $0.state.address == "localhost:\(port)" })
    }
  }

  /// Nodes whose cluster configs differ refuse each other and say so.
  @Test func mismatchedConfigsAreReported() async throws {
    try await withCluster(try await ClusterProcesses.start(count: 2, perNodeArgs: [1: ["--replicas", "1"]])) { cluster in
      for i in 0..<2 {
        try await waitUntil("n\(i + 1) reports the mismatch") {
          try await !status(cluster.address(i)).configProblems.isEmpty
        }
      }
      let (code, out, _) = try await runCairn(["cluster", "status", "--address", cluster.address(0)])
      #expect(code == 0 && out.contains("CONFIG MISMATCH"))
    }
  }
}

final class DataBoxOf<T: Sendable>: @unchecked Sendable {
  private let lock = NSLock()
  private var items: [T] = []
  func append(_ t: T) { lock.withLock { items.append(t) } }
  var all: [T] { lock.withLock { items } }
}

extension Sequence {
  func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
    var out: [T] = []
    for e in self { out.append(try await transform(e)) }
    return out
  }
}
