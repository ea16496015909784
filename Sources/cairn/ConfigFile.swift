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
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw ContentError.invalidArgument(
        FileManager.default.fileExists(atPath: path) ? "config file \(path) cannot be read (not UTF-8 text, or no permission)" : "config file \(path) does not exist")
    }
    var file = ConfigFile()
    file.path = path
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.trimmingCharacters(in: .whitespaces)
      if line.isEmpty || line.hasPrefix("#") { continue }
      guard let eq = line.firstIndex(of: "=") else {
        throw ContentError.invalidArgument("\(path):\(n + 1): expected key = value, got \(quoted(line))")
      }
      let key = line[..<eq].trimmingCharacters(in: .whitespaces)
      guard allowed.contains(key) else {
        throw ContentError.invalidArgument(
          "\(path):\(n + 1): unknown key \(quoted(key)); known keys: \(allowed.sorted().joined(separator: ", "))")
      }
      var rest = Substring(line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces))
      let value: String
      if rest.hasPrefix("\"") {
        rest = rest.dropFirst()
        guard let close = rest.firstIndex(of: "\"") else {
          throw ContentError.invalidArgument("\(path):\(n + 1): unterminated string for \(key)")
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
        throw ContentError.invalidArgument("\(path):\(n + 1): unexpected \(quoted(trailing)) after the value of \(key)")
      }
      if file.values[key] != nil {
        throw ContentError.invalidArgument("\(path):\(n + 1): \(key) is already set on line \(file.lines[key] ?? 0)")
      }
      file.values[key] = value
      file.lines[key] = n + 1
    }
    return file
  }
}
