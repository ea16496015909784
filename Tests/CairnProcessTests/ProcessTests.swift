import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A source that yields `data` in chunks and fails once the server has acknowledged at
/// least `failAfterAcked` bytes: an upload interrupted at a known point.
final class InterruptedSource: BlobSource, @unchecked Sendable {
  let inner: DataSource
  let failAfterAcked: Int64
  let acked = Atomic<Int64>(0)
  let (ackStream, ackContinuation) = AsyncStream.makeStream(of: Int64.self)

  init(_ data: Data, failAfterAcked: Int64) {
    inner = DataSource(data)
    self.failAfterAcked = failAfterAcked
  }

  func progress(_ offset: Int64) { ackContinuation.yield(offset) }

  func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 {
    try await inner.prepare(resumeAt: offset, digest: digest)
  }

  func next(maxBytes: Int) async throws -> Data? {
    if let chunk = try await inner.next(maxBytes: maxBytes) { return chunk }
    // Everything is sent; wait until enough is acknowledged, then fail before the commit.
    for await offset in ackStream where offset >= failAfterAcked { break }
    throw CancellationError()
  }
}

/// Acknowledged commits, recorded by the writers of the crash test.
actor Ledger {
  var committed: [Digest: Data] = [:]
  var started: [String: Data] = [:]
  func commit(_ d: Digest, _ data: Data) { committed[d] = data }
  func start(_ ref: String, _ data: Data) { started[ref] = data }
}

