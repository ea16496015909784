import CairnClient
import CairnCore
import CairnProto
import CairnTestKit
import Foundation
import GRPCCore
import Testing

/// Every error code of DESIGN.md section 1, over a real socket, for both APIs.
@Suite(.timeLimit(.minutes(2))) struct ErrorCodeTests {
  @Test func modernAPI() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    try await node.withRaw { client in
      let api = ModernAPI.Client(wrapping: client)
      let missing = Digest.of(Data("missing".utf8)).description
      #expect(await statusCode { _ = try await api.info(.with { $0.digest = "sha256:nothex" }) } == .invalidArgument)
      #expect(await statusCode { _ = try await api.info(.with { $0.digest = missing }) } == .notFound)
      #expect(await statusCode { _ = try await api.delete(.with { $0.digest = missing }) } == .notFound)
      #expect(await statusCode { _ = try await api.delete(.with { $0.digest = "nope" }) } == .invalidArgument)
      #expect(await statusCode { _ = try await api.update(.with { $0.info.digest = missing }) } == .notFound)
      #expect(await statusCode { _ = try await api.status(.with { $0.ref = "no-such-ref" }) } == .notFound)
      #expect(await statusCode { _ = try await api.status(.with { $0.ref = "" }) } == .invalidArgument)
      #expect(await statusCode { _ = try await api.abort(.with { $0.ref = "no-such-ref" }) } == .notFound)
      #expect(await statusCode { _ = try await api.listStatuses(.with { $0.filters = ["ref=="] }) } == .invalidArgument)
      #expect(
        await statusCode {
          try await api.list(.with { $0.filters = ["labels.k=x"] }) { r in for try await _ in r.messages {} }
        } == .invalidArgument)
      #expect(
        await statusCode {
          try await api.read(.with { $0.digest = missing }) { r in for try await _ in r.messages {} }
        } == .notFound)

      // Write: the first message must carry a ref.
      #expect(await statusCode { _ = try await modernWrite(client, [.with { $0.action = .stat }]) } == .invalidArgument)
      // An action the API does not define is refused (as containerd does), not taken as a stat.
      #expect(await statusCode { _ = try await modernWrite(client, [.with { $0.ref = "odd"; $0.action = .UNRECOGNIZED(7) }]) } == .invalidArgument)
      // Data at an offset that is not the current one.
      #expect(
        await statusCode {
          _ = try await modernWrite(client, [
            .with { $0.ref = "off"; $0.action = .write; $0.data = Data("hello".utf8) },
            .with { $0.action = .write; $0.offset = 99; $0.data = Data("x".utf8) },
          ])
        } == .outOfRange)
      // Commit with the wrong digest, then the wrong size.
      let blob = bytes(1000, seed: 1)
      #expect(
        await statusCode {
          _ = try await modernWrite(client, [
            .with { $0.ref = "mm"; $0.action = .write; $0.data = blob },
            .with { $0.action = .commit; $0.offset = 1000; $0.expected = missing },
          ])
        } == .failedPrecondition)
      #expect(
        await statusCode {
          _ = try await modernWrite(client, [.with { $0.ref = "mm"; $0.action = .commit; $0.offset = 1000; $0.total = 999 }])
        } == .failedPrecondition)
      // The ingest survived both failures: commit it for real.
      let ok = try await modernWrite(client, [.with { $0.ref = "mm"; $0.action = .commit; $0.offset = 1000; $0.total = 1000 }])
      #expect(ok.last?.action == .commit)
      #expect(ok.last?.digest == Digest.of(blob).description)
      #expect(ok.last?.offset == 1000)
      // The same bytes again: ALREADY_EXISTS at commit, and at once when the digest is named.
      #expect(
        await statusCode {
          _ = try await modernWrite(client, [
            .with { $0.ref = "again"; $0.action = .write; $0.data = blob }, .with { $0.action = .commit; $0.offset = 1000 },
          ])
        } == .alreadyExists)
      #expect(
        await statusCode {
          _ = try await modernWrite(client, [.with { $0.ref = "named"; $0.action = .stat; $0.expected = Digest.of(blob).description }])
        } == .alreadyExists)
      // Reads past the end.
      #expect(
        await statusCode {
          try await api.read(.with { $0.digest = Digest.of(blob).description; $0.offset = 1001 }) { r in for try await _ in r.messages {} }
        } == .outOfRange)
      // Labels: a bad mask path and an oversized label.
      #expect(
        await statusCode {
          _ = try await api.update(.with { $0.info.digest = Digest.of(blob).description; $0.updateMask.paths = ["size"] })
        } == .invalidArgument)
      #expect(
        await statusCode {
          _ = try await api.update(.with {
            $0.info.digest = Digest.of(blob).description
            $0.info.labels = ["k": String(repeating: "v", count: 5000)]
          })
        } == .invalidArgument)
    }
  }

  @Test func seedAPI() async throws {
    let node = try await TestNode.start()
    defer { Task { await node.stop() } }
    try await node.withRaw(unixSocket: true) { client in
      let api = SeedAPI.Client(wrapping: client)
      let missing = Digest.of(Data("missing".utf8)).description
      #expect(await statusCode { _ = try await api.info(.with { $0.digest = "md5:00" }) } == .invalidArgument)
      #expect(await statusCode { _ = try await api.info(.with { $0.digest = missing }) } == .notFound)
      #expect(await statusCode { _ = try await seedWrite(client, [.with { $0.action = .write; $0.data = Data("x".utf8) }]) } == .invalidArgument)
      #expect(await statusCode { _ = try await seedWrite(client, [.with { $0.ref = "odd"; $0.action = .UNRECOGNIZED(-3) }]) } == .invalidArgument)
      #expect(
        await statusCode {
          _ = try await seedWrite(client, [
            .with { $0.ref = "s-off"; $0.action = .write; $0.data = Data("abc".utf8) },
            .with { $0.action = .write; $0.offset = 2; $0.data = Data("d".utf8) },
          ])
        } == .outOfRange)
      let blob = bytes(300, seed: 2)
      let r = try await seedWrite(client, [
        .with { $0.ref = "s1"; $0.action = .write; $0.data = blob; $0.expectedSize = 300 },
        .with { $0.action = .commit; $0.offset = 300; $0.expectedDigest = Digest.of(blob).description },
      ])
      #expect(r.map(\.action) == [.write, .commit])
      #expect(r.last?.digest == Digest.of(blob).description && r.last?.offset == 300)
      // Seed rule: naming a committed blob as expected_digest fails at any point.
      #expect(
        await statusCode {
          _ = try await seedWrite(client, [
            .with { $0.ref = "s2"; $0.action = .write; $0.data = Data("zz".utf8) },
            .with { $0.action = .stat; $0.expectedDigest = Digest.of(blob).description },
          ])
        } == .alreadyExists)
      #expect(
        await statusCode {
          _ = try await seedWrite(client, [
            .with { $0.ref = "s3"; $0.action = .write; $0.data = blob },
            .with { $0.action = .commit; $0.offset = 300; $0.expectedSize = 301 },
          ])
        } == .failedPrecondition)
      #expect(
        await statusCode {
          try await api.read(.with { $0.digest = Digest.of(blob).description; $0.offset = 400 }) { r in for try await _ in r.messages {} }
        } == .outOfRange)
    }
  }

  @Test func secondWriterOnOneRefIsUnavailable() async throws {
    let node = try await TestNode.start(limits: TestNode.contentionLimits)
    defer { Task { await node.stop() } }
    try await ContentClient.with(address: node.tcp) { c1 in
      try await ContentClient.with(address: node.unix) { c2 in
        let (holding, hold) = AsyncStream.makeStream(of: Void.self)
        let (releasing, release) = AsyncStream.makeStream(of: Void.self)
        // Writer 1 holds the ref open until told to finish.
        let first = Task {
          try await node.withRaw { raw in
            let req = StreamingClientRequest<Containerd_Services_Content_V1_WriteContentRequest> { w in
              try await w.write(.with { $0.ref = "shared"; $0.action = .write; $0.data = Data("abc".utf8) })
              for await _ in releasing { break }
            }
            try await ModernAPI.Client(wrapping: raw).write(request: req) { r in
              for try await _ in r.messages { hold.yield() }
            }
          }
        }
        for await _ in holding { break }
        let code = await contentCode { _ = try await c2.write(ref: "shared", source: DataSource(Data("xyz".utf8))) }
        #expect(code == .unavailable)
        release.yield()
        try await first.value
        // Released: the ref resumes at offset 3 for the next writer, whose bytes differ,
        // so the client restarts the upload from 0 and commits its own content.
        let r = try await c1.write(ref: "shared", source: DataSource(Data("xyz".utf8)))
        #expect(r.digest == Digest.of(Data("xyz".utf8)))
        #expect(r.resumedFrom == 0)
      }
    }
  }
}
