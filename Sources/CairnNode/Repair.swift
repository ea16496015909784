import CairnCluster
import CairnCore
import CairnProto
import Foundation
import GRPCCore
import Synchronization

/// How a node repairs itself. Per node, not part of the cluster fingerprint.
public struct RepairConfig: Sendable {
  /// Seconds between anti-entropy rounds (each compares with every live peer); 0 = off.
  public var intervalSeconds: Double = 30
  /// Bytes per second the node's repair transfers (fetches and handoffs) may use; 0 = no
  /// limit. Commits and hints are not limited: they are the foreground.
  public var bytesPerSecond: Int64 = 64 << 20
  /// A tombstone is kept at least this long, and until every replica applied it. A node
  /// that was down for longer must come back with an empty data directory
  /// (docs/operations.md, "Replace a node").
  public var tombstoneRetentionSeconds: Double = 86400
  /// Ingest failover: an upload's bytes not yet sent to the ref's next owner, at most (an
  /// append waits beyond it). A client whose owner dies resends about this much. 0 = no
  /// mirroring (a client then resumes from 0 unless the owner comes back).
  public var mirrorLagBytes: Int = 8 << 20

  public init() {}
}

final class RepairCounters: Sendable {
  let rounds = Atomic<UInt64>(0)
  let lastRoundNanos = Atomic<Int64>(0)
  let blobsPulled = Atomic<UInt64>(0)
  let bytesPulled = Atomic<UInt64>(0)
  let backlog = Atomic<UInt64>(0)
  let tombstonesApplied = Atomic<UInt64>(0)
  let handoffPending = Atomic<UInt64>(0)
  let handedOff = Atomic<UInt64>(0)
  let bytesReceived = Atomic<UInt64>(0)
  /// A removed node said it may be stopped.
  let departedQuiet = Atomic<Bool>(false)
}

