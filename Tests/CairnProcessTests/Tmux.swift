import CairnTestKit
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real terminal for the CLI, as a person has one: a tmux server of its own (its own
/// socket, no user configuration) running bash, driven by send-keys and read by
/// capture-pane. Ctrl-C here is the terminal's: SIGINT to the foreground process group.
final class Tmux: Sendable {
  static let executable = ["/usr/bin/tmux", "/usr/local/bin/tmux"].first { FileManager.default.isExecutableFile(atPath: $0) }

  let socket = "cairn-test-\(UUID().uuidString.prefix(8))"
  private let output = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-tmux-\(UUID().uuidString.prefix(8))").path

  /// A 200×50 terminal whose shell has `cairn` (the binary under test) on its PATH.
  init() async throws {
    let bin = URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().path
    try await tmux([
      "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "200", "-y", "50", "env", "-i", "HOME=\(NSTemporaryDirectory())",
      "TERM=xterm-256color", "PATH=\(bin):/usr/bin:/bin", "PS1=$ ", "bash", "--norc", "--noprofile",
    ])
    try await tmux(["set-option", "-g", "history-limit", "20000"])
  }

  /// Runs tmux with posix_spawn and waitpid, its output through a file, every other
  /// descriptor closed. Not Foundation's Process: the server that `new-session` starts
  /// lives on with what it inherits, and Process learns of a child's exit from a
  /// descriptor its child inherits, so it waited for the server as well, spinning.
  @discardableResult
  private func tmux(_ args: [String]) async throws -> String {
    let (output, socket) = (self.output, self.socket)
    let status: Int32 = try await withCheckedThrowingContinuation { c in
      Thread.detachNewThread { c.resume(with: Result { try Self.run(socket: socket, args, output: output) }) }
    }
    let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
    guard status == 0 else { throw ServerProcessError("tmux \(args.joined(separator: " ")): wait status \(status)") }
    return text
  }

  /// Blocks until tmux exits; returns its wait status.
  private static func run(socket: String, _ args: [String], output: String) throws -> Int32 {
    guard let path = executable else { throw ServerProcessError("tmux is not installed (scripts/setup installs it)") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    // Through python3 to close every other descriptor (glibc's closefrom action is not in
    // Swift's Glibc): a server holding one of Process's would hide that child's exit.
    let python = "/usr/bin/python3"
    let close = "import os, sys; os.closerange(3, 65536); os.execv(sys.argv[1], sys.argv[1:])"
    let argv = ([python, "-c", close, path, "-L", socket] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // A terminal's signals as a login would have them: the thread this runs on blocks
    // some (Dispatch's threads do), and a spawned child inherits the mask; a tmux server
    // with SIGTERM blocked outlived kill-server.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid = pid_t()
    let rc = posix_spawn(&pid, python, &actions, &attributes, argv, environ)
    guard rc == 0 else { throw ServerProcessError("posix_spawn tmux: \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
  }

  /// Types `line` and presses Enter.
  func type(_ line: String) async throws {
    try await tmux(["send-keys", "-t", "t", "-l", line])
    try await tmux(["send-keys", "-t", "t", "Enter"])
  }

  /// Presses a key by tmux's name for it ("C-c").
  func press(_ key: String) async throws { try await tmux(["send-keys", "-t", "t", key]) }

  /// Everything the terminal shows and has scrolled off, lines joined where they wrapped.
  func screen() async throws -> String { try await tmux(["capture-pane", "-p", "-J", "-t", "t", "-S", "-"]) }

  /// Waits until the screen contains `text` and returns the screen.
  @discardableResult
  func waitFor(_ text: String, timeout: Double = 60) async throws -> String {
    var last = ""
    do {
      try await waitUntil("the terminal shows \(text)", timeout: timeout) {
        last = try await screen()
        return last.contains(text)
      }
    } catch {
      throw ServerProcessError("\(error)\n-- the terminal:\n\(last)")
    }
    return last
  }

  /// The server goes with the test (and every process still running in its terminal gets
  /// SIGHUP), also when the test failed.
  deinit {
    _ = try? Self.run(socket: socket, ["kill-server"], output: "/dev/null")
    try? FileManager.default.removeItem(atPath: output)
  }
}
