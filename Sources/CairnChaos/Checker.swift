import Foundation

/// What a scenario promises, checked against its history.
public struct Bounds: Codable, Sendable {
  /// Every node that must serve every acknowledged blob after the heal.
  public var nodes: [String]
  /// Replicas per blob (R).
  public var replicas: Int
  /// What the scenario file's `[bounds]` table promises.
  public var service: ServiceBounds

  public init(nodes: [String], replicas: Int, service: ServiceBounds = .init()) {
    self.nodes = nodes
    self.replicas = replicas
    self.service = service
  }
}

/// A scenario file's `[bounds]` table, key for key (snake_case in the file): what clients
/// may feel of the faults. Unset = not checked; `repair_seconds` has a default. Chaos fails
/// when a run breaks one, so a regression in availability shows as a failed scenario, not
/// as a number nobody compared.
public struct ServiceBounds: Codable, Sendable, Equatable {
  /// Seconds after the heal by which every acknowledged blob must be on R replicas.
  public var repairSeconds: Double = 60
  /// Lowest availability of a phase outside the fault windows (0...1).
  public var minSteadyAvailability: Double?
  /// Lowest availability of each fault window (0...1).
  public var minFaultAvailability: Double?
  /// Longest a fault may make operations fail: from the first failed operation it caused
  /// to the end of the last.
  public var maxOutageSeconds: Double?
  /// How long after a fault's stop its last failed operation may end.
  public var maxRecoverySeconds: Double?
  /// Failed or unknown operations that completed outside every fault window and its
  /// recovery allowance (`max_recovery_seconds` after its stop, 0 if unset).
  public var maxFailuresOutsideFaults: Int?

  public init(
    repairSeconds: Double = 60, minSteadyAvailability: Double? = nil, minFaultAvailability: Double? = nil,
    maxOutageSeconds: Double? = nil, maxRecoverySeconds: Double? = nil, maxFailuresOutsideFaults: Int? = nil
  ) {
    self.repairSeconds = repairSeconds
    self.minSteadyAvailability = minSteadyAvailability
    self.minFaultAvailability = minFaultAvailability
    self.maxOutageSeconds = maxOutageSeconds
    self.maxRecoverySeconds = maxRecoverySeconds
    self.maxFailuresOutsideFaults = maxFailuresOutsideFaults
  }

  enum CodingKeys: String, CodingKey, CaseIterable {
    case repairSeconds = "repair_seconds"
    case minSteadyAvailability = "min_steady_availability"
    case minFaultAvailability = "min_fault_availability"
    case maxOutageSeconds = "max_outage_seconds"
    case maxRecoverySeconds = "max_recovery_seconds"
    case maxFailuresOutsideFaults = "max_failures_outside_faults"
  }

  /// Decodes a `[bounds]` table given as JSON; a key that is not a bound is an error, so a
  /// typo cannot switch a check off.
  public static func parse(json: String) throws -> ServiceBounds {
    let data = Data(json.utf8)
    guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw BoundsError(message: "bounds must be a JSON object, got \(json)")
    }
    let known = Set(CodingKeys.allCases.map(\.rawValue))
    if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
      throw BoundsError(message: "unknown bound \"\(unknown)\" (known: \(known.sorted().joined(separator: ", ")))")
    }
    if let null = object.keys.sorted().first(where: { object[$0] is NSNull }) {
      throw BoundsError(message: "bound \"\(null)\" is null: leave it out to not check it")
    }
    let bounds = try JSONDecoder().decode(ServiceBounds.self, from: data)
    for (key, value) in [
      ("min_steady_availability", bounds.minSteadyAvailability), ("min_fault_availability", bounds.minFaultAvailability),
    ] {
      if let value, !(0...1).contains(value) { throw BoundsError(message: "\(key) is \(value), not between 0 and 1") }
    }
    for (key, value) in [
      ("repair_seconds", bounds.repairSeconds as Double?), ("max_outage_seconds", bounds.maxOutageSeconds),
      ("max_recovery_seconds", bounds.maxRecoverySeconds), ("max_failures_outside_faults", bounds.maxFailuresOutsideFaults.map(Double.init)),
    ] {
      if let value, !(value >= 0) { throw BoundsError(message: "\(key) is \(value), below 0") }
    }
    return bounds
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    repairSeconds = try c.decodeIfPresent(Double.self, forKey: .repairSeconds) ?? 60
    minSteadyAvailability = try c.decodeIfPresent(Double.self, forKey: .minSteadyAvailability)
    minFaultAvailability = try c.decodeIfPresent(Double.self, forKey: .minFaultAvailability)
    maxOutageSeconds = try c.decodeIfPresent(Double.self, forKey: .maxOutageSeconds)
    maxRecoverySeconds = try c.decodeIfPresent(Double.self, forKey: .maxRecoverySeconds)
    maxFailuresOutsideFaults = try c.decodeIfPresent(Int.self, forKey: .maxFailuresOutsideFaults)
  }
}

