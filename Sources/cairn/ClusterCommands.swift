import ArgumentParser
import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import Foundation
import SwiftProtobuf

struct ClusterCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cluster", abstract: "Inspect a Cairn cluster.", subcommands: [ClusterStatus.self, ClusterLocate.self, ClusterJoin.self, ClusterLeave.self])
}

struct ClusterStatus: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "One node's view of its cluster: members, states, incarnations, ring ownership, R/W.")
  @OptionGroup var client: ClientOptions
  @Flag(help: "Print the answer as JSON.") var json = false

  static let singleNode =
    "this node is a single node, not a cluster member: `cairn cluster` commands need a node started with --peers, --join or discover_dns"

  func run() async throws {
    let s = try await client.run(unimplemented: ClusterStatus.singleNode) { try await $0.clusterStatus() }
    if json {
      // Numbers as numbers (proto3's JSON mapping quotes 64-bit ones, which jq and scripts
      // then compare as text).
      var options = JSONEncodingOptions()
      options.alwaysPrintInt64sAsNumbers = true
      print(try s.jsonString(options: options))
      return
    }
    print("node \(s.nodeID): replicas R=\(s.replicas), write quorum W=\(s.writeQuorum), \(s.vnodes) vnodes/node, config \(s.fingerprint) (epoch \(s.configEpoch)), view version \(s.viewVersion)")
    if !s.security.isEmpty { print("security: \(s.security)") }
    print(
      String(
        format: "clock: wall %+.3f s from the cluster's median; max_clock_skew %.1f s; %d readings refused", Double(s.clockOffsetNanos) / 1e9,
        s.maxClockSkewSeconds, s.clockReadingsRefused))
    if !s.member {
      print("REMOVED from the cluster: handing off its blobs (handoff pending \(s.repair.handoffPending)); stop it once that is 0")
    }
    print("hints pending: \(s.hintsPending)   remote fetches started: \(s.remoteFetches)")
    let r = s.repair
    let age = r.lastRoundAgeSeconds < 0 ? "none yet" : String(format: "%.1f s ago", r.lastRoundAgeSeconds)
    print(
      "repair: \(r.rounds) anti-entropy rounds (last \(age)), backlog \(r.backlog), pulled \(r.blobsPulled) blobs / \(r.bytesPulled) bytes, received \(r.bytesReceived) bytes")
    print(
      "        tombstones \(r.tombstones) (\(r.tombstonesApplied) applied late), handoff pending \(r.handoffPending), handed off \(r.handedOff)")
    let header = ["ID", "ADDRESS", "STATE", "INCARNATION", "LINK", "CLOCK", "RING", "REPLICAS", ""]
    var rows: [[String]] = [header]
    for m in s.members {
      let state = m.state.status == .alive ? "alive" : m.state.status == .suspect ? "suspect" : "dead"
      let bar = String(repeating: "#", count: Int((m.ownership * 100).rounded()))
      rows.append([
        m.state.id, m.state.address, state, String(m.state.incarnation), m.connected ? "up" : "down",
        m.state.id == s.nodeID ? "-" : String(format: "%+.3fs", Double(m.clockOffsetNanos) / 1e9), String(format: "%.1f%%", m.ownership * 100),
        String(format: "%.1f%%", m.replicaShare * 100), bar,
      ])
    }
    print(textTable(rows))
    for p in s.configProblems { print("CONFIG MISMATCH: \(p)") }
  }
}

struct ClusterLocate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "locate",
    abstract: "Where a ref or a digest lives, in one node's current view: a ref's owner, a digest's replicas.")
  @OptionGroup var client: ClientOptions
  @Option(help: "A ref: prints its owner (the node holding its upload and lock).") var ref: [String] = []
  @Option(help: "A digest: prints its replica set, in preference order.") var digest: [String] = []
  @Argument(help: "Digests, as --digest.") var digests: [String] = []

  func run() async throws {
    let digest = self.digest + digests
    guard !ref.isEmpty || !digest.isEmpty else { throw ValidationError("give a digest (or --digest D), or --ref REF") }
    for text in digest { _ = try digestArgument(text) }
    let s = try await client.run(unimplemented: ClusterStatus.singleNode) { try await $0.clusterStatus() }
    let ring = Ring(nodes: s.members.map { NodeID($0.state.id) }, vnodesPerNode: Int(s.vnodes))
    let live = Set(s.members.filter { $0.state.status != .dead }.map { NodeID($0.state.id) })
    for r in ref {
      print("ref \(quoted(r)): owner \(ring.owner(ofRef: r, isLive: live.contains)?.name ?? "none")")
    }
    for text in digest {
      let d = try digestArgument(text)
      print("\(d): replicas \(ring.replicas(of: d, count: Int(s.replicas)).map(\.name).joined(separator: " "))")
    }
  }
}

struct ClusterJoin: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "join",
    abstract: "Add a node to the cluster (the next config epoch); repair moves its share of the data to it.",
    discussion: "Usually not needed: `cairn serve --join ANY-NODE` does this when a new node starts.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "The new node as ID=HOST:PORT.") var node: String

  func run() async throws {
    let peer: [NodeID: String]
    do { peer = try ClusterConfig.parsePeers(node) } catch { throw ValidationError(error.message) }
    let add = Dictionary(uniqueKeysWithValues: peer.map { ($0.key.name, $0.value) })
    let c = try await client.run(unimplemented: ClusterStatus.singleNode) { try await $0.changeMembership(add: add, remove: []) }
    print("config epoch \(c.epoch): \(c.peers.keys.sorted().joined(separator: ", "))")
  }
}

struct ClusterLeave: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "leave",
    abstract: "Remove a node from the cluster (the next config epoch). The removed node hands its blobs to their replicas; stop it when its `cluster status` shows handoff pending 0.")
  @OptionGroup var client: ClientOptions
  @Argument(help: "The node id to remove.") var id: String

  func run() async throws {
    let c = try await client.run(unimplemented: ClusterStatus.singleNode) { try await $0.changeMembership(add: [:], remove: [id]) }
    print("config epoch \(c.epoch): \(c.peers.keys.sorted().joined(separator: ", "))")
  }
}
