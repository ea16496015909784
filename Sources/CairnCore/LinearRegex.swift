/// Regular expressions in linear time, with Go's RE2 syntax and semantics (containerd's
/// filters use Go's regexp): a pattern compiles to a Thompson NFA and a match runs it as a
/// Pike VM, one pass over the text with at most one thread per instruction. No input can
/// make a match backtrack: `(a+)+$` on a long run of `a`s costs text × program, not 2^n.
/// (Swift's Regex backtracks; one List with such a filter kept a node busy for minutes.)
///
/// Supported: literals and escapes (`\n`, `\x41`, `\x{263a}`, `\.`, `\Q…\E`), `.`, classes
/// (`[a-z]`, `[^…]`, `\d \w \s` and negations, `[[:alpha:]]`), anchors `^ $ \A \z \b \B`,
/// groups `(…)`, `(?:…)`, `(?P<name>…)`, `(?<name>…)`, flags `(?i)`, `(?s)`, `(?m)`, `(?U)`
/// (alone or `(?i:…)`), alternation, `* + ? {n} {n,} {n,m}` (and lazy forms, equal for a
/// yes/no match). Repetition counts are at most 1000 and a program at most
/// `maxInstructions`, as Go limits them; Unicode classes `\p{…}` and anything Go rejects
/// are INVALID_ARGUMENT.
public struct LinearRegex: Sendable {
  public static let maxRepeat = 1000
  public static let maxInstructions = 5000

  let program: [Instruction]

  public init(_ pattern: String) throws(ContentError) {
    var parser = RegexParser(Array(pattern.unicodeScalars), pattern: pattern)
    let node = try parser.parseAll()
    var compiler = RegexCompiler()
    try compiler.emit(node)
    compiler.append(.match)
    program = compiler.program
  }

  /// Whether the pattern matches anywhere in `text` (Go's MatchString). `budget` counts
  /// the threads the VM steps; nil when it ran out first.
  public func matches(_ text: String, budget: inout Int) -> Bool? {
    let input = Array(text.unicodeScalars)
    var current = ThreadList(capacity: program.count)
    var next = ThreadList(capacity: program.count)
    var stack: [Int] = []
    for i in 0...input.count {
      // Unanchored: a new thread at the start of every position.
      add(0, at: i, input, &current, &stack)
      if current.isEmpty { if i == input.count { break } else { continue } }
      budget -= current.count
      if budget < 0 { return nil }
      for pc in current.pcs {
        switch program[pc] {
        case .match: return true
        case .scalar(let c):
          if i < input.count && input[i] == c { add(pc + 1, at: i + 1, input, &next, &stack) }
        case .set(let set):
          if i < input.count && set.contains(input[i]) { add(pc + 1, at: i + 1, input, &next, &stack) }
        default:
          break
        }
      }
      swap(&current, &next)
      next.clear()
    }
    return false
  }

  /// Adds the thread at `pc` and everything reachable from it without consuming input.
  private func add(_ start: Int, at i: Int, _ input: [Unicode.Scalar], _ list: inout ThreadList, _ stack: inout [Int]) {
    stack.append(start)
    while let pc = stack.popLast() {
      guard list.insert(pc) else { continue }
      switch program[pc] {
      case .jump(let to): stack.append(to)
      case .split(let a, let b):
        stack.append(b)
        stack.append(a)
      case .assert(let a):
        if a.holds(at: i, in: input) { stack.append(pc + 1) }
      case .match, .scalar, .set:
        break
      }
    }
  }

  enum Instruction: Sendable {
    case scalar(Unicode.Scalar)
    case set(ScalarSet)
    case split(Int, Int)
    case jump(Int)
    case assert(Assertion)
    case match
  }

  enum Assertion: Sendable {
    case beginText, endText, beginLine, endLine, wordBoundary, notWordBoundary

