import ArgumentParser
import CairnChaos
import CairnCluster
import CairnClient
import CairnCore
import Foundation
import Synchronization

struct ChaosWorkload: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "workload",
    abstract: "Concurrent writers and readers against random nodes, recording every operation in a history.",
    discussion: """
      Writers upload distinct blobs (sizes drawn from --sizes), race each other on a few \
      shared refs, and interrupt some uploads half-way to resume them through another node. \
      Readers read acknowledged blobs back from random nodes and hash them. Deleters (if any) \
      delete acknowledged blobs through random nodes, and upload a share of them again \
      under a new ref. Both APIs are used at random (Delete is the modern API's). Every \
      operation becomes one JSON line in --history.
      """)

  @Option(help: "The nodes as ID=HOST:PORT,...") var nodes: String
  @Option(help: "Seconds to run.") var duration: Double = 60
  @Option(help: "Concurrent writers.") var writers: Int = 4
  @Option(help: "Concurrent readers.") var readers: Int = 2
  @Option(help: "Concurrent deleters (each deletes an acknowledged blob about every --delete-interval seconds).")
  var deleters: Int = 0
  @Option(help: "Seconds between one deleter's Deletes.") var deleteInterval: Double = 0.5
  @Option(help: "Fraction of deleted blobs uploaded again (same bytes, a new ref) right after their Delete.")
  var reuploadFraction: Double = 0.5
  @Option(help: "Blob sizes with weights.") var sizes: String = "1k:50,64k:30,1m:15,16m:4,64m:1"
  @Option(help: "Refs all writers race on.") var sharedRefs: Int = 2
  @Option(help: "Fraction of writes that go to a shared ref.") var sharedFraction: Double = 0.2
  @Option(help: "Size of the blobs written to shared refs (default 64k times the ref's number).") var sharedSize: String?
  @Option(help: "Fraction of distinct-ref writes (64 KiB and up) interrupted half-way and resumed elsewhere.")
  var resumeFraction: Double = 0.1
  @Option(help: "Seconds one attempt at an operation may take on one node, plus one per MiB; then the next node is tried (and the slow one avoided for 10 s).")
  var timeout: Double = 5
  @Option(help: "The history file (JSON lines).") var history: String
  @Option(help: "Random seed (default: random; printed).") var seed: UInt64?
  @Option(help: "Ref prefix (default chaos-SEED).") var refPrefix: String?

  func run() async throws {
    takeOverConcurrencyPool()
    let targets = try parseNodeList(nodes)
    let mix = try SizeMix(sizes)
    let sharedBytes = try sharedSize.map { text -> Int64 in
      guard let n = ByteSize.parse(text), n > 0 else { throw ValidationError("--shared-size looks like 64k or 32m") }
      return n
    }
    let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
    print("chaos workload: seed \(seed), \(writers) writers, \(readers) readers, \(duration) s against \(targets.map(\.id).joined(separator: ","))")
    let log = try HistoryLog(path: history)
    var clients: [String: [ContentAPI: ContentClient]] = [:]
    for t in targets {
      for api in ContentAPI.allCases {
        clients[t.id, default: [:]][api] = try ContentClient.connect(address: t.address, api: api, keepalive: .seconds(2))
      }
    }
    let run = WorkloadRun(
      targets: targets.map(\.id), clients: clients, mix: mix, log: log, prefix: refPrefix ?? "chaos-\(seed)",
      sharedRefs: sharedRefs, sharedSize: sharedBytes, sharedFraction: sharedFraction, resumeFraction: resumeFraction, timeout: timeout,
      end: Date().timeIntervalSince1970 + duration)
    let (w, r, d) = (writers, readers, deleters)
    let (interval, reupload) = (deleteInterval, reuploadFraction)
    try await withThrowingDiscardingTaskGroup { group in
      for c in clients.values.flatMap(\.values) { group.addTask { try? await c.runConnections() } }
      try await withThrowingDiscardingTaskGroup { work in
        for p in 0..<w { work.addTask { await run.writer(p, seed: seed) } }
        for p in 0..<r { work.addTask { await run.reader(w + p, seed: seed) } }
        for p in 0..<d { work.addTask { await run.deleter(w + r + p, seed: seed, interval: interval, reupload: reupload) } }
        work.addTask { await run.report() }
      }
      for c in clients.values.flatMap(\.values) { c.close() }
    }
    print("chaos workload done: \(run.tally.withLock { $0.line })")
  }
}

