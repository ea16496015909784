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

  public init(dataDir: String, extraArgs: [String] = []) {
    self.dataDir = dataDir
    self.extraArgs = extraArgs
    unixPath = dataDir + ".sock"
    process = Process()
  }

  /// Starts the node and waits until it listens. Throws if it exits first.
  public func start(timeout: Double = 60) async throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: Self.binary)
    // A generous lock wait: these tests never contend for a ref on purpose, and a released
    // lock is handed over at once, so the wait only bounds how late a disconnect is noticed.
    p.arguments = ["serve", "--data", dataDir, "--listen", "127.0.0.1:0", "--unix", unixPath, "--lock-wait", "30"] + extraArgs
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.standardError
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    let reader = pipe.fileHandleForReading
    let output = self.output
    Thread.detachNewThread {
      var buffer = Data()
      while true {
        let chunk = reader.availableData
        if chunk.isEmpty { break }
        buffer.append(chunk)
        while let nl = buffer.firstIndex(of: 0x0a) {
          let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
          buffer.removeSubrange(buffer.startIndex...nl)
          output.lines.withLock { $0.append(line) }
          continuation.yield(line)
        }
      }
      continuation.finish()
    }
    try p.run()
    process = p
    let deadline = Task {
      try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
      continuation.finish()
    }
    defer { deadline.cancel() }
    for await line in lines {
      if line.hasPrefix("cairn: listening on "), !line.contains("unix://") {
        tcpAddress = String(line.dropFirst("cairn: listening on ".count))
      }
      if line.hasPrefix("cairn: data in") { return }
    }
    throw ServerProcessError("cairn serve did not become ready (exit status \(p.isRunning ? "running" : String(p.terminationStatus)))")
  }

  public var unixAddress: String { "unix://" + unixPath }

  public func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

  /// Sends the signal and waits for the process to exit; returns its exit status.
  @discardableResult
  public func stop(_ sig: Int32 = SIGTERM) async -> Int32 {
    signal(sig)
    return await waitForExit()
  }

  public func waitForExit() async -> Int32 {
    let p = process
    return await withCheckedContinuation { c in
      Thread.detachNewThread {
        p.waitUntilExit()
        c.resume(returning: p.terminationStatus)
      }
    }
  }

  public var lines: [String] { output.lines.withLock { $0 } }
}

public struct ServerProcessError: Error, CustomStringConvertible {
  public let description: String
  public init(_ d: String) { description = d }
}

/// Runs the `cairn` CLI to completion and returns (exit status, stdout, stderr).
public func runCairn(_ args: [String], stdin: Data? = nil) async throws -> (Int32, String, String) {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: ServerProcess.binary)
  p.arguments = args
  let out = Pipe()
  let err = Pipe()
  p.standardOutput = out
  p.standardError = err
  let input = Pipe()
  p.standardInput = input
  try p.run()
  if let stdin { input.fileHandleForWriting.write(stdin) }
  try input.fileHandleForWriting.close()
  return await withCheckedContinuation { c in
    Thread.detachNewThread {
      let o = out.fileHandleForReading.readDataToEndOfFile()
      let e = err.fileHandleForReading.readDataToEndOfFile()
      p.waitUntilExit()
      c.resume(returning: (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self)))
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
