import CairnClient
import CairnCore
import CairnProto
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 14: what an attacker on the same network tried, each on real processes and real
/// sockets. Every test here failed on the code before (see the issue's findings).
@Suite(.serialized) struct TrustBoundaryTests {
  // MARK: Finding 1: a default cluster was open

  /// A node reachable from other hosts with nothing to authenticate its callers refuses to
  /// start, at once, naming what to configure; `--insecure` says it on purpose.
  @Test func anOpenNodeOffLoopbackRefusesToStart() async throws {
    let dir = try TemporaryDirectory("cairn-closed")
    let port = try freeLoopbackPorts(1)[0]
    let (status, _, err) = try await runCairn([
      "serve", "--data", dir.path + "/d", "--listen", "0.0.0.0:\(port)", "--node-id", "n1", "--peers", "n1=127.0.0.1:\(port),n2=127.0.0.1:1",
    ])
    #expect(status == 64, "exit status \(status): \(err)")
    #expect(err.contains("--insecure") && err.contains("cairn certs init") && err.contains("join the cluster as a peer"), "\(err)")
    // It exits (runCairn returns) before touching the network: no bind, no peers. How fast
    // is measured in docs/operations.md, not asserted on a loaded machine.
    // The admin port too.
    let (s2, _, e2) = try await runCairn(["serve", "--data", dir.path + "/d", "--admin-listen", "0.0.0.0:\(port)"])
    #expect(s2 == 64 && e2.contains("admin_listen") && e2.contains("tokens_file"), "\(e2)")
    // Said out loud, it runs open, and says so.
    let node = ServerProcess(dataDir: dir.path + "/open", listen: "0.0.0.0:0", extraArgs: ["--insecure"])
    try await node.start()
    defer { node.signal(SIGKILL) }
    let log = try String(contentsOfFile: node.logPath, encoding: .utf8)
    #expect(log.contains("INSECURE"), "\(log)")
  }