/// The shared state of one workload run.
final class WorkloadRun: Sendable {
  let targets: [String]
  let clients: [String: [ContentAPI: ContentClient]]
  let mix: SizeMix
  let log: HistoryLog
  let prefix: String
  let sharedRefs: Int
  let sharedSize: Int64?
  let sharedFraction: Double
  let resumeFraction: Double
  let timeout: Double
  let end: Double
  /// Acknowledged blobs, with the seed their bytes came from (a deleter uploads them again).
  let acknowledged = Mutex<[(digest: String, size: Int64, seed: UInt64)]>([])
  /// Nodes an attempt timed out on, and until when to try them last (a client's circuit
  /// breaker: a stopped node accepts connections and never answers).
  let avoid = Mutex<[String: Double]>([:])
  let tally = Mutex(Tally())

  init(
    targets: [String], clients: [String: [ContentAPI: ContentClient]], mix: SizeMix, log: HistoryLog, prefix: String,
    sharedRefs: Int, sharedSize: Int64?, sharedFraction: Double, resumeFraction: Double, timeout: Double, end: Double
  ) {
    (self.targets, self.clients, self.mix, self.log, self.prefix) = (targets, clients, mix, log, prefix)
    self.sharedSize = sharedSize
    (self.sharedRefs, self.sharedFraction, self.resumeFraction, self.timeout, self.end) =
      (sharedRefs, sharedFraction, resumeFraction, timeout, end)
  }

  var now: Double { Date().timeIntervalSince1970 }

  func report() async {
    while now < end {
      try? await Task.sleep(for: .seconds(5))
      print(String(format: "chaos workload: %.0f s left; ", max(0, end - now)) + tally.withLock { $0.line })
    }
  }

  func writer(_ process: Int, seed: UInt64) async {
    var rng = SplitMix64(seed: seed &+ UInt64(process) &* 0x9E37_79B9)
    var i = 0
    while now < end {
      i += 1
      let shared = sharedRefs > 0 && Double.random(in: 0..<1, using: &rng) < sharedFraction
      let ref: String
      let size: Int64
      let contentSeed: UInt64
      if shared {
        // Every writer of a shared ref uploads the same bytes within a 3-second window, so
        // they contend for the lock rather than overwrite each other.
        let k = Int.random(in: 0..<sharedRefs, using: &rng)
        ref = "\(prefix)-shared-\(k)"
        size = sharedSize ?? Int64(64 << 10) * Int64(k + 1)
        contentSeed = UInt64(k) << 40 | UInt64(now / 3)
      } else {
        ref = "\(prefix)-w\(process)-\(i)"
        size = mix.pick(&rng)
        contentSeed = seed << 20 &+ UInt64(process) << 32 &+ UInt64(i)
      }
      guard let data = try? await generatedBytes(size: size, seed: contentSeed) else { continue }
      let interrupt = !shared && size >= 64 << 10 && Double.random(in: 0..<1, using: &rng) < resumeFraction
      if interrupt {
        // The first half through one node, then the stream breaks; not an operation of
        // the history (its effect is the ingest the resumed upload finds).
        _ = await upload(ref: ref, data: data, node: targets.randomElement(using: &rng)!,
                         api: ContentAPI.allCases.randomElement(using: &rng)!, cut: size / 2, nameDigest: true, process: process)
      }
      let api = ContentAPI.allCases.randomElement(using: &rng)!
      // Half the racers on a shared ref do not name the digest: they cannot wait for the
      // holder's commit (ALREADY_EXISTS) and meet the lock itself.
      let named = !shared || Bool.random(using: &rng)
      let event = await withFailover(targets.shuffled(using: &rng)) { node in
        await self.upload(ref: ref, data: data, node: node, api: api, cut: nil, nameDigest: named, process: process)
      }
      log.append(event)
      tally.withLock {
        $0.writes[event.outcome!, default: 0] += 1
        if event.acknowledged { $0.bytes += size }
      }
      if event.acknowledged, let d = event.digest { acknowledged.withLock { $0.append((d, size, contentSeed)) } }
    }
  }

