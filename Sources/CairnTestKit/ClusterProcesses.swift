import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A cluster of real `cairn serve` processes on loopback, one data directory each.
public final class ClusterProcesses: @unchecked Sendable {
  public let ids: [String]
  public let ports: [Int]
  public let nodes: [ServerProcess]
  public let dir: TemporaryDirectory

  /// Starts `count` nodes n1…nN; `perNodeArgs` adds arguments to one node (by index),
  /// `perNodeEnv` environment variables.
  public static func start(
    count: Int, replicas: Int? = nil, writeQuorum: Int? = nil, extraArgs: [String] = [],
    perNodeArgs: [Int: [String]] = [:], perNodeEnv: [Int: [String: String]] = [:]
  ) async throws -> ClusterProcesses {
    let ports = try freeLoopbackPorts(count)
    let ids = (1...count).map { "n\($0)" }
    let peers = zip(ids, ports).map { "\($0)=127.0.0.1:\($1)" }.joined(separator: ",")
    let dir = try TemporaryDirectory("cairn-cluster")
    var nodes: [ServerProcess] = []
    for (i, id) in ids.enumerated() {
      var args = ["--node-id", id, "--peers", peers] + extraArgs
      if let replicas { args += ["--replicas", String(replicas)] }
      if let writeQuorum { args += ["--write-quorum", String(writeQuorum)] }
      args += perNodeArgs[i] ?? []
      nodes.append(ServerProcess(dataDir: "\(dir.path)/\(id)", listen: "127.0.0.1:\(ports[i])", extraArgs: args, env: perNodeEnv[i] ?? [:]))
    }
    let cluster = ClusterProcesses(ids: ids, ports: ports, nodes: nodes, dir: dir)
    do {
      for n in nodes { try await n.start() }
    } catch {
      await cluster.stopAll()
      throw error
    }
    return cluster
  }

  private init(ids: [String], ports: [Int], nodes: [ServerProcess], dir: TemporaryDirectory) {
    self.ids = ids
    self.ports = ports
    self.nodes = nodes
    self.dir = dir
  }

  public func address(_ i: Int) -> String { "127.0.0.1:\(ports[i])" }

  /// Whether node `i` holds the blob on its own disk.
  public func holds(_ i: Int, digest hex: String, algorithm: String = "sha256") -> Bool {
    FileManager.default.fileExists(atPath: "\(nodes[i].dataDir)/blobs/\(algorithm)/\(hex)")
  }

  public func stopAll() async {
    for n in nodes where n.process.isRunning {
      n.signal(SIGCONT)
      await n.stop(SIGKILL)
    }
  }
}
