import ArgumentParser
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `cairn demo --nodes 3`: a whole cluster on loopback in one command, for trying Cairn.
struct Demo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start an N-node cluster on loopback as child processes; Ctrl-C stops them all.",
    discussion: "Each node listens on 127.0.0.1:(base-port + i) and on a unix socket in its data directory; logs go to DATA/nK.log.")

  @Option(help: "Number of nodes.") var nodes = 3
  @Option(help: "Port of the first node; the others follow.") var basePort = 7411
  @Option(help: "Directory for the nodes' data (default: a new temporary directory).") var data: String?
  @Option(help: "Replicas per blob (default 3, or N if smaller).") var replicas: Int?
  @Option(help: "Write quorum (default 2, or R if smaller).") var writeQuorum: Int?

  func run() async throws {
    guard (1...64).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 64") }
    let root = data ?? NSTemporaryDirectory() + "cairn-demo-\(getpid())"
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    let ids = (1...nodes).map { "n\($0)" }
    let peers = ids.enumerated().map { "\($1)=127.0.0.1:\(basePort + $0)" }.joined(separator: ",")
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()

    // No SIG_IGN here: on Linux a Dispatch signal source reads a signalfd, and an ignored
    // signal is discarded before it reaches one (Ctrl-C and SIGTERM did nothing), and the
    // children would inherit the ignoring. The terminal's Ctrl-C reaches the nodes too;
    // each shuts down gracefully on it, as on our SIGTERM.
    var children: [(id: String, process: Process)] = []
    for (i, id) in ids.enumerated() {
      var args = [
        "serve", "--node-id", id, "--listen", "127.0.0.1:\(basePort + i)", "--data", "\(root)/\(id)",
        "--unix", "\(root)/\(id).sock", "--peers", peers,
      ]
      if let replicas { args += ["--replicas", String(replicas)] }
      if let writeQuorum { args += ["--write-quorum", String(writeQuorum)] }
      let p = Process()
      p.executableURL = exe
      p.environment = ProcessInfo.processInfo.environment.merging(["CAIRN_EXIT_WITH_PARENT": "1"]) { $1 }
      p.arguments = args
      _ = FileManager.default.createFile(atPath: "\(root)/\(id).log", contents: nil)
      let log = FileHandle(forWritingAtPath: "\(root)/\(id).log")
      p.standardOutput = log
      p.standardError = log
      try p.run()
      children.append((id, p))
    }
    print("cairn demo: \(nodes) nodes, data and logs in \(root)")
    for (i, id) in ids.enumerated() {
      print("  \(id)  127.0.0.1:\(basePort + i)  unix://\(root)/\(id).sock  log \(root)/\(id).log")
    }
    print("try:  cairn put --address 127.0.0.1:\(basePort) FILE   then   cairn get --address 127.0.0.1:\(basePort + nodes - 1) DIGEST")
    print("      cairn cluster status --address 127.0.0.1:\(basePort)")
    print("Ctrl-C stops every node.")
    fflush(nil)

    let stop = AsyncStream<Int32>.makeStream()
    let sources = [SIGINT, SIGTERM].map { sig in
      let s = DispatchSource.makeSignalSource(signal: sig)
      s.setEventHandler { stop.continuation.yield(sig) }
      s.resume()
      return s
    }
    // A node that dies on its own is reported; the rest keep running.
    for (id, p) in children {
      p.terminationHandler = { proc in
        print("cairn demo: \(id) \(Self.describeExit(proc))")
        fflush(nil)
      }
    }
    for await _ in stop.stream { break }
    print("cairn demo: stopping \(nodes) nodes")
    fflush(nil)
    for (_, p) in children { p.terminationHandler = nil }
    for (_, p) in children where p.isRunning { kill(p.processIdentifier, SIGTERM) }
    for (_, p) in children { p.waitUntilExit() }
    _ = sources
    print("cairn demo: stopped; data kept in \(root)")
  }

  /// "exited with status 1", "killed by signal 9 (SIGKILL)".
  static func describeExit(_ p: Process) -> String {
    guard p.terminationReason == .uncaughtSignal else { return "exited with status \(p.terminationStatus)" }
    let name = strsignal(p.terminationStatus).map { String(cString: $0) } ?? "signal"
    return "killed by signal \(p.terminationStatus) (\(name))"
  }
}
