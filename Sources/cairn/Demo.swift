import ArgumentParser
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `cairn demo --nodes 3`: a whole cluster on loopback in one command, for trying Cairn,
/// failures included: its prompt kills, stops and restarts nodes.
struct Demo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start an N-node cluster on loopback as child processes; kill and restart nodes from its prompt; Ctrl-C stops them all.",
    discussion: """
      Each node listens on 127.0.0.1:(base-port + i), serves its dashboard and metrics on \
      127.0.0.1:(admin-base-port + i) and a unix socket in its data directory; logs go to DATA/nK.log. \
      Commands on standard input: kill N (SIGKILL), stop N (SIGTERM), start N, restart N, nodes, help, quit.
      """)

  @Option(help: "Number of nodes.") var nodes = 3
  @Option(help: "Port of the first node; the others follow.") var basePort = 7411
  @Option(help: "Admin (dashboard, /metrics) port of the first node; the others follow (default: base port + 100; 0: none).")
  var adminBasePort: Int?
  @Option(help: "Directory for the nodes' data (default: a new temporary directory).") var data: String?
  @Option(help: "Replicas per blob (default 3, or N if smaller).") var replicas: Int?
  @Option(help: "Write quorum (default 2, or R if smaller).") var writeQuorum: Int?

  enum Event: Sendable {
    case signal
    case command(String)
    case exited(id: String, generation: Int, how: String)
  }

  func run() async throws {
    guard (1...64).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 64") }
    let adminBase = adminBasePort ?? basePort + 100
    guard (1...(65535 - nodes)).contains(basePort), adminBase == 0 || (1...(65535 - nodes)).contains(adminBase) else {
      throw ValidationError("ports must be between 1 and \(65535 - nodes)")
    }
    let root = data ?? NSTemporaryDirectory() + "cairn-demo-\(getpid())"
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    let ids = (1...nodes).map { "n\($0)" }
    let peers = ids.enumerated().map { "\($1)=127.0.0.1:\(basePort + $0)" }.joined(separator: ",")
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    let (events, sink) = AsyncStream.makeStream(of: Event.self)

    // No SIG_IGN here: on Linux a Dispatch signal source reads a signalfd, and an ignored
    // signal is discarded before it reaches one (Ctrl-C and SIGTERM did nothing), and the
    // children would inherit the ignoring. The terminal's Ctrl-C reaches the nodes too;
    // each shuts down gracefully on it, as on our SIGTERM.
    var running: [String: Process] = [:]
    var generations: [String: Int] = [:]
    func launch(_ id: String) throws {
      let i = ids.firstIndex(of: id)!
      var args = [
        "serve", "--node-id", id, "--listen", "127.0.0.1:\(basePort + i)", "--data", "\(root)/\(id)",
        "--unix", "\(root)/\(id).sock", "--peers", peers,
      ]
      if adminBase != 0 { args += ["--admin-listen", "127.0.0.1:\(adminBase + i)"] }
      if let replicas { args += ["--replicas", String(replicas)] }
      if let writeQuorum { args += ["--write-quorum", String(writeQuorum)] }
      let p = Process()
      p.executableURL = exe
      p.environment = ProcessInfo.processInfo.environment.merging(["CAIRN_EXIT_WITH_PARENT": "1"]) { $1 }
      p.arguments = args
      let logPath = "\(root)/\(id).log"
      if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
      let log = FileHandle(forWritingAtPath: logPath)
      log?.seekToEndOfFile()
      p.standardOutput = log
      p.standardError = log
      p.standardInput = FileHandle.nullDevice
      let generation = generations[id, default: 0] + 1
      generations[id] = generation
      p.terminationHandler = { proc in sink.yield(.exited(id: id, generation: generation, how: Self.describeExit(proc))) }
      try p.run()
      running[id] = p
    }
    for id in ids { try launch(id) }

    print("cairn demo: \(nodes) nodes, data and logs in \(root)")
    for (i, id) in ids.enumerated() {
      let dashboard = adminBase == 0 ? "" : "  dashboard http://127.0.0.1:\(adminBase + i)/"
      print("  \(id)  127.0.0.1:\(basePort + i)  unix://\(root)/\(id).sock\(dashboard)  log \(root)/\(id).log")
    }
    print("try:  cairn put --address 127.0.0.1:\(basePort) FILE   then   cairn get --address 127.0.0.1:\(basePort + nodes - 1) DIGEST -o OUT")
    print("      cairn cluster status --address 127.0.0.1:\(basePort)")
    print("type: kill n2 (SIGKILL), stop n2, start n2, restart n2, nodes, help, quit")
    print("Ctrl-C stops every node.")
    fflush(nil)

    let sources = [SIGINT, SIGTERM].map { sig in
      let s = DispatchSource.makeSignalSource(signal: sig)
      s.setEventHandler { sink.yield(.signal) }
      s.resume()
      return s
    }
    // Commands from standard input (a closed or empty one leaves only Ctrl-C).
    // read(2), not readLine: typed at a terminal, readLine's lines never arrived here (the
    // echo showed them, the demo never answered), which a tmux test caught.
    Thread.detachNewThread {
      var pending: [UInt8] = []
      var buffer = [UInt8](repeating: 0, count: 4096)
      while true {
        let n = read(0, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        pending += buffer[0..<n]
        while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
          sink.yield(.command(String(decoding: pending[..<end], as: UTF8.self)))
          pending.removeSubrange(...end)
        }
      }
    }

    func stop(_ id: String, _ sig: Int32) {
      guard let p = running[id], p.isRunning else { return print("cairn demo: \(id) is not running") }
      kill(p.processIdentifier, sig)
    }
    loop: for await event in events {
      switch event {
      case .signal: break loop
      case .exited(let id, let generation, let how):
        // (A restarted node's old process reports its exit after the new one started.)
        if generations[id] == generation { running[id] = nil }
        print("cairn demo: \(id) \(how)")
      case .command(let line):
        let words = line.split(separator: " ").map(String.init)
        guard let verb = words.first else { continue }
        let target = words.dropFirst().first
        if ["kill", "stop", "start", "restart"].contains(verb) {
          guard let id = target, ids.contains(id) else {
            print("cairn demo: \(verb) which node? one of \(ids.joined(separator: ", "))")
            fflush(nil)
            continue
          }
          switch verb {
          case "kill": stop(id, SIGKILL)
          case "stop": stop(id, SIGTERM)
          default:
            if let p = running[id], p.isRunning {
              guard verb == "restart" else {
                print("cairn demo: \(id) is running")
                fflush(nil)
                continue
              }
              p.terminationHandler = nil
              kill(p.processIdentifier, SIGTERM)
              p.waitUntilExit()
              print("cairn demo: \(id) \(Self.describeExit(p))")
            }
            do {
              try launch(id)
              print("cairn demo: \(id) started (pid \(running[id]!.processIdentifier))")
            } catch {
              print("cairn demo: \(id) could not start: \(error)")
            }
          }
        } else if verb == "nodes" || verb == "status" {
          for (i, id) in ids.enumerated() {
            let state = running[id].map { $0.isRunning ? "running (pid \($0.processIdentifier))" : "stopped" } ?? "stopped"
            print("  \(id)  127.0.0.1:\(basePort + i)  \(state)")
          }
        } else if verb == "quit" || verb == "exit" {
          break loop
        } else {
          print("cairn demo: commands: kill N, stop N, start N, restart N, nodes, quit")
        }
      }
      fflush(nil)
    }
    print("cairn demo: stopping \(nodes) nodes")
    fflush(nil)
    let children = Array(running.values)
    for p in children { p.terminationHandler = nil }
    for p in children where p.isRunning { kill(p.processIdentifier, SIGTERM) }
    for p in children { p.waitUntilExit() }
    _ = sources
    print("cairn demo: stopped; data kept in \(root)")
  }

  /// "exited with status 1", "killed by signal 9 (Killed)".
  static func describeExit(_ p: Process) -> String {
    guard p.terminationReason == .uncaughtSignal else { return "exited with status \(p.terminationStatus)" }
    let name = strsignal(p.terminationStatus).map { String(cString: $0) } ?? "signal"
    return "killed by signal \(p.terminationStatus) (\(name))"
  }
}
