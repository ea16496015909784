import Synchronization

/// containerd's filter language (filters.ParseAll): each string is a conjunction of
/// comma-separated selectors `fieldpath[(==|!=|~=)value]`; several strings are OR-ed.
/// Field paths are dot-separated fields, each a plain name or a quoted string.
///
/// `~=` patterns run in linear time (LinearRegex, Go's RE2 semantics), and all the matching
/// one parsed filter does shares `Limits.maxFilterWork`: past it every further match is
/// false and `exhausted` says so, which the List adapters turn into DEADLINE_EXCEEDED.
public struct Filter: Sendable {
  public enum Operator: Sendable, Hashable { case present, equal, notEqual, matches }

  public struct Selector: Sendable {
    public var fieldPath: [String]
    public var op: Operator
    public var value: String
    let regex: LinearRegex?
  }

  /// OR of ANDs. Empty means "match everything".
  public let alternatives: [[Selector]]
  /// The filter strings this was parsed from (the cluster passes them on to peers).
  public let sources: [String]
  /// What its patterns may still spend (nil: it has none).
  private let work: Work?

  public static let always = Filter(alternatives: [], sources: [], work: nil)

  init(alternatives: [[Selector]], sources: [String], work: Work?) {
    self.alternatives = alternatives
    self.sources = sources
    self.work = work
  }

  /// Whether its patterns ran out of work: what it matched since is not to be trusted.
  public var exhausted: Bool { work?.exhausted ?? false }

  /// The error a List whose filter ran out of work answers.
  public var exhaustedError: ContentError {
    .init(.deadlineExceeded, "the filter's regular expressions did more than max_filter_work = \(work?.limit ?? 0) steps; narrow the filter")
  }

  final class Work: Sendable {
    let limit: Int
    private let left: Mutex<Int>
    init(_ limit: Int) {
      self.limit = limit
      left = Mutex(limit)
    }
    var exhausted: Bool { left.withLock { $0 < 0 } }

    func match(_ regex: LinearRegex, _ text: String) -> Bool {
      var budget = left.withLock { $0 }
      guard budget >= 0 else { return false }
      let start = budget
      let result = regex.matches(text, budget: &budget)
      left.withLock { $0 -= start - budget }
      if result == nil { left.withLock { $0 = -1 } }
      return result ?? false
    }
  }

  public static func parse(_ filters: [String], limits: Limits = .default) throws(ContentError) -> Filter {
    if filters.count > limits.maxFilters {
      throw .invalidArgument("\(filters.count) filters, over the limit max_filters = \(limits.maxFilters)")
    }
    var alts: [[Selector]] = []
    for f in filters {
      if f.utf8.count > limits.maxFilterBytes {
        throw .invalidArgument("filter is \(f.utf8.count) bytes, over the limit max_filter_bytes = \(limits.maxFilterBytes)")
      }
      if f.isEmpty { return .always }  // containerd: an empty filter string matches all
      var p = FilterParser(Array(f.unicodeScalars), source: f)
      alts.append(try p.selectors())
    }
    let anyPattern = alts.contains { $0.contains { $0.regex != nil } }
    return Filter(alternatives: alts, sources: filters, work: anyPattern ? Work(limits.maxFilterWork) : nil)
  }

  /// `lookup` resolves a field path on the object: nil when the object has no such field.
  public func matches(_ lookup: ([String]) -> String?) -> Bool {
    if alternatives.isEmpty { return true }
    return alternatives.contains { all in all.allSatisfy { $0.matches(lookup, work) } }
  }

  public func matches(_ info: BlobInfo) -> Bool {
    matches { path in
      switch path.first {
      case "digest": return info.digest.description
      case "labels":
        guard path.count > 1, !info.labels.isEmpty else { return nil }
        // By bytes: the dictionary finds a canonically equivalent key too, which is
        // another label (containerd's keys are opaque bytes).
        let key = path.dropFirst().joined(separator: ".")
        guard let i = info.labels.index(forKey: key), info.labels[i].key.bytewiseEquals(key) else { return nil }
        return info.labels[i].value
      default: return nil
      }
    }
  }

  public func matches(_ status: IngestStatus) -> Bool {
    matches { path in path.first == "ref" ? status.ref : nil }
  }
}

extension Filter.Selector {
  func matches(_ lookup: ([String]) -> String?, _ work: Filter.Work?) -> Bool {
    let v = lookup(fieldPath)
    switch op {
    case .present: return v != nil
    case .equal: return v.map { $0.bytewiseEquals(value) } ?? false
    case .notEqual: return !(v.map { $0.bytewiseEquals(value) } ?? false)
    case .matches:
      guard let v, let regex, let work else { return false }
      return work.match(regex, v)
    }
  }
}

