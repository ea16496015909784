import Foundation

/// /api/status: what the dashboard draws, as JSON (also handy for scripts).
public struct StatusDocument: Codable, Sendable {
  public struct Usage: Codable, Sendable {
    public var blobs: UInt64
    public var storedBytes: UInt64
    public var diskUsedBytes: UInt64
    public var diskCapacityBytes: UInt64
    public var activeIngests: UInt64
    public var bytesReceived: UInt64
    public var bytesSent: UInt64
    public var calls: UInt64
    public var failedCalls: UInt64
    /// Bytes per second, oldest first, one value per `sampleSeconds` (five minutes).
    public var receivedPerSecond: [Double]
    public var sentPerSecond: [Double]
    public var sampleSeconds: Double

    public init(
      blobs: UInt64, storedBytes: UInt64, diskUsedBytes: UInt64, diskCapacityBytes: UInt64, activeIngests: UInt64,
      bytesReceived: UInt64, bytesSent: UInt64, calls: UInt64, failedCalls: UInt64,
      receivedPerSecond: [Double], sentPerSecond: [Double], sampleSeconds: Double
    ) {
      self.receivedPerSecond = receivedPerSecond
      self.sentPerSecond = sentPerSecond
      self.sampleSeconds = sampleSeconds
      self.blobs = blobs
      self.storedBytes = storedBytes
      self.diskUsedBytes = diskUsedBytes
      self.diskCapacityBytes = diskCapacityBytes
      self.activeIngests = activeIngests
      self.bytesReceived = bytesReceived
      self.bytesSent = bytesSent
      self.calls = calls
      self.failedCalls = failedCalls
    }
  }

  public struct Member: Codable, Sendable {
    public var id: String
    /// alive, suspect, dead (this node's view), or unreachable (alive but did not answer).
    public var state: String
    public var ownership: Double
    public var replicaShare: Double
    public var usage: Usage?
    public var repairBacklog: UInt64?
    public var hintsPending: UInt64?

    public init(id: String, state: String, ownership: Double, replicaShare: Double, usage: Usage?, repairBacklog: UInt64?, hintsPending: UInt64?) {
      self.id = id
      self.state = state
      self.ownership = ownership
      self.replicaShare = replicaShare
      self.usage = usage
      self.repairBacklog = repairBacklog
      self.hintsPending = hintsPending
    }
  }

  public var node: String
  public var cluster: Bool
  public var replicas: Int
  public var writeQuorum: Int
  public var ready: Bool
  /// Seconds since 1970 (the page computes rates from successive documents).
  public var time: Double
  public var members: [Member]
  /// How the node tells callers apart ("INSECURE ..." when it trusts everyone on purpose).
  public var security: String = ""
  /// `cairn version` of this node, and when its process started (seconds since 1970).
  public var version = ""
  public var startedAt: Double = 0
  /// Why /readyz answers 503, when it does.
  public var notReadyReason: String?
  /// What an operator should know now, worst first: the page's banner.
  public var problems: [Problem] = []
  /// This node's calls since start, by method (cumulative: the page takes differences).
  public var methods: [String: MethodTotals] = [:]
  /// The upper bounds of `MethodTotals.buckets`, in seconds.
  public var latencyBucketSeconds: [Double] = []

  public struct Problem: Codable, Sendable, Equatable {
    /// "critical" (data at risk or the node out of service) or "warning".
    public var level: String
    public var text: String
    public init(level: String, text: String) {
      self.level = level
      self.text = text
    }
  }

  /// Cumulative calls, errors and latency buckets of one method.
  public struct MethodTotals: Codable, Sendable, Equatable {
    public var calls: Int64
    public var errors: Int64
    public var buckets: [Int64]
    public init(calls: Int64, errors: Int64, buckets: [Int64]) {
      self.calls = calls
      self.errors = errors
      self.buckets = buckets
    }
  }

  /// The banner's lines, from the members' states and reports: a dead member leaves its
  /// blobs with fewer than R replicas (under-replicated) until it returns or repair copies
  /// them; owed hints and a repair backlog mean copies are still missing.
  public static func problems(ready: Bool, notReadyReason: String?, replicas: Int, members: [Member]) -> [Problem] {
    var out: [Problem] = []
    if !ready { out.append(Problem(level: "critical", text: "this node is not ready: \(notReadyReason ?? "starting")")) }
    let dead = members.filter { $0.state == "dead" }.map(\.id)
    if !dead.isEmpty {
      let names = dead.joined(separator: ", ")
      let level = dead.count >= replicas ? "critical" : "warning"
      out.append(Problem(
        level: level,
        text: "\(names) \(dead.count == 1 ? "is" : "are") dead: under-replicated, the blobs \(dead.count == 1 ? "it holds have" : "they hold have") fewer than \(replicas) copies until \(dead.count == 1 ? "it returns" : "they return") or repair copies them"
          + (dead.count >= replicas ? "; some blobs may have no live copy" : "")))
    }
    let unsure = members.filter { $0.state == "suspect" || $0.state == "unreachable" }.map { "\($0.id) (\($0.state))" }
    if !unsure.isEmpty { out.append(Problem(level: "warning", text: "not answering: \(unsure.joined(separator: ", "))")) }
    let hints = members.compactMap(\.hintsPending).reduce(0, +)
    if hints > 0 { out.append(Problem(level: "warning", text: "\(hints) replica cop\(hints == 1 ? "y is" : "ies are") owed to unreachable members (hints)")) }
    let backlog = members.compactMap(\.repairBacklog).reduce(0, +)
    if backlog > 0 { out.append(Problem(level: "warning", text: "repair backlog: \(backlog) blob cop\(backlog == 1 ? "y" : "ies") missing where they belong")) }
    return out
  }

  public init(node: String, cluster: Bool, replicas: Int, writeQuorum: Int, ready: Bool, time: Double, members: [Member]) {
    self.node = node
    self.cluster = cluster
    self.replicas = replicas
    self.writeQuorum = writeQuorum
    self.ready = ready
    self.time = time
    self.members = members
  }

  public func json() -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return Array((try? e.encode(self)) ?? Data("{}".utf8))
  }
}
