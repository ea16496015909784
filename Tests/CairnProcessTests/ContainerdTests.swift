import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real containerd 1.6 daemons (two "hosts", each with its own `cairn agent`) on one
/// 3-node Cairn cluster of real processes, driven with `ctr` as an operator would.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ContainerdTests {
  /// Two hosts, their agents and containerds, torn down however the body ends.
  func withHosts<T: Sendable>(
    _ cluster: ClusterProcesses, _ body: ([(agent: ServerProcess, containerd: ContainerdProcess)]) async throws -> T
  ) async throws -> T {
    let addresses = (0..<cluster.nodes.count).map(cluster.address)
    var hosts: [(agent: ServerProcess, containerd: ContainerdProcess)] = []
    defer { for h in hosts { h.agent.signal(SIGKILL) } }
    do {
      for (i, name) in ["host-a", "host-b"].enumerated() {
        // Each host lists the nodes in its own order, as hosts in different racks would.
        let agent = ServerProcess.agent(
          dataDir: "\(cluster.dir.path)/\(name)-agent", cluster: Array(addresses[i...] + addresses[..<i]), client: name)
        try await agent.start()
        let containerd = ContainerdProcess(dir: "\(cluster.dir.path)/\(name)-containerd")
        hosts.append((agent, containerd))
        try await containerd.start(contentSocket: agent.unixPath)
      }
      let result = try await body(hosts)
      for h in hosts { await h.containerd.stop() }
      return result
    } catch {
      for h in hosts { await h.containerd.stop() }
      throw error
    }
  }

  func ctrOK(_ host: ContainerdProcess, _ args: [String]) async throws -> String {
    let (status, out, err) = try await host.ctr(args)
    guard status == 0 else { throw ServerProcessError("ctr \(args.joined(separator: " ")) failed (\(status)): \(err)") }
    return out
  }

  func log(_ p: ServerProcess) -> String { (try? String(contentsOfFile: p.logPath, encoding: .utf8)) ?? "" }

  @Test func twoHostsShareOneCopyAndNeverDeleteEachOthersBlobs() async throws {
    try await withCluster(try await ClusterProcesses.start(count: 3)) { cluster in
      let image = OCIImageTarball(name: "cairn.test/img:1", layerSizes: [16 << 20, 1 << 20, 4096], seed: 7)
      let tarPath = cluster.dir.path + "/img.tar"
      try image.tar.write(to: URL(fileURLWithPath: tarPath))
      let blobs = image.layers + [image.config, image.manifest]
      try await withHosts(cluster) { hosts in
        let (a, b) = (hosts[0], hosts[1])
        _ = try await ctrOK(a.containerd, ["images", "import", "--no-unpack", "--all-platforms", tarPath])
        _ = try await ctrOK(b.containerd, ["images", "import", "--no-unpack", "--all-platforms", tarPath])
        // Host B's agent found every blob of the image in the cluster and sent none of
        // them again. (The tarball's index is not part of the image: host A's GC may have
        // dropped it already, and then B uploads its few hundred bytes.)
        let bLog = log(b.agent)
        for d in blobs {
          #expect(bLog.contains("claimed \(d)"))
          #expect(!bLog.contains("published \(d)"), "host B uploaded \(d)")
        }
        #expect(log(a.agent).contains("published \(image.layers[0])"))

        let outA = cluster.dir.path + "/a.tar", outB = cluster.dir.path + "/b.tar"
        _ = try await ctrOK(a.containerd, ["images", "export", outA, "cairn.test/img:1"])
        _ = try await ctrOK(b.containerd, ["images", "export", outB, "cairn.test/img:1"])
        let exportA = try Data(contentsOf: URL(fileURLWithPath: outA))
        #expect(exportA == (try Data(contentsOf: URL(fileURLWithPath: outB))))
        let listed = try await ctrOK(b.containerd, ["content", "ls", "-q"])
        for d in blobs { #expect(listed.contains(d.description)) }
        let got = try await runTool(
          "/bin/sh", ["-c", "\(ContainerdProcess.ctr) --address \(b.containerd.socket) content get \(image.layers[1]) | sha256sum"])
        #expect(got.1.hasPrefix(image.layers[1].hex), "ctr content get: \(got)")

        // Host A removes the image and collects garbage: B still has every blob, on
        // every replica.
        _ = try await ctrOK(a.containerd, ["images", "rm", "--sync", "cairn.test/img:1"])
        #expect(try await ctrOK(a.containerd, ["content", "ls", "-q"]).isEmpty)
        for d in blobs {
          for n in 0..<3 { #expect(cluster.holds(n, digest: d.hex), "n\(n + 1) lost \(d) after host A's GC") }
        }
        _ = try await ctrOK(b.containerd, ["images", "export", outB, "cairn.test/img:1"])
        #expect(exportA == (try Data(contentsOf: URL(fileURLWithPath: outB))))

        // B removes one blob by hand, then the image: nothing holds them any more, and
        // they are gone from every node.
        _ = try await ctrOK(b.containerd, ["content", "rm", image.layers[2].description])
        _ = try await ctrOK(b.containerd, ["images", "rm", "--sync", "cairn.test/img:1"])
        for d in blobs {
          for n in 0..<3 { #expect(!cluster.holds(n, digest: d.hex), "n\(n + 1) still holds \(d)") }
        }
      }
    }
  }

  @Test func importCompletesWhenANodeIsKilledDuringIt() async throws {
    try await withCluster(try await ClusterProcesses.start(count: 3)) { cluster in
      let image = OCIImageTarball(name: "cairn.test/kill:1", layerSizes: [2048, 24 << 20, 8 << 20, 4096], seed: 11)
      let tarPath = cluster.dir.path + "/img.tar"
      try image.tar.write(to: URL(fileURLWithPath: tarPath))
      try await withHosts(cluster) { hosts in
        let (a, b) = (hosts[0], hosts[1])
        let importing = Task { try await a.containerd.ctr(["images", "import", "--no-unpack", "--all-platforms", tarPath]) }
        // Host A's agent talks to n1 first: kill it once the import has published a blob.
        try await waitUntil("host A published its first blob", timeout: 60) { log(a.agent).contains("published") }
        await cluster.nodes[0].stop(SIGKILL)
        var (status, _, err) = try await importing.value
        if status != 0 {
          // containerd's own retry, as its users would run it.
          (status, _, err) = try await a.containerd.ctr(["images", "import", "--no-unpack", "--all-platforms", tarPath])
        }
        #expect(status == 0, "import after the kill: \(err)")
        #expect(log(a.agent).contains("published \(image.layers[1])"), "24 MiB layer published")

        _ = try await ctrOK(b.containerd, ["images", "import", "--no-unpack", "--all-platforms", tarPath])
        let outA = cluster.dir.path + "/a.tar", outB = cluster.dir.path + "/b.tar"
        _ = try await ctrOK(a.containerd, ["images", "export", outA, "cairn.test/kill:1"])
        _ = try await ctrOK(b.containerd, ["images", "export", outB, "cairn.test/kill:1"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: outA)) == Data(contentsOf: URL(fileURLWithPath: outB)))
        // The survivors hold the acknowledged blobs with the right bytes.
        for d in image.layers {
          let bytes = try await ContentClient.with(address: cluster.address(1)) { try await $0.readAll(d.description) }
          #expect(Digest.of(bytes) == d)
        }
      }
    }
  }
}