  /// The secure path in one go: `cairn certs init`, then deploy/systemd/cairn.toml as is
  /// (each node's own certificate, listening beyond loopback), three nodes: they converge
  /// over mTLS, a client certificate writes, an operator's sees the cluster.
  @Test func secureSetupBringsUpAThreeNodeClusterInOneGo() async throws {
    let dir = try TemporaryDirectory("cairn-secure")
    let certs = dir.path + "/certs"
    let (status, _, err) = try await runCairn(["certs", "init", "--dir", certs, "--nodes", "n1,n2,n3", "--clients", "ci"])
    #expect(status == 0, "\(err)")
    let ports = try freeLoopbackPorts(6)
    let peers = (0..<3).map { "n\($0 + 1)=127.0.0.1:\(ports[$0])" }.joined(separator: ",")
    let nodes = (0..<3).map { i in
      let id = "n\(i + 1)"
      return ServerProcess(
        dataDir: "\(dir.path)/\(id)", listen: "0.0.0.0:\(ports[i])", extraArgs: ["--config", packageRoot() + "/deploy/systemd/cairn.toml"],
        env: [
          "CAIRN_NODE_ID": id, "CAIRN_PEERS": peers, "CAIRN_ADMIN_LISTEN": "127.0.0.1:\(ports[3 + i])",
          "CAIRN_TLS_CERT": "\(certs)/peer-\(id).pem", "CAIRN_TLS_KEY": "\(certs)/peer-\(id).key", "CAIRN_TLS_CA": "\(certs)/ca.pem",
          "CAIRN_TOKENS_FILE": "\(certs)/tokens", "CAIRN_LOG_FORMAT": "text",
        ])
    }
    for n in nodes { try await n.start() }
    defer { for n in nodes { n.signal(SIGKILL) } }
    let op = ClientSecurity(caPath: certs + "/ca.pem", certificatePath: certs + "/operator-admin.pem", keyPath: certs + "/operator-admin.key")
    let ci = ClientSecurity(caPath: certs + "/ca.pem", certificatePath: certs + "/client-ci.pem", keyPath: certs + "/client-ci.key")
    let n1 = "127.0.0.1:\(ports[0])"
    try await waitUntil("the three nodes converge over mTLS") {
      let s = try await ContentClient.with(address: n1, security: op) { try await $0.clusterStatus() }
      return s.members.filter { $0.state.status == .alive && $0.connected }.count == 3 && s.security == "mTLS + client tokens"
    }
    try await waitUntil("the cluster is ready") { try await ContentClient.with(address: n1, security: ci) { try await $0.isServing() } }
    let data = Data("written over mTLS".utf8)
    let d = try await ContentClient.with(address: n1, security: ci) { try await $0.write(ref: "secure", source: DataSource(data), size: Int64(data.count)) }.digest
    let back = try await ContentClient.with(address: "127.0.0.1:\(ports[2])", security: ci) { try await $0.readAll(d.description) }
    #expect(back == data)
    // A client's failover: its credential may ask who the members are, and no more.
    let members = try await ContentClient.with(address: n1, security: ci) { try await $0.members(timeout: .seconds(5)) }
    #expect(members.map(\.id).sorted() == ["n1", "n2", "n3"] && members.allSatisfy { !$0.address.isEmpty }, "\(members)")
    await #expect(throws: ContentError.self, "a client reads the operators' cluster status") {
      _ = try await ContentClient.with(address: n1, security: ci) { try await $0.clusterStatus() }
    }
  }

  /// With peer authentication on, nothing but a peer's credential reaches the peer
  /// protocol: a client certificate, an operator certificate (except the cluster views and
  /// membership changes), a client token and an unauthenticated caller are each refused by
  /// every peer RPC, and the cluster's membership is unchanged.
  @Test func everyPeerRPCRefusesEveryNonPeer() async throws {
    let dir = try TemporaryDirectory("cairn-peers")
    let pki = try await TestPKI(in: dir.path + "/pki", nodes: ["n1", "n2", "n3"])
    let (token, line) = try await newToken("farm", "read,write,delete")
    let tokens = dir.path + "/tokens"
    try "\(line)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
    let cluster = try await ClusterProcesses.start(
      count: 3, extraArgs: ["--tokens-file", tokens], perNodeArgs: [0: pki.nodeArgs("n1"), 1: pki.nodeArgs("n2"), 2: pki.nodeArgs("n3")])
    defer { Task { await cluster.stopAll() } }
    let target = cluster.address(0)
    let operatorTLS = ClientSecurity(caPath: pki.ca, certificatePath: pki.operatorCert, keyPath: pki.operatorKey)
    try await waitUntil("the mTLS cluster converges") {
      let s = try await ContentClient.with(address: target, security: operatorTLS) { try await $0.clusterStatus() }
      return s.members.filter { $0.state.status == .alive && $0.connected }.count == 3
    }
    let callers: [(String, ClientSecurity)] = [
      ("client certificate", ClientSecurity(caPath: pki.ca, certificatePath: pki.clientCert, keyPath: pki.clientKey)),
      ("certificate without a role", ClientSecurity(caPath: pki.ca, certificatePath: pki.noRoleCert, keyPath: pki.noRoleKey)),
      ("operator certificate", operatorTLS),
      ("client token", ClientSecurity(caPath: pki.ca, token: token)),
      ("nobody", ClientSecurity(caPath: pki.ca)),
    ]
    for (who, security) in callers {
      // An operator may look at the cluster and change it, and whoever may read may ask
      // who the members are (a client's failover): not called here.
      let skip: Set<String> =
        who == "operator certificate" ? ["ClusterStatus", "ChangeMembership", "Members"] : who.hasPrefix("client") ? ["Members"] : []
      let results = try await ContentClient.with(address: target, security: security) { await everyPeerCall($0, skipping: skip) }
      for (rpc, code) in results {
        #expect(code == .permissionDenied || code == .unauthenticated, "\(who) → \(rpc): \(code.map { "\($0.name)" } ?? "succeeded")")
      }
    }
    let status = try await ContentClient.with(address: target, security: operatorTLS) { try await $0.clusterStatus() }
    #expect(status.members.map(\.state.id).sorted() == ["n1", "n2", "n3"], "membership unchanged")
    // A peer may add or remove only itself; an operator changes membership.
    let n2 = ClientSecurity(caPath: pki.ca, certificatePath: pki.peerCert("n2"), keyPath: pki.peerKey("n2"))
    do {
      _ = try await ContentClient.with(address: target, security: n2) { try await $0.changeMembership(add: ["evil": "127.0.0.1:1"], remove: []) }
      Issue.record("a peer added another node")
    } catch let e as ContentError {
      #expect(e.code == .permissionDenied && e.message.contains("only itself"), "\(e)")
    }
  }

  // MARK: Findings 2 and 3: any CA certificate was a peer; gossip trusted its `from`

  /// A gossip message (and every peer message that names its sender) must come from the
  /// peer its credential authenticates.
  @Test func aPeerCannotSpeakForAnother() async throws {
    let dir = try TemporaryDirectory("cairn-spoof")
    let pki = try await TestPKI(in: dir.path + "/pki", nodes: ["n1", "n2", "n3"])
    let cluster = try await ClusterProcesses.start(
      count: 3, perNodeArgs: [0: pki.nodeArgs("n1"), 1: pki.nodeArgs("n2"), 2: pki.nodeArgs("n3")])
    defer { Task { await cluster.stopAll() } }
    let n2 = ClientSecurity(caPath: pki.ca, certificatePath: pki.peerCert("n2"), keyPath: pki.peerKey("n2"))
    let fingerprint = try await ContentClient.with(address: cluster.address(0), security: n2) { try await $0.clusterStatus() }.fingerprint
    let c = try ContentClient.connect(address: cluster.address(0), security: n2)
    let runner = Task { try? await c.runConnections() }
    defer {
      c.close()
      runner.cancel()
    }
    // n2 reporting n3 dead in n3's own name, at the highest incarnation: refused.
    let spoofed = Cairn_Peer_V1_GossipRequest.with {
      $0.from = "n3"
      $0.clusterFingerprint = fingerprint
      $0.kind = .ping
      $0.updates = [.with { $0.id = "n3"; $0.address = cluster.address(2); $0.incarnation = .max; $0.status = .dead }]
    }
    let refusedGossip = await code { try await c.peer { _ = try await $0.gossip(spoofed) } }
    #expect(refusedGossip == .permissionDenied, "\(String(describing: refusedGossip))")
    let own = Cairn_Peer_V1_GossipRequest.with {
      $0.from = "n2"
      $0.clusterFingerprint = fingerprint
      $0.kind = .ping
    }
    let taken = await code { try await c.peer { _ = try await $0.gossip(own) } }
    #expect(taken == nil, "its own gossip is taken")
    for (what, call) in spoofedSenders(fingerprint: fingerprint) {
      let got = await code { try await call(c) }
      #expect(got == .permissionDenied, "\(what): \(String(describing: got))")
    }
    // A peer certificate from another CA, for the right node id, fails the handshake.
    let rogue = ClientSecurity(caPath: pki.ca, certificatePath: pki.rogueCert, keyPath: pki.rogueKey)
    let refused = await code { _ = try await ContentClient.with(address: cluster.address(0), security: rogue) { try await $0.clusterStatus() } }
    #expect(refused == .unavailable)
    // The spoofed death never landed: n1 knows n3 at n3's own incarnation, not at 2^64-1.
    let s = try await ContentClient.with(address: cluster.address(0), security: n2) { try await $0.clusterStatus() }
    let n3 = s.members.first { $0.state.id == "n3" }?.state
    #expect(n3 != nil && n3!.incarnation != .max && n3!.status != .dead, "\(String(describing: n3))")
  }

  // MARK: Finding 4: limits keyed by a header the client chooses

  /// 1,000 idle Write streams, each under another `cairn-client` header, count as one
  /// identity (their token); a normal client's upload on the same node goes through, and
  /// an idle stream ends after request_idle_timeout, freeing its ref.
  @Test func idleStreamsWithRotatingHeadersDoNotStarveOthers() async throws {
    let dir = try TemporaryDirectory("cairn-idle")
    let (attackerToken, attackerLine) = try await newToken("*", "read,write")
    let (victimToken, victimLine) = try await newToken("victim", "read,write")
    let tokens = dir.path + "/tokens"
    try "\(attackerLine)\n\(victimLine)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
    let node = ServerProcess(
      dataDir: dir.path + "/data",
      extraArgs: [
        "--tokens-file", tokens, "--max-active-ingests", "64", "--max-active-ingests-per-client", "16", "--request-idle-timeout", "3",
      ])
    try await node.start()
    defer { node.signal(SIGKILL) }
    let attacker = try ContentClient.connect(address: node.tcpAddress, security: ClientSecurity(token: attackerToken))
    let runner = Task { try? await attacker.runConnections() }
    defer {
      attacker.close()
      runner.cancel()
    }
    let outcomes = Outcomes()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for i in 0..<1000 {
        group.addTask {
          let source = HoldingSource(Data([1]))
          let scoped = attacker.scoped(to: "rot-\(i)")
          do {
            _ = try await scoped.write(ref: "idle-\(i)", source: source, resume: false) { _ in outcomes.note(i) }
          } catch {
            outcomes.note(i, ContentError.from(error))
          }
        }
      }
      // Every stream was either refused or took its first bytes (then went silent), so up
      // to 16 (the attacker's share) hold ingests now.
      try await waitUntil("all 1000 streams are answered", timeout: 60) { outcomes.count >= 1000 }
      // The victim's upload goes through meanwhile.
      let data = Data("the victim's blob".utf8)
      let result = try await ContentClient.with(address: node.tcpAddress, security: ClientSecurity(token: victimToken)) { c in
        try await c.write(ref: "victim", source: DataSource(data), size: Int64(data.count))
      }
      #expect(result.digest == Digest.of(data))
      try await group.waitForAll()
    }
    // Each stream ended one of two ways: refused by the attacker's own share, or ended
    // after request_idle_timeout once it fell silent (streams that reached the node after
    // earlier ones timed out got their turn, then timed out too).
    // Under CI load the attacker's connection itself was ended once (311 of its streams
    // then closed with it, "Stream unexpectedly closed"): also no share of anyone else's.
    let refused = outcomes.errors.filter { $0.code == .resourceExhausted && $0.message.contains("max_active_ingests_per_client") }
    let idle = outcomes.errors.filter { $0.code == .unavailable && $0.message.contains("request_idle_timeout") }
    let cut = outcomes.errors.filter { $0.code == .unavailable && $0.message.contains("Stream unexpectedly closed") }
    #expect(refused.count + idle.count + cut.count == 1000, "others: \(outcomes.errors.filter { !$0.message.contains("max_active_ingests_per_client") && !$0.message.contains("request_idle_timeout") && !$0.message.contains("Stream unexpectedly closed") }.prefix(3))")
    // A cut connection ends its streams before their turn to be refused (CI, with a build
    // beside it: refused 484, idle 33, cut 483).
    #expect(refused.count + cut.count >= 500 && idle.count >= 16, "refused \(refused.count), idle \(idle.count), cut \(cut.count)")
  }

  /// Connections: a cap per address (another address is not affected), and a deadline
  /// for a connection that never completes its handshake.
  @Test func connectionsAreBoundedPerAddressAndInTime() async throws {
    let dir = try TemporaryDirectory("cairn-conns")
    let node = ServerProcess(
      dataDir: dir.path + "/data", extraArgs: ["--max-connections-per-address", "4", "--handshake-timeout", "1"])
    try await node.start()
    defer { node.signal(SIGKILL) }
    // Four silent connections from 127.0.0.2; the fifth is closed at once.
    let held = try (0..<4).map { _ in try rawConnect(node.tcpAddress, from: "127.0.0.2") }
    defer { for fd in held { close(fd) } }
    let fifth = try rawConnect(node.tcpAddress, from: "127.0.0.2")
    defer { close(fifth) }
    #expect(await waitForClose(fifth, seconds: 5), "the fifth connection from one address is closed")
    // Another address (127.0.0.1) is served meanwhile.
    try await waitUntil("a client from another address is served") {
      try await ContentClient.with(address: node.tcpAddress) { try await $0.isServing() }
    }
    // The silent ones are closed by the handshake deadline.
    for fd in held { #expect(await waitForClose(fd, seconds: 10), "a connection that never sent its preface is closed") }
  }

  /// Health Check stays open for probes; a health Watch holds a stream, so it needs a
  /// credential like any read.
  @Test func healthWatchNeedsACredential() async throws {
    let dir = try TemporaryDirectory("cairn-health")
    let (token, line) = try await newToken("probe", "read")
    let tokens = dir.path + "/tokens"
    try "\(line)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
    let node = ServerProcess(dataDir: dir.path + "/data", extraArgs: ["--tokens-file", tokens])
    try await node.start()
    defer { node.signal(SIGKILL) }
    try await waitUntil("serving") { try await ContentClient.with(address: node.tcpAddress, security: .none) { try await $0.isServing() } }
    let anonymous = await code { _ = try await ContentClient.with(address: node.tcpAddress, security: .none) { try await $0.healthWatchFirst() } }
    #expect(anonymous == .unauthenticated)
    #expect(try await ContentClient.with(address: node.tcpAddress, security: ClientSecurity(token: token)) { try await $0.healthWatchFirst() })
  }

  // MARK: Finding 5: one client could break another's blob

  @Test func noClientCanBreakAnothersBlob() async throws {
    let dir = try TemporaryDirectory("cairn-labels")
    let (owner, ownerLine) = try await newToken("owner", "read,write,delete")
    let (other, otherLine) = try await newToken("other", "read,write,delete")
    let (reader, readerLine) = try await newToken("dash", "read")
    let (op, opLine) = try await newToken("*", "admin")
    let tokens = dir.path + "/tokens"
    try [ownerLine, otherLine, readerLine, opLine].joined(separator: "\n").write(toFile: tokens, atomically: true, encoding: .utf8)
    let node = ServerProcess(dataDir: dir.path + "/data", extraArgs: ["--tokens-file", tokens])
    try await node.start()
    defer { node.signal(SIGKILL) }
    func as_<T: Sendable>(_ token: String, _ body: (ContentClient) async throws -> T) async throws -> T {
      try await ContentClient.with(address: node.tcpAddress, security: ClientSecurity(token: token), body)
    }
    let data = Data("shared layer".utf8)
    let d = try await as_(owner) { try await $0.write(ref: "l", source: DataSource(data), size: Int64(data.count)).digest }.description
    _ = try await as_(other) { try await $0.info(d) }
    // 256 labels of 4000 control characters each: within containerd's rules (key + value
    // ≤ 4096), but six times that once encoded. Refused by name; the blob stays readable.
    let inflated = Dictionary(uniqueKeysWithValues: (0..<256).map { ("k\($0)", String(repeating: "\u{1}", count: 4000)) })
    let refused = await code { _ = try await as_(other) { try await $0.update(d, labels: inflated, fieldPaths: []) } }
    #expect(refused == .invalidArgument)
    #expect(try await as_(owner) { try await $0.info(d) }.size == Int64(data.count), "still readable by its owner")
    #expect(try await as_(op) { try await $0.info(d) }.size == Int64(data.count), "and by an operator")
    // One client's labels are not another's.
    _ = try await as_(other) { try await $0.update(d, labels: ["team": "other"], fieldPaths: ["labels.team"]) }
    #expect(try await as_(owner) { try await $0.info(d) }.labels["team"] == nil)
    // Nobody sets a hold by hand, an operator included.
    let forged = await code { _ = try await as_(op) { try await $0.update(d, labels: ["cairn.io/holder.x": "t"], fieldPaths: ["labels.cairn.io/holder.x"]) } }
    #expect(forged == .invalidArgument)
    // A read-only caller's Info takes no hold: when the holders let go, the blob goes.
    _ = try await as_(reader) { try await $0.info(d) }
    let holds = try await as_(op) { try await $0.info(d) }.labels.keys.filter { $0.hasPrefix("cairn.io/holder.") }.sorted()
    #expect(holds == ["cairn.io/holder.other", "cairn.io/holder.owner"], "\(holds)")
    try await as_(owner) { try await $0.delete(d) }
    try await as_(other) { try await $0.delete(d) }
    #expect(await code { _ = try await as_(op) { try await $0.info(d) } } == .notFound, "the last holder's release deleted it")
  }

  // MARK: Finding 6: two nodes on one data directory

  @Test func aSecondNodeOnOneDataDirectoryExitsAtOnce() async throws {
    let dir = try TemporaryDirectory("cairn-lock")
    let node = ServerProcess(dataDir: dir.path + "/data")
    try await node.start()
    defer { node.signal(SIGKILL) }
    let (status, _, err) = try await runCairn(["serve", "--data", dir.path + "/data", "--listen", "127.0.0.1:0"])
    #expect(status != 0 && err.contains("in use by process \(node.process.processIdentifier)"), "\(status) \(err)")
    // Nor may another node take its unix socket: it exits, and the first keeps serving there.
    let (s2, _, e2) = try await runCairn(["serve", "--data", dir.path + "/other", "--listen", "none", "--unix", node.unixPath])
    #expect(s2 != 0 && e2.contains("in use by another process"), "\(s2) \(e2)")
    try await waitUntil("the first node still serves on its socket") {
      try await ContentClient.with(address: node.unixAddress) { try await $0.isServing() }
    }
    // Once the first is gone (even killed), the directory is free.
    await node.stop(SIGKILL)
    let again = ServerProcess(dataDir: dir.path + "/data")
    try await again.start()
    again.signal(SIGKILL)
  }

  /// Limits count per credential: two `*` tokens are two callers; an anonymous caller (where
  /// anonymous reads are allowed) may not borrow a client's view by naming it.
  @Test func limitsCountPerCredentialAndAnonymousIsNobody() async throws {
    let dir = try TemporaryDirectory("cairn-keys")
    let (first, firstLine) = try await newToken("*", "read")
    let (second, secondLine) = try await newToken("*", "read")
    let tokens = dir.path + "/tokens"
    try "\(firstLine)\n\(secondLine)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
    let node = ServerProcess(
      dataDir: dir.path + "/data",
      extraArgs: [
        "--tokens-file", tokens, "--anonymous-permissions", "read", "--max-requests-per-second-per-client", "0.001",
        "--request-burst-per-client", "3",
      ])
    try await node.start()
    defer { node.signal(SIGKILL) }
    func calls(_ security: ClientSecurity, _ n: Int) async -> [ContentError.Code?] {
      var out: [ContentError.Code?] = []
      for _ in 0..<n { out.append(await code { _ = try await ContentClient.with(address: node.tcpAddress, security: security) { try await $0.listStatuses() } }) }
      return out
    }
    #expect(await calls(ClientSecurity(token: first), 4) == [nil, nil, nil, .resourceExhausted], "the first token's burst, then its rate")
    #expect(await calls(ClientSecurity(token: second), 3) == [nil, nil, nil], "the second token is another caller")
    let named = await code { _ = try await ContentClient.with(address: node.tcpAddress, client: "alice", security: .none) { try await $0.listStatuses() } }
    #expect(named == .permissionDenied, "an anonymous caller may not act as client alice")
    #expect(await calls(.none, 1) == [nil], "anonymous reads as itself")
  }

  /// A node calling a peer checks the server is that peer (its certificate's role), not
  /// merely a holder of a certificate from the cluster CA.
  @Test func aNodeKnowsWhomItCalls() async throws {
    let dir = try TemporaryDirectory("cairn-server-role")
    let pki = try await TestPKI(in: dir.path + "/pki", nodes: ["n1", "n2"])
    let node = ServerProcess(dataDir: dir.path + "/data", extraArgs: pki.nodeArgs("n1"))
    try await node.start()
    defer { node.signal(SIGKILL) }
    func asPeer(_ expected: ClientSecurity.ServerRole) async -> ContentError.Code? {
      var s = ClientSecurity(caPath: pki.ca, certificatePath: pki.peerCert("n2"), keyPath: pki.peerKey("n2"), verifyHostname: false)
      s.serverRole = expected
      return await code { _ = try await ContentClient.with(address: node.tcpAddress, security: s) { try await $0.isServing() } }
    }
    #expect(await asPeer(.peer("n1")) == nil, "n1 is n1")
    #expect(await asPeer(.anyPeer) == nil)
    #expect(await asPeer(.peer("n2")) == .unavailable, "the server at n2's address must be n2: the handshake fails")
  }

  // MARK: Finding 7: the admin port

  @Test func adminPortIsLoopbackAndNeedsATokenBeyondProbes() async throws {
    let dir = try TemporaryDirectory("cairn-admin")
    let (monitor, monitorLine) = try await newToken("*", "monitor")
    let (client, clientLine) = try await newToken("farm", "read,write")
    let tokens = dir.path + "/tokens"
    try "\(monitorLine)\n\(clientLine)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
    let port = try freeLoopbackPorts(1)[0]
    let node = ServerProcess(dataDir: dir.path + "/data", extraArgs: ["--admin-listen", "\(port)", "--tokens-file", tokens])
    try await node.start()
    defer { node.signal(SIGKILL) }
    let admin = "127.0.0.1:\(port)"
    #expect(try await httpGet(admin, "/healthz").status == 200, "probes need no token")
    #expect(try await httpGet(admin, "/metrics").status == 401)
    #expect(try await httpGet(admin, "/api/status").status == 401)
    #expect(try await httpGet(admin, "/metrics", headers: ["authorization": "Bearer \(client)"]).status == 401, "a client token is not a monitor's")
    #expect(try await httpGet(admin, "/metrics", headers: ["authorization": "Bearer \(monitor)"]).status == 200)
    let basic = Data("cairn:\(monitor)".utf8).base64EncodedString()
    #expect(try await httpGet(admin, "/", headers: ["authorization": "Basic \(basic)"]).status == 200, "a browser's login works")
  }
}