public struct BoundsError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}

/// A broken promise, found in the history.
public struct Finding: Codable, Sendable, Hashable, CustomStringConvertible {
  public enum Rule: String, Codable, Sendable {
    case lostWrite = "acknowledged-write-lost"
    case corruptRead = "read-bytes-do-not-match-digest"
    case acknowledgedNotFound = "acknowledged-blob-not-found"
    case twoLockHolders = "two-lock-holders"
    case underReplicated = "under-replicated"
    /// The verifier could not get an answer (only transient refusals, timeouts): not a loss,
    /// but not a pass either (a node that will not answer for minutes after the heal is a
    /// fault of its own).
    case unverified = "unverified"
    /// A blob whose last event was a Delete (every write of it ended before the Delete
    /// began, and the Delete was acknowledged) is readable or held somewhere after the heal.
    case deletedCameBack = "deleted-blob-came-back"
    case lowAvailability = "low-steady-availability"
    case lowFaultAvailability = "low-fault-availability"
    case longOutage = "outage-too-long"
    case slowRecovery = "recovery-too-slow"
    case failuresOutsideFaults = "failures-outside-faults"
    case nothingAcknowledged = "nothing-acknowledged"
  }
  public var rule: Rule
  public var detail: String
  public var description: String { "\(rule.rawValue): \(detail)" }
}

/// Availability and latency over one stretch of the run.
public struct PhaseStats: Codable, Sendable {
  public var name: String
  public var start: Double
  public var end: Double
  public var operations: Int
  public var ok: Int
  public var contended: Int
  public var failed: Int
  public var unknown: Int
  /// ok / (ok + failed + unknown): lock contention and not-yet-visible reads are the
  /// system working, not failing.
  public var availability: Double
  public var writeP50: Double?
  public var writeP99: Double?
  public var readP50: Double?
  public var readP99: Double?
}

/// How long a fault hurt: from its start to the completion of the last operation it failed.
public struct Recovery: Codable, Sendable {
  public var fault: String
  public var start: Double
  public var stop: Double
  public var failures: Int
  /// Seconds from the fault's stop until the last failure it caused completed (0 if the
  /// failures ended while it lasted, nil if it caused none).
  public var recoverySeconds: Double?
  /// The longest stretch in which every operation that completed failed: a run of
  /// failures (in order of completion) with no success completing among them, from the
  /// start of its first (or the fault's start, if later) to the end of its last. Sparse
  /// failures while most operations succeed are not an outage (they show in availability).
  /// Nil if the fault caused no failure.
  public var outageSeconds: Double?
  /// Seconds from the first failure the fault caused to the last (nil if none).
  public var failureSpanSeconds: Double?
}

public struct Verdict: Codable, Sendable {
  public var passed: Bool
  public var findings: [Finding]
  public var acknowledgedWrites: Int
  public var distinctBlobs: Int
  /// Digests deleted after their last write (that must be gone everywhere).
  public var deletedBlobs: Int = 0
  public var reads: Int
  public var phases: [PhaseStats]
  public var recoveries: [Recovery]
  /// The slowest blob to reach R replicas, seconds after the heal.
  public var slowestReplication: Double?
}

