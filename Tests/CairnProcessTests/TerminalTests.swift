import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The CLI as a person drives it (issue 16, "Broken"): real processes, real sockets, pipes.
@Suite(.serialized) struct TerminalTests {
  /// `cairn demo` stops every node on SIGINT (what Ctrl-C sends) and on SIGTERM (it ignored
  /// both: a Dispatch signal source on Linux never sees a signal set to SIG_IGN).
  @Test(arguments: [SIGINT, SIGTERM]) func demoStopsOnASignal(_ sig: Int32) async throws {
    let dir = try TemporaryDirectory("cairn-demo")
    let base = try freeLoopbackPorts(1)[0]
    let out = try OutputPipe()
    let demo = try startCairn(["demo", "--nodes", "3", "--base-port", String(base), "--admin-base-port", "0", "--data", dir.path + "/d"], stdout: out)
    try await waitUntil("the demo's three nodes serve", timeout: 90) {
      for port in base..<(base + 3) where !(try await ContentClient.with(address: "127.0.0.1:\(port)") { try await $0.isServing() }) {
        return false
      }
      return true
    }
    let sent = Date()
    kill(demo.processIdentifier, sig)
    let said = String(decoding: Data(await out.readAll()), as: UTF8.self)
    try await waitUntil("the demo exits", timeout: 30) { !demo.isRunning }
    print("demo: every node stopped \(String(format: "%.2f", Date().timeIntervalSince(sent))) s after signal \(sig)")
    #expect(demo.terminationStatus == 0 && said.contains("cairn demo: stopped; data kept in"), "\(said)")
    for port in base..<(base + 3) {
      let serving = try? await ContentClient.with(address: "127.0.0.1:\(port)") { try await $0.isServing() }
      #expect(serving != true, "port \(port) still serves")
    }
  }

  /// `cairn serve` on a port in use exits at once, non-zero, naming the address (it hung,
  /// printing nothing, until SIGTERM: a maintenance job outlived the failed listener).
  @Test func serveOnABusyPortExitsNamingIt() async throws {
    let dir = try TemporaryDirectory("cairn-busy")
    let first = ServerProcess(dataDir: dir.path + "/a")
    try await first.start()
    defer { Task { _ = await first.stop() } }
    let address = first.tcpAddress
    let started = Date()
    let (status, _, err) = try await runCairn(["serve", "--data", dir.path + "/b", "--listen", address])
    print("serve on a busy port: exit \(status) after \(String(format: "%.2f", Date().timeIntervalSince(started))) s: \(err)")
    #expect(status != 0)
    #expect(err.contains(address), "\(err)")
  }

  /// Two stdin uploads at once both succeed, and one interrupted (Ctrl-C) leaves nothing
  /// that makes the next fail (every stdin put used the ref `put---0`); the server counts
  /// the interrupted call as `cancelled` (it was `internalError`).
  @Test func stdinPutsTakeARefEach() async throws {
    let dir = try TemporaryDirectory("cairn-stdin")
    let admin = "127.0.0.1:\(try freeLoopbackPorts(1)[0])"
    let node = ServerProcess(dataDir: dir.path + "/n", extraArgs: ["--admin-listen", admin])
    try await node.start()
    defer { Task { _ = await node.stop() } }
    let address = node.tcpAddress

    // Interrupted half-way: the CLI dies with its stdin still open.
    let input = Pipe()
    let put = try startCairn(["put", "-", "--address", address], stdin: input)
    input.fileHandleForWriting.write(Data(repeating: 7, count: 3 << 20))
    try await waitUntil("the interrupted upload has bytes on the server") {
      try await ContentClient.with(address: address) { try await $0.listStatuses() }.contains { $0.offset > 0 }
    }
    kill(put.processIdentifier, SIGINT)
    _ = await exitStatus(of: put)
    try await waitUntil("the server has counted the interrupted Write") {
      try await httpGet(admin, "/metrics").body.split(separator: "\n").contains { $0.hasPrefix("cairn_rpc_requests_total") && $0.contains("Write\"") && $0.contains("code=\"cancelled\"") }
    }
    let writes = try await httpGet(admin, "/metrics").body.split(separator: "\n").filter { $0.hasPrefix("cairn_rpc_requests_total") && $0.contains("Write\"") }
    #expect(!writes.contains { $0.contains("internalError") || $0.contains("unknown") }, "\(writes)")
    // A client pointed at the admin port is told so (gRPC said only "closed the connection
    // before completing the HTTP/2 connection preface").
    let (status, _, err) = try await runCairn(["ls", "--address", admin])
    #expect(status == 114 && err.contains("admin (HTTP) port"), "\(status) \(err)")

    let a = Data("stdin a".utf8)
    let b = Data("stdin b".utf8)
    async let ra = runCairn(["put", "-", "--address", address], stdin: a)
    async let rb = runCairn(["put", "-", "--address", address], stdin: b)
    let (outA, outB) = try await (ra, rb)
    #expect(outA.0 == 0 && outA.1.contains(Digest.of(a).description), "\(outA)")
    #expect(outB.0 == 0 && outB.1.contains(Digest.of(b).description), "\(outB)")
  }