/// A direct port of the grammar in containerd's filters/parser.go and scanner.go.
struct FilterParser {
  private let s: [Unicode.Scalar]
  private let source: String
  private var i = 0

  init(_ s: [Unicode.Scalar], source: String) {
    self.s = s
    self.source = source
  }

  private func error(_ msg: String) -> ContentError {
    .invalidArgument("filters: parse error: [\(source)]: \(msg) at position \(i)")
  }

  private mutating func skipSpace() {
    while i < s.count, s[i].properties.isWhitespace { i += 1 }
  }

  private func isField(_ c: Unicode.Scalar) -> Bool {
    c == "_" || (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || (c >= "0" && c <= "9")
  }

  private func isQuote(_ c: Unicode.Scalar) -> Bool { c == "\"" || c == "/" || c == "|" }

  mutating func selectors() throws(ContentError) -> [Filter.Selector] {
    var out = [try selector()]
    while true {
      skipSpace()
      if i >= s.count { return out }
      guard s[i] == "," else { throw error("unexpected input: \(s[i])") }
      i += 1
      out.append(try selector())
    }
  }

  private mutating func selector() throws(ContentError) -> Filter.Selector {
    let path = try fieldPath()
    skipSpace()
    if i >= s.count || s[i] == "," {
      return .init(fieldPath: path, op: .present, value: "", regex: nil)
    }
    let op = try operatorToken()
    skipSpace()
    guard i < s.count else { throw error("expected value or quoted") }
    let value: String
    if isQuote(s[i]) {
      if op != .matches && s[i] != "\"" { throw error("invalid quote encountered") }
      value = try quotedString()
    } else {
      var v = ""
      while i < s.count, s[i] != ",", !s[i].properties.isWhitespace {
        v.unicodeScalars.append(s[i])
        i += 1
      }
      value = v
    }
    var regex: LinearRegex?
    if op == .matches {
      do { regex = try LinearRegex(value) } catch { throw self.error(error.message) }
    }
    return .init(fieldPath: path, op: op, value: value, regex: regex)
  }

  private mutating func fieldPath() throws(ContentError) -> [String] {
    var fields = [try field()]
    while true {
      skipSpace()
      guard i < s.count, s[i] == "." else { return fields }
      i += 1
      fields.append(try field())
    }
  }

  private mutating func field() throws(ContentError) -> String {
    skipSpace()
    guard i < s.count else { throw error("expected field or quoted") }
    if s[i] == "\"" { return try quotedString() }
    guard isField(s[i]) else { throw error("expected field or quoted") }
    var f = ""
    while i < s.count, isField(s[i]) {
      f.unicodeScalars.append(s[i])
      i += 1
    }
    return f
  }

  private mutating func operatorToken() throws(ContentError) -> Filter.Operator {
    var op = ""
    while i < s.count, s[i] == "=" || s[i] == "!" || s[i] == "~" {
      op.unicodeScalars.append(s[i])
      i += 1
    }
    switch op {
    case "==": return .equal
    case "!=": return .notEqual
    case "~=": return .matches
    case "": throw error("expected an operator (\"==\"|\"!=\"|\"~=\")")
    default: throw error("unsupported operator \(quoted(op))")
    }
  }

  /// Go string-literal unquoting with the quote character as delimiter.
  private mutating func quotedString() throws(ContentError) -> String {
    let q = s[i]
    i += 1
    var out = String.UnicodeScalarView()
    while true {
      guard i < s.count, s[i] != "\n" else { throw error("quoted literal not terminated") }
      let c = s[i]
      i += 1
      if c == q { return String(out) }
      if c != "\\" {
        out.append(c)
        continue
      }
      guard i < s.count else { throw error("quoted literal not terminated") }
      let e = s[i]
      i += 1
      switch e {
      case "a": out.append("\u{07}")
      case "b": out.append("\u{08}")
      case "f": out.append("\u{0C}")
      case "n": out.append("\n")
      case "r": out.append("\r")
      case "t": out.append("\t")
      case "v": out.append("\u{0B}")
      case "\\": out.append("\\")
      case "x", "u", "U":
        let n = e == "x" ? 2 : e == "u" ? 4 : 8
        guard i + n <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<i + n])), radix: 16),
          let scalar = Unicode.Scalar(v)
        else { throw error("illegal escape sequence") }
        out.append(scalar)
        i += n
      case "0"..."7":
        guard i + 2 <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[(i - 1)..<(i + 2)])), radix: 8),
          v <= 255, let scalar = Unicode.Scalar(v)
        else { throw error("illegal escape sequence") }
        out.append(scalar)
        i += 2
      case "\"", "/", "|":
        guard e == q else { throw error("illegal escape sequence") }
        out.append(e)
      default:
        throw error("illegal escape sequence")
      }
    }
  }
}