    func holds(at i: Int, in s: [Unicode.Scalar]) -> Bool {
      let before = i > 0 ? s[i - 1] : nil
      let after = i < s.count ? s[i] : nil
      switch self {
      case .beginText: return i == 0
      case .endText: return i == s.count
      case .beginLine: return i == 0 || before == "\n"
      case .endLine: return i == s.count || after == "\n"
      case .wordBoundary: return ScalarSet.isWord(before) != ScalarSet.isWord(after)
      case .notWordBoundary: return ScalarSet.isWord(before) == ScalarSet.isWord(after)
      }
    }
  }

  /// The instructions a Pike VM step holds: a sparse set (constant-time insert and clear).
  struct ThreadList {
    private var dense: [Int]
    private var sparse: [Int]
    private(set) var count = 0

    init(capacity: Int) {
      dense = Array(repeating: 0, count: capacity)
      sparse = Array(repeating: 0, count: capacity)
    }

    var isEmpty: Bool { count == 0 }
    var pcs: ArraySlice<Int> { dense[0..<count] }

    /// False if it was there already.
    mutating func insert(_ pc: Int) -> Bool {
      let at = sparse[pc]
      if at < count && dense[at] == pc { return false }
      sparse[pc] = count
      dense[count] = pc
      count += 1
      return true
    }

    mutating func clear() { count = 0 }
  }
}

/// A set of Unicode scalars as sorted, disjoint ranges.
struct ScalarSet: Sendable {
  var ranges: [ClosedRange<UInt32>]

  func contains(_ c: Unicode.Scalar) -> Bool {
    let v = c.value
    var lo = 0
    var hi = ranges.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if ranges[mid].upperBound < v { lo = mid + 1 } else { hi = mid }
    }
    return lo < ranges.count && ranges[lo].contains(v)
  }

  static func isWord(_ c: Unicode.Scalar?) -> Bool {
    guard let c else { return false }
    return word.contains(c)
  }

  init(_ ranges: [ClosedRange<UInt32>]) { self.ranges = Self.normalized(ranges) }

  static func normalized(_ input: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
    var out: [ClosedRange<UInt32>] = []
    for r in input.sorted(by: { $0.lowerBound < $1.lowerBound }) {
      if let last = out.last, r.lowerBound <= last.upperBound &+ 1 {
        out[out.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
      } else {
        out.append(r)
      }
    }
    return out
  }

  static let maxScalar: UInt32 = 0x10FFFF

  func inverted() -> ScalarSet {
    var out: [ClosedRange<UInt32>] = []
    var next: UInt32 = 0
    for r in ranges {
      if r.lowerBound > next { out.append(next...(r.lowerBound - 1)) }
      next = r.upperBound &+ 1
    }
    if next <= Self.maxScalar && (ranges.last.map { $0.upperBound < Self.maxScalar } ?? true) { out.append(next...Self.maxScalar) }
    return ScalarSet(out)
  }

  /// With simple case folding of ASCII and Latin letters (what `(?i)` needs for ids,
  /// digests and label values; Go folds all of Unicode).
  func caseFolded() -> ScalarSet {
    var extra: [ClosedRange<UInt32>] = []
    for r in ranges {
      let lo = max(r.lowerBound, 0x41)
      let hi = min(r.upperBound, 0x24F)
      guard lo <= hi else { continue }
      for v in lo...hi {
        guard let s = Unicode.Scalar(v) else { continue }
        for other in [String(s).lowercased(), String(s).uppercased()] {
          let scalars = Array(other.unicodeScalars)
          if scalars.count == 1 && scalars[0].value != v { extra.append(scalars[0].value...scalars[0].value) }
        }
      }
    }
    return extra.isEmpty ? self : ScalarSet(ranges + extra)
  }

  static let digit = ScalarSet([0x30...0x39])
  static let word = ScalarSet([0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A])
  static let space = ScalarSet([0x09...0x0A, 0x0C...0x0D, 0x20...0x20])
  static let notNewline = ScalarSet([0...9, 11...maxScalar])
  static let anything = ScalarSet([0...maxScalar])

  /// `[[:name:]]` classes (ASCII, as Go).
  static func posix(_ name: String) -> ScalarSet? {
    switch name {
    case "alnum": ScalarSet([0x30...0x39, 0x41...0x5A, 0x61...0x7A])
    case "alpha": ScalarSet([0x41...0x5A, 0x61...0x7A])
    case "ascii": ScalarSet([0...0x7F])
    case "blank": ScalarSet([0x09...0x09, 0x20...0x20])
    case "cntrl": ScalarSet([0...0x1F, 0x7F...0x7F])
    case "digit": digit
    case "graph": ScalarSet([0x21...0x7E])
    case "lower": ScalarSet([0x61...0x7A])
    case "print": ScalarSet([0x20...0x7E])
    case "punct": ScalarSet([0x21...0x2F, 0x3A...0x40, 0x5B...0x60, 0x7B...0x7E])
    case "space": ScalarSet([0x09...0x0D, 0x20...0x20])
    case "upper": ScalarSet([0x41...0x5A])
    case "word": word
    case "xdigit": ScalarSet([0x30...0x39, 0x41...0x46, 0x61...0x66])
    default: nil
    }
  }
}

