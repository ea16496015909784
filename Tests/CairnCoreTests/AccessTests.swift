import CairnCore
import Testing

@Suite struct AccessTests {
  @Test func methodsNeedTheirPermission() {
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Info") == .read)
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/ListStatuses") == .read)
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Write") == .write)
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Update") == .write)
    #expect(Permission.required(forMethod: "containerd.services.content.v1.Content/Delete") == .delete)
    #expect(Permission.required(forMethod: "containerd.v1.Content/Status") == .read)
    #expect(Permission.required(forMethod: "cairn.peer.v1.Peer/Replicate") == .admin)
    #expect(Permission.required(forMethod: "grpc.health.v1.Health/Check") == nil)
    #expect(Permission.required(forMethod: "some.Unknown/Thing") == .admin)
    let reader = Grant(client: nil, permissions: [.read])
    #expect(reader.allows(.read) && !reader.allows(.write))
    #expect(Grant(client: nil, permissions: [.admin]).allows(.delete))
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
