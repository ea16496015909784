import ArgumentParser
import CairnClient
import CairnCore
import Foundation

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show uploads in progress; --watch follows them until they are committed (seed Status).")
  @OptionGroup var client: ClientOptions
  @Option(help: "Only refs starting with this prefix.") var prefix: String?
  @Flag(help: "Stream progress until every matched upload is committed or aborted.") var watch = false
  @Argument(help: "Exact refs.") var refs: [String] = []
  @Flag(help: "As JSON (ref, offset, total, expected, started, updated): an array, or with --watch one object per line.") var json = false

  func run() async throws {
    if watch {
      // The watch is the seed API's Status; Cairn serves it on the same port.
      var options = client
      options.api = .seed
      try await options.run { c in
        try await c.watchStatus(refs: refs, prefixes: prefix.map { [$0] } ?? []) { s in
          if json { try? JSONOutput.print(JSONOutput.Upload(s)) } else {  // (encoding these fields cannot fail)
            print("\(s.updatedAt.rfc3339)  \(s.ref)  \(s.offset) bytes (\(formatBytes(s.offset)))")
          }
          fflush(nil)
        }
      }
      return
    }
    var filters = refs.map { "ref==\(goQuote($0))" }
    if let prefix { filters.append("ref~=\(goQuote("^" + regexEscape(prefix)))") }
    let statuses = try await client.run { try await $0.listStatuses(filters: filters) }
    if json { return try JSONOutput.print(statuses.map(JSONOutput.Upload.init)) }
    // Bytes exactly (scripts and resumes want them) and as people read them, as ls does.
    let sized = { (n: Int64) in n > 0 ? "\(n) (\(formatBytes(n)))" : "\(n)" }
    print(textTable([["REF", "OFFSET", "TOTAL", "UPDATED"]] + statuses.map { [$0.ref, sized($0.offset), sized($0.total), $0.updatedAt.rfc3339] }))
  }
}

struct Abort: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Abort uploads: remove their data and free their refs.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "Refs.") var refs: [String]

  func run() async throws {
    try await client.run { c in
      for r in refs { try await c.abort(ref: r) }
    }
  }
}

/// A Go-syntax quoted string, as containerd's filter parser reads it.
func goQuote(_ s: String) -> String {
  var out = "\""
  for u in s.unicodeScalars {
    switch u {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case "\n": out += "\\n"
    case "\t": out += "\\t"
    default:
      if u.value < 0x20 { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
    }
  }
  return out + "\""
}

func regexEscape(_ s: String) -> String {
  var out = ""
  for c in s {
    if "\\.^$|?*+()[]{}".contains(c) { out.append("\\") }
    out.append(c)
  }
  return out
}