/// The parsed pattern.
indirect enum RegexNode {
  case empty
  case set(ScalarSet)
  case concat([RegexNode])
  case alternate([RegexNode])
  case repeatNode(RegexNode, min: Int, max: Int?)
  case assert(LinearRegex.Assertion)
}

/// Go's regexp/syntax grammar (Perl flags), as far as a yes/no match needs it.
struct RegexParser {
  struct Flags {
    var caseInsensitive = false
    var dotNewline = false
    var multiLine = false
  }

  private let s: [Unicode.Scalar]
  private let pattern: String
  private var i = 0
  private var depth = 0

  init(_ s: [Unicode.Scalar], pattern: String) {
    self.s = s
    self.pattern = pattern
  }

  private func error(_ why: String) -> ContentError {
    .invalidArgument("invalid regular expression \(quoted(pattern, limit: 120)): \(why) at position \(i)")
  }

  mutating func parseAll() throws(ContentError) -> RegexNode {
    var flags = Flags()
    let node = try alternation(&flags)
    if i < s.count { throw error("unexpected )") }
    return node
  }

  private mutating func alternation(_ flags: inout Flags) throws(ContentError) -> RegexNode {
    var branches = [try concatenation(&flags)]
    while i < s.count && s[i] == "|" {
      i += 1
      branches.append(try concatenation(&flags))
    }
    return branches.count == 1 ? branches[0] : .alternate(branches)
  }

  private mutating func concatenation(_ flags: inout Flags) throws(ContentError) -> RegexNode {
    var items: [RegexNode] = []
    while i < s.count && s[i] != "|" && s[i] != ")" {
      // A flag group without a body changes the flags for the rest of this group.
      if s[i] == "(" && i + 1 < s.count && s[i + 1] == "?", let changed = try flagsOnly(flags) {
        flags = changed
        continue
      }
      var atom = try atom(flags)
      atom = try quantified(atom)
      items.append(atom)
    }
    return items.count == 1 ? items[0] : items.isEmpty ? .empty : .concat(items)
  }

  /// `(?flags)` alone: the new flags, and the parser past it; nil if it is not one.
  private mutating func flagsOnly(_ flags: Flags) throws(ContentError) -> Flags? {
    var j = i + 2
    var f = flags
    var negate = false
    while j < s.count {
      switch s[j] {
      case "i": f.caseInsensitive = !negate
      case "s": f.dotNewline = !negate
      case "m": f.multiLine = !negate
      case "U": break
      case "-":
        if negate { throw error("bad flags") }
        negate = true
      case ")":
        i = j + 1
        return f
      default:
        return nil
      }
      j += 1
    }
    return nil
  }