// MARK: Helpers

/// Makes a token with `cairn token new`; (token, tokens_file line).
func newToken(_ client: String, _ permissions: String) async throws -> (String, String) {
  let (status, out, err) = try await runCairn(["token", "new", client, "--permissions", permissions])
  guard status == 0 else { throw ServerProcessError("token new: \(err)") }
  let lines = out.split(separator: "\n")
  return (String(lines[0].dropFirst("token: ".count)), String(lines[1].dropFirst("tokens_file line: ".count)))
}

/// The status code a call ends with (nil: it succeeded).
func code(_ body: () async throws -> Void) async -> ContentError.Code? {
  do {
    try await body()
    return nil
  } catch {
    return ContentError.from(error).code
  }
}

/// What each of many streams got: its first answer, and the error it ended with.
final class Outcomes: @unchecked Sendable {
  private let lock = NSLock()
  private var answered = Set<Int>()
  private var failures: [ContentError] = []

  /// Stream `i` was answered (its first bytes taken), or ended with `error`.
  func note(_ i: Int, _ error: ContentError? = nil) {
    lock.withLock {
      answered.insert(i)
      if let error { failures.append(error) }
    }
  }

  var count: Int { lock.withLock { answered.count } }
  var errors: [ContentError] { lock.withLock { failures } }
}

