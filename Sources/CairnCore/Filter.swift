/// containerd's filter language (filters.ParseAll): each string is a conjunction of
/// comma-separated selectors `fieldpath[(==|!=|~=)value]`; several strings are OR-ed.
/// Field paths are dot-separated fields, each a plain name or a quoted string.
public struct Filter: Sendable {
  public enum Operator: Sendable, Hashable { case present, equal, notEqual, matches }

  public struct Selector: Sendable {
    public var fieldPath: [String]
    public var op: Operator
    public var value: String
    let regex: RegexBox?
  }

  /// OR of ANDs. Empty means "match everything".
  public let alternatives: [[Selector]]
  /// The filter strings this was parsed from (the cluster passes them on to peers).
  public let sources: [String]

  public static let always = Filter(alternatives: [], sources: [])

  init(alternatives: [[Selector]], sources: [String]) {
    self.alternatives = alternatives
    self.sources = sources
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
    return Filter(alternatives: alts, sources: filters)
  }

  /// `lookup` resolves a field path on the object: nil when the object has no such field.
  public func matches(_ lookup: ([String]) -> String?) -> Bool {
    if alternatives.isEmpty { return true }
    return alternatives.contains { all in all.allSatisfy { $0.matches(lookup) } }
  }

  public func matches(_ info: BlobInfo) -> Bool {
    matches { path in
      switch path.first {
      case "digest": return info.digest.description
      case "labels":
        guard path.count > 1, !info.labels.isEmpty else { return nil }
        return info.labels[path.dropFirst().joined(separator: ".")]
      default: return nil
      }
    }
  }

  public func matches(_ status: IngestStatus) -> Bool {
    matches { path in path.first == "ref" ? status.ref : nil }
  }
}

extension Filter.Selector {
  func matches(_ lookup: ([String]) -> String?) -> Bool {
    let v = lookup(fieldPath)
    switch op {
    case .present: return v != nil
    case .equal: return v == value
    case .notEqual: return v != value
    case .matches:
      guard let v, let regex else { return false }
      return regex.matches(v)
    }
  }
}

/// Regex is not Sendable; a compiled pattern is immutable and used read-only.
final class RegexBox: @unchecked Sendable {
  let regex: Regex<AnyRegexOutput>
  init(_ pattern: String) throws { regex = try Regex(pattern) }
  func matches(_ s: String) -> Bool { (try? regex.firstMatch(in: s)) != nil }
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
    var regex: RegexBox?
    if op == .matches {
      do { regex = try RegexBox(value) } catch { throw self.error("invalid regular expression \(quoted(value))") }
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