  private mutating func quantified(_ atom: RegexNode) throws(ContentError) -> RegexNode {
    guard i < s.count else { return atom }
    var node: RegexNode
    switch s[i] {
    case "*":
      i += 1
      node = .repeatNode(atom, min: 0, max: nil)
    case "+":
      i += 1
      node = .repeatNode(atom, min: 1, max: nil)
    case "?":
      i += 1
      node = .repeatNode(atom, min: 0, max: 1)
    case "{":
      guard let (lo, hi) = try counts() else { return atom }
      node = .repeatNode(atom, min: lo, max: hi)
    default:
      return atom
    }
    if i < s.count && s[i] == "?" { i += 1 }  // lazy: the same yes/no
    if i < s.count && (s[i] == "*" || s[i] == "+" || s[i] == "?" || s[i] == "{") && (s[i] != "{" || (try? peekCounts()) != nil) {
      throw error("invalid nested repetition operator")
    }
    return node
  }

  private func peekCounts() throws(ContentError) -> Bool {
    var copy = self
    return try copy.counts() != nil
  }

  /// `{n}`, `{n,}`, `{n,m}`; nil (and nothing consumed) if this `{` is a literal.
  private mutating func counts() throws(ContentError) -> (Int, Int?)? {
    var j = i + 1
    func number() -> Int? {
      var v = 0
      var digits = 0
      while j < s.count, let d = s[j].properties.numericType == .decimal ? Int(String(s[j])) : nil {
        v = min(v * 10 + d, LinearRegex.maxRepeat + 1)
        digits += 1
        j += 1
      }
      return digits > 0 ? v : nil
    }
    guard let lo = number() else { return nil }
    var hi: Int? = lo
    if j < s.count && s[j] == "," {
      j += 1
      hi = number()
    }
    guard j < s.count && s[j] == "}" else { return nil }
    if lo > LinearRegex.maxRepeat || (hi ?? 0) > LinearRegex.maxRepeat { throw error("invalid repeat count") }
    if let hi, hi < lo { throw error("invalid repeat count") }
    i = j + 1
    return (lo, hi)
  }

  private mutating func atom(_ flags: Flags) throws(ContentError) -> RegexNode {
    let c = s[i]
    switch c {
    case "(":
      depth += 1
      if depth > 1000 { throw error("nesting too deep") }
      defer { depth -= 1 }
      i += 1
      var inner = flags
      if i < s.count && s[i] == "?" {
        i += 1
        if i < s.count && (s[i] == "P" || s[i] == "<") {
          if s[i] == "P" { i += 1 }
          guard i < s.count && s[i] == "<" else { throw error("invalid named capture") }
          while i < s.count && s[i] != ">" { i += 1 }
          guard i < s.count else { throw error("invalid named capture") }
          i += 1
        } else {
          var negate = false
          loop: while i < s.count {
            switch s[i] {
            case "i": inner.caseInsensitive = !negate
            case "s": inner.dotNewline = !negate
            case "m": inner.multiLine = !negate
            case "U": break
            case "-": negate = true
            case ":":
              i += 1
              break loop
            default: throw error("invalid or unsupported Perl syntax")
            }
            i += 1
          }
        }
      }
      let body = try alternation(&inner)
      guard i < s.count && s[i] == ")" else { throw error("missing closing )") }
      i += 1
      return body
    case ")": throw error("unexpected )")
    case "*", "+", "?": throw error("missing argument to repetition operator")
    case "{":
      if (try? peekCounts()) == true { throw error("missing argument to repetition operator") }
      i += 1
      return literal(c, flags)
    case ".":
      i += 1
      return .set(flags.dotNewline ? .anything : .notNewline)
    case "^":
      i += 1
      return .assert(flags.multiLine ? .beginLine : .beginText)
    case "$":
      i += 1
      return .assert(flags.multiLine ? .endLine : .endText)
    case "[":
      return .set(try characterClass(flags))
    case "\\":
      return try escape(flags, inClass: false)
    default:
      i += 1
      return literal(c, flags)
    }
  }

