/// Sizes as people write them: `1048576`, `64k`, `64KiB`, `1.5GiB`, `1 TB`. Binary units
/// (KiB … PiB, and the single letters k, m, g, t, p) are powers of 1024; SI units
/// (kB … PB) powers of 1000. Used by configuration keys and command-line sizes alike.
public enum ByteSize {
  private static let units: [(String, Double)] = [
    ("kib", 0x1p10), ("mib", 0x1p20), ("gib", 0x1p30), ("tib", 0x1p40), ("pib", 0x1p50),
    ("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12), ("pb", 1e15),
    ("k", 0x1p10), ("m", 0x1p20), ("g", 0x1p30), ("t", 0x1p40), ("p", 0x1p50), ("b", 1),
  ]

  /// Bytes, or nil when `text` is not a size or does not fit in an Int64 (never a trap:
  /// `--size 99999999999t` is an error, not a crash).
  public static func parse(_ text: String) -> Int64? {
    let t = text.trimmingSpaces().lowercased()
    var number = Substring(t)
    var multiplier = 1.0
    for (suffix, m) in units where t.hasSuffix(suffix) {
      number = t.dropLast(suffix.count)
      multiplier = m
      break
    }
    let digits = number.trimmingSpaces()
    if let whole = Int64(digits) {
      guard whole >= 0 else { return nil }
      let (v, overflow) = whole.multipliedReportingOverflow(by: Int64(multiplier))
      return overflow ? nil : v
    }
    // A fraction (1.5GiB): whole bytes, rounded down.
    guard digits.allSatisfy({ $0.isNumber || $0 == "." }), let d = Double(digits), d.isFinite, d >= 0 else { return nil }
    let bytes = (d * multiplier).rounded(.down)
    return bytes < 9.2e18 ? Int64(bytes) : nil
  }

  /// `1.5 GiB`; bytes below 1 KiB as `512 B`.
  public static func format(_ n: Int64) -> String {
    let names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(n)
    var u = 0
    while abs(v) >= 1024 && u < names.count - 1 {
      v /= 1024
      u += 1
    }
    if u == 0 { return "\(n) B" }
    let tenths = Int64((v * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10)) \(names[u])"
  }
}

extension StringProtocol {
  fileprivate func trimmingSpaces() -> String {
    var s = Substring(self)
    while s.first == " " { s = s.dropFirst() }
    while s.last == " " { s = s.dropLast() }
    return String(s)
  }
}