  func upload(
    ref: String, data: Data, node: String, api: ContentAPI, cut: Int64?, nameDigest: Bool, process: Int
  ) async -> HistoryEvent {
    var e = HistoryEvent(kind: .write)
    (e.process, e.node, e.api, e.ref, e.size) = (process, node, api.rawValue, ref, Int64(data.count))
    let digest = Digest.of(data)
    e.digest = digest.description
    let client = clients[node]![api]!
    let firstReply = Mutex<Double?>(nil)
    let commitSent = Mutex<Double?>(nil)
    e.invoke = now
    do {
      let source: any BlobSource = cut.map { InterruptedSource(data, cut: $0) } ?? DataSource(data)
      let r = try await withTimeout(timeout + Double(data.count) / Double(1 << 20)) {
        try await client.write(
          ref: ref, source: source, size: Int64(data.count), expected: nameDigest ? digest : nil, resume: true,
          progress: { _ in firstReply.withLock { if $0 == nil { $0 = Date().timeIntervalSince1970 } } },
          commitSent: { commitSent.withLock { $0 = Date().timeIntervalSince1970 } })
      }
      e.outcome = r.alreadyExisted ? .already : .ok
      // The commit must be of the bytes sent (a writer that did not name the digest learns it here).
      e.matches = r.digest == digest
      e.resumedFrom = r.resumedFrom
      e.lockUntil = commitSent.withLock { $0 }
    } catch let error as ContentError {
      e.error = "\(error.code.name): \(error.message)"
      switch error.code {
      case .alreadyExists:
        e.outcome = .already
        e.lockUntil = commitSent.withLock { $0 }
      case .unavailable where error.message.contains("locked"): e.outcome = .locked
      case .deadlineExceeded, .cancelled: e.outcome = commitSent.withLock { $0 } == nil ? .fail : .unknown
      case .unavailable, .unknown, .internalError, .aborted:
        // A COMMIT sent and not answered may have landed.
        e.outcome = commitSent.withLock { $0 } == nil ? .fail : .unknown
      default: e.outcome = .fail
      }
    } catch {
      e.error = error is OperationTimeout ? "timed out" : "\(error)"
      e.outcome = commitSent.withLock { $0 } == nil ? .fail : .unknown
    }
    e.complete = now
    e.lockFrom = firstReply.withLock { $0 }
    return e
  }

  func reader(_ process: Int, seed: UInt64) async {
    var rng = SplitMix64(seed: seed &+ 0xABCD &+ UInt64(process))
    while now < end {
      guard let (digest, size, _) = acknowledged.withLock({ $0.randomElement(using: &rng) }) else {
        try? await Task.sleep(for: .milliseconds(50))  // pacing: nothing to read yet
        continue
      }
      let api = ContentAPI.allCases.randomElement(using: &rng)!
      let e = await withFailover(targets.shuffled(using: &rng)) { node in
        await self.read(digest, size: size, node: node, api: api, process: process)
      }
      log.append(e)
      tally.withLock { $0.reads[e.outcome!, default: 0] += 1 }
    }
  }

  /// Deletes an acknowledged blob through a random node (failing over like any client),
  /// then, for a share of them, uploads the same bytes again under a new ref: the checker
  /// then proves "deleted stays deleted" and "uploaded again after its Delete stays
  /// readable" (Checker.expectations).
  func deleter(_ process: Int, seed: UInt64, interval: Double, reupload: Double) async {
    var rng = SplitMix64(seed: seed &+ 0xDE1E7E &+ UInt64(process))
    var i = 0
    while now < end {
      try? await Task.sleep(for: .seconds(interval))  // pacing: a Delete every interval
      guard let (digest, size, contentSeed) = acknowledged.withLock({ $0.randomElement(using: &rng) }) else { continue }
      i += 1
      let e = await withFailover(targets.shuffled(using: &rng)) { node in await self.delete(digest, node: node, process: process) }
      log.append(e)
      tally.withLock { $0.deletes[e.outcome!, default: 0] += 1 }
      if e.outcome == .ok { acknowledged.withLock { $0.removeAll { $0.digest == digest } } }
      guard e.outcome == .ok, Double.random(in: 0..<1, using: &rng) < reupload,
        let data = try? await generatedBytes(size: size, seed: contentSeed)
      else { continue }
      let ref = "\(prefix)-d\(process)-\(i)"
      let api = ContentAPI.allCases.randomElement(using: &rng)!
      let w = await withFailover(targets.shuffled(using: &rng)) { node in
        await self.upload(ref: ref, data: data, node: node, api: api, cut: nil, nameDigest: true, process: process)
      }
      log.append(w)
      tally.withLock { $0.writes[w.outcome!, default: 0] += 1 }
      if w.acknowledged { acknowledged.withLock { $0.append((digest, size, contentSeed)) } }
    }
  }

  func delete(_ digest: String, node: String, process: Int) async -> HistoryEvent {
    var e = HistoryEvent(kind: .delete)
    (e.process, e.node, e.api, e.digest) = (process, node, ContentAPI.modern.rawValue, digest)
    e.invoke = now
    do {
      try await withTimeout(timeout) { try await self.clients[node]![.modern]!.delete(digest) }
      e.outcome = .ok
    } catch let error as ContentError {
      e.error = "\(error.code.name): \(error.message)"
      // NOT_FOUND: no node held it (another deleter was first). A Delete that never left
      // this client (no connection to the node: gc-storm's 103 "unknown" Deletes to a
      // killed node) or that the node refused before acting did nothing, and is tried on
      // the next node. Anything else may have deleted some copies.
      let nothingHappened =
        error.code == .unavailable
        && ["not heard", "Could not establish a connection", "transient failure state"].contains { error.message.contains($0) }
      e.outcome = error.code == .notFound ? .notFound : nothingHappened ? .fail : .unknown
    } catch {
      e.error = error is OperationTimeout ? "timed out" : "\(error)"
      e.outcome = .unknown
    }
    e.complete = now
    return e
  }

