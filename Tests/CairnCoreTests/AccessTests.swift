import CairnCore
import Foundation
import Testing

@Suite struct AccessTests {
  @Test func methodsNeedTheirPermission() {
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Info") == [.read])
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/ListStatuses") == [.read])
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Write") == [.write])
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Update") == [.write])
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Delete") == [.delete])
    #expect(Permission.required(forMethod: "containerd.v1.Content/Status") == [.read])
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/Replicate") == [.peer])
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/Gossip") == [.peer])
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/ClusterStatus") == [.admin, .monitor, .peer])
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/Members") == [.read, .admin, .monitor, .peer])
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/ChangeMembership") == [.admin, .peer])
    #expect(Permission.required(forMethod: "grpc.health.v1.Health/Check") == nil)
    #expect(Permission.required(forMethod: "grpc.health.v1.Health/Watch") == [.read])
    #expect(Permission.required(forMethod: "some.Unknown/Thing") == [.admin])
    let reader = Grant(client: nil, permissions: [.read])
    #expect(reader.allows(.read) && !reader.allows(.write))
    let admin = Grant(client: nil, permissions: [.admin])
    #expect(admin.allows(.delete) && admin.allows(.monitor))
    // Operators are not peers, and peers are not clients.
    #expect(!admin.allows(.peer))
    let peer = Grant(client: try? ClientID("n1"), permissions: [.peer])
    #expect(peer.allows(.peer) && !peer.allows(.read) && !peer.allows(.admin) && peer.peer == "n1")
    #expect(Grant(client: try? ClientID("farm"), permissions: [.read, .write]).peer == nil)
  }

  @Test func certificateRolesComeFromSANURIs() throws {
    #expect(CertificateRole(uri: "cairn://peer/n1") == .peer("n1"))
    #expect(CertificateRole(uri: "cairn://operator/alice") == .operatorRole("alice"))
    #expect(CertificateRole(uri: "cairn://client/host-a") == .client(try ClientID("host-a")))
    for bad in ["cairn://peer/", "cairn://peer/a/b", "cairn://king/n1", "spiffe://cairn/peer/n1", "cairn:/peer/n1", "cairn://peer/n 1"] {
      #expect(CertificateRole(uri: bad) == nil, "\(bad)")
    }
    #expect(CertificateRole.from(uris: ["https://example.com", "cairn://client/x", "cairn://peer/n1"]) == .client(try ClientID("x")))
    #expect(CertificateRole.peer("n1").grant.permissions == [.peer])
    #expect(CertificateRole.client(try ClientID("x")).grant.client?.name == "x")
    #expect(!CertificateRole.client(try ClientID("x")).grant.allows(.admin))
  }

  @Test func tokensFileRoundTripsAndStoresNoSecret() throws {
    let (token, line) = TokenTable.newToken(client: "farm", permissions: [.write, .read])
    #expect(!line.contains(token))
    #expect(line.hasPrefix("farm read,write sha256:"))
    let table = try TokenTable(parsing: "# comment\n\n\(line)   # trailing comment\n", source: "tokens")
    let grant = try #require(table.grant(forToken: token))
    #expect(grant.client?.name == "farm" && grant.permissions == [.read, .write])
    #expect(table.grant(forToken: token + "x") == nil)
  }

  @Test func badTokenLinesNameTheLine() {
    let hash = TokenTable.hash(of: "t")
    let cases: [(String, String)] = [
      ("farm read", "tokens:1: expected CLIENT PERMISSIONS sha256:HEX"),
      ("farm fly \(hash)", "tokens:1: unknown permission \"fly\""),
      ("farm read sha256:abc", "tokens:1: token hash must be"),
      ("far/m read \(hash)", "tokens:1: client"),
      ("a read \(hash)\nb read \(hash)", "tokens:2: the same token hash appears twice"),
      ("n1 peer,read \(hash)", "tokens:1: a peer token names its node"),
      ("* peer \(hash)", "tokens:1: a peer token names its node"),
    ]
    for (text, expected) in cases {
      do {
        _ = try TokenTable(parsing: text, source: "tokens")
        Issue.record("accepted \(text)")
      } catch {
        #expect(error.code == .invalidArgument && error.message.contains(expected), "\(error.message)")
      }
    }
  }

  @Test func rateBucketsAllowTheBurstThenTheRate() {
    var b = RateBuckets(rate: 2, burst: 3)
    var taken: [Bool] = []
    for (key, now) in [("c", 100.0), ("c", 100), ("c", 100), ("c", 100), ("other", 100), ("c", 100.4), ("c", 100.5), ("c", 100.5)] {
      taken.append(b.take(key, now: now))
    }
    // The burst of 3, then empty; buckets are per client; one token per 1/rate seconds.
    #expect(taken == [true, true, true, false, true, false, true, false])
    var later: [Bool] = []
    for _ in 0..<4 { later.append(b.take("c", now: 200)) }
    #expect(later == [true, true, true, false], "refilled to the burst, no more")
  }
}

/// A watcher that reads slowly sees the latest progress of each ingest and every end, and
/// one that falls behind for good has its stream ended instead of silently losing events.
@Suite struct EventHubTests {
  static func progress(_ ref: String, _ offset: Int64) -> IngestEvent {
    .progress(IngestStatus(ref: ref, offset: offset, total: 0, expected: nil, startedAt: Timestamp(totalNanoseconds: 0), updatedAt: Timestamp(totalNanoseconds: offset)))
  }

  @Test func progressCoalescesPerRefAndEndsAreKept() async {
    let hub = EventHub<IngestEvent>(bufferLimit: 8)
    let stream = hub.subscribe()
    let d = Digest.of(Data("x".utf8))
    for i in 1...1000 { hub.publish(Self.progress("a", Int64(i))) }
    hub.publish(Self.progress("b", 1))
    hub.publish(.committed(ref: "a", digest: d, size: 1000))
    hub.publish(Self.progress("a", 1))  // the same ref, a new upload
    hub.publish(Self.progress("a", 2))
    var seen: [IngestEvent] = []
    for await e in stream {
      seen.append(e)
      if seen.count == 4 { break }
    }
    #expect(seen == [Self.progress("a", 1000), Self.progress("b", 1), .committed(ref: "a", digest: d, size: 1000), Self.progress("a", 2)])
  }

  @Test func aSubscriberThatFallsBehindIsEnded() async {
    let hub = EventHub<IngestEvent>(bufferLimit: 3)
    let stream = hub.subscribe()
    for i in 0..<4 { hub.publish(.aborted(ref: "r\(i)")) }
    var seen = 0
    for await _ in stream { seen += 1 }
    #expect(seen == 0, "ended, not a silent gap")
    #expect(hub.pending == 0)
  }
}
