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