  private func literal(_ c: Unicode.Scalar, _ flags: Flags) -> RegexNode {
    let set = ScalarSet([c.value...c.value])
    return .set(flags.caseInsensitive ? set.caseFolded() : set)
  }

  /// An escape at `i` (the backslash): a literal, a class, an assertion or `\Q…\E`.
  private mutating func escape(_ flags: Flags, inClass: Bool) throws(ContentError) -> RegexNode {
    i += 1
    guard i < s.count else { throw error("trailing backslash at end of expression") }
    let c = s[i]
    i += 1
    switch c {
    case "d": return .set(.digit)
    case "D": return .set(ScalarSet.digit.inverted())
    case "w": return .set(.word)
    case "W": return .set(ScalarSet.word.inverted())
    case "s": return .set(.space)
    case "S": return .set(ScalarSet.space.inverted())
    case "A" where !inClass: return .assert(.beginText)
    case "z" where !inClass: return .assert(.endText)
    case "b" where !inClass: return .assert(.wordBoundary)
    case "B" where !inClass: return .assert(.notWordBoundary)
    case "Q" where !inClass:
      var items: [RegexNode] = []
      while i < s.count {
        if s[i] == "\\" && i + 1 < s.count && s[i + 1] == "E" {
          i += 2
          break
        }
        items.append(literal(s[i], flags))
        i += 1
      }
      return .concat(items)
    case "p", "P": throw error("Unicode classes (\\p) are not supported")
    default:
      return literal(try escapedScalar(c), flags)
    }
  }

  /// The scalar an escape stands for (`c` is the character after the backslash).
  private mutating func escapedScalar(_ c: Unicode.Scalar) throws(ContentError) -> Unicode.Scalar {
    switch c {
    case "a": return "\u{07}"
    case "f": return "\u{0C}"
    case "t": return "\t"
    case "n": return "\n"
    case "r": return "\r"
    case "v": return "\u{0B}"
    case "x":
      var hex = ""
      if i < s.count && s[i] == "{" {
        i += 1
        while i < s.count && s[i] != "}" && hex.count <= 8 {
          hex.unicodeScalars.append(s[i])
          i += 1
        }
        guard i < s.count && s[i] == "}" else { throw error("invalid escape sequence") }
        i += 1
      } else {
        guard i + 2 <= s.count else { throw error("invalid escape sequence") }
        hex = String(String.UnicodeScalarView(s[i..<i + 2]))
        i += 2
      }
      guard let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw error("invalid escape sequence") }
      return scalar
    case "0"..."7":
      // Octal: up to three digits (Go: \0 needs two more; \1-\7 would be backreferences).
      var digits = String(c)
      while digits.count < 3 && i < s.count && ("0"..."7").contains(s[i]) {
        digits.unicodeScalars.append(s[i])
        i += 1
      }
      guard c == "0" || digits.count > 1, let v = UInt32(digits, radix: 8), let scalar = Unicode.Scalar(v) else {
        throw error("invalid escape sequence (backreferences are not supported)")
      }
      return scalar
    default:
      // Punctuation escapes itself; letters and digits not handled above are errors.
      if c.properties.isAlphabetic || c.properties.numericType != nil { throw error("invalid escape sequence \\\(c)") }
      return c
    }
  }

  /// `[…]` at `i`.
  private mutating func characterClass(_ flags: Flags) throws(ContentError) -> ScalarSet {
    i += 1
    var negated = false
    if i < s.count && s[i] == "^" {
      negated = true
      i += 1
    }
    var ranges: [ClosedRange<UInt32>] = []
    var first = true
    while true {
      guard i < s.count else { throw error("missing closing ]") }
      if s[i] == "]" && !first {
        i += 1
        break
      }
      first = false
      if s[i] == "[" && i + 1 < s.count && s[i + 1] == ":" {
        var j = i + 2
        var name = ""
        var negate = false
        if j < s.count && s[j] == "^" {
          negate = true
          j += 1
        }
        while j < s.count && s[j] != ":" {
          name.unicodeScalars.append(s[j])
          j += 1
        }
        if j + 1 < s.count && s[j + 1] == "]", let set = ScalarSet.posix(name) {
          ranges += (negate ? set.inverted() : set).ranges
          i = j + 2
          continue
        }
      }
      let lo: UInt32
      if s[i] == "\\" {
        let save = i
        i += 1
        guard i < s.count else { throw error("missing closing ]") }
        if "dDwWsS".unicodeScalars.contains(s[i]) {
          i = save
          if case .set(let set) = try escape(Flags(), inClass: true) { ranges += set.ranges }
          continue
        }
        let c = s[i]
        i += 1
        lo = try escapedScalar(c).value
      } else {
        lo = s[i].value
        i += 1
      }
      var hi = lo
      if i + 1 < s.count && s[i] == "-" && s[i + 1] != "]" {
        i += 1
        if s[i] == "\\" {
          i += 1
          guard i < s.count else { throw error("missing closing ]") }
          let c = s[i]
          i += 1
          hi = try escapedScalar(c).value
        } else {
          hi = s[i].value
          i += 1
        }
        if hi < lo { throw error("invalid character class range") }
      }
      ranges.append(lo...hi)
    }
    var set = ScalarSet(ranges)
    if flags.caseInsensitive { set = set.caseFolded() }
    return negated ? set.inverted() : set
  }
}