  /// How long one logical operation keeps trying while every node answers UNAVAILABLE: a
  /// careful client rides through a failover (a dead owner is noticed and its refs move
  /// within seconds) instead of giving up after one quick pass over the nodes (four
  /// attempts in 0.3 s during a kill, issue 17).
  static let retrySeconds = 15.0
  /// The pause after a pass over every node failed, doubled each pass up to the cap, and
  /// jittered so that many clients do not come back at once.
  static let firstBackoff = 0.05
  static let maxBackoff = 2.0

  /// One logical operation, as a client of a cluster makes it: tried on each node in turn
  /// while the answer is UNAVAILABLE (node down, hung, fenced) and nothing may have landed,
  /// in passes over the nodes with jittered backoff between them, for up to retrySeconds.
  /// One history event: invoked at the first attempt, completed at the last, with the
  /// failed attempts' errors (the last few).
  func withFailover(_ shuffled: [String], _ attempt: (String) async -> HistoryEvent) async -> HistoryEvent {
    let t = now
    // The whole budget even past the workload's end: cut short there, an operation begun in
    // its last seconds failed where a client would have kept trying (ci-smoke counted such
    // failures after its last fault).
    let giveUp = t + Self.retrySeconds
    let avoided = avoid.withLock { a in shuffled.filter { (a[$0] ?? 0) > t } }
    let order = shuffled.filter { !avoided.contains($0) } + avoided
    var errors: [String] = []
    var invoke: Double?
    var attempts = 0
    var backoff = Self.firstBackoff
    while true {
      for node in order {
        var e = await attempt(node)
        attempts += 1
        invoke = invoke ?? e.invoke
        let timedOut = e.error == "timed out"
        if timedOut { avoid.withLock { $0[node] = now + 10 } }
        // Safe to try again: a write that failed before its COMMIT (nothing can have
        // landed), a write whose COMMIT went unanswered (blobs are content-addressed: the
        // same bytes again either commit or meet ALREADY_EXISTS, as containerd's retries
        // do; a node that stopped gracefully fences its own in-flight commits), or any read.
        let unavailable = (e.error ?? "").hasPrefix("UNAVAILABLE") && !(e.error ?? "").contains("locked")
        let retry = (e.outcome == .fail && (unavailable || timedOut)) || (e.kind != .delete && e.outcome == .unknown)
        if !retry || now >= giveUp {
          e.invoke = invoke
          if !errors.isEmpty { e.error = (errors.suffix(6) + [e.error].compactMap { $0 }).joined(separator: " | ") }
          e.attempts = attempts
          return e
        }
        errors.append("\(node): \(e.error ?? "")")
      }
      // Every node refused: pause (jittered, growing) before the next pass.
      let pause = min(Double.random(in: backoff / 2...backoff), max(0, giveUp - now))
      try? await Task.sleep(for: .seconds(pause))  // backoff, not synchronisation
      backoff = min(backoff * 2, Self.maxBackoff)
    }
  }

  func read(_ digest: String, size: Int64, node: String, api: ContentAPI, process: Int) async -> HistoryEvent {
    await readBlob(
      digest, node: node, client: clients[node]![api]!, process: process, kind: .read,
      timeout: timeout + Double(size) / Double(1 << 20))
  }
}

/// Reads a whole blob and records whether its bytes hash to its digest.
func readBlob(
  _ digest: String, node: String, client: ContentClient, process: Int?, kind: HistoryEvent.Kind, timeout: Double
) async -> HistoryEvent {
  var e = HistoryEvent(kind: kind)
  (e.process, e.node, e.api, e.digest) = (process, node, client.api.rawValue, digest)
  e.invoke = Date().timeIntervalSince1970
  do {
    let data = try await withTimeout(timeout) { try await client.readAll(digest) }
    e.outcome = .ok
    e.size = Int64(data.count)
    e.matches = Digest.of(data).description == digest
  } catch let error as ContentError {
    e.error = "\(error.code.name): \(error.message)"
    e.outcome = error.code == .notFound ? .notFound : error.code == .deadlineExceeded ? .unknown : .fail
  } catch {
    e.error = error is OperationTimeout ? "timed out" : "\(error)"
    e.outcome = .unknown
  }
  e.complete = Date().timeIntervalSince1970
  return e
}
