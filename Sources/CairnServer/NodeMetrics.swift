import CairnCore
import Foundation
import Prometheus
import Synchronization

/// One node's Prometheus registry. RPC series are recorded as calls end; the gauges that
/// describe state (ingests, stored blobs, membership, backlogs) are refreshed by the
/// collectors just before each scrape, so they cost nothing between scrapes.
public final class NodeMetrics: Sendable {
  public let registry = PrometheusCollectorRegistry()
  private let collectors = Mutex<[@Sendable (NodeMetrics) async -> Void]>([])
  private let totals = Mutex(Totals())

  /// Running sums the dashboard reads (the registry has no read API).
  public struct Totals: Sendable {
    public var calls: Int64 = 0
    public var failures: Int64 = 0
    public var bytesReceived: Int64 = 0
    public var bytesSent: Int64 = 0
  }

  /// Latency buckets from 100 µs to 60 s: small Info calls and multi-GiB uploads alike.
  static let latencyBuckets: [Duration] = [
    .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
    .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
    .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    .seconds(30), .seconds(60),
  ]

  /// Throughput history: totals sampled every `sampleSeconds` for five minutes.
  public static let sampleSeconds = 2.0
  private let samples = Mutex<[(at: Double, received: Int64, sent: Int64)]>([])

  public init() {}

  /// Samples the byte totals (the node runs this every `sampleSeconds`).
  public func sampleThroughput(now: Double = Date().timeIntervalSince1970) {
    let t = currentTotals
    samples.withLock { s in
      s.append((now, t.bytesReceived, t.bytesSent))
      if s.count > Int(300 / Self.sampleSeconds) + 1 { s.removeFirst(s.count - Int(300 / Self.sampleSeconds) - 1) }
    }
  }

  /// Bytes per second received and sent between successive samples, oldest first.
  public func throughputHistory() -> (received: [Double], sent: [Double]) {
    let s = samples.withLock { $0 }
    guard s.count > 1 else { return ([], []) }
    var received: [Double] = []
    var sent: [Double] = []
    for (a, b) in zip(s, s.dropFirst()) where b.at > a.at {
      received.append(Double(b.received - a.received) / (b.at - a.at))
      sent.append(Double(b.sent - a.sent) / (b.at - a.at))
    }
    return (received, sent)
  }

  public var currentTotals: Totals { totals.withLock { $0 } }

  /// One method's calls since start, for the dashboard's request rates and latencies (the
  /// page takes the difference between two polls, as Prometheus's rate() would).
  public struct MethodTotals: Sendable, Codable, Equatable {
    public var calls: Int64 = 0
    /// Calls that failed on the server's side (`NodeMetrics.serverFailureCodes`).
    public var errors: Int64 = 0
    /// Calls by latency: bucket i counts calls of at most `latencyBucketSeconds[i]`; the last,
    /// slower ones.
    public var buckets: [Int64] = Array(repeating: 0, count: NodeMetrics.latencyBuckets.count + 1)
  }
  private let methods = Mutex<[String: MethodTotals]>([:])

  /// The upper bounds of `MethodTotals.buckets`, in seconds.
  public static var latencyBucketSeconds: [Double] { latencyBuckets.map { Double($0.nanoseconds) / 1e9 } }

  public var methodTotals: [String: MethodTotals] { methods.withLock { $0 } }

  /// The codes the dashboard counts as errors: the node failed. NOT_FOUND (containerd asks
  /// Info before every pull), ALREADY_EXISTS (a layer pulled twice), a bad
  /// argument, a refused credential or limit, a client's cancel: answers, not failures; an
  /// error rate that counted them was mostly a pull's normal traffic. The series in
  /// /metrics keep every code (deploy/prometheus's alerts pick theirs).
  public static let serverFailureCodes: Set<String> = ["unknown", "internalError", "dataLoss", "deadlineExceeded", "unavailable"]

  /// The series of one method and code, made once: looking them up in the registry on
  /// every call (it validates names and labels each time) cut concurrent 4 KiB reads from
  /// ~5 700 to ~3 400 blobs/s (docs/benchmarks.md).
  private struct CallSeries {
    let requests: Counter
    let duration: DurationHistogram
  }
  private let callSeries = Mutex<[String: CallSeries]>([:])
  private let byteSeries = Mutex<[String: (received: Counter, sent: Counter)]>([:])

  func recordCall(method: String, code: String, duration: Duration) {
    let key = method + " " + code
    let series = callSeries.withLock { cache in
      if let s = cache[key] { return s }
      let labels = [("method", method), ("code", code)]
      let s = CallSeries(
        requests: registry.makeCounter(name: "cairn_rpc_requests_total", labels: labels, help: "RPCs served, by method and status code"),
        duration: registry.makeDurationHistogram(
          name: "cairn_rpc_duration_seconds", labels: labels, buckets: Self.latencyBuckets,
          help: "RPC latency from first byte to status, by method and status code"))
      cache[key] = s
      return s
    }
    series.requests.increment()
    series.duration.recordNanoseconds(duration.nanoseconds)
    let bucket = Self.latencyBuckets.firstIndex { duration <= $0 } ?? Self.latencyBuckets.count
    // In place: a copy taken out of the dictionary and written back would copy the bucket
    // array on every call (the dictionary still holds it while the copy is changed).
    methods.withLock {
      $0[method, default: MethodTotals()].calls += 1
      if Self.serverFailureCodes.contains(code) { $0[method, default: MethodTotals()].errors += 1 }
      $0[method, default: MethodTotals()].buckets[bucket] += 1
    }
    totals.withLock {
      $0.calls += 1
      if code != "ok" { $0.failures += 1 }
    }
  }

  func recordBytes(method: String, received: Int, sent: Int) {
    guard received > 0 || sent > 0 else { return }
    let series = byteSeries.withLock { cache in
      if let s = cache[method] { return s }
      let labels = [("method", method)]
      let s = (
        received: registry.makeCounter(name: "cairn_rpc_received_bytes_total", labels: labels, help: "Blob bytes received in RPC messages"),
        sent: registry.makeCounter(name: "cairn_rpc_sent_bytes_total", labels: labels, help: "Blob bytes sent in RPC messages")
      )
      cache[method] = s
      return s
    }
    if received > 0 { series.received.increment(by: Int64(received)) }
    if sent > 0 { series.sent.increment(by: Int64(sent)) }
    totals.withLock {
      $0.bytesReceived += Int64(received)
      $0.bytesSent += Int64(sent)
    }
  }

  /// A limit refused a call (RESOURCE_EXHAUSTED naming it).
  public func recordLimitHit(_ limit: String) {
    registry.makeCounter(name: "cairn_limit_rejections_total", labels: [("limit", limit)], help: "Calls refused by a named limit").increment()
  }

  public func gauge(_ name: String, _ help: String, labels: [(String, String)] = []) -> Gauge {
    registry.makeGauge(name: name, labels: labels, help: help)
  }

  /// `collect` runs before every scrape and sets the state gauges.
  public func addCollector(_ collect: @escaping @Sendable (NodeMetrics) async -> Void) {
    collectors.withLock { $0.append(collect) }
  }

  /// The text exposition format, after refreshing the state gauges.
  public func scrape() async -> [UInt8] {
    for collect in collectors.withLock({ $0 }) { await collect(self) }
    return registry.emitToBuffer()
  }
}

extension Duration {
  var nanoseconds: Int64 {
    let (s, attos) = components
    return s * 1_000_000_000 + attos / 1_000_000_000
  }
}
