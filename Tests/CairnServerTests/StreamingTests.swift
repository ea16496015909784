import CairnClient
import CairnCore
import CairnProto
import CairnTestKit
import Foundation
import GRPCCore
import Testing

@Suite(.timeLimit(.minutes(2))) struct StreamingTests {
  /// The seed Status watch streams the snapshot, then progress, and ends when every
  /// followed ingest is committed.
  @Test func statusWatchFollowsUntilCommit() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    let blob = bytes(3000, seed: 3)
    try await ContentClient.with(address: node.unix, api: .seed) { client in
      let w = try await node.store.openWriter(ref: "build/a", total: 3000, expected: nil)
      _ = try await w.append(blob.prefix(1000))
      let (updates, sink) = AsyncStream.makeStream(of: IngestStatus.self)
      let watcher = Task {
        try await client.watchStatus(prefixes: ["build/"]) { sink.yield($0) }
        sink.finish()
      }
      var it = updates.makeAsyncIterator()
      let snapshot = try #require(await it.next())
      #expect(snapshot.ref == "build/a" && snapshot.offset == 1000)
      _ = try await w.append(blob.subdata(in: 1000..<2000))
      var seen = try #require(await it.next())
      #expect(seen.offset == 2000)
      // A second matching ingest started during the watch joins it.
      let w2 = try await node.store.openWriter(ref: "build/b", total: 0, expected: nil)
      seen = try #require(await it.next())
      #expect(seen.ref == "build/b")
      _ = try await w.append(blob.subdata(in: 2000..<3000))
      _ = try await w.commit(size: 3000, expected: nil, labels: [:])
      await w.close()
      try await node.store.abort(ref: "build/b")
      await w2.close()
      var rest: [IngestStatus] = []
      while let u = await it.next() { rest.append(u) }
      try await watcher.value  // the stream ended by itself
      // Once each: the commit adds no copy of the last progress (it printed twice).
      #expect(rest.filter { $0.ref == "build/a" && $0.offset == 3000 }.count == 1, "\(rest)")
      #expect(!rest.contains { $0.ref == "other" })
    }
  }

  /// An upload whose commit finds its content stored already (ALREADY_EXISTS) ends the
  /// watch that follows it, as a commit does (`cairn status --watch` waited forever).
  @Test func statusWatchEndsWhenTheContentWasStoredAlready() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    let blob = bytes(2000, seed: 4)
    try await ContentClient.with(address: node.unix, api: .seed) { client in
      _ = try await client.write(ref: "first", source: DataSource(blob), size: 2000)
      let w = try await node.store.openWriter(ref: "dup/a", total: 2000, expected: nil)
      _ = try await w.append(blob)
      let (updates, sink) = AsyncStream.makeStream(of: IngestStatus.self)
      let watcher = Task {
        try await client.watchStatus(prefixes: ["dup/"]) { sink.yield($0) }
        sink.finish()
      }
      var it = updates.makeAsyncIterator()
      #expect(try #require(await it.next()).offset == 2000)
      await #expect(throws: ContentError.self) { _ = try await w.commit(size: 2000, expected: nil, labels: [:]) }
      await w.close()
      while await it.next() != nil {}
      try await watcher.value  // ended by itself
    }
  }

  @Test func statusWatchWithNothingToFollowEnds() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    try await ContentClient.with(address: node.tcp, api: .seed) { client in
      let (seen, sink) = AsyncStream.makeStream(of: IngestStatus.self)
      try await client.watchStatus(refs: ["nothing-here"]) { sink.yield($0) }
      sink.finish()
      var n = 0
      for await _ in seen { n += 1 }
      #expect(n == 0)
    }
  }

  /// A client that vanishes mid-upload leaves a resumable ingest; a new connection gets
  /// its offset and digest and finishes it.
  @Test func resumeAfterClientDisconnect() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    let blob = bytes(5 << 20, seed: 4)
    let (acked, ack) = AsyncStream.makeStream(of: Int64.self)
    let dropped = Task {
      try await node.withRaw { raw in
        let req = StreamingClientRequest<Containerd_Services_Content_V1_WriteContentRequest> { w in
          try await w.write(.with { $0.ref = "resume-me"; $0.action = .write; $0.data = blob.prefix(2 << 20) })
          try await Task.sleep(nanoseconds: 3_600_000_000_000)  // hold the stream until cancelled
        }
        try await ModernAPI.Client(wrapping: raw).write(request: req) { r in
          for try await m in r.messages { ack.yield(m.offset) }
        }
      }
    }
    for await offset in acked where offset == 2 << 20 { break }
    dropped.cancel()  // the connection goes away without a commit
    _ = try? await dropped.value
    try await ContentClient.with(address: node.unix) { client in
      // The server notices the disconnect and releases the lock; the lock wait covers the gap.
      let result = try await client.write(ref: "resume-me", source: DataSource(blob))
      #expect(result.resumedFrom == 2 << 20)
      #expect(result.digest == Digest.of(blob))
      #expect(try await client.readAll(result.digest.description) == blob)
    }
  }

  /// The seed's ABORT action removes the ingest and frees the ref.
  @Test func seedAbortAction() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    try await node.withRaw { raw in
      let r = try await seedWrite(raw, [
        .with { $0.ref = "to-abort"; $0.action = .write; $0.data = Data("abc".utf8) },
        .with { $0.action = .abort },
      ])
      #expect(r.last?.action == .abort)
      #expect(r.last?.digest == "")
    }
    await #expect(throws: ContentError.self) { try await node.store.status(ref: "to-abort") }
    try await ContentClient.with(address: node.tcp, api: .seed) { client in
      try await client.abort(ref: "x")  // seed abort of an unknown ref opens and drops it
    }
  }

  /// Refs are opaque: a path-like ref creates nothing outside the store's ingest directory.
  @Test func pathLikeRefsStayInsideTheStore() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    let before = try allFiles(under: node.dir.path)
    let refs = ["../../etc/passwd", "../../../../tmp/cairn-escape", "/etc/shadow", "ingest/../../x"]
    try await ContentClient.with(address: node.tcp) { client in
      for ref in refs {
        try await node.withRaw { raw in
          _ = try await modernWrite(raw, [.with { $0.ref = ref; $0.action = .write; $0.data = Data("x".utf8) }])
        }
        let st = try await client.status(ref: ref)
        #expect(st.ref == ref && st.offset == 1)
      }
    }
    let added = try allFiles(under: node.dir.path).subtracting(before)
    let ingestRoot = node.dir.path + "/data/ingest/"
    for path in added where !path.hasSuffix(".sock") {
      #expect(path.hasPrefix(ingestRoot), "file outside the ingest area: \(path)")
      let name = path.dropFirst(ingestRoot.count).split(separator: "/").first.map(String.init) ?? ""
      #expect(name.count == 64 && name.allSatisfy(\.isHexDigit), "ingest directory \(name) is not a hash")
    }
    #expect(!FileManager.default.fileExists(atPath: "/tmp/cairn-escape"))
  }

  @Test func healthReflectsShutdown() async throws {
    let node = try await TestNode.start()
    try await node.withRaw { raw in
      let health = Grpc_Health_V1_Health.Client(wrapping: raw)
      #expect(try await health.check(.with { $0.service = "" }).status == .serving)
      #expect(try await health.check(.with { $0.service = "containerd.v1.Content" }).status == .serving)
      #expect(await statusCode { _ = try await health.check(.with { $0.service = "nope" }) } == .notFound)
      try await health.watch(.with { $0.service = "" }) { response in
        var states: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
        for try await m in response.messages {
          states.append(m.status)
          if states.count == 1 { node.server.health.set(serving: false) }
          if m.status == .notServing { break }
        }
        #expect(states == [.serving, .notServing])
      }
    }
    await node.stop()
  }

  /// A big blob through the client library: pipelined 1 MiB writes, ranged reads.
  @Test func largeBlobRoundTrip() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    let blob = bytes(24 << 20, seed: 5)
    try await ContentClient.with(address: node.unix, namespace: "ns-ignored") { client in
      let r = try await client.write(ref: "big", source: DataSource(blob), size: Int64(blob.count), expected: Digest.of(blob))
      #expect(r.digest == Digest.of(blob) && r.size == Int64(blob.count))
      let back = try await client.readAll(r.digest.description, offset: 5 << 20, size: 3 << 20 + 7)
      #expect(back == blob.subdata(in: 5 << 20..<(8 << 20 + 7)))
      let again = try await client.write(ref: "big-again", source: DataSource(blob), expected: Digest.of(blob))
      #expect(again.alreadyExisted)
    }
  }
}

func allFiles(under root: String) throws -> Set<String> {
  var out: Set<String> = []
  let e = FileManager.default.enumerator(atPath: root)
  while let p = e?.nextObject() as? String { out.insert(root + "/" + p) }
  return out
}
