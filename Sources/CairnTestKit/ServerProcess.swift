import CairnCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real `cairn serve` child process, for the end-to-end tests: started with its own data
/// directory, ready once it has printed its listening addresses (an event, not a sleep).
public final class ServerProcess: @unchecked Sendable {
  public let dataDir: String
  public let unixPath: String
  public private(set) var tcpAddress = ""
  public private(set) var process: Process
  private let extraArgs: [String]
  /// Environment variables of this process on top of the test's own.
  private let env: [String: String]
  private let output = LineLog()

  /// The `cairn` binary: $CAIRN_BIN, else next to the running test bundle.
  public static var binary: String {
    if let b = ProcessInfo.processInfo.environment["CAIRN_BIN"] { return b }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // Test bundles may live inside a .xctest directory.
    if dir.path.hasSuffix(".xctest") || dir.lastPathComponent == "MacOS" { dir = dir.deletingLastPathComponent() }
    return dir.appendingPathComponent("cairn").path
  }

  private let listen: String
  /// The full argument list when this is not a `cairn serve` (see `agent`).
  private var command: [String]?
  private var readyPrefix = "cairn: data in"

  /// `listen` is the TCP address (port 0: any free port).
  public init(dataDir: String, listen: String = "127.0.0.1:0", extraArgs: [String] = [], env: [String: String] = [:]) {
    self.dataDir = dataDir
    self.listen = listen
    self.extraArgs = extraArgs
    self.env = env
    unixPath = dataDir + ".sock"
    process = Process()
  }

  /// A `cairn agent` for one host: a unix socket at `dataDir.sock` in front of `cluster`.
  public static func agent(dataDir: String, cluster: [String], client: String, extraArgs: [String] = []) -> ServerProcess {
    let p = ServerProcess(dataDir: dataDir)
    p.command = ["agent", "--unix", p.unixPath, "--data", dataDir, "--cluster", cluster.joined(separator: ","), "--client", client] + extraArgs
    p.readyPrefix = "cairn agent: client"
    return p
  }

  /// Starts the node and waits until it listens. Throws if it exits first.
  public func start(timeout: Double = 60) async throws {
    let p = Process()
    p.environment = ProcessInfo.processInfo.environment.merging(env.merging(["CAIRN_EXIT_WITH_PARENT": "1"]) { $1 }) { $1 }
    // A generous lock wait: these tests never contend for a ref on purpose, and a released
    // lock is handed over at once, so the wait only bounds how late a disconnect is noticed.
    let arguments = command ?? ["serve", "--data", dataDir, "--listen", listen, "--unix", unixPath, "--lock-wait", "30"] + extraArgs
    if env.isEmpty {
      p.executableURL = URL(fileURLWithPath: Self.binary)
      p.arguments = arguments
    } else {
      // Through a shell that execs it: libfaketime (LD_PRELOAD) calls setenv as it loads,
      // which moves the environment and loses Swift's argv unless a process it was already
      // loaded into (here the shell) set that variable before.
      p.executableURL = URL(fileURLWithPath: "/bin/sh")
      p.arguments = ["-c", "exec \"$@\"", "sh", Self.binary] + arguments
    }
    let pipe = try OutputPipe()
    p.standardOutput = pipe.writeHandle
    // Logs go to a file beside the data directory, never to the test's own output: a
    // node that outlived its test would otherwise hold that pipe open.
    if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
    p.standardError = FileHandle(forWritingAtPath: logPath).map { h in
      h.seekToEndOfFile()
      return h
    }
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    let output = self.output
    pipe.readLines({ line in
      output.lines.withLock { $0.append(line) }
      continuation.yield(line)
    }, done: { continuation.finish() })
    try p.run()
    pipe.childStarted()
    process = p
    let deadline = Task {
      try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
      continuation.finish()
    }
    defer { deadline.cancel() }
    for await raw in lines {
      let line = Self.plainAnnouncement(raw)
      if line.hasPrefix("cairn: listening on "), !line.contains("unix://") {
        tcpAddress = String(line.dropFirst("cairn: listening on ".count).split(separator: " ").first ?? "")
      }
      if line.hasPrefix(readyPrefix) { return }
    }
    // Its output ended or the time ran out: say why it did not start (its log's last lines).
    let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    let tail = log.split(separator: "\n").suffix(5).joined(separator: "\n")
    throw ServerProcessError(
      "cairn \(arguments.first ?? "") did not become ready (exit status \(p.isRunning ? "running" : String(p.terminationStatus))); its log ends:\n\(tail)")
  }

  /// A line of standard output as plain text: with `--log-format json` a node announces
  /// itself in JSON objects (`"logger":"cairn","message":"listening on …"`).
  static func plainAnnouncement(_ line: String) -> String {
    guard line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
      let logger = object["logger"] as? String, let message = object["message"] as? String
    else { return line }
    return "\(logger): \(message)"
  }

  public var unixAddress: String { "unix://" + unixPath }

  /// Standard error of every run of this node.
  public var logPath: String { dataDir + ".log" }

  deinit {
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }

  public func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

  /// Sends the signal and waits for the process to exit; returns its exit status.
  @discardableResult
  public func stop(_ sig: Int32 = SIGTERM) async -> Int32 {
    signal(sig)
    return await waitForExit()
  }

  public func waitForExit() async -> Int32 { await exitStatus(of: process) }

  public var lines: [String] { output.lines.withLock { $0 } }
}