/// What must hold for a digest after the heal, given its writes and Deletes in real time.
public enum FinalState: String, Codable, Sendable {
  /// An acknowledged write began after every Delete that may have taken effect ended: it
  /// must be readable intact from every node, on all R replicas.
  case present
  /// An acknowledged Delete began after every write that may have landed ended: no node
  /// may serve or hold it.
  case absent
  /// The last write and Delete overlap in time: either is correct.
  case either
}

extension Checker {
  /// The final state every written digest must reach. A Delete "may have taken effect"
  /// unless it answered NOT_FOUND (no node held it); a write "may have landed" if it was
  /// acknowledged or its outcome is unknown. With no Delete, every acknowledged digest is
  /// `present` (the rule before Deletes were part of the workload).
  public static func expectations(_ events: [HistoryEvent]) -> [String: FinalState] {
    var writes: [String: [HistoryEvent]] = [:]
    var deletes: [String: [HistoryEvent]] = [:]
    for e in events {
      guard let d = e.digest, e.invoke != nil else { continue }
      if e.kind == .write { writes[d, default: []].append(e) }
      if e.kind == .delete && e.outcome != .notFound { deletes[d, default: []].append(e) }
    }
    var out: [String: FinalState] = [:]
    for (digest, ws) in writes where ws.contains(where: \.acknowledged) {
      let ds = deletes[digest] ?? []
      let end: (HistoryEvent) -> Double = { $0.complete ?? .infinity }
      let lastDeleteEnd = ds.map(end).max() ?? -.infinity
      let landed = ws.filter { $0.acknowledged || $0.outcome == .unknown }
      if ws.contains(where: { $0.acknowledged && $0.invoke! > lastDeleteEnd }) {
        out[digest] = .present
      } else if ds.contains(where: { d in d.outcome == .ok && landed.allSatisfy { end($0) < d.invoke! } }) {
        out[digest] = .absent
      } else {
        out[digest] = .either
      }
    }
    return out
  }
}

/// Judges a history. Pure: the same events give the same verdict.
public struct Checker {
  public var bounds: Bounds
  /// Failures this long after a fault's stop still count towards its recovery.
  public var recoveryHorizon: Double = 120

  public init(bounds: Bounds) { self.bounds = bounds }

  public func check(_ events: [HistoryEvent]) -> Verdict {
    var findings: [Finding] = []
    let writes = events.filter { $0.kind == .write }
    let acked = Set(writes.filter(\.acknowledged).compactMap(\.digest))
    if acked.isEmpty {
      findings.append(Finding(rule: .nothingAcknowledged, detail: "no write was acknowledged, so the run proves nothing"))
    }
    let expected = Self.expectations(events)
    let present = acked.filter { expected[$0] == .present }
    findings += lostWrites(acked: present, events: events)
    findings += corruptReads(events)
    findings += notFoundAfterAck(writes: writes, events: events)
    findings += lockOverlaps(writes)
    findings += cameBack(Set(expected.filter { $0.value == .absent }.keys), events: events)
    let (replicaFindings, slowest) = replication(acked: present, events: events)
    findings += replicaFindings
    let faults = events.filter { $0.kind == .fault }.sorted { ($0.start ?? 0) < ($1.start ?? 0) }
    let ops = events.filter { ($0.kind == .write || $0.kind == .read || $0.kind == .delete) && $0.invoke != nil }
    let phases = Self.phases(ops: ops, faults: faults, heal: events.first { $0.kind == .heal }?.start)
    let recoveries = recoveries(ops: ops, faults: faults)
    findings += serviceFindings(phases: phases, recoveries: recoveries, ops: ops, faults: faults)
    return Verdict(
      passed: findings.isEmpty, findings: findings, acknowledgedWrites: writes.filter(\.acknowledged).count,
      distinctBlobs: acked.count, deletedBlobs: expected.values.filter { $0 == .absent }.count,
      reads: events.filter { $0.kind == .read }.count, phases: phases,
      recoveries: recoveries, slowestReplication: slowest)
  }

