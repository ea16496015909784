import CairnCore
import Foundation
import Testing

@Suite struct DigestTests {
  @Test func parsesValidDigests() throws {
    let d = try Digest(parsing: "sha256:" + String(repeating: "a", count: 64))
    #expect(d.algorithm == .sha256)
    #expect(d.description == "sha256:" + String(repeating: "a", count: 64))
    _ = try Digest(parsing: "sha512:" + String(repeating: "0", count: 128))
    _ = try Digest(parsing: "sha384:" + String(repeating: "f", count: 96))
  }

  @Test(arguments: [
    "", "sha256", "sha256:", "sha256:nothex", "md5:" + String(repeating: "a", count: 32),
    "sha256:" + String(repeating: "A", count: 64), "sha256:" + String(repeating: "a", count: 63),
    "SHA256:" + String(repeating: "a", count: 64),
  ])
  func rejectsInvalidDigests(_ text: String) {
    #expect(throws: ContentError.self) { try Digest(parsing: text) }
    do {
      _ = try Digest(parsing: text)
    } catch {
      #expect(error.code == .invalidArgument)
    }
  }

  @Test func knownVectors() {
    #expect(Digest.of(Data()).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(Digest.of(Data("hello".utf8)).hex == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    #expect(
      Digest.of(Data("abc".utf8), algorithm: .sha512).hex.hasPrefix("ddaf35a193617aba"))
  }

  @Test func runningDigestDoesNotEndTheHash() {
    var d = Digester()
    d.update(Data("hel".utf8))
    #expect(d.digest() == Digest.of(Data("hel".utf8)))
    d.update(Data("lo".utf8))
    #expect(d.digest() == Digest.of(Data("hello".utf8)))
  }

  @Test func ingestKeysArePathSafe() {
    for ref in ["../../etc/passwd", "/", "a/b/c", String(repeating: "x", count: 4000)] {
      let key = RefRules.ingestKey(ref)
      #expect(key.count == 64)
      #expect(key.allSatisfy { $0.isHexDigit })
    }
    #expect(RefRules.ingestKey("a") != RefRules.ingestKey("b"))
  }
}

@Suite struct TimestampTests {
  @Test func roundTripsWithNanoseconds() throws {
    let t = Timestamp(seconds: 1_764_384_000, nanos: 123_456_789)
    #expect(t.rfc3339 == "2025-11-29T02:40:00.123456789Z")
    #expect(Timestamp(rfc3339: t.rfc3339) == t)
  }

  @Test func parsesGoMarshalText() {
    // Go trims trailing zeros and may carry an offset.
    #expect(Timestamp(rfc3339: "2025-11-29T02:40:00.1Z") == Timestamp(seconds: 1_764_384_000, nanos: 100_000_000))
    #expect(Timestamp(rfc3339: "2025-11-29T03:40:00+01:00") == Timestamp(seconds: 1_764_384_000, nanos: 0))
    #expect(Timestamp(rfc3339: "1970-01-01T00:00:00Z") == .zero)
    #expect(Timestamp(rfc3339: "garbage") == nil)
    #expect(Timestamp(rfc3339: "2025-11-29T02:40:00.1234567891234Z")?.nanos == 123_456_789)
  }

  @Test func nowIsMonotonicEnoughAndOrdered() {
    let a = Timestamp.now()
    let b = Timestamp.now()
    #expect(a <= b)
    #expect(a.adding(seconds: 1.5) > a)
  }
}

/// Times from the wire: conversions saturate instead of trapping, and peers' times are
/// checked to be real dates (issue 15, finding 2: a LocalDelete at 10^10 s crashed a node).
@Suite struct TimestampBoundsTests {
  @Test func farTimesSaturate() throws {
    let far = Timestamp(seconds: 10_000_000_000, nanos: 0)
    #expect(far.totalNanoseconds == .max)
    #expect(Timestamp(seconds: .min, nanos: -5).totalNanoseconds == .min)
    #expect(Timestamp(seconds: .max, nanos: 999_999_999).seconds == .max)
    // Normalised nanos are in 0..<1e9 even at the ends, and normalising is idempotent.
    for (s, n) in [(Int64.min, Int32.min), (.min, -1), (.max, .max), (.min + 1, Int32.min), (0, .min), (-1, .max)] {
      let t = Timestamp(seconds: s, nanos: n)
      #expect((0..<1_000_000_000).contains(t.nanos), "\(s) s + \(n) ns")
      #expect(Timestamp(seconds: t.seconds, nanos: t.nanos) == t, "\(s) s + \(n) ns")
    }
    #expect(far.adding(seconds: 1e300).totalNanoseconds == .max)
    #expect(Timestamp(seconds: .max, nanos: 0).rfc3339.hasPrefix("9999-12-31"))
    #expect(Timestamp(seconds: .min, nanos: 0).rfc3339.hasPrefix("0001-01-01"))
    #expect(throws: ContentError.self) { _ = try Timestamp(validating: 300_000_000_000, nanos: 0, "deleted_at") }
    #expect(throws: ContentError.self) { _ = try Timestamp(validating: 0, nanos: -1, "deleted_at") }
    #expect(try Timestamp(validating: 10_000_000_000, nanos: 0, "deleted_at").seconds == 10_000_000_000)
  }
}
