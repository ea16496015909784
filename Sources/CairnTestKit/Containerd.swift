import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private containerd 1.6 daemon (Debian's package) for one simulated host: its own
/// root, state and socket, its built-in content store disabled and replaced by a proxy
/// plugin on `contentSocket` (a `cairn agent`). Snapshotters that need mounts and CRI are
/// off, so it runs inside a container.
public final class ContainerdProcess: @unchecked Sendable {
  public let dir: String
  public var socket: String { dir + "/containerd.sock" }
  public var logPath: String { dir + "/containerd.log" }
  private var process = Process()

  public static var binary: String? {
    ["/usr/bin/containerd", "/usr/local/bin/containerd"].first { FileManager.default.isExecutableFile(atPath: $0) }
  }
  public static var ctr: String { ["/usr/bin/ctr", "/usr/local/bin/ctr"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "ctr" }

  public init(dir: String) { self.dir = dir }

  public func start(contentSocket: String, timeout: Double = 60) async throws {
    guard let binary = Self.binary else { throw ServerProcessError("containerd is not installed (apt-get install containerd)") }
    try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
    let config = """
      version = 2
      root = "\(dir)/root"
      state = "\(dir)/state"
      disabled_plugins = ["io.containerd.content.v1.content", "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.opt",
        "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
      [grpc]
        address = "\(socket)"
      [ttrpc]
        address = "\(socket).ttrpc"
      [debug]
        address = "\(dir)/debug.sock"
        level = "info"
      [proxy_plugins]
        [proxy_plugins.cairn]
          type = "content"
          address = "\(contentSocket)"
      """
    try config.write(toFile: dir + "/config.toml", atomically: true, encoding: .utf8)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["--config", dir + "/config.toml"]
    let pipe = try OutputPipe()
    p.standardError = pipe.writeHandle
    p.standardOutput = FileHandle.nullDevice
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    let log = FileManager.default.createFile(atPath: logPath, contents: nil) ? FileHandle(forWritingAtPath: logPath) : nil
    pipe.readLines({ line in
      log?.write(Data((line + "\n").utf8))
      continuation.yield(line)
    }, done: { continuation.finish() })
    try p.run()
    pipe.childStarted()
    process = p
    let deadline = Task {
      try await Task.sleep(for: .seconds(timeout))
      continuation.finish()
    }
    defer { deadline.cancel() }
    // containerd announces readiness in its log.
    for await line in lines where line.contains("containerd successfully booted") { return }
    throw ServerProcessError("containerd did not start; see \(logPath)")
  }

  /// Runs `ctr` against this daemon.
  public func ctr(_ args: [String]) async throws -> (Int32, String, String) {
    try await runTool(Self.ctr, ["--address", socket] + args)
  }

  public func stop() async {
    guard process.isRunning else { return }
    kill(process.processIdentifier, SIGTERM)
    _ = await exitStatus(of: process)
  }

  deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// An OCI image layout as a tarball, for `ctr images import`: layers of the given sizes
/// (each a tar holding one file of pseudo-random bytes), a config, a manifest and an index
/// naming the image `name`.
public struct OCIImageTarball {
  public let tar: Data
  public let layers: [Digest]
  public let config: Digest
  public let manifest: Digest

  public init(name: String, layerSizes: [Int], seed: UInt64) {
    let layerBlobs = layerSizes.enumerated().map { i, n in
      Tar.archive([("file\(i)", Self.randomBytes(n, seed: seed &+ UInt64(i)))])
    }
    layers = layerBlobs.map { Digest.of($0) }
    let diffIDs = layers.map { "\"\($0)\"" }.joined(separator: ",")
    let configBlob = Data("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\(diffIDs)]}}".utf8)
    config = Digest.of(configBlob)
    let layerDescs = zip(layers, layerBlobs).map {
      "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"\($0)\",\"size\":\($1.count)}"
    }.joined(separator: ",")
    let manifestBlob = Data("""
      {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
      "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(config)","size":\(configBlob.count)},\
      "layers":[\(layerDescs)]}
      """.utf8)
    manifest = Digest.of(manifestBlob)
    let index = Data("""
      {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",\
      "digest":"\(manifest)","size":\(manifestBlob.count),\
      "annotations":{"io.containerd.image.name":"\(name)","org.opencontainers.image.ref.name":"\(name.split(separator: ":").last ?? "latest")"}}]}
      """.utf8)
    var entries: [(String, Data)] = [("oci-layout", Data("{\"imageLayoutVersion\":\"1.0.0\"}".utf8)), ("index.json", index)]
    for (d, blob) in [(config, configBlob), (manifest, manifestBlob)] + Array(zip(layers, layerBlobs)) {
      entries.append(("blobs/sha256/\(d.hex)", blob))
    }
    tar = Tar.archive(entries)
  }

  static func randomBytes(_ n: Int, seed: UInt64) -> Data {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = Data(count: n)
    out.withUnsafeMutableBytes { raw in
      let words = raw.bindMemory(to: UInt64.self)
      for i in 0..<words.count {
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        words[i] = x
      }
    }
    return out
  }
}

/// The ustar subset an OCI layout needs: regular files with short names.
enum Tar {
  static func archive(_ files: [(String, Data)]) -> Data {
    var out = Data()
    for (name, data) in files {
      var header = [UInt8](repeating: 0, count: 512)
      func put(_ s: String, at offset: Int) { for (i, b) in s.utf8.enumerated() { header[offset + i] = b } }
      put(name, at: 0)
      put("0000644\0", at: 100)
      put("0000000\0", at: 108)
      put("0000000\0", at: 116)
      put(String(format: "%011o\0", data.count), at: 124)
      put("00000000000\0", at: 136)
      put("        ", at: 148)
      header[156] = UInt8(ascii: "0")
      put("ustar\0", at: 257)
      put("00", at: 263)
      let sum = header.reduce(0) { $0 + Int($1) }
      put(String(format: "%06o\0 ", sum), at: 148)
      out.append(contentsOf: header)
      out.append(data)
      out.append(Data(count: (512 - data.count % 512) % 512))
    }
    out.append(Data(count: 1024))
    return out
  }
}
