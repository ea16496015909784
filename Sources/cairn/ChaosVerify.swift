import ArgumentParser
import CairnChaos
import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import Foundation
import Synchronization

struct ChaosVerify: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify",
    abstract: "After the heal: wait (up to the repair bound) for every acknowledged blob to reach its R replicas, then read each one back from every node.",
    discussion: "Appends `replicas` and `final-read` events to --out for `cairn chaos check`.")

  @Option(help: "The nodes as ID=HOST:PORT,...") var nodes: String
  @Option(help: "The workload's history file(s).") var history: [String]
  @Option(help: "Where to write what was found (JSON lines).") var out: String
  @Option(help: "When everything was healed (seconds since the epoch; default now).") var heal: Double?
  @Option(help: "Seconds after the heal by which every blob must be on its R replicas.") var repairSeconds: Double = 60
  @Option(help: "Seconds a read may take.") var timeout: Double = 120

  func run() async throws {
    takeOverConcurrencyPool()
    let targets = try parseNodeList(nodes)
    let healedAt = heal ?? Date().timeIntervalSince1970
    // What each digest must be after the heal (Checker.expectations): acknowledged and not
    // deleted since (present), or deleted after its last write (absent: held nowhere).
    let expected = Checker.expectations(try HistoryFile.load(history))
    let acked = expected.filter { $0.value == .present }.keys.sorted()
    let gone = expected.filter { $0.value == .absent }.keys.sorted()
    let log = try HistoryLog(path: out)
    var clients: [String: ContentClient] = [:]
    for t in targets { clients[t.id] = try ContentClient.connect(address: t.address, api: .modern, keepalive: .seconds(2)) }
    let seedClients = try targets.map { try ContentClient.connect(address: $0.address, api: .seed, keepalive: .seconds(2)) }
    let (bound, readTimeout) = (repairSeconds, timeout)
    try await withThrowingDiscardingTaskGroup { group in
      for c in Array(clients.values) + seedClients { group.addTask { try? await c.runConnections() } }
      defer { for c in Array(clients.values) + seedClients { c.close() } }
      let status = try await Self.anyStatus(clients.values.map { $0 })
      let ring = Ring(nodes: status.members.map { NodeID($0.state.id) }, vnodesPerNode: Int(status.vnodes))
      let replicas = Int(status.replicas)
      print("chaos verify: \(acked.count) acknowledged blobs, \(gone.count) deleted, R=\(replicas), waiting up to \(bound) s after the heal")
      var pending = Dictionary(uniqueKeysWithValues: (acked + gone).map { d in
        (d, (try? Digest(parsing: d)).map { ring.replicas(of: $0, count: replicas).map(\.name) } ?? [])
      })
      let deleted = Set(gone)
      var holders: [String: [String]] = [:]
      var unanswered: [String: [String]] = [:]
      var backoff = Backoff()
      while true {
        var refused = false
        for (digest, set) in pending {
          var have: [String] = []
          var silent: [String] = []
          for id in targets.map(\.id) {
            switch await Self.poll(clients[id]!, digest) {
            case true?: have.append(id)
            case false?: break
            case nil: silent.append(id)
            }
          }
          (holders[digest], unanswered[digest]) = (have, silent)
          refused = refused || !silent.isEmpty
          if deleted.contains(digest) ? have.isEmpty && silent.isEmpty : set.allSatisfy(have.contains) {
            log.append(Self.replicaEvent(digest, set: set, holders: have, after: Date().timeIntervalSince1970 - healedAt))
            pending[digest] = nil
          }
        }
        let left = healedAt + bound - Date().timeIntervalSince1970
        print(String(format: "chaos verify: %d of %d blobs as they must be (on all their replicas, or deleted everywhere), %.0f s of the bound left", acked.count + gone.count - pending.count, acked.count + gone.count, max(0, left)))
        if pending.isEmpty || left <= 0 { break }
        // Polling the nodes (nothing to await); longer while they refuse the verifier.
        try await Task.sleep(for: .seconds(refused ? backoff.next() : backoff.reset()))
      }
      for (digest, set) in pending {
        log.append(Self.replicaEvent(digest, set: set, holders: holders[digest] ?? [], unanswered: unanswered[digest] ?? [], after: nil))
      }
      // Then every blob from every node, alternating the APIs.
      let jobs = (acked + gone).flatMap { d in targets.indices.map { (d, $0) } }
      let (modernByID, seedByIndex, ids) = (clients, seedClients, targets.map(\.id))
      let bar = ProgressBar("final reads", total: Int64(jobs.count))
      let refusals = Refusals()
      try await withThrowingDiscardingTaskGroup { readers in
        for worker in 0..<min(8, jobs.count) {
          readers.addTask {
            for (digest, i) in jobs[worker...].enumerated().filter({ $0.offset % 8 == 0 }).map(\.element) {
              let client = (digest.hashValue ^ i) & 1 == 0 ? modernByID[ids[i]]! : seedByIndex[i]
              log.append(await Self.finalRead(digest, node: ids[i], client: client, timeout: readTimeout, refusals: refusals))
              bar.advance(1)
            }
          }
        }
      }
      bar.finish()
    }
  }

  static func replicaEvent(_ digest: String, set: [String], holders: [String], unanswered: [String] = [], after: Double?) -> HistoryEvent {
    var e = HistoryEvent(kind: .replicas)
    (e.digest, e.replicaSet, e.holders, e.reachedAfter) = (digest, set, holders, after)
    if !unanswered.isEmpty { e.unanswered = unanswered }
    return e
  }

  /// Whether a node holds a blob in its own store; nil when it gave no answer (refused for
  /// the moment: a rate limit, a queue; or unreachable), which proves nothing either way.
  static func poll(_ client: ContentClient, _ digest: String) async -> Bool? {
    do {
      return try await client.holdsLocally(digest)
    } catch let e as ContentError where !HistoryEvent.transientCodes.contains(e.code.name) {
      print("chaos verify: \(digest) on \(client.address): \(e.code.name): \(e.message)")
      return nil
    } catch {
      return nil
    }
  }

  /// A final read, tried again with backoff while the node refuses it for the moment, as a
  /// careful client would: only its last attempt is recorded. After 16 reads in a row that
  /// a node refused throughout, that node gets one attempt per read (a node down for good
  /// would otherwise cost the whole backoff on every blob).
  static func finalRead(_ digest: String, node: String, client: ContentClient, timeout: Double, refusals: Refusals) async -> HistoryEvent {
    var backoff = Backoff()
    var e = await readBlob(digest, node: node, client: client, process: nil, kind: .finalRead, timeout: timeout)
    var attempts = 1
    while e.failedTransiently, attempts < Backoff.attempts, !refusals.givenUp(node) {
      try? await Task.sleep(for: .seconds(backoff.next()))
      e = await readBlob(digest, node: node, client: client, process: nil, kind: .finalRead, timeout: timeout)
      attempts += 1
    }
    e.attempts = attempts
    refusals.note(node, refused: e.failedTransiently)
    return e
  }

  static func anyStatus(_ clients: [ContentClient]) async throws -> Cairn_Peer_V1_ClusterStatusResponse {
    var last: Error?
    for c in clients {
      do { return try await c.clusterStatus() } catch { last = error }
    }
    throw last ?? ValidationError("no nodes")
  }
}

