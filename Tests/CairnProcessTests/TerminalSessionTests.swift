import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// Issue 16's "Must show", in a real terminal (tmux): what a person types, what the
/// terminal shows. These run in a phase of their own in scripts/test, so that the time
/// bounds they check measure the CLI, not two starved cores.
extension TerminalTests {
  /// `cairn demo` in a terminal: it prints its nodes and dashboards, takes `kill n2` and
  /// `start n2` at its prompt, and Ctrl-C stops every node within 5 s with exit status 0.
  @Test func demoInATerminal() async throws {
    let term = try await Tmux()
    let dir = try TemporaryDirectory("cairn-tmux-demo")
    let base = try freeLoopbackPorts(1)[0]
    try await term.type(
      "cairn demo --nodes 3 --base-port \(base) --admin-base-port 0 --data \(dir.path)/d")
    try await term.waitFor("Ctrl-C stops every node.")
    try await waitUntil("the demo's three nodes serve", timeout: 90) {
      for port in base..<(base + 3)
      where
        !(try await ContentClient.with(address: "127.0.0.1:\(port)") { try await $0.isServing() })
      {
        return false
      }
      return true
    }
    try await term.type("kill n2")
    try await term.waitFor("cairn demo: n2 killed")
    try await term.type("start n2")
    try await term.waitFor("cairn demo: n2 started")
    try await waitUntil("n2 serves again", timeout: 60) {
      (try? await ContentClient.with(address: "127.0.0.1:\(base + 1)") { try await $0.isServing() })
        == true
    }

    let pressed = Date()
    try await term.press("C-c")
    try await term.waitFor("cairn demo: stopped; data kept in", timeout: 30)
    let took = Date().timeIntervalSince(pressed)
    try await term.type("echo demo\"-exit=$?\"")
    let screen = try await term.waitFor("demo-exit=")
    print("terminal: the demo stopped \(String(format: "%.2f", took)) s after Ctrl-C")
    #expect(took <= 5, "Ctrl-C took \(took) s to stop the demo")
    #expect(screen.contains("demo-exit=0"), "\(screen)")
    for port in base..<(base + 3) {
      let serving = try? await ContentClient.with(address: "127.0.0.1:\(port)") {
        try await $0.isServing()
      }
      #expect(serving != true, "port \(port) still serves after Ctrl-C")
    }
  }

  /// `cairn serve` on a port in use, typed at a prompt: back at the prompt within 1 s,
  /// non-zero, the address named (it hung, printing nothing).
  @Test func busyPortInATerminal() async throws {
    let term = try await Tmux()
    let (first, dir) = try await startedNode("cairn-tmux-busy")
    try await stopping(first) {
      try await term.type(
        "s=$(date +%s%N); cairn serve --data \(dir.path)/b --listen \(first.tcpAddress); echo \"serve\"\"-exit=$? after $(( ($(date +%s%N) - s) / 1000000 )) ms\""
      )
      let screen = try await term.waitFor(" ms\n", timeout: 30)
      let line =
        screen.split(separator: "\n").first { $0.hasPrefix("serve-exit=") }.map(String.init) ?? ""
      let words = line.split(separator: " ")
      let exit = Int(words.first?.dropFirst("serve-exit=".count) ?? "")
      let ms = words.count > 2 ? Int(words[2]) : nil
      print("terminal: serve on a busy port: \(line)")
      #expect(exit == 1, "a local failure exits 1: \(screen)")
      #expect(ms != nil && ms! <= 1000, "\(line)")
      // (The typed command names it too: look at what cairn printed.)
      #expect(
        screen.split(separator: "\n").contains {
          $0.hasPrefix("cairn:") && $0.contains(first.tcpAddress)
        }, "the address is not named:\n\(screen)")
    }
  }

  /// Two `… | cairn put -` at once, and then `cairn status --watch` following an upload
  /// whose content is stored already: both puts succeed, the watch ends by itself.
  @Test func stdinPutsAndAWatchInATerminal() async throws {
    let term = try await Tmux()
    let (node, dir) = try await startedNode("cairn-tmux-put")
    try await stopping(node) {
      let address = node.tcpAddress

      try await term.type(
        "printf 'terminal a' | cairn put - --address \(address) & a=$!; printf 'terminal b' | cairn put - --address \(address) & b=$!; wait $a; x=$?; wait $b; echo \"puts\"\"-exit=$x,$?\""
      )
      var screen = try await term.waitFor("puts-exit=")
      #expect(screen.contains("puts-exit=0,0"), "\(screen)")
      #expect(screen.contains(Digest.of(Data("terminal a".utf8)).description), "\(screen)")
      #expect(screen.contains(Digest.of(Data("terminal b".utf8)).description), "\(screen)")

      // A blob stored, then the same bytes under another ref through a FIFO held open by
      // the shell (descriptor 3): the upload has every byte and waits for its end.
      let blob = Data(repeating: 9, count: 1 << 20)
      try blob.write(to: URL(fileURLWithPath: dir.path + "/blob"))
      #expect(try await runCairn(["put", dir.path + "/blob", "--address", address]).0 == 0)
      try await term.type(
        "clear; mkfifo \(dir.path)/fifo; cairn put - --ref dup-1 --address \(address) < \(dir.path)/fifo & p=$!; exec 3> \(dir.path)/fifo; cat \(dir.path)/blob >&3"
      )
      try await waitUntil("the second upload holds every byte") {
        try await ContentClient.with(address: address) { try await $0.listStatuses() }.contains {
          $0.ref == "dup-1" && $0.offset == blob.count
        }
      }
      try await term.type("cairn status --watch --prefix dup- --address \(address) 3>&- & w=$!")
      try await term.waitFor("dup-1")
      try await term.type(
        "exec 3>&-; wait $p; echo \"put\"\"-exit=$?\"; wait $w; echo \"watch\"\"-exit=$?\"")
      screen = try await term.waitFor("watch-exit=")
      print(
        "terminal: the watch of an upload stored already:\n\(screen.split(separator: "\n").filter { $0.contains("dup-1") || $0.contains("exit=") }.joined(separator: "\n"))"
      )
      #expect(screen.contains("put-exit=0") && screen.contains("watch-exit=0"), "\(screen)")
      #expect(
        screen.split(separator: "\n").filter {
          $0.contains("dup-1") && $0.contains("\(blob.count) bytes")
        }.count == 1, "\(screen)")
    }
  }
}

/// A single node of its own, started, and its directory (kept as long as the caller keeps it).
func startedNode(_ prefix: String) async throws -> (ServerProcess, TemporaryDirectory) {
  let dir = try TemporaryDirectory(prefix)
  let node = ServerProcess(dataDir: dir.path + "/n")
  try await node.start()
  return (node, dir)
}