/// Calls every RPC of the peer protocol once with harmless arguments.
func everyPeerCall(_ c: ContentClient, skipping skip: Set<String> = []) async -> [(String, ContentError.Code?)] {
  let d = Digest.of(Data("x".utf8)).description
  let calls: [(String, @Sendable (ContentClient) async throws -> Void)] = [
    ("LocalInfo", { c in try await c.peer { _ = try await $0.localInfo(.with { $0.digest = d }) } }),
    ("LocalUpdate", { c in try await c.peer { _ = try await $0.localUpdate(.with { $0.info.digest = d }) } }),
    ("LocalList", { c in try await c.peer { try await $0.localList(.init()) { r in for try await _ in r.messages {} } } }),
    ("LocalDelete", { c in try await c.peer { _ = try await $0.localDelete(.with { $0.digest = d }) } }),
    ("LocalRead", { c in try await c.peer { try await $0.localRead(.with { $0.digest = d }) { r in for try await _ in r.messages {} } } }),
    ("LocalStatus", { c in try await c.peer { _ = try await $0.localStatus(.with { $0.ref = "x" }) } }),
    ("LocalListStatuses", { c in try await c.peer { _ = try await $0.localListStatuses(.init()) } }),
    ("LocalAbort", { c in try await c.peer { _ = try await $0.localAbort(.with { $0.ref = "x" }) } }),
    ("LocalEvents", { c in try await c.peer { try await $0.localEvents(.init()) { r in for try await _ in r.messages { break } } } }),
    ("OwnerWrite", { c in
      try await c.peer {
        try await $0.ownerWrite(requestProducer: { w in try await w.write(.with { $0.action = .stat; $0.ref = "x" }) }) { r in
          for try await _ in r.messages {}
        }
      }
    }),
    ("Replicate", { c in
      try await c.peer { _ = try await $0.replicate(requestProducer: { w in try await w.write(.with { $0.header.digest = d; $0.header.owner = "n2" }) }) }
    }),
    ("Gossip", { c in try await c.peer { _ = try await $0.gossip(.with { $0.from = "n2" }) } }),
    ("GetClusterConfig", { c in try await c.peer { _ = try await $0.getClusterConfig(.init()) } }),
    ("ChangeMembership", { c in try await c.peer { _ = try await $0.changeMembership(.with { $0.add = ["evil": "127.0.0.1:1"] }) } }),
    ("RepairSummary", { c in try await c.peer { _ = try await $0.repairSummary(.with { $0.from = "n2" }) } }),
    ("RepairEntries", { c in try await c.peer { _ = try await $0.repairEntries(.with { $0.from = "n2" }) } }),
    ("RepairPull", { c in try await c.peer { _ = try await $0.repairPull(.with { $0.digests = [d] }) } }),
    ("ForgetTombstone", { c in try await c.peer { _ = try await $0.forgetTombstone(.with { $0.digest = d }) } }),
    ("MirrorIngest", { c in
      try await c.peer {
        _ = try await $0.mirrorIngest(requestProducer: { w in try await w.write(.with { $0.header.ref = "x"; $0.header.owner = "n2" }) })
      }
    }),
    ("ClusterStatus", { c in try await c.peer { _ = try await $0.clusterStatus(.init()) } }),
    ("Members", { c in try await c.peer { _ = try await $0.members(.init()) } }),
  ]
  var out: [(String, ContentError.Code?)] = []
  for (name, call) in calls where !skip.contains(name) { out.append((name, await code { try await call(c) })) }
  return out
}