@Suite(.serialized, .timeLimit(.minutes(5))) struct ProcessTests {
  /// A node's unix socket can be one client's (a containerd host using the node directly):
  /// calls on it are scoped without any header; TCP stays the whole store.
  @Test func unixSocketIsOneClient() async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/n", extraArgs: ["--unix-client", "host-x"])
    try await node.start()
    defer { node.signal(SIGKILL) }
    let data = StoreConformance.bytes(5000, seed: 9)
    let d = try await ContentClient.with(address: node.unixAddress) { c in
      try await c.write(ref: "default/1/x", source: DataSource(data), size: 5000).digest
    }
    let unscopedBlob = try await ContentClient.with(address: node.tcpAddress) { c in
      try await c.write(ref: "other", source: DataSource(StoreConformance.bytes(10, seed: 10)), size: 10).digest
    }
    let seenOnSocket = try await ContentClient.with(address: node.unixAddress) { try await $0.list().map(\.digest) }
    #expect(seenOnSocket == [d])
    let whole = try await ContentClient.with(address: node.tcpAddress) { try await $0.list() }
    #expect(Set(whole.map(\.digest)) == [d, unscopedBlob])
    #expect(whole.first { $0.digest == d }?.labels["cairn.io/holder.host-x"] != nil)
    // The socket's client cannot delete what it does not hold.
    await #expect(throws: ContentError.self) {
      try await ContentClient.with(address: node.unixAddress) { try await $0.delete(unscopedBlob.description) }
    }
  }

  @Test func ingestSurvivesRestart() async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/data")
    try await node.start()
    let blob = StoreConformance.bytes(6 << 20, seed: 21)
    let source = InterruptedSource(blob.prefix(3 << 20), failAfterAcked: 3 << 20)
    try await ContentClient.with(address: node.unixAddress) { c in
      _ = try? await c.write(ref: "survivor", source: source) { source.progress($0) }
    }
    #expect(await node.stop(SIGTERM) == 0)
    try await node.start()
    try await ContentClient.with(address: node.tcpAddress) { c in
      let st = try await c.status(ref: "survivor")
      #expect(st.offset == 3 << 20)
      let r = try await c.write(ref: "survivor", source: DataSource(blob))
      #expect(r.resumedFrom == 3 << 20)
      #expect(r.digest == Digest.of(blob))
      #expect(try await c.readAll(r.digest.description) == blob)
    }
    await node.stop()
  }

  /// SIGKILL during a stream of commits: after a restart every acknowledged blob is whole,
  /// every blob on disk matches its digest, and every leftover ingest holds a true prefix
  /// of what was sent (so it resumes) or is gone.
  @Test(arguments: [1, 2, 3])
  func crashDuringCommits(round: Int) async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/data")
    try await node.start()
    let ledger = Ledger()
    let address = node.unixAddress
    let (acks, ack) = AsyncStream.makeStream(of: Void.self)
    let writers = Task {
      await withTaskGroup(of: Void.self) { group in
        for w in 0..<4 {
          group.addTask {
            _ = try? await ContentClient.with(address: address) { c in
              var i = 0
              while !Task.isCancelled {
                i += 1
                let size = [1 << 10, 64 << 10, 700 << 10, 3 << 20][(i + w) % 4]
                let data = StoreConformance.bytes(size, seed: UInt64(round * 100_000 + w * 10_000 + i))
                let ref = "crash-\(w)-\(i)"
                await ledger.start(ref, data)
                if i % 5 == 0 {
                  // Leave an ingest behind: send half and drop the stream.
                  let s = InterruptedSource(data.prefix(size / 2), failAfterAcked: Int64(size / 2))
                  _ = try? await c.write(ref: ref, source: s) { s.progress($0) }
                  continue
                }
                let r = try await c.write(ref: ref, source: DataSource(data))
                await ledger.commit(r.digest, data)
                ack.yield()
              }
            }
          }
        }
      }
    }
    var n = 0
    for await _ in acks {
      n += 1
      if n >= 40 + round * 10 { break }
    }
    await node.stop(SIGKILL)
    writers.cancel()
    await writers.value
    try await node.start()
    let committed = await ledger.committed
    let started = await ledger.started
    #expect(committed.count >= 40)
    try await ContentClient.with(address: node.unixAddress) { c in
      for (d, data) in committed {
        let info = try await c.info(d.description)
        #expect(info.size == Int64(data.count), "acknowledged \(d) has the wrong size")
        #expect(try await c.readAll(d.description) == data, "acknowledged \(d) is not whole")
      }
      for info in try await c.list() {
        let bytes = try await c.readAll(info.digest.description)
        #expect(Digest.of(bytes) == info.digest, "blob \(info.digest) does not match its digest")
      }
      for st in try await c.listStatuses() {
        let data = try #require(started[st.ref], "unknown ingest \(st.ref)")
        #expect(st.offset <= Int64(data.count))
        let r = try await c.write(ref: st.ref, source: DataSource(data))
        #expect(r.resumedFrom == st.offset || r.alreadyExisted, "ingest \(st.ref) does not hold a prefix of its data")
        #expect(r.digest == Digest.of(data))
      }
    }
    await node.stop()
  }

  /// SIGTERM during an upload: the node stops within its grace period with exit status 0
  /// and the upload resumes after a restart.
  @Test func gracefulShutdownKeepsUploadsResumable() async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/data", extraArgs: ["--shutdown-grace", "1"])
    try await node.start()
    let blob = StoreConformance.bytes(2 << 20, seed: 31)
    let (acked, ack) = AsyncStream.makeStream(of: Int64.self)
    let upload = Task {
      try await ContentClient.with(address: node.unixAddress) { c in
        _ = try await c.write(ref: "held", source: HeldSource(blob.prefix(1 << 20))) { ack.yield($0) }
      }
    }
    for await offset in acked where offset == 1 << 20 { break }
    #expect(await node.stop(SIGTERM) == 0)
    _ = try? await upload.value
    try await node.start()
    try await ContentClient.with(address: node.unixAddress) { c in
      let st = try await c.status(ref: "held")
      #expect(st.offset == 1 << 20)
      let r = try await c.write(ref: "held", source: DataSource(blob))
      #expect(r.resumedFrom == 1 << 20 && r.digest == Digest.of(blob))
    }
    await node.stop()
  }

  @Test func cliCommands() async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/data")
    try await node.start()
    let file = dir.path + "/input"
    let blob = StoreConformance.bytes(3 << 20, seed: 41)
    try blob.write(to: URL(fileURLWithPath: file))
    let a = ["--address", node.tcpAddress]

    var (status, out, err) = try await runCairn(["put", file] + a)
    #expect(status == 0, "put failed: \(err)")
    let digest = out.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(digest == Digest.of(blob).description)

    (status, out, _) = try await runCairn(["put", "-", "--address", node.unixAddress], stdin: blob)
    #expect(status == 0 && out.trimmingCharacters(in: .whitespacesAndNewlines) == digest)

    (status, _, err) = try await runCairn(["get", digest, "-o", dir.path + "/out"] + a)
    #expect(status == 0, "get failed: \(err)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/out")) == blob)

    (status, out, _) = try await runCairn(["get", digest, "--offset", "10", "--size", "5"] + a)
    #expect(status == 0 && Data(out.utf8).count <= 5 * 4)

    (status, out, _) = try await runCairn(["label", digest, "team=build", "tier=hot"] + a)
    #expect(status == 0 && out.contains("team=build"))
    (status, out, _) = try await runCairn(["ls", "-q", "labels.team==build"] + a)
    #expect(status == 0 && out.contains(digest))
    (status, out, _) = try await runCairn(["info", digest] + a)
    #expect(status == 0 && out.contains("tier=hot") && out.contains("3145728"))

    let missing = Digest.of(Data("nothing".utf8)).description
    (status, _, err) = try await runCairn(["info", missing] + a)
    #expect(status == 105, "NOT_FOUND exits 105, got \(status)")
    #expect(err.contains("NOT_FOUND"))
    // Failures found before any server is asked exit 1 (a server's answer is 100+N).
    (status, _, err) = try await runCairn(["info", "sha256:zz", "--address", "127.0.0.1:1"])
    #expect(status == 1 && err.contains("sha256:zz"), "a malformed digest is a local failure: \(status) \(err)")
    (status, _, err) = try await runCairn(["put", dir.path + "/no-such-file"] + a)
    #expect(status == 1 && err.contains("no-such-file"), "\(status) \(err)")
    (status, _, err) = try await runCairn(["info", digest, "--address", "http://\(node.tcpAddress)"])
    #expect(status == 1 && err.contains("HOST:PORT"), "\(status) \(err)")
    (status, _, err) = try await runCairn(["cluster", "status"] + a)
    #expect(status == 112 && err.contains("single node"), "\(status) \(err)")
    (status, _, err) = try await runCairn(["cluster", "locate"] + a)
    #expect(status == 64, "locate needs something to locate: \(status) \(err)")
    (status, _, err) = try await runCairn(["ls", "--api", "seed"] + a)
    #expect(status == 112, "seed has no List: UNIMPLEMENTED, got \(status) \(err)")

    // An interrupted upload, then `cairn put` with the same ref resumes it.
    let source = InterruptedSource(blob.prefix(1 << 20), failAfterAcked: 1 << 20)
    try await ContentClient.with(address: node.tcpAddress) { c in
      _ = try? await c.write(ref: "cli-resume", source: source) { source.progress($0) }
    }
    (status, out, _) = try await runCairn(["status"] + a)
    #expect(status == 0 && out.contains("cli-resume") && out.contains("1048576"))
    (status, _, _) = try await runCairn(["rm", digest] + a)
    #expect(status == 0)
    (status, out, err) = try await runCairn(["put", file, "--ref", "cli-resume"] + a)
    #expect(status == 0 && err.contains("resumed at 1.0 MiB") && out.contains(digest))

    (status, _, _) = try await runCairn(["abort", "no-such"] + a)
    #expect(status == 105)
    (status, _, err) = try await runCairn(["info", digest, "--address", "127.0.0.1:1"])
    #expect(status == 114 && err.contains("nothing answers at 127.0.0.1:1"), "an unreachable server is UNAVAILABLE: \(err)")
    (status, _, err) = try await runCairn(["info", digest, "--address", "no-port-here"])
    #expect(status == 1 && err.contains("HOST:PORT"), "a malformed address is a local failure: \(status) \(err)")
    await node.stop()
  }
}

