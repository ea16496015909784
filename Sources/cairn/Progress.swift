import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A progress bar on standard error, drawn only when it is a terminal, at most ten times
/// a second. Pipes and logs stay clean.
final class ProgressBar: Sendable {
  private struct State {
    var done: Int64 = 0
    var lastDraw: Double = 0
    /// The first value reported: where a resumed transfer started. The speed counts only
    /// what moved after it (a resumed put used to count the bytes it skipped).
    var base: Int64?
  }

  private let label: String
  private let total: Int64?
  private let start = Date()
  private let state = Mutex(State())
  let enabled: Bool

  init(_ label: String, total: Int64?) {
    self.label = label
    self.total = total
    enabled = isatty(2) == 1
  }

  func update(_ done: Int64) {
    guard enabled else { return }
    let now = Date().timeIntervalSince(start)
    let (draw, base) = state.withLock { s -> (Bool, Int64) in
      s.done = done
      if s.base == nil { s.base = done }
      guard now - s.lastDraw >= 0.1 else { return (false, s.base!) }
      s.lastDraw = now
      return (true, s.base!)
    }
    if draw { render(done, base: base, elapsed: now) }
  }

  /// For many concurrent contributors: adds `n` to what is done.
  func advance(_ n: Int64) {
    let done = state.withLock { s -> Int64 in
      if s.base == nil { s.base = 0 }
      s.done += n
      return s.done
    }
    update(done)
  }

  func finish() {
    guard enabled else { return }
    let (done, base) = state.withLock { ($0.done, $0.base ?? 0) }
    render(done, base: base, elapsed: Date().timeIntervalSince(start))
    FileHandle.standardError.write(Data("\n".utf8))
  }

  private func render(_ done: Int64, base: Int64, elapsed: Double) {
    let rate = elapsed > 0 ? Double(max(0, done - base)) / elapsed : 0
    var line = "\r\(label) "
    if let total, total > 0 {
      let frac = min(1, Double(done) / Double(total))
      let width = 30
      let filled = Int(frac * Double(width))
      line += "[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] "
      line += String(format: "%3.0f%% ", frac * 100)
      line += "\(formatBytes(done)) / \(formatBytes(total))"
    } else {
      line += formatBytes(done)
    }
    line += "  \(formatBytes(Int64(rate)))/s   "
    FileHandle.standardError.write(Data(line.utf8))
  }
}

/// Rows as left-aligned columns two spaces apart; the first row is the header.
func textTable(_ rows: [[String]]) -> String {
  let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
  return rows.map { r in zip(r, widths).map { $0.padding(toLength: $1 + 2, withPad: " ", startingAt: 0) }.joined() }
    .joined(separator: "\n")
}