/// Peer messages that name a sender other than the caller (n2 speaking as n3).
func spoofedSenders(fingerprint: String) -> [(String, @Sendable (ContentClient) async throws -> Void)] {
  let d = Digest.of(Data("x".utf8)).description
  return [
    ("RepairSummary as n3", { c in try await c.peer { _ = try await $0.repairSummary(.with { $0.from = "n3"; $0.clusterFingerprint = fingerprint }) } }),
    ("RepairEntries as n3", { c in try await c.peer { _ = try await $0.repairEntries(.with { $0.from = "n3"; $0.clusterFingerprint = fingerprint }) } }),
    ("Replicate as n3", { c in
      try await c.peer {
        _ = try await $0.replicate(requestProducer: { w in
          try await w.write(.with { $0.header.digest = d; $0.header.owner = "n3"; $0.header.clusterFingerprint = fingerprint })
        })
      }
    }),
    ("MirrorIngest as n3", { c in
      try await c.peer {
        _ = try await $0.mirrorIngest(requestProducer: { w in
          try await w.write(.with { $0.header.ref = "x"; $0.header.owner = "n3"; $0.header.clusterFingerprint = fingerprint })
        })
      }
    }),
  ]
}

/// A TCP connection from a chosen loopback source address that sends nothing.
func rawConnect(_ hostPort: String, from source: String) throws -> Int32 {
  let parts = hostPort.split(separator: ":")
  guard parts.count == 2, let port = UInt16(parts[1]) else { throw ServerProcessError("bad address \(hostPort)") }
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw ServerProcessError("socket failed") }
  var local = sockaddr_in()
  local.sin_family = sa_family_t(AF_INET)
  inet_pton(AF_INET, source, &local.sin_addr)
  var remote = sockaddr_in()
  remote.sin_family = sa_family_t(AF_INET)
  remote.sin_port = port.bigEndian
  inet_pton(AF_INET, String(parts[0]), &remote.sin_addr)
  let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
  let connected = withUnsafePointer(to: &remote) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard bound == 0, connected == 0 else {
    close(fd)
    throw ServerProcessError("connect from \(source) to \(hostPort) failed: errno \(errno)")
  }
  return fd
}

/// Whether the server closes the connection (EOF or reset) within `seconds`, reading and
/// dropping what it sends meanwhile (its HTTP/2 SETTINGS). On a thread of its own: a
/// test's task must not block the cooperative pool (OutputPipe.nextChunk says why).
func waitForClose(_ fd: Int32, seconds: Double) async -> Bool {
  await withCheckedContinuation { c in Thread.detachNewThread { c.resume(returning: pollForClose(fd, seconds: seconds)) } }
}

private func pollForClose(_ fd: Int32, seconds: Double) -> Bool {
  let deadline = Date().addingTimeInterval(seconds)
  var buffer = [UInt8](repeating: 0, count: 4096)
  while true {
    let left = deadline.timeIntervalSinceNow
    if left <= 0 { return false }
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&p, 1, Int32(left * 1000) + 1) == 1 else { return false }
    if read(fd, &buffer, buffer.count) <= 0 { return true }
  }
}
