import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import Foundation
import GRPCCore

extension ClusterNode {
  /// Streams a blob this node just committed to the rest of its replica set and returns
  /// once the write quorum holds it durably (this node counts if it is a replica).
  /// Transfers are staged: only as many run at once as the quorum still needs, in
  /// preference order (a failed one is replaced by the next replica at once); after the
  /// quorum is reached, the remaining replicas are served one at a time in the
  /// background. On two cores, running every transfer at once made the acknowledgement
  /// wait for all of them. Replicas that are down or fail get a durable hint.
  /// When the replicas left cannot make up the quorum, stand-ins do (ClusterView.standIns:
  /// this node's own copy if it is one, then the others in order); a stand-in keeps its
  /// copy until every replica holds the blob (Repair.swift, handOff). UNAVAILABLE if even
  /// they cannot: the blob stays on the nodes that took it, and the hints carry it on.
  func replicate(
    _ digest: Digest, size: Int64, labels: [String: String], createdAt: Timestamp, ref: String, view: ClusterView,
    alreadyOn holders: Set<NodeID> = [], delegatedBy: NodeID? = nil
  ) async throws {
    let replicas = view.replicas(of: digest)
    let selfIsReplica = replicas.contains(config.me)
    let held = replicas.filter { $0 != config.me && holders.contains($0) }.count
    let needed = config.writeQuorum - (selfIsReplica ? 1 : 0) - held
    let targets = replicas.filter { $0 != config.me && !holders.contains($0) }
    let standIns = view.standIns(of: digest).filter { !holders.contains($0) }
    var unsent = replicaHeader(digest, size: size, labels: labels, createdAt: createdAt, ref: ref)
    if let delegatedBy { unsent.delegatedBy = delegatedBy.name }
    let header = unsent
    let (results, sink) = AsyncStream.makeStream(of: (NodeID, ContentError?).self)
    // Not a child task: transfers outlive this call once the quorum is reached.
    replicating.withLock { $0[digest, default: 0] += 1 }
    Task {
      defer {
        self.replicating.withLock { r in
          r[digest, default: 1] -= 1
          if r[digest] == 0 { r[digest] = nil }
        }
      }
      var queue = targets[...]
      var spares = standIns[...]
      var acks = 0
      var delivered = true
      await withTaskGroup(of: (NodeID, ContentError?).self) { group in
        var inFlight = 0
        func start(_ target: NodeID, _ group: inout TaskGroup<(NodeID, ContentError?)>) {
          inFlight += 1
          group.addTask {
            guard view.isLive(target) else { return (target, .unavailable("\(target) is down")) }
            do {
              try await self.send(digest, header: header, to: target)
              return (target, nil)
            } catch {
              return (target, ContentError.from(error))
            }
          }
        }
        func fill(_ group: inout TaskGroup<(NodeID, ContentError?)>) {
          let want = acks < needed ? needed - acks : 1
          while inFlight < want, let target = queue.popFirst() { start(target, &group) }
          // Stand-ins only while the quorum is missing and the replicas left cannot make
          // it up; never once it is reached.
          while acks < needed, inFlight + queue.count < needed - acks, let spare = spares.popFirst() {
            if spare == self.config.me {
              acks += 1  // this node's own copy, kept until every replica holds the blob
              sink.yield((spare, nil))
            } else {
              start(spare, &group)
            }
          }
        }
        fill(&group)
        while let (target, failure) = await group.next() {
          inFlight -= 1
          if failure == nil {
            acks += 1
          } else if standIns.contains(target) {
            // A stand-in that failed is no replica: no hint, the next stand-in is tried.
            // (`delivered` is false already: stand-ins are asked only after a replica failed.)
            self.logger.info("stand-in \(target) did not take \(digest): \(failure!.message)")
          } else {
            delivered = false
            do {
              try await self.hints.add(digest, for: target)
              self.logger.warning("replication of \(digest) to \(target) failed, hint recorded: \(failure!.message)")
            } catch {
              self.logger.error(
                "replication of \(digest) to \(target) failed (\(failure!.message)); its hint is kept in memory only (anti-entropy repairs it after a restart): \(ContentError.from(error).message)")
            }
          }
          sink.yield((target, failure))
          fill(&group)
        }
      }
      sink.finish()
      // An owner outside the replica set only staged the blob; it keeps it while it
      // still has hints to deliver.
      if !selfIsReplica && delivered {
        try? await self.local.delete(digest)
      }
    }
    var acks = (selfIsReplica ? 1 : 0) + held
    if acks >= config.writeQuorum { return }
    var failures: [String] = []
    for await (target, error) in results {
      if let error {
        failures.append("\(target): \(error.message)")
      } else {
        acks += 1
      }
      if acks >= config.writeQuorum { return }
    }
    throw ContentError.unavailable(
      "blob \(digest) is durable on \(acks) replica(s), the write quorum is \(config.writeQuorum): \(failures.joined(separator: "; "))")
  }

