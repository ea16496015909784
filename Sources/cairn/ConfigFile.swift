import CairnCore
import Foundation

/// A flat TOML file (`key = value`, `#` comments; strings, numbers, booleans). Unknown keys
/// and malformed lines are errors that name the line, so a typo never passes silently.
struct ConfigFile: Sendable {
  var path = ""
  var values: [String: String] = [:]
  /// The line each key was set on, for error messages.
  var lines: [String: Int] = [:]

  static func load(_ path: String, allowed: Set<String>) throws -> ConfigFile {
    var problems: [String] = []
    let file = try load(path, allowed: allowed, problems: &problems)
    if !problems.isEmpty { throw ContentError.invalidArgument(problems.joined(separator: "\n")) }
    return file
  }

  /// The file without its bad lines, each bad line's problem appended to `problems`
  /// (`cairn config check` goes on to check the values of the good ones). Throws only if
  /// the file cannot be read.
  static func load(_ path: String, allowed: Set<String>, problems: inout [String]) throws -> ConfigFile {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw ContentError.invalidArgument(
        FileManager.default.fileExists(atPath: path) ? "config file \(path) cannot be read (not UTF-8 text, or no permission)" : "config file \(path) does not exist")
    }
    var file = ConfigFile()
    file.path = path
    // Every line's problem, not just the first one's.
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      do throws(ContentError) {
        guard let (key, value) = try parse(line: raw, at: "\(path):\(n + 1)", allowed: allowed) else { continue }
        if let earlier = file.lines[key] {
          throw ContentError.invalidArgument("\(path):\(n + 1): \(key) is already set on line \(earlier)")
        }
        file.values[key] = value
        file.lines[key] = n + 1
      } catch {
        problems.append(error.message)
      }
    }
    return file
  }

  /// One line's key and value; nil for a blank line or a comment.
  private static func parse(line raw: Substring, at place: String, allowed: Set<String>) throws(ContentError) -> (String, String)? {
    let line = raw.trimmingCharacters(in: .whitespaces)
    if line.isEmpty || line.hasPrefix("#") { return nil }
    guard let eq = line.firstIndex(of: "=") else {
      throw .invalidArgument("\(place): expected key = value, got \(quoted(line))")
    }
    let key = line[..<eq].trimmingCharacters(in: .whitespaces)
    guard allowed.contains(key) else {
      let hint = nearest(key, in: allowed).map { " (did you mean \(quoted($0))?)" } ?? " (`cairn config keys` lists them)"
      throw .invalidArgument("\(place): unknown key \(quoted(key))\(hint)")
    }
    var rest = Substring(line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces))
    let value: String
    if rest.hasPrefix("\"") {
      rest = rest.dropFirst()
      guard let close = rest.firstIndex(of: "\"") else {
        throw .invalidArgument("\(place): unterminated string for \(key)")
      }
      value = String(rest[..<close])
      rest = rest[rest.index(after: close)...]
    } else {
      let end = rest.firstIndex(of: "#") ?? rest.endIndex
      value = rest[..<end].trimmingCharacters(in: .whitespaces)
      rest = rest[end...]
    }
    let trailing = rest.trimmingCharacters(in: .whitespaces)
    if !trailing.isEmpty && !trailing.hasPrefix("#") {
      throw .invalidArgument("\(place): unexpected \(quoted(trailing)) after the value of \(key)")
    }
    return (key, value)
  }
}

/// The known key closest to a mistyped one (edit distance at most a third of its length,
/// and at least 1 or 2), or nil when none is close: `replica` → `replicas`.
func nearest(_ key: String, in known: Set<String>) -> String? {
  let limit = max(2, key.count / 3)
  let scored = known.map { ($0, editDistance(key, $0)) }.filter { $0.1 <= limit }
  return scored.min { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }?.0
}

/// Levenshtein distance, over characters.
func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a), b = Array(b)
  if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
  var previous = Array(0...b.count)
  for i in 1...a.count {
    var row = [i] + Array(repeating: 0, count: b.count)
    for j in 1...b.count {
      row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
    }
    previous = row
  }
  return previous[b.count]
}