  /// What clients felt, against the scenario's `[bounds]`.
  func serviceFindings(phases: [PhaseStats], recoveries: [Recovery], ops: [HistoryEvent], faults: [HistoryEvent])
    -> [Finding]
  {
    let b = bounds.service
    var findings: [Finding] = []
    func percent(_ x: Double) -> String { String(format: "%.1f %%", x * 100) }
    for p in phases where p.operations > 0 {
      let inFault = p.name.hasPrefix("fault")
      if let floor = inFault ? b.minFaultAvailability : b.minSteadyAvailability, p.availability < floor {
        findings.append(
          Finding(
            rule: inFault ? .lowFaultAvailability : .lowAvailability,
            detail: "phase \(p.name) had availability \(percent(p.availability)) (\(p.failed + p.unknown) of \(p.ok + p.failed + p.unknown) failed), below \(percent(floor))"))
      }
    }
    for r in recoveries {
      if let bound = b.maxOutageSeconds, let outage = r.outageSeconds, outage > bound {
        findings.append(
          Finding(
            rule: .longOutage,
            detail: String(format: "fault %@ made operations fail for %.1f s (%d failed), longer than %.1f s", r.fault, outage, r.failures, bound)))
      }
      if let bound = b.maxRecoverySeconds, let recovery = r.recoverySeconds, recovery > bound {
        findings.append(
          Finding(
            rule: .slowRecovery,
            detail: String(format: "fault %@: the last failure ended %.1f s after its stop, later than %.1f s", r.fault, recovery, bound)))
      }
    }
    if let bound = b.maxFailuresOutsideFaults {
      let allowance = b.maxRecoverySeconds ?? 0
      let windows = faults.compactMap { f in f.start.flatMap { s in f.stop.map { (s, $0 + allowance) } } }
      let outside = ops.filter { op in
        guard op.outcome == .fail || op.outcome == .unknown else { return false }
        let at = op.complete ?? op.invoke!
        return !windows.contains { at >= $0.0 && at <= $0.1 }
      }
      if outside.count > bound {
        let first = outside.min { ($0.complete ?? $0.invoke!) < ($1.complete ?? $1.invoke!) }!
        findings.append(
          Finding(
            rule: .failuresOutsideFaults,
            detail: String(
              format: "%d operations failed outside the fault windows (bound %d); the first, a %@ through %@ ending at %.3f: %@",
              outside.count, bound, first.kind.rawValue, first.node ?? "?", first.complete ?? first.invoke!,
              first.error ?? first.outcome?.rawValue ?? "?")))
      }
    }
    return findings
  }

  /// Every acknowledged digest read back with matching bytes from every node.
  func lostWrites(acked: Set<String>, events: [HistoryEvent]) -> [Finding] {
    var good: Set<[String]> = []
    for e in events where e.kind == .finalRead && e.outcome == .ok && e.matches == true {
      if let d = e.digest, let n = e.node { good.insert([d, n]) }
    }
    var findings: [Finding] = []
    for digest in acked.sorted() {
      let missing = bounds.nodes.filter { !good.contains([digest, $0]) }
      if missing.isEmpty { continue }
      let reads = events.filter { $0.kind == .finalRead && $0.digest == digest && missing.contains($0.node ?? "") }
      // Lost where a read proved it (NOT_FOUND, other bytes, a hard error) or none was
      // made; unverified where every read there was refused for the moment.
      let unverified = missing.filter { n in
        let there = reads.filter { $0.node == n }
        return !there.isEmpty && there.allSatisfy(\.failedTransiently)
      }
      let lost = missing.filter { !unverified.contains($0) }
      func why(_ nodes: [String]) -> String {
        let w = reads.filter { nodes.contains($0.node ?? "") }
          .map { "\($0.node ?? "?"): \($0.outcome?.rawValue ?? "?")\($0.error.map { " \($0)" } ?? "")" }
        return w.isEmpty ? " (never read back)" : " (\(w.joined(separator: "; ")))"
      }
      if !lost.isEmpty {
        findings.append(
          Finding(
            rule: .lostWrite,
            detail: "\(digest) was acknowledged but is not readable intact from \(lost.joined(separator: ", "))\(why(lost))"))
      }
      if !unverified.isEmpty {
        findings.append(
          Finding(
            rule: .unverified,
            detail: "\(digest): every final read from \(unverified.joined(separator: ", ")) was refused for the moment\(why(unverified))"))
      }
    }
    return findings
  }