/// The Thompson construction: a node becomes instructions of a Pike VM program.
struct RegexCompiler {
  var program: [LinearRegex.Instruction] = []

  mutating func append(_ i: LinearRegex.Instruction) { program.append(i) }

  private mutating func check() throws(ContentError) {
    if program.count > LinearRegex.maxInstructions {
      throw .invalidArgument("regular expression too large (over \(LinearRegex.maxInstructions) instructions)")
    }
  }

  mutating func emit(_ node: RegexNode) throws(ContentError) {
    try check()
    switch node {
    case .empty:
      break
    case .set(let set):
      if set.ranges.count == 1, set.ranges[0].lowerBound == set.ranges[0].upperBound, let c = Unicode.Scalar(set.ranges[0].lowerBound) {
        append(.scalar(c))
      } else {
        append(.set(set))
      }
    case .assert(let a):
      append(.assert(a))
    case .concat(let items):
      for item in items { try emit(item) }
    case .alternate(let branches):
      // split L1, next; L1: a; jump end; next: split L2, ...; last
      var jumps: [Int] = []
      for (n, branch) in branches.enumerated() {
        if n < branches.count - 1 {
          let split = program.count
          append(.split(split + 1, -1))
          try emit(branch)
          jumps.append(program.count)
          append(.jump(-1))
          program[split] = .split(split + 1, program.count)
        } else {
          try emit(branch)
        }
      }
      for j in jumps { program[j] = .jump(program.count) }
    case .repeatNode(let inner, let min, let max):
      for _ in 0..<min { try emit(inner) }
      if let max {
        // Each optional copy: split body, end (all ends patched to the same place).
        var splits: [Int] = []
        for _ in min..<max {
          splits.append(program.count)
          append(.split(program.count + 1, -1))
          try emit(inner)
        }
        for sp in splits { program[sp] = .split(sp + 1, program.count) }
      } else {
        // loop: split body, end; body; jump loop
        let loop = program.count
        append(.split(loop + 1, -1))
        try emit(inner)
        append(.jump(loop))
        program[loop] = .split(loop + 1, program.count)
      }
      try check()
    }
  }
}