/// Exponential backoff with jitter for a verifier the nodes refuse for the moment: 0.5 s
/// doubling to 8 s, each wait drawn between half and all of it.
struct Backoff {
  static let attempts = 8
  private var ceiling = 0.5

  mutating func next() -> Double {
    defer { ceiling = min(ceiling * 2, 8) }
    return Double.random(in: ceiling / 2...ceiling)
  }

  mutating func reset() -> Double {
    ceiling = 0.5
    return ceiling
  }
}

/// Nodes that refused every attempt of many final reads in a row.
final class Refusals: Sendable {
  private let streak = Mutex<[String: Int]>([:])
  static let giveUpAfter = 16

  func note(_ node: String, refused: Bool) { streak.withLock { $0[node] = refused ? ($0[node] ?? 0) + 1 : 0 } }
  func givenUp(_ node: String) -> Bool { streak.withLock { ($0[node] ?? 0) >= Self.giveUpAfter } }
}

struct ChaosCheck: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check",
    abstract: "Judge a chaos run's history: prints findings, availability and latency per phase, recovery times, and a verdict.",
    discussion: "Exit status 0 on PASS, 1 on FAIL.")

  @Option(help: "History files (workload, faults, verification), JSON lines.") var history: [String]
  @Option(help: "Node ids that must each serve every acknowledged blob, comma separated.") var nodes: String
  @Option(help: "Replicas per blob (R).") var replicas: Int = 3
  @Option(
    help: ArgumentHelp(
      "The scenario's [bounds] table as JSON: repair_seconds (60 if unset), min_steady_availability, min_fault_availability, max_outage_seconds, max_recovery_seconds, max_failures_outside_faults.",
      valueName: "json")) var bounds: String = "{}"
  @Option(help: "Write the verdict as JSON here.") var out: String?

  func run() async throws {
    let events = try HistoryFile.load(history)
    let service: ServiceBounds
    do {
      service = try ServiceBounds.parse(json: bounds)
    } catch {
      throw ValidationError("--bounds: \(error)")
    }
    let verdict = Checker(bounds: Bounds(nodes: nodes.split(separator: ",").map(String.init), replicas: replicas, service: service))
      .check(events)
    if let out {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      try encoder.encode(verdict).write(to: URL(fileURLWithPath: out))
    }
    print(Self.render(verdict))
    if !verdict.passed { throw ExitCode(1) }
  }

  static func render(_ v: Verdict) -> String {
    func ms(_ s: Double?) -> String { s.map { String(format: "%.0f", $0 * 1000) } ?? "-" }
    var rows = [["PHASE", "SECONDS", "OPS", "OK", "CONTENDED", "FAILED", "UNKNOWN", "AVAILABILITY", "WRITE p50/p99 ms", "READ p50/p99 ms"]]
    for p in v.phases {
      rows.append([
        p.name, String(format: "%.1f", p.end - p.start), "\(p.operations)", "\(p.ok)", "\(p.contended)", "\(p.failed)",
        "\(p.unknown)", String(format: "%.1f%%", p.availability * 100), "\(ms(p.writeP50))/\(ms(p.writeP99))",
        "\(ms(p.readP50))/\(ms(p.readP99))",
      ])
    }
    var lines = [textTable(rows), ""]
    if !v.recoveries.isEmpty {
      var r = [["FAULT", "SECONDS", "FAILURES", "OUTAGE s", "RECOVERED s AFTER STOP"]]
      for x in v.recoveries {
        r.append([
          x.fault, String(format: "%.1f", x.stop - x.start), "\(x.failures)", x.outageSeconds.map { String(format: "%.1f", $0) } ?? "-",
          x.recoverySeconds.map { String(format: "%.1f", $0) } ?? "-",
        ])
      }
      lines += [textTable(r), ""]
    }
    lines.append(
      "\(v.acknowledgedWrites) acknowledged writes (\(v.distinctBlobs) blobs), \(v.reads) reads"
        + (v.deletedBlobs > 0 ? ", \(v.deletedBlobs) blobs deleted after their last write" : "") + "; slowest blob reached R replicas "
        + (v.slowestReplication.map { String(format: "%.1f s after the heal", $0) } ?? "-"))
    for f in v.findings.prefix(50) { lines.append("FINDING \(f)") }
    if v.findings.count > 50 { lines.append("... \(v.findings.count - 50) more findings") }
    lines.append(
      v.passed
        ? "VERDICT: PASS (0 acknowledged writes lost, every read matched, one lock holder per ref, every blob on R replicas"
          + (v.deletedBlobs > 0 ? ", every deleted blob gone everywhere)" : ")")
        : "VERDICT: FAIL (\(v.findings.count) findings: \(Set(v.findings.map(\.rule.rawValue)).sorted().joined(separator: ", ")))")
    return lines.joined(separator: "\n")
  }
}