  /// Reads whose bytes hash to another digest, and commits acknowledged for other bytes
  /// than the writer sent.
  func corruptReads(_ events: [HistoryEvent]) -> [Finding] {
    events.filter { ($0.outcome == .ok || $0.outcome == .already) && $0.matches == false }.map {
      Finding(rule: .corruptRead, detail: "\($0.kind.rawValue) of \($0.digest ?? "?") through \($0.node ?? "?") at \($0.invoke ?? 0): other bytes")
    }
  }

  /// A read invoked after a write of its digest was acknowledged must not hear NOT_FOUND:
  /// a node that cannot reach enough replicas to know must say UNAVAILABLE.
  func notFoundAfterAck(writes: [HistoryEvent], events: [HistoryEvent]) -> [Finding] {
    var firstAck: [String: Double] = [:]
    for w in writes where w.acknowledged {
      if let d = w.digest, let t = w.complete { firstAck[d] = min(firstAck[d] ?? t, t) }
    }
    // A Delete begun before the read ended may have taken effect: NOT_FOUND is then true.
    var firstDelete: [String: Double] = [:]
    for e in events where e.kind == .delete && e.outcome != .notFound {
      if let d = e.digest, let t = e.invoke { firstDelete[d] = min(firstDelete[d] ?? t, t) }
    }
    return events.filter { $0.kind == .read && $0.outcome == .notFound }.compactMap { r in
      guard let d = r.digest, let acked = firstAck[d], let t = r.invoke, t > acked else { return nil }
      if let deleted = firstDelete[d], deleted < (r.complete ?? .infinity) { return nil }
      return Finding(
        rule: .acknowledgedNotFound,
        detail: String(format: "read of %@ through %@ at %.3f answered NOT_FOUND; acknowledged at %.3f", d, r.node ?? "?", t, acked))
    }
  }

  /// Two writers of one ref whose certain lock holding overlaps. A writer certainly held
  /// the lock from the first answer it received to the sending of the last request that
  /// was answered; anything wider would blame the network's delays on the lock.
  func lockOverlaps(_ writes: [HistoryEvent]) -> [Finding] {
    var byRef: [String: [HistoryEvent]] = [:]
    for w in writes {
      guard let ref = w.ref, let from = w.lockFrom, let until = w.lockUntil, until > from else { continue }
      byRef[ref, default: []].append(w)
    }
    var findings: [Finding] = []
    for (ref, holders) in byRef.sorted(by: { $0.key < $1.key }) {
      let sorted = holders.sorted { $0.lockFrom! < $1.lockFrom! }
      var widest = sorted[0]
      for next in sorted.dropFirst() {
        if next.lockFrom! < widest.lockUntil! {
          findings.append(
            Finding(
              rule: .twoLockHolders,
              detail: String(
                format: "ref %@: process %d (via %@) held it %.3f-%.3f while process %d (via %@) held it from %.3f", ref,
                widest.process ?? -1, widest.node ?? "?", widest.lockFrom!, widest.lockUntil!, next.process ?? -1,
                next.node ?? "?", next.lockFrom!)))
        }
        if next.lockUntil! > widest.lockUntil! { widest = next }
      }
    }
    return findings
  }

