import CairnCore
import Foundation
import Testing

/// The filter language's regular expressions: Go's RE2 semantics, in linear time.
@Suite struct LinearRegexTests {
  static func match(_ pattern: String, _ text: String) throws -> Bool {
    var budget = Int.max
    return try LinearRegex(pattern).matches(text, budget: &budget)!
  }

  @Test func goSemantics() throws {
    let cases: [(String, String, Bool)] = [
      ("abc", "xxabcxx", true), ("^abc", "xabc", false), ("abc$", "abcx", false), ("^abc$", "abc", true),
      ("a.c", "abc", true), ("a.c", "a\nc", false), ("(?s)a.c", "a\nc", true),
      ("^sha256:[0-9a-f]{64}$", "sha256:" + String(repeating: "a", count: 64), true),
      ("^sha256:[0-9a-f]{64}$", "sha256:" + String(repeating: "a", count: 63), false),
      ("colou?r", "color", true), ("colou?r", "colour", true), ("colou?r", "colouur", false),
      ("a{2,3}", "a", false), ("^a{2,3}$", "aaa", true), ("^a{2,3}$", "aaaa", false), ("^a{2,}$", "aaaaa", true),
      ("(cat|dog)s", "hotdogs", true), ("^(cat|dog)$", "cats", false), ("a|b|c", "zzc", true),
      ("[^0-9]", "123", false), ("[^0-9]", "12x", true), ("\\d+", "abc", false), ("\\D", "12", false),
      ("\\w+", "--", false), ("\\s", "a b", true), ("\\S", "   ", false),
      ("\\bfoo\\b", "a foo b", true), ("\\bfoo\\b", "afoob", false), ("\\Bfoo", "afoo", true),
      ("(?i)HELLO", "say hello", true), ("HELLO", "say hello", false), ("(?i:a)b", "Ab", true), ("(?i:a)b", "AB", false),
      ("[[:alpha:]]+[[:digit:]]", "abc1", true), ("[[:^alpha:]]", "abc", false), ("[a-c-]", "-", true),
      ("\\.", "a", false), ("\\.", ".", true), ("\\x41", "A", true), ("\\x{263a}", "\u{263a}", true),
      ("\\Qa.b\\E", "axb", false), ("\\Qa.b\\E", "a.b", true), ("(?m)^b$", "a\nb\nc", true), ("^b$", "a\nb\nc", false),
      ("\\Aab\\z", "ab", true), ("(?P<name>x)y", "xy", true), ("(?:ab)+$", "ababab", true), ("", "anything", true),
      ("a*", "", true), ("(a*)*$", "b", true), ("(|a)+b", "aab", true), ("[]a]", "]", true), ("x{", "x{", true),
    ]
    for (pattern, text, expected) in cases {
      #expect(try Self.match(pattern, text) == expected, "\(pattern) on \(text.debugDescription)")
    }
  }

  @Test func whatGoRejectsIsRefused() {
    for bad in ["(", ")", "a**", "[z-a]", "a{1001}", "\\1", "\\p{Greek}", "(?<=a)b", "*a", "[a", "\\"] {
      #expect(throws: ContentError.self, "\(bad)") { _ = try LinearRegex(bad) }
    }
    // (a{1000}){1000} would be a million instructions.
    #expect(throws: ContentError.self) { _ = try LinearRegex("(a{1000}){1000}") }
  }

  /// The patterns that took a backtracking engine seconds to minutes: a linear number of
  /// steps, counted, not timed.
  @Test func catastrophicPatternsAreLinear() throws {
    let text = String(repeating: "a", count: 4000) + "b"
    for pattern in ["^(a+)+$", "^(a|a)*$", "^([0-9a-f]|[0-9a-f]){0,40}z", "(a*)*b$", "^(.*a){20}$"] {
      let regex = try LinearRegex(pattern)
      var budget = 50_000_000
      let result = regex.matches(text, budget: &budget)
      #expect(result != nil, "\(pattern) ran out of its budget")
      let used = 50_000_000 - budget
      #expect(used < 400 * text.count, "\(pattern): \(used) steps for \(text.count) characters")
    }
  }

  /// Against Swift's own (backtracking) Regex on random small patterns and texts, where
  /// the two agree on syntax: the same yes/no answer. Seeded; prints the seed on failure.
  @Test func agreesWithABacktrackingEngine() throws {
    var rng = SplitMix(seed: 0x5eed)
    let atoms = ["a", "b", "c", ".", "[ab]", "[^a]", "\\d", "x", "(a|b)", "(ab)", "(a|)"]
    let quantifiers = ["", "", "*", "+", "?", "{2}", "{0,2}"]
    var compared = 0
    for _ in 0..<3000 {
      var pattern = rng.next() % 4 == 0 ? "^" : ""
      for _ in 0..<(1 + Int(rng.next() % 4)) {
        pattern += atoms[Int(rng.next() % UInt64(atoms.count))] + quantifiers[Int(rng.next() % UInt64(quantifiers.count))]
      }
      if rng.next() % 4 == 0 { pattern += "$" }
      if rng.next() % 6 == 0 { pattern = "(" + pattern + ")|c" }
      let text = String((0..<Int(rng.next() % 8)).map { _ in "abcx1"[String.Index(utf16Offset: Int(rng.next() % 5), in: "abcx1")] })
      guard let reference = try? Regex(pattern) else { continue }
      let expected = (try? reference.firstMatch(in: text)) != nil
      #expect(try Self.match(pattern, text) == expected, "\(pattern) on \(text.debugDescription)")
      compared += 1
    }
    #expect(compared > 2500)
  }

  /// One List's patterns share a budget: past it the filter says so (DEADLINE_EXCEEDED).
  @Test func aFilterHasABudget() throws {
    var limits = Limits()
    limits.maxFilterWork = 10_000
    let filter = try Filter.parse(["labels.k~=^(x|y)*z"], limits: limits)
    let info = BlobInfo(
      digest: Digest.of(Data("x".utf8)), size: 1, createdAt: .zero, updatedAt: .zero, labels: ["k": String(repeating: "x", count: 3000)])
    #expect(!filter.matches(info))
    #expect(filter.exhausted && filter.exhaustedError.code == .deadlineExceeded)
    #expect(!(try Filter.parse(["labels.k==v"], limits: limits)).exhausted)
  }
}

struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