  /// `cairn status --watch` ends when the upload it follows finds its content stored
  /// already, and prints the final offset once.
  @Test func statusWatchEndsOnDedup() async throws {
    let dir = try TemporaryDirectory("cairn-watch")
    let node = ServerProcess(dataDir: dir.path + "/n")
    try await node.start()
    defer { Task { _ = await node.stop() } }
    let address = node.tcpAddress
    let blob = Data(repeating: 9, count: 1 << 20)
    #expect(try await runCairn(["put", "-", "--address", address], stdin: blob).0 == 0)

    // The same bytes again under another ref, held open before its commit.
    let input = Pipe()
    let put = try startCairn(["put", "-", "--ref", "dup-1", "--address", address], stdin: input)
    input.fileHandleForWriting.write(blob)
    try await waitUntil("the second upload holds every byte") {
      try await ContentClient.with(address: address) { try await $0.listStatuses() }.contains { $0.ref == "dup-1" && $0.offset == blob.count }
    }
    let out = try OutputPipe()
    let watch = try startCairn(["status", "--watch", "--prefix", "dup-", "--address", address], stdout: out)
    // Its first line (the snapshot) says it follows the upload; then the commit.
    var printed = await out.read(until: "\n")
    try input.fileHandleForWriting.close()  // the commit: ALREADY_EXISTS, "already stored"
    #expect(await exitStatus(of: put) == 0)
    try await waitUntil("the watch ends by itself", timeout: 30) { !watch.isRunning }
    printed.append(Data(await out.readAll()))
    let lines = String(decoding: printed, as: UTF8.self).split(separator: "\n")
    #expect(watch.terminationStatus == 0)
    #expect(lines.filter { $0.contains("dup-1") && $0.contains("\(blob.count) bytes") }.count == 1, "\(lines)")
  }
}

extension TerminalTests {
  /// With `--log-format json` every line a node writes, on either stream, is a JSON object
  /// (the announcements were plain text before the JSON).
  @Test func jsonLogsAreAllJSON() async throws {
    let dir = try TemporaryDirectory("cairn-json")
    let out = try OutputPipe()
    let err = try OutputPipe()
    let p = try startCairn(
      ["serve", "--data", dir.path + "/n", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"], stdout: out, stderr: err)
    // Until it says where its data is, as a JSON line.
    var stdout = await out.read(until: "data in")
    kill(p.processIdentifier, SIGTERM)
    stdout.append(Data(await out.readAll()))
    let stderr = Data(await err.readAll())
    _ = await exitStatus(of: p)
    let lines = (String(decoding: stdout, as: UTF8.self) + String(decoding: stderr, as: UTF8.self)).split(separator: "\n")
    #expect(lines.contains { $0.contains("listening on") } && lines.contains { $0.contains("data in") }, "\(lines)")
    for line in lines {
      let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
      #expect(object?["message"] != nil, "not a JSON log line: \(line)")
    }
  }
}

/// `cairn ARGS` started with the given pipes (others to /dev/null).
func startCairn(_ args: [String], stdin: Pipe? = nil, stdout: OutputPipe? = nil, stderr: OutputPipe? = nil) throws -> Process {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: ServerProcess.binary)
  p.arguments = args
  if let stdin { p.standardInput = stdin }
  p.standardOutput = stdout?.writeHandle ?? FileHandle.nullDevice
  p.standardError = stderr?.writeHandle ?? FileHandle.nullDevice
  try p.run()
  stdout?.childStarted()
  stderr?.childStarted()
  return p
}