  /// Deleted and left deleted: no final read may return it, no node may hold it.
  func cameBack(_ absent: Set<String>, events: [HistoryEvent]) -> [Finding] {
    var findings: [Finding] = []
    for digest in absent.sorted() {
      let served = events.filter { $0.kind == .finalRead && $0.digest == digest && $0.outcome == .ok }.compactMap(\.node)
      let held = events.last { $0.kind == .replicas && $0.digest == digest }?.holders ?? []
      if !served.isEmpty || !held.isEmpty {
        findings.append(
          Finding(
            rule: .deletedCameBack,
            detail: "\(digest) was deleted after its last write, yet \(served.isEmpty ? "" : "served by \(served.sorted()) ")\(held.isEmpty ? "" : "held by \(held.sorted())")"))
      }
    }
    return findings
  }

  func replication(acked: Set<String>, events: [HistoryEvent]) -> ([Finding], Double?) {
    var reports: [String: HistoryEvent] = [:]
    for e in events where e.kind == .replicas { if let d = e.digest { reports[d] = e } }
    var findings: [Finding] = []
    var slowest: Double?
    for digest in acked.sorted() {
      guard let r = reports[digest] else {
        findings.append(Finding(rule: .underReplicated, detail: "\(digest): no replica report after the heal"))
        continue
      }
      let set = r.replicaSet ?? []
      let holding = set.filter { (r.holders ?? []).contains($0) }
      let unanswered = set.filter { (r.unanswered ?? []).contains($0) && !holding.contains($0) }
      if holding.count < bounds.replicas, holding.count + unanswered.count >= bounds.replicas {
        findings.append(
          Finding(
            rule: .unverified,
            detail: "\(digest): \(holding.count) of its replicas \(set) hold it; \(unanswered) did not answer the verifier (refused for the moment)"))
      } else if holding.count < bounds.replicas {
        findings.append(
          Finding(
            rule: .underReplicated,
            detail: "\(digest): \(holding.count) of its replicas \(set) hold it (\(r.holders ?? [])), R=\(bounds.replicas), after \(bounds.service.repairSeconds) s"))
      } else if let t = r.reachedAfter {
        if t > bounds.service.repairSeconds {
          findings.append(
            Finding(rule: .underReplicated, detail: "\(digest) reached R=\(bounds.replicas) replicas \(t) s after the heal, bound \(bounds.service.repairSeconds) s"))
        }
        slowest = max(slowest ?? 0, t)
      }
    }
    return (findings, slowest)
  }

  /// Stretches of the run: before the first fault, each fault window, the gaps between,
  /// after the last fault until the heal, and after the heal. An operation belongs to the
  /// stretch in which it completed (a fault shows in what it ends); overlapping faults share
  /// the earlier one's window.
  static func phases(ops: [HistoryEvent], faults: [HistoryEvent], heal: Double?) -> [PhaseStats] {
    guard let first = ops.map({ $0.invoke! }).min() else { return [] }
    func at(_ e: HistoryEvent) -> Double { e.complete ?? e.invoke! }
    let last = max(ops.map { $0.complete ?? $0.invoke! }.max()!, heal ?? 0)
    var cuts: [(String, Double)] = [("before", first)]
    var cursor = first
    for f in faults {
      guard let s = f.start, let e = f.stop, e > cursor else { continue }
      let start = max(s, cursor)
      if start > cursor { cuts.append((cuts.count == 1 ? "before" : "between", cursor)) }
      cuts.append(("fault: \(f.name ?? "?")", start))
      cursor = e
    }
    if !faults.isEmpty { cuts.append(("after", cursor)) }
    if let heal, heal > cursor, !faults.isEmpty { cuts.append(("healed", heal)) }
    // Drop empty stretches (a cut followed by one at the same time).
    var merged: [(String, Double)] = []
    for c in cuts {
      if let l = merged.last, l.1 >= c.1 { merged[merged.count - 1] = c } else { merged.append(c) }
    }
    return merged.enumerated().compactMap { i, cut in
      let end = i + 1 < merged.count ? merged[i + 1].1 : last
      let inside = ops.filter { at($0) >= cut.1 && (at($0) < end || (i == merged.count - 1 && at($0) <= end)) }
      // The heal comes after the workload: no operations, nothing to say.
      if inside.isEmpty && cut.0 == "healed" { return nil }
      return stats(name: cut.0, start: cut.1, end: end, ops: inside)
    }
  }