  func replicaHeader(
    _ digest: Digest, size: Int64, labels: [String: String], createdAt: Timestamp, ref: String,
    labelsUpdatedAt: Timestamp? = nil
  ) -> Cairn_Peer_V1_ReplicateHeader {
    .with {
      $0.digest = digest.description
      $0.size = size
      $0.labels = labels
      $0.createdAt = .init(createdAt)
      if let labelsUpdatedAt { $0.labelsUpdatedAt = .init(labelsUpdatedAt) }
      $0.ref = ref
      $0.owner = config.me.name
      $0.clusterFingerprint = config.fingerprint
    }
  }

  /// One blob from the local store to one replica, with the labels it has here now (an
  /// Update may have run since the header was made; the replica keeps the later labels).
  func send(
    _ digest: Digest, header: Cairn_Peer_V1_ReplicateHeader, to target: NodeID, limiter: ByteRateLimiter? = nil
  ) async throws {
    let (local, peers) = (self.local, self.peers)
    let info = try await local.info(digest)
    var current = header
    current.labels = info.labels
    current.labelsUpdatedAt = .init(info.updatedAt)
    let header = current
    _ = try await untilDead(target) {
      try await peers.call(target) { api in
        try await api.replicate(options: PeerClients.transfer(header.size)) { writer in
          try await writer.write(.with { $0.header = header })
          for try await chunk in try await local.read(digest, offset: 0, size: 0) {
            await limiter?.take(chunk.count)
            try await writer.write(.with { $0.data = chunk })
          }
        }
      }
    }
  }