public struct ServerProcessError: Error, CustomStringConvertible {
  public let description: String
  public init(_ d: String) { description = d }
}

/// Runs the `cairn` CLI to completion and returns (exit status, stdout, stderr).
public func runCairn(_ args: [String], stdin: Data? = nil) async throws -> (Int32, String, String) {
  try await runTool(ServerProcess.binary, args, stdin: stdin)
}

/// Runs a program to completion and returns (exit status, stdout, stderr).
/// `environment` is added to this process's own.
public func runTool(_ path: String, _ args: [String], stdin: Data? = nil, environment: [String: String] = [:]) async throws -> (
  Int32, String, String
) {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: path)
  p.arguments = args
  if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
  let out = try OutputPipe()
  let err = try OutputPipe()
  p.standardOutput = out.writeHandle
  p.standardError = err.writeHandle
  let input = Pipe()
  p.standardInput = input
  try p.run()
  out.childStarted()
  err.childStarted()
  if let stdin { input.fileHandleForWriting.write(stdin) }
  try input.fileHandleForWriting.close()
  // Each output on a thread of its own: a child that fills one pipe while the other is
  // being read to its end would otherwise wait forever.
  async let o = out.readAll()
  async let e = err.readAll()
  let (stdout, stderr) = await (o, e)
  let status = await exitStatus(of: p)
  return (status, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

/// Waits for `p` to exit on a thread of its own (never on the cooperative pool: see
/// `OutputPipe.nextChunk`) and returns its exit status.
public func exitStatus(of p: Process) async -> Int32 {
  await withCheckedContinuation { c in
    Thread.detachNewThread {
      p.waitUntilExit()
      c.resume(returning: p.terminationStatus)
    }
  }
}

/// A temporary directory removed when the value goes away.
public final class TemporaryDirectory: Sendable {
  public let path: String
  public init(_ prefix: String = "cairn-test") throws {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }
}

final class LineLog: Sendable {
  let lines = Mutex<[String]>([])
}

/// `count` TCP ports on 127.0.0.1 that were free a moment ago, for clusters whose peer
/// lists must name their ports before they start. Drawn at random *below* the kernel's
/// ephemeral range: a port the kernel hands out (bind to port 0) is also what outgoing
/// connections get, and with many nodes connecting to each other one of them took such a
/// port between our check and the server's bind.
/// A port is handed out once per test process: suites run in parallel, and two clusters
/// that drew the same free port both tried to bind it (one node then exited at start).
public func freeLoopbackPorts(_ count: Int) throws -> [Int] {
  let low = ephemeralPortLow()
  var ports: [Int] = []
  for _ in 0..<10_000 where ports.count < count {
    let port = Int.random(in: 10_000..<max(10_001, low))
    guard !ports.contains(port), loopbackPortIsFree(port) else { continue }
    if handedOutPorts.withLock({ $0.insert(port).inserted }) { ports.append(port) }
  }
  guard ports.count == count else { throw ServerProcessError("no \(count) free loopback ports found") }
  return ports
}

private let handedOutPorts = Mutex<Set<Int>>([])

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
private func ephemeralPortLow() -> Int {
  guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
    let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first, let low = Int(first)
  else { return 32768 }
  return low
}

private func loopbackPortIsFree(_ port: Int) -> Bool {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { return false }
  defer { close(fd) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_addr.s_addr = inet_addr("127.0.0.1")
  addr.sin_port = in_port_t(UInt16(port).bigEndian)
  return withUnsafePointer(to: &addr) { p in
    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
  }
}

/// The first of `count` consecutive free loopback ports (for `cairn demo --base-port`).
public func freeConsecutiveLoopbackPorts(_ count: Int) throws -> Int {
  let low = ephemeralPortLow()
  for _ in 0..<200 {
    let base = Int.random(in: 10_000..<max(10_001, low - count))
    if (base..<base + count).allSatisfy(loopbackPortIsFree) { return base }
  }
  throw ServerProcessError("no \(count) consecutive free ports found")
}

/// Polls `condition` every 20 ms until it holds; throws after `timeout` seconds. For
/// states of other processes that announce nothing (a peer's view of the cluster).
public func waitUntil(
  _ what: String, timeout: Double = 30, _ condition: () async throws -> Bool
) async throws {
  let deadline = Date().addingTimeInterval(timeout)
  var lastError: (any Error)?
  while true {
    do {
      if try await condition() { return }
      lastError = nil
    } catch {
      lastError = error
    }
    if Date() > deadline {
      throw ServerProcessError("timed out after \(timeout) s waiting for: \(what)\(lastError.map { " (last check failed: \($0))" } ?? "")")
    }
    try await Task.sleep(nanoseconds: 20_000_000)
  }
}

/// Runs `body` again while it fails UNAVAILABLE ("retry", as a careful cluster client
/// does: an owner just declared dead, a majority not yet settled), up to `timeout` seconds.
/// Under CI load a failure detector may suspect a slow node for a moment; other errors and
/// the last UNAVAILABLE are thrown.
public func retryingUnavailable<T>(
  timeout: Double = 30, unless fatal: (ContentError) -> Bool = { _ in false }, _ body: () async throws -> T
) async throws -> T {
  let deadline = Date().addingTimeInterval(timeout)
  while true {
    do {
      return try await body()
    } catch let e as ContentError where e.code == .unavailable && !fatal(e) && Date() < deadline {
      try await Task.sleep(nanoseconds: 100_000_000)
    }
  }
}