  static func stats(name: String, start: Double, end: Double, ops: [HistoryEvent]) -> PhaseStats {
    func count(_ outcomes: Set<HistoryEvent.Outcome>) -> Int { ops.filter { outcomes.contains($0.outcome ?? .unknown) }.count }
    let ok = count([.ok, .already])
    let contended = count([.locked, .notFound])
    let failed = count([.fail])
    let unknown = count([.unknown])
    let denominator = ok + failed + unknown
    func percentiles(_ kind: HistoryEvent.Kind) -> (Double?, Double?) {
      let l = ops.filter { $0.kind == kind && ($0.outcome == .ok || $0.outcome == .already) }.compactMap(\.latency).sorted()
      guard !l.isEmpty else { return (nil, nil) }
      func at(_ q: Double) -> Double { l[min(l.count - 1, Int((q * Double(l.count)).rounded(.up)) - 1)] }
      return (at(0.5), at(0.99))
    }
    let (w50, w99) = percentiles(.write)
    let (r50, r99) = percentiles(.read)
    return PhaseStats(
      name: name, start: start, end: end, operations: ops.count, ok: ok, contended: contended, failed: failed,
      unknown: unknown, availability: denominator == 0 ? 1 : Double(ok) / Double(denominator), writeP50: w50,
      writeP99: w99, readP50: r50, readP99: r99)
  }

  func recoveries(ops: [HistoryEvent], faults: [HistoryEvent]) -> [Recovery] {
    faults.enumerated().compactMap { i, f in
      guard let s = f.start, let e = f.stop else { return nil }
      // A later fault's failures are its own.
      let horizon = min(e + recoveryHorizon, i + 1 < faults.count ? (faults[i + 1].start ?? .infinity) : .infinity)
      // Failures that ended once the fault had begun, of operations begun before the horizon.
      let hurt = ops.filter {
        ($0.outcome == .fail || $0.outcome == .unknown) && ($0.complete ?? $0.invoke!) >= s && $0.invoke! < max(horizon, e)
      }
      let ends = hurt.map { $0.complete ?? $0.invoke! }
      // From when the fault could first hurt an operation: an upload begun long before a
      // kill is not an outage of its whole length.
      let began = { (op: HistoryEvent) in max(op.invoke!, s) }
      return Recovery(
        fault: f.name ?? "?", start: s, stop: e, failures: hurt.count,
        recoverySeconds: ends.max().map { max(0, $0 - e) },
        outageSeconds: Self.longestFailureRun(ops: ops, from: s, until: ends.max() ?? s, began: began),
        failureSpanSeconds: ends.max().flatMap { last in hurt.map(began).min().map { last - $0 } })
    }
  }

  /// The longest run of failed operations (by completion, within [from, until]) with no
  /// successful one completing among them: from the earliest `began` of the run to its last
  /// completion. Nil if no operation failed there.
  static func longestFailureRun(ops: [HistoryEvent], from: Double, until: Double, began: (HistoryEvent) -> Double) -> Double? {
    let done = { (op: HistoryEvent) in op.complete ?? op.invoke! }
    let inside = ops.filter { done($0) >= from && done($0) <= until }.sorted { done($0) < done($1) }
    var longest: Double?
    var run: (start: Double, end: Double)?
    for op in inside {
      switch op.outcome {
      case .fail, .unknown:
        run = (min(run?.start ?? .infinity, began(op)), done(op))
        longest = max(longest ?? 0, run!.end - run!.start)
      case .ok, .already:
        run = nil
      default:
        break  // contention and not-yet-visible reads are neither
      }
    }
    return longest
  }
}
