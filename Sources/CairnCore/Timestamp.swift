#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time with nanosecond precision (Foundation's Date is a Double and loses
/// nanoseconds at today's epoch; containerd compares timestamps to the nanosecond).
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var seconds: Int64
  public var nanos: Int32

  /// Normalises `nanos` into 0..<1e9; seconds saturate at Int64's ends (values that far
  /// out only come from corrupt or hostile input, and must not trap).
  public init(seconds: Int64, nanos: Int32) {
    var carry = Int64(nanos / 1_000_000_000)
    var n = nanos % 1_000_000_000
    if n < 0 {
      n += 1_000_000_000
      carry -= 1
    }
    let (s, overflow) = seconds.addingReportingOverflow(carry)
    // Past Int64's seconds: the nearest instant there is (nanos stay in 0..<1e9, so that
    // normalising twice changes nothing; the fuzz target `peer-messages` found a negative
    // nanos left here by a message's Timestamp at Int64.min s + Int32.min ns).
    self.seconds = overflow ? (carry < 0 ? .min : .max) : s
    self.nanos = overflow ? (carry < 0 ? 0 : 999_999_999) : n
  }

  /// The range protobuf's Timestamp allows (0001-01-01 to 9999-12-31): what a peer or a
  /// client may send. Outside it: INVALID_ARGUMENT naming `what`.
  public static let validSeconds: ClosedRange<Int64> = -62_135_596_800...253_402_300_799

  public init(validating seconds: Int64, nanos: Int32, _ what: String) throws(ContentError) {
    guard Self.validSeconds.contains(seconds), (0..<1_000_000_000).contains(nanos) else {
      throw .invalidArgument("\(what) \(seconds) s + \(nanos) ns is not a time between years 1 and 9999")
    }
    self.init(seconds: seconds, nanos: nanos)
  }

  public static func now() -> Timestamp {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Timestamp(seconds: Int64(ts.tv_sec), nanos: Int32(ts.tv_nsec))
  }

  public static let zero = Timestamp(seconds: 0, nanos: 0)

  public static func < (a: Timestamp, b: Timestamp) -> Bool {
    (a.seconds, a.nanos) < (b.seconds, b.nanos)
  }

  /// Nanoseconds since the epoch (fits Int64 from 1677 to 2262; saturates beyond).
  public var totalNanoseconds: Int64 {
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? .min : .max }
    let (sum, overflow2) = scaled.addingReportingOverflow(Int64(nanos))
    return overflow2 ? .max : sum
  }

  public init(totalNanoseconds n: Int64) {
    self.init(seconds: n / 1_000_000_000, nanos: Int32(n % 1_000_000_000))
  }

  public func adding(seconds s: Double) -> Timestamp {
    let delta = (s * 1e9).isFinite ? Int64(max(-9e18, min(9e18, s * 1e9))) : 0
    let (sum, overflow) = totalNanoseconds.addingReportingOverflow(delta)
    return Timestamp(totalNanoseconds: overflow ? (delta < 0 ? .min : .max) : sum)
  }

  /// RFC 3339 in UTC with nine fractional digits: what Go's time.MarshalText reads back,
  /// so ingest timestamp files stay readable by containerd's content/local.
  public var description: String { rfc3339 }

  public var rfc3339: String {
    // Years 1 to 9999 (RFC 3339's); a saturated time prints at the end it is beyond.
    let seconds = min(max(self.seconds, Self.validSeconds.lowerBound), Self.validSeconds.upperBound)
    let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
    let secOfDay = seconds - days * 86400
    let (y, m, d) = Timestamp.civil(fromDays: days)
    func pad(_ v: Int64, _ w: Int) -> String {
      let s = String(v)
      return String(repeating: "0", count: max(0, w - s.count)) + s
    }
    return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(secOfDay / 3600, 2)):\(pad(secOfDay / 60 % 60, 2)):\(pad(secOfDay % 60, 2)).\(pad(Int64(nanos), 9))Z"
  }

  /// Parses RFC 3339 with optional fraction and a `Z` or `±hh:mm` offset (Go's
  /// MarshalText output, which trims trailing zeros of the fraction).
  public init?(rfc3339 text: String) {
    let u = Array(text.utf8)
    func num(_ from: Int, _ len: Int) -> Int64? {
      guard from + len <= u.count else { return nil }
      var v: Int64 = 0
      for c in u[from..<from + len] {
        guard c >= 0x30 && c <= 0x39 else { return nil }
        v = v * 10 + Int64(c - 0x30)
      }
      return v
    }
    guard u.count >= 20, let y = num(0, 4), u[4] == 0x2d, let mo = num(5, 2), u[7] == 0x2d,
      let d = num(8, 2), u[10] == 0x54 || u[10] == 0x74, let h = num(11, 2), u[13] == 0x3a,
      let mi = num(14, 2), u[16] == 0x3a, let s = num(17, 2)
    else { return nil }
    var i = 19
    var nanos: Int64 = 0
    if i < u.count && u[i] == 0x2e {
      i += 1
      var digits = 0
      while i < u.count, u[i] >= 0x30, u[i] <= 0x39 {
        if digits < 9 { nanos = nanos * 10 + Int64(u[i] - 0x30) }
        digits += 1
        i += 1
      }
      guard digits > 0 else { return nil }
      if digits < 9 { for _ in digits..<9 { nanos *= 10 } }
    }
    guard i < u.count else { return nil }
    var offset: Int64 = 0
    if u[i] == 0x5a || u[i] == 0x7a {
      i += 1
    } else if u[i] == 0x2b || u[i] == 0x2d, let oh = num(i + 1, 2), u.count > i + 3, u[i + 3] == 0x3a,
      let om = num(i + 4, 2)
    {
      offset = (oh * 3600 + om * 60) * (u[i] == 0x2b ? 1 : -1)
      i += 6
    } else {
      return nil
    }
    guard i == u.count, (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61 else {
      return nil
    }
    let days = Timestamp.days(fromCivil: y, mo, d)
    self.init(seconds: days * 86400 + h * 3600 + mi * 60 + s - offset, nanos: Int32(nanos))
  }

  // Howard Hinnant's days_from_civil / civil_from_days.
  static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
    let y = m <= 2 ? y0 - 1 : y0
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468
  }

  static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
    let z = z0 + 719468
    let era = (z >= 0 ? z : z - 146096) / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
  }
}

/// The store's source of time, injected so that tests and simulations control it.
public typealias WallClock = @Sendable () -> Timestamp

/// Seconds on a clock that only moves forward at the rate of real time (CLOCK_MONOTONIC):
/// for durations, rates and expiry on this node. The wall clock is not: set back a day
/// (an operator, NTP, libfaketime), it froze the request-rate buckets and the usage cache
/// of a node until it caught up (found by chaos/scenarios/clock-skew-deletes).
public enum Monotonic {
  public static var seconds: Double { Double(nanoseconds) / 1e9 }

  public static var nanoseconds: Int64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
  }
}