/// The first hour's small things (issue 16): a version, downloads that resume and never
/// spray a terminal, sizes written with units.
@Suite struct CLIFirstHourTests {
  @Test func versionEverywhere() async throws {
    var (status, out, _) = try await runCairn(["version"])
    #expect(status == 0 && out == "cairn \(CairnVersion.current)\n", "\(out)")
    (status, out, _) = try await runCairn(["--version"])
    #expect(status == 0 && out.contains(CairnVersion.current))
    (status, out, _) = try await runCairn(["version", "--json"])
    let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: String]
    #expect(status == 0 && object?["version"] == CairnVersion.current, "\(out)")
  }

  @Test func getResumesAPartialDownloadAndRefusesATerminal() async throws {
    let dir = try TemporaryDirectory()
    let node = ServerProcess(dataDir: dir.path + "/data")
    try await node.start()
    defer { node.signal(SIGKILL) }
    let blob = StoreConformance.bytes(3 << 20, seed: 43)
    let digest = try await ContentClient.with(address: node.tcpAddress) { try await $0.write(ref: "resume-get", source: DataSource(blob)).digest }
    let a = ["--address", node.tcpAddress]
    let out = dir.path + "/blob"

    // An interrupted download left its first megabyte: get continues from there.
    try blob.prefix(1 << 20).write(to: URL(fileURLWithPath: out + ".partial"))
    var (status, _, err) = try await runCairn(["get", digest.description, "-o", out] + a)
    #expect(status == 0 && err.contains("continuing") && err.contains("at 1.0 MiB of 3.0 MiB"), "\(status) \(err)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == blob)
    #expect(!FileManager.default.fileExists(atPath: out + ".partial"))

    // A partial that is not the blob's start fails the digest check and is removed, so
    // that the next try starts clean.
    try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: out + "2.partial"))
    (status, _, err) = try await runCairn(["get", digest.description, "-o", out + "2"] + a)
    #expect(status == 115 && err.contains("DATA_LOSS") && err.contains("removed") && !FileManager.default.fileExists(atPath: out + "2.partial"), "\(status) \(err)")
    (status, _, err) = try await runCairn(["get", digest.description, "-o", out + "2"] + a)
    #expect(status == 0, "\(err)")

    // put --digest with content that does not match: refused, and its upload dropped
    // (it would never match on a rerun), saying so.
    let file = dir.path + "/other"
    try Data("not the blob".utf8).write(to: URL(fileURLWithPath: file))
    let promised = Digest.of(Data("what the file was meant to hold".utf8))
    (status, _, err) = try await runCairn(["put", file, "--digest", promised.description, "--ref", "wrong-content"] + a)
    #expect(status == 109 && err.contains("aborted"), "\(status) \(err)")
    var listed: String
    (status, listed, _) = try await runCairn(["status"] + a)
    #expect(status == 0 && !listed.contains("wrong-content"), "\(listed)")

    // --json for scripts: info an object, ls and status arrays, with sizes in bytes.
    var json: String
    (status, json, _) = try await runCairn(["info", digest.description, "--json"] + a)
    let info = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    #expect(status == 0 && info?["digest"] as? String == digest.description && (info?["size"] as? Int) == 3 << 20, "\(json)")
    (status, json, _) = try await runCairn(["ls", "--json"] + a)
    let blobs = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
    #expect(status == 0 && blobs?.contains { $0["digest"] as? String == digest.description } == true, "\(json)")
    (status, json, _) = try await runCairn(["status", "--json"] + a)
    let uploads = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [Any]
    #expect(status == 0 && uploads != nil, "\(json)")

    // A terminal on standard output (script(1) gives the command one) gets no bytes.
    let command = ([ServerProcess.binary, "get", digest.description] + a).joined(separator: " ")
    var said: String
    (status, said, _) = try await runTool("/usr/bin/script", ["-qec", command, "/dev/null"])
    #expect(status == 1 && said.contains("standard output is a terminal") && said.utf8.count < 1000, "\(status) \(said.prefix(300))")
    (status, said, _) = try await runTool("/usr/bin/script", ["-qec", command + " -o - | wc -c", "/dev/null"])
    #expect(status == 0 && said.contains("\(3 << 20)"), "a pipe is not a terminal: \(said.prefix(300))")
  }
}

/// Yields its data, then waits forever (until cancelled): an upload left open.
final class HeldSource: BlobSource, @unchecked Sendable {
  let inner: DataSource
  init(_ data: Data) { inner = DataSource(data) }
  func prepare(resumeAt offset: Int64, digest: Digest) async throws -> Int64 { 0 }
  func next(maxBytes: Int) async throws -> Data? {
    if let chunk = try await inner.next(maxBytes: maxBytes) { return chunk }
    try await Task.sleep(nanoseconds: 3_600_000_000_000)
    return nil
  }
}
