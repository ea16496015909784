import Foundation

/// One line of a chaos run's history (JSON Lines). The workload writes operations, the
/// harness writes fault windows and the heal, the verifier writes what it found after the
/// heal. Times are seconds since the Unix epoch on the harness host's clock (the nodes'
/// skewed clocks never enter the history).
public struct HistoryEvent: Codable, Sendable, Hashable {
  public enum Kind: String, Codable, Sendable {
    /// An upload: one writer's attempt to commit `digest` under `ref`.
    case write
    /// A whole-blob read of an acknowledged digest during the run.
    case read
    /// A Delete of a digest (the modern API's Delete through one node, failing over).
    case delete
    /// A fault window (`name`, `start`, `stop`) from the harness.
    case fault
    /// The moment every fault was healed (`start`).
    case heal
    /// After the heal: one node's read of one acknowledged digest.
    case finalRead = "final-read"
    /// After the heal: which nodes hold one acknowledged digest locally, and when the last of
    /// its R replicas got it (seconds after the heal).
    case replicas
  }

  /// How an operation ended.
  public enum Outcome: String, Codable, Sendable {
    /// Acknowledged: a commit succeeded, a read returned data.
    case ok
    /// The blob was already committed (ALREADY_EXISTS); containerd counts that as success.
    case already
    /// Another writer held the ref (lock contention: correct behaviour, not unavailability).
    case locked
    /// The digest is not there (a read of a blob not acknowledged to this reader yet).
    case notFound = "not-found"
    /// Failed without effect as far as the client knows (UNAVAILABLE, ...).
    case fail
    /// No answer (deadline, connection lost during COMMIT): it may or may not have happened.
    case unknown
  }

  public var kind: Kind
  public var process: Int?
  public var node: String?
  public var api: String?
  public var ref: String?
  public var digest: String?
  public var size: Int64?
  public var invoke: Double?
  public var complete: Double?
  public var outcome: Outcome?
  public var error: String?
  /// Writes: when the first answer on the stream arrived (the writer held the ref's lock
  /// from at least then) and when the last request that got an answer was sent (held until
  /// at least then).
  public var lockFrom: Double?
  public var lockUntil: Double?
  /// Writes: bytes the server already had (a resumed upload).
  public var resumedFrom: Int64?
  /// Nodes tried, the last one answering (a client fails over on UNAVAILABLE).
  public var attempts: Int?
  /// Reads: whether the bytes hashed to the digest asked for; writes: whether the commit
  /// was acknowledged for the digest of the bytes sent.
  public var matches: Bool?
  /// Faults: name, window; heal: `start`.
  public var name: String?
  public var start: Double?
  public var stop: Double?
  /// Replicas: the digest's replica set and the nodes that hold it.
  public var replicaSet: [String]?
  public var holders: [String]?
  /// Replicas: nodes of the set that never answered the verifier's last poll (refused it
  /// for the moment, or did not answer): neither holders nor proven lacking.
  public var unanswered: [String]?
  public var reachedAfter: Double?

  public init(kind: Kind) { self.kind = kind }

  public var latency: Double? {
    guard let invoke, let complete else { return nil }
    return complete - invoke
  }

  /// An acknowledged write: the client was told the blob is committed.
  public var acknowledged: Bool { kind == .write && (outcome == .ok || outcome == .already) }

  /// A failure that says nothing about the data: the node refused for the moment
  /// (UNAVAILABLE, RESOURCE_EXHAUSTED: a rate limit, a full queue), the deadline passed, or
  /// the outcome is unknown. A read that ended so proves neither presence nor loss.
  public var failedTransiently: Bool {
    if outcome == .unknown { return true }
    guard outcome == .fail, let error else { return false }
    return Self.transientCodes.contains { error.hasPrefix($0 + ":") }
  }

  /// The status names (as `error` starts) of refusals that are transient.
  public static let transientCodes = ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"]
}

/// Reads and writes histories as JSON Lines.
public enum HistoryFile {
  public static func encode(_ event: HistoryEvent) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(event)) ?? Data(), as: UTF8.self)
  }

  /// Every line of every file, in order; a torn last line (a killed writer) is skipped,
  /// any other bad line is an error naming its file and line.
  public static func load(_ paths: [String]) throws -> [HistoryEvent] {
    var events: [HistoryEvent] = []
    let decoder = JSONDecoder()
    for path in paths {
      let text = try String(contentsOfFile: path, encoding: .utf8)
      let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
      for (i, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
        do {
          events.append(try decoder.decode(HistoryEvent.self, from: Data(line.utf8)))
        } catch {
          if i == lines.count - 1 { continue }
          throw HistoryError(path: path, line: i + 1, why: "\(error)")
        }
      }
    }
    return events
  }
}

public struct HistoryError: Error, CustomStringConvertible {
  public var path: String
  public var line: Int
  public var why: String
  public var description: String { "\(path):\(line): not a history event: \(why)" }
}