  /// Stores a blob another node sends or this node fetches (a commit's replica, a hint, a
  /// handoff, a repair), from a header and its bytes in order; true if it was here already.
  /// The digest is verified here. A blob deleted after its creation is refused, also when
  /// the Delete arrives while its bytes do (checked again at the commit, `guarding`).
  func acceptReplica(_ h: Cairn_Peer_V1_ReplicateHeader, next: () async throws -> Data?) async throws -> Bool {
    guard h.clusterFingerprint == config.fingerprint else {
      throw ContentError.failedPrecondition(
        "cluster config fingerprint \(h.clusterFingerprint) differs from \(config.me)'s \(config.fingerprint)")
    }
    var offer = try h.offer()
    let digest = offer.digest
    // Hints, handoffs and repairs carry no ref: the blob was acknowledged already.
    if !offer.ref.isEmpty {
      try requireOwner(offer.owner, of: offer.ref, delegatedBy: offer.delegatedBy, sending: "a replica of \(digest)")
    }
    let createdAt = offer.createdAt
    if let createdAt { try clock.admit(createdAt, "created_at") }
    // A far-future time would make these labels win over every later Update: such a time
    // is not taken (the copy is, with the labels it had when created).
    if let labelled = offer.labelsUpdatedAt, !clock.admits(labelled.totalNanoseconds) {
      logger.warning("\(h.owner)'s labels of \(digest) are stamped \(labelled), beyond max_clock_skew: their time is ignored")
      offer.labelsUpdatedAt = nil
    }
    // Not an acknowledgement: the sender records a hint, which it drops once its own copy
    // is gone too.
    try refuseIfDeleted(digest, createdAt: createdAt)
    let ref = "\(ClusterNode.replicaRefPrefix)\(digest)/\(h.owner)"
    let writer: any IngestWriter
    do {
      writer = try await local.openWriter(ref: ref, total: h.size, expected: digest)
    } catch let e as ContentError where e.code == .alreadyExists {
      await adoptLabels(of: offer)
      return true
    }
    do {
      if try await writer.state().status.offset > 0 { _ = try await writer.truncate() }
      while let data = try await next() {
        if data.isEmpty { continue }
        _ = try await writer.append(data)
        repair.bytesReceived.add(UInt64(data.count), ordering: .relaxed)
      }
      // A Delete that fanned out while the bytes were arriving left its tombstone.
      try await guarding(digest) {
        try refuseIfDeleted(digest, createdAt: createdAt)
        _ = try await writer.commit(size: h.size, expected: digest, labels: h.labels, createdAt: createdAt)
      }
    } catch let e as ContentError where e.code == .alreadyExists {
      await writer.close()
      await adoptLabels(of: offer)
      return true
    } catch {
      await writer.close()
      try? await local.abort(ref: ref)
      throw error
    }
    await writer.close()
    // The commit stamped the labels with the creation time; they may have been set since.
    await adoptLabels(of: offer)
    return false
  }

  /// The offered copy's labels, if they were set after this node's (last setting wins).
  /// The blob is stored whatever happens here: failing to take newer labels (a busy
  /// metadata lock, labels over this node's limits) is logged, and the next copy or Update
  /// brings them again.
  private func adoptLabels(of offer: ReplicaOffer) async {
    guard let labelled = offer.labelsUpdatedAt else { return }
    do {
      if try await local.adoptLabels(offer.digest, labels: offer.labels, updatedAt: labelled) {
        logger.debug("took \(offer.owner)'s labels of \(offer.digest), set at \(labelled)")
      }
    } catch {
      logger.warning("\(offer.owner)'s labels of \(offer.digest) (set at \(labelled)) not taken: \(ContentError.from(error).message)")
    }
  }

  /// After an Update: the digest's replicas that did not take it (they lacked the blob, a
  /// copy still on its way, or were out of reach) get this node's copy with the new labels:
  /// the live ones before the Update answers if the blob is small (so Info on the digest's
  /// primary tells what the Update set; `labelsSentWithUpdateMaxBytes`), the others through
  /// a hint, delivered within about a second. A copy that arrives later with older labels
  /// no longer undoes the Update (acceptReplica keeps the later labels). Only a node that
  /// holds the blob can send it; an Update through one that does not leaves the replicas it
  /// missed to their copies' next transfer.
  func spreadLabels(of digest: Digest, appliedOn: Set<NodeID>, view: ClusterView) async {
    guard appliedOn.contains(config.me) else { return }
    let missed = view.replicas(of: digest).filter { !appliedOn.contains($0) }
    guard !missed.isEmpty else { return }
    let info: BlobInfo
    do {
      info = try await local.info(digest)
    } catch let e as ContentError where e.code == .notFound {
      return  // deleted since the Update: nothing to spread
    } catch {
      logger.warning("the labels of \(digest) were not spread: \(ContentError.from(error).message)")
      return
    }
    let header = replicaHeader(digest, size: info.size, labels: info.labels, createdAt: info.createdAt, ref: "")
    // A big blob is not sent while the Update waits: its hint carries it within a second.
    let sendNow = info.size <= ClusterNode.labelsSentWithUpdateMaxBytes
    await withTaskGroup(of: Void.self) { group in
      for target in missed {
        group.addTask {
          if sendNow && view.isLive(target) {
            do {
              try await self.send(digest, header: header, to: target)
              return
            } catch {
              self.logger.info("the labels of \(digest) could not be sent to \(target), hint recorded: \(ContentError.from(error).message)")
            }
          }
          do {
            try await self.hints.add(digest, for: target)
          } catch {
            self.logger.error(
              "the labels of \(digest) did not reach \(target) and its hint is kept in memory only: \(ContentError.from(error).message)")
          }
        }
      }
    }
  }