/// A token bucket over bytes, one second deep.
actor ByteRateLimiter {
  private let rate: Double
  private var available: Double
  private var last = ContinuousClock.now

  init(bytesPerSecond: Int64) {
    rate = Double(bytesPerSecond)
    available = rate
  }

  func take(_ bytes: Int) async {
    guard rate > 0 else { return }
    let now = ContinuousClock.now
    let elapsed = now - last
    last = now
    available = min(rate, available + rate * (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
    available -= Double(bytes)
    if available < 0 { try? await Task.sleep(for: .seconds(-available / rate)) }
  }
}

extension ClusterNode {
  /// Digests per RepairEntries/RepairPull call, at most.
  static let maxRepairEntriesPerCall = 4096
  /// Buckets whose entries one RepairEntries call asks for (1/16 of a node's shared
  /// digests at most, far below the message limit for stores of millions of blobs).
  static let bucketsPerEntriesCall = 16
  /// Read repairs running at once on one node, at most; more are left to anti-entropy.
  static let maxReadRepairs = 256

  /// What this node holds: its blobs and its tombstones, the newer of the two per digest.
  func repairInventory() async throws -> [Digest: RepairEntry] {
    repairInventory(try await local.list(.always))
  }

  func repairInventory(_ blobs: [BlobInfo]) -> [Digest: RepairEntry] {
    var out: [Digest: RepairEntry] = [:]
    for info in blobs {
      out[info.digest] = RepairEntry(digest: info.digest, state: .present, at: info.createdAt.totalNanoseconds, size: info.size)
    }
    for t in tombstones.entries() {
      out[t.digest] = out[t.digest].map { RepairEntry.newer($0, t) } ?? t
    }
    return out
  }

  func antiEntropyForever() async {
    guard repairConfig.intervalSeconds > 0 else { return }
    while !Task.isCancelled {
      // Jittered, so that the nodes of a cluster started together do not compare in lockstep.
      let seconds = repairConfig.intervalSeconds * Double.random(in: 0.8...1.2)
      try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
      if Task.isCancelled { return }
      await antiEntropyRound()
    }
  }

  /// Compares with every live peer, fetches what this node lacks, applies the tombstones it
  /// learns, hands off the copies it should not keep and forgets the tombstones it may.
  func antiEntropyRound() async {
    let view = self.view
    guard let blobs = try? await local.list(.always) else { return }
    var inventory = repairInventory(blobs)
    var backlog = 0
    for peer in view.livePeers {
      do {
        backlog += try await compare(with: peer, view: view, inventory: &inventory)
      } catch {
        logger.debug("anti-entropy with \(peer) failed: \(ContentError.from(error).message)")
      }
    }
    let pending = await handOff(inventory, view: view)
    let present = Dictionary(blobs.map { ($0.digest, $0.createdAt.totalNanoseconds) }) { a, _ in a }
    let collected = await tombstones.collect(
      retentionSeconds: repairConfig.tombstoneRetentionSeconds, view: view, present: present)
    if collected > 0 { logger.info("forgot \(collected) tombstones applied by every replica") }
    repair.backlog.store(UInt64(backlog), ordering: .relaxed)
    repair.handoffPending.store(UInt64(pending), ordering: .relaxed)
    if !view.config.isMember && pending == 0 && !repair.departedQuiet.exchange(true, ordering: .relaxed) {
      logger.notice("removed from the cluster and every blob handed off to its replicas: this node may be stopped")
    }
    repair.lastRoundNanos.store(Monotonic.nanoseconds, ordering: .relaxed)
    repair.rounds.add(1, ordering: .relaxed)
  }

  /// One exchange with `peer` over the digests both replicate; returns the fetches that failed.
  private func compare(with peer: NodeID, view: ClusterView, inventory: inout [Digest: RepairEntry]) async throws -> Int {
    let me = config.me
    let fingerprint = config.fingerprint
    let mine = inventory.values.filter { AntiEntropy.shared($0.digest, me, peer, in: view) }
    let theirSummary = try await peers.call(peer) {
      try await $0.repairSummary(
        .with {
          $0.from = me.name
          $0.clusterFingerprint = fingerprint
        }, options: PeerClients.options(timeout: .seconds(60)))
    }.buckets
    let differing = AntiEntropy.differingBuckets(AntiEntropy.summary(mine), theirSummary)
    var theirs: [Digest: RepairEntry] = [:]
    for start in stride(from: 0, to: differing.count, by: Self.bucketsPerEntriesCall) {
      let buckets = differing[start..<min(start + Self.bucketsPerEntriesCall, differing.count)].map(UInt32.init)
      let answer = try await peers.call(peer) {
        try await $0.repairEntries(
          .with {
            $0.from = me.name
            $0.clusterFingerprint = fingerprint
            $0.buckets = buckets
          }, options: PeerClients.options(timeout: .seconds(60)))
      }
      for e in answer.entries {
        // A time beyond this node's clock by more than the skew would outrank what
        // happens here later (a far-future Delete would ban the digest): not taken.
        guard let entry = RepairEntry(e), clock.admits(entry.at) else { continue }
        theirs[entry.digest] = entry
      }
    }
    let differ = Set(differing)
    let now = clock.reading  // deletion times are the clock's, not the wall's
    let retention = Int64(repairConfig.tombstoneRetentionSeconds * 1e9)
    tombstones.confirm(
      AntiEntropy.confirmedTombstones(mine: mine, theirs: theirs, differing: differ, now: now, retention: retention), by: peer)
    let mineThere = Dictionary(mine.filter { differ.contains(AntiEntropy.bucket(of: $0.digest)) }.map { ($0.digest, $0) }) { a, _ in a }
    var failed = 0
    for action in AntiEntropy.plan(mine: mineThere, theirs: theirs.values, now: now, retention: retention) {
      switch action {
      case .pull(let digest, _):
        do {
          try await pull(digest, from: peer)
          inventory[digest] = theirs[digest]
        } catch {
          failed += 1
          logger.warning("anti-entropy: fetching \(digest) from \(peer) failed: \(ContentError.from(error).message)")
        }
      case .delete(let digest, let at):
        do {
          try await applyTombstone(digest, deletedAt: at)
          inventory[digest] = RepairEntry(digest: digest, state: .deleted, at: at)
        } catch {
          failed += 1
          logger.error("anti-entropy: the Delete of \(digest) from \(peer) not applied: \(ContentError.from(error).message)")
        }
      case .recordTombstone(let digest, let at):
        do {
          try await tombstones.record(digest, at: Timestamp(totalNanoseconds: at))
          inventory[digest] = RepairEntry(digest: digest, state: .deleted, at: at)
        } catch {
          failed += 1
          logger.error("anti-entropy: the tombstone of \(digest) from \(peer) not recorded: \(ContentError.from(error).message)")
        }
      }
    }
    return failed
  }

  /// A Delete this node missed: record it, then drop the copy if it is older. A tombstone
  /// that is not durable throws before the copy goes: the copy stays until this node can
  /// keep the Delete across a restart and pass it on to nodes that missed it too.
  func applyTombstone(_ digest: Digest, deletedAt at: Int64) async throws {
    try await tombstones.record(digest, at: Timestamp(totalNanoseconds: at))
    guard let info = try? await local.info(digest), info.createdAt.totalNanoseconds <= at else { return }
    if (try? await local.delete(digest)) != nil {
      repair.tombstonesApplied.add(1, ordering: .relaxed)
      logger.info("applied the tombstone of \(digest): deleted a copy this node kept while it missed the Delete")
    }
  }

  /// Fetches a blob from `peer` into the local store (its labels and creation time too).
  func pull(_ digest: Digest, from peer: NodeID) async throws {
    let limiter = repairLimiter
    let (existed, size) = try await peers.call(peer) { api in
      let info = try BlobInfo(
        try await api.localInfo(.with { $0.digest = digest.description }, options: PeerClients.options(timeout: .seconds(30))).info)
      let header = self.replicaHeader(
        digest, size: info.size, labels: info.labels, createdAt: info.createdAt, ref: "", labelsUpdatedAt: info.updatedAt)
      let request = Containerd_Services_Content_V1_ReadContentRequest.with { $0.digest = digest.description }
      let existed = try await api.localRead(request: ClientRequest(message: request), options: PeerClients.options()) { r in
        var messages = r.messages.makeAsyncIterator()
        return try await self.acceptReplica(header) {
          guard let m = try await messages.next() else { return nil }
          await limiter.take(m.data.count)
          return m.data
        }
      }
      return (existed, info.size)
    }
    if !existed {
      repair.blobsPulled.add(1, ordering: .relaxed)
      repair.bytesPulled.add(UInt64(size), ordering: .relaxed)
    }
  }

  /// Read repair on this node: fetch `digest` in the background if this node is one of its
  /// replicas and lacks it. False if not scheduled (not a replica, already running, or too
  /// many running: anti-entropy will catch it).
  @discardableResult
  func scheduleRepair(_ digest: Digest) -> Bool {
    let view = self.view
    guard view.replicas(of: digest).contains(config.me) else { return false }
    let scheduled = repairing.withLock { r in r.count < Self.maxReadRepairs && r.insert(digest).inserted }
    guard scheduled else { return false }
    Task {
      defer { _ = self.repairing.withLock { $0.remove(digest) } }
      if (try? await self.local.info(digest)) != nil { return }
      for peer in view.readOrder(of: digest) {
        do {
          try await self.pull(digest, from: peer)
          self.logger.info("read repair: fetched \(digest) from \(peer)")
          return
        } catch {
          continue
        }
      }
    }
    return true
  }

  /// Read repair on another node: ask `replica` to fetch `digest`. Fire and forget.
  func requestRepair(_ digest: Digest, on replica: NodeID) {
    let peers = self.peers
    Task {
      _ = try? await peers.call(replica) {
        try await $0.repairPull(.with { $0.digests = [digest.description] }, options: PeerClients.options(timeout: .seconds(5)))
      }
    }
  }

  /// Copies this node holds but is no replica of (a staged commit whose hints are
  /// delivered, or ranges a ring change gave to other nodes): each goes to every replica
  /// that lacks it and is dropped here only once every replica confirms it holds it.
  /// Returns how many such copies remain.
  private func handOff(_ inventory: [Digest: RepairEntry], view: ClusterView) async -> Int {
    let hinted = Set(hints.pending().values.joined())
    let busy = replicating.withLock { Set($0.keys) }
    let copies = inventory.values.filter {
      $0.state == .present && !view.replicas(of: $0.digest).contains(config.me) && !hinted.contains($0.digest)
        && !busy.contains($0.digest)
    }
    var remaining = copies.count
    for start in stride(from: 0, to: copies.count, by: Self.maxRepairEntriesPerCall) {
      let batch = copies[start..<min(start + Self.maxRepairEntriesPerCall, copies.count)]
      var answers: [NodeID: [Digest: RepairEntry]] = [:]
      for node in Set(batch.flatMap { view.replicas(of: $0.digest) }) where view.isLive(node) {
        let digests = batch.filter { view.replicas(of: $0.digest).contains(node) }.map(\.digest.description)
        let me = config.me.name
        let fingerprint = config.fingerprint
        guard
          let answer = try? await peers.call(node, {
            try await $0.repairEntries(
              .with {
                $0.from = me
                $0.clusterFingerprint = fingerprint
                $0.digests = digests
              }, options: PeerClients.options(timeout: .seconds(60)))
          })
        else { continue }
        answers[node] = Dictionary(answer.entries.compactMap(RepairEntry.init).map { ($0.digest, $0) }) { a, _ in a }
      }
      for copy in batch where await handOff(copy, answers: answers, view: view) {
        remaining -= 1
      }
    }
    return remaining
  }

  /// True once the copy is gone from here (handed off, or deleted by a tombstone). While
  /// some replica holds the blob, the others fetch it from there (anti-entropy) and this
  /// node only waits; it sends its copy itself only when no replica has one, so that each
  /// replica receives the blob once.
  private func handOff(_ copy: RepairEntry, answers: [NodeID: [Digest: RepairEntry]], view: ClusterView) async -> Bool {
    let replicas = view.replicas(of: copy.digest)
    for replica in replicas {
      if let theirs = answers[replica]?[copy.digest], theirs.state == .deleted, RepairEntry.newer(theirs, copy).state == .deleted {
        do {
          try await applyTombstone(copy.digest, deletedAt: theirs.at)
          return true
        } catch {
          logger.error("handoff: the Delete of \(copy.digest) from \(replica) not applied: \(ContentError.from(error).message)")
          return false
        }
      }
    }
    let holding = replicas.filter { answers[$0]?[copy.digest]?.state == .present }
    var everywhere = holding.count == replicas.count
    if holding.isEmpty, let first = replicas.first(where: { answers[$0] != nil }) {
      guard let info = try? await local.info(copy.digest) else { return true }
      let header = replicaHeader(copy.digest, size: info.size, labels: info.labels, createdAt: info.createdAt, ref: "")
      do {
        try await send(copy.digest, header: header, to: first, limiter: repairLimiter)
        everywhere = replicas.count == 1
      } catch {
        everywhere = false
      }
    }
    guard everywhere else { return false }
    do {
      try await local.delete(copy.digest)
    } catch {
      return false
    }
    repair.handedOff.add(1, ordering: .relaxed)
    logger.info("handed off \(copy.digest) to its replicas and dropped this node's copy")
    return true
  }

  /// After a conditional Delete some node refused: the nodes that deleted forget their
  /// tombstone, so that repair brings the kept blob back to them.
  func forgetTombstone(_ digest: Digest, on nodes: [NodeID]) async {
    for node in nodes {
      if node == config.me {
        await tombstones.forget(digest)
      } else {
        _ = try? await peers.call(node) {
          try await $0.forgetTombstone(.with { $0.digest = digest.description }, options: PeerClients.options(timeout: .seconds(5)))
        }
      }
    }
  }

  func repairStatus() -> Cairn_Peer_V1_RepairStatus {
    let last = repair.lastRoundNanos.load(ordering: .relaxed)
    return .with {
      $0.rounds = repair.rounds.load(ordering: .relaxed)
      $0.lastRoundAgeSeconds = last == 0 ? -1 : Double(Monotonic.nanoseconds - last) / 1e9
      $0.blobsPulled = repair.blobsPulled.load(ordering: .relaxed)
      $0.bytesPulled = repair.bytesPulled.load(ordering: .relaxed)
      $0.backlog = repair.backlog.load(ordering: .relaxed)
      $0.tombstones = UInt64(tombstones.count)
      $0.tombstonesApplied = repair.tombstonesApplied.load(ordering: .relaxed)
      $0.handoffPending = repair.handoffPending.load(ordering: .relaxed)
      $0.handedOff = repair.handedOff.load(ordering: .relaxed)
      $0.bytesReceived = repair.bytesReceived.load(ordering: .relaxed)
    }
  }
}