  /// The largest blob an Update sends to a replica that lacked it before answering.
  static let labelsSentWithUpdateMaxBytes: Int64 = 4 << 20

  /// Fencing: a blob written under a ref is taken only from the ref's owner in this
  /// node's view.
  /// Fencing of a commit's replicas: the sender owns the ref in this node's view, or (a
  /// full owner's upload, Delegation.swift) `delegatedBy` owns it and the sender is next.
  func requireOwner(_ sender: String, of ref: String, delegatedBy: String = "", sending what: String) throws(ContentError) {
    let view = self.view
    let owner = view.owner(ofRef: ref)
    if !delegatedBy.isEmpty {
      guard owner?.name == delegatedBy, view.nextOwner(ofRef: ref)?.name == sender else {
        throw .unavailable(
          "\(config.me) refuses \(what) from \(sender) for \(delegatedBy): in view \(view.version) ref \(quoted(ref)) is owned by \(owner?.name ?? "none"), next \(view.nextOwner(ofRef: ref)?.name ?? "none")")
      }
      return
    }
    guard owner?.name == sender else {
      throw .unavailable(
        "\(config.me) refuses \(what) from \(sender): in view \(view.version) ref \(quoted(ref)) is owned by \(owner?.name ?? "none")")
    }
  }

  func refuseIfDeleted(_ digest: Digest, createdAt: Timestamp?) throws(ContentError) {
    if let createdAt, tombstones.deletedSince(digest, createdAt: createdAt) {
      let deleted = tombstones.deletedAt(digest).map { " (deleted at \(Timestamp(totalNanoseconds: $0)))" } ?? ""
      throw .failedPrecondition("\(config.me) refuses \(digest): it was deleted after its creation at \(createdAt)\(deleted)")
    }
  }

  /// A hint whose file stays (it cannot be removed) is delivered again after a restart,
  /// which the replica answers as already held: logged, not fatal.
  private func forgetHint(_ digest: Digest, for target: NodeID) async {
    do {
      try await hints.remove(digest, for: target)
    } catch {
      logger.warning("hint of \(digest) for \(target): removing its file failed: \(ContentError.from(error).message)")
    }
  }

  /// Delivers hints to replicas that are live again, every second, until cancelled.
  func deliverHintsForever() async {
    while !Task.isCancelled {
      try? await Task.sleep(nanoseconds: 1_000_000_000)
      let view = self.view
      // A node removed from the cluster gets nothing more; handoff places these blobs.
      for (target, digests) in hints.pending() where view.config.peers[target] == nil {
        for d in digests { await forgetHint(d, for: target) }
      }
      for (target, digests) in hints.pending() where view.isLive(target) {
        for digest in digests {
          guard let info = try? await local.info(digest) else {
            await forgetHint(digest, for: target)  // deleted since: nothing to hand off
            continue
          }
          // No ref: the blob was acknowledged already, so there is no ownership to fence.
          let header = replicaHeader(digest, size: info.size, labels: info.labels, createdAt: info.createdAt, ref: "")
          do {
            try await send(digest, header: header, to: target)
            await forgetHint(digest, for: target)
            logger.info("hinted handoff: delivered \(digest) to \(target)")
          } catch let e as ContentError where e.code == .failedPrecondition {
            // Refused for good (deleted there since): anti-entropy and handoff settle
            // this copy with the replicas' tombstones.
            await forgetHint(digest, for: target)
            logger.info("hinted handoff: \(target) refused \(digest): \(e.message)")
          } catch {
            break  // still unreachable; try again later
          }
        }
      }
    }
  }
}
