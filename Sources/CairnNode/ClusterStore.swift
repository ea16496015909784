import CairnClient
import CairnCluster
import CairnCore
import CairnProto
import CairnServer
import Foundation
import GRPCCore

/// The whole cluster as one ContentStore, seen from one node: blob calls are routed by
/// digest to the replica set, ingest calls by ref to the ref's owner, listings are fanned
/// out to every live node and merged. Writes for a ref this node does not own are
/// forwarded to the owner; the owner replicates at commit (ClusterWriters.swift).
public struct ClusterStore: ContentStore {
  let node: ClusterNode
  /// True for the store behind the peer protocol's OwnerWrite: it never forwards again
  /// (the forwarding node's view and ours disagree; the client retries).
  let servesOwnerWrites: Bool

  public var limits: Limits { node.local.limits }
  var local: any ContentStore { node.local }

  // MARK: Blobs

  /// From the digest's primary (ClusterView.primary) when it has the blob: its labels are
  /// the current ones even when another replica's copy arrived after an Update. Otherwise
  /// from any copy on the digest's quorum slots (replicas and stand-ins).
  public func info(_ digest: Digest) async throws -> BlobInfo {
    let view = node.view
    let ask: @Sendable (PeerAPI) async throws -> BlobInfo = { api in
      try BlobInfo(try await api.localInfo(.with { $0.digest = digest.description }, options: PeerClients.unary).info)
    }
    let primary = view.primary(of: digest)
    var primaryLacks = false
    // Who said they lack it: NOT_FOUND needs enough of them (ClusterView.absenceIsCertain).
    var lacking: Set<NodeID> = []
    if primary == view.me {
      if let found = try await localIfPresent({ try await local.info(digest) }) { return found }
      primaryLacks = true
      lacking.insert(view.me)
    } else if let primary {
      do {
        return try await node.localInfo(of: digest, on: primary)
      } catch where error.code == .notFound {
        primaryLacks = true
        lacking.insert(primary)
      } catch {}
    }
    let found: BlobInfo
    if primary != view.me, let here = try await localIfPresent({ try await local.info(digest) }) {
      found = here
    } else {
      lacking.insert(view.me)
      // The stand-ins too: a commit that found replicas out of reach left copies there.
      let others = view.quorumSlots(of: digest).filter { $0 != view.me && $0 != primary && view.isLive($0) }
      let known = lacking
      found = try await firstFound(others, what: "blob \(digest)", ask) {
        view.absenceIsCertain(of: digest, lackedBy: known.union($0))
      }
    }
    // Read repair: the primary should have had it.
    if primaryLacks, let primary {
      if primary == view.me { node.scheduleRepair(digest) } else { node.requestRepair(digest, on: primary) }
    }
    return found
  }

  /// Whether the blob is durable, for the write path's ALREADY_EXISTS answers: held by at
  /// least W of its replicas. A copy somewhere is not enough: an upload whose commit missed
  /// its quorum leaves one on the owner, and answering the next uploader ALREADY_EXISTS
  /// would acknowledge a blob the cluster never made durable (the chaos harness caught
  /// that, in a partition). Anything less, or replicas out of reach, and the upload goes
  /// ahead: its commit replicates the blob, and storing it twice is harmless.
  public func exists(_ digest: Digest) async throws -> Bool {
    await replicasHolding(digest).count >= node.config.writeQuorum
  }

  /// The digest's replicas (this node included) that hold it, as far as they answer.
  func replicasHolding(_ digest: Digest) async -> Set<NodeID> {
    let view = node.view
    let (local, node) = (self.local, self.node)
    return await withTaskGroup(of: NodeID?.self) { group in
      for replica in view.replicas(of: digest) {
        group.addTask {
          if replica == view.me { return (try? await local.info(digest)) != nil ? replica : nil }
          guard view.isLive(replica) else { return nil }
          return (try? await node.localInfo(of: digest, on: replica)) != nil ? replica : nil
        }
      }
      var holders: Set<NodeID> = []
      for await case let r? in group { holders.insert(r) }
      return holders
    }
  }

  /// The local store says the blob is here already (ALREADY_EXISTS): before the client is
  /// told so, the blob must be on W replicas. It is replicated from here if not; if the
  /// quorum cannot be reached, UNAVAILABLE.
  func ensureDurable(_ digest: Digest) async throws {
    let holders = await replicasHolding(digest)
    if holders.count >= node.config.writeQuorum { return }
    let info = try await local.info(digest)
    try await node.replicate(
      digest, size: info.size, labels: info.labels, createdAt: info.createdAt, ref: "", view: node.view, alreadyOn: holders)
  }

  public func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    let request = Containerd_Services_Content_V1_UpdateRequest.with {
      $0.info.digest = digest.description
      $0.info.labels = labels
      if !fieldPaths.isEmpty { $0.updateMask.paths = fieldPaths }
    }
    let view = node.view
    let results = await everywhere(
      local: { try await local.update(digest, labels: labels, fieldPaths: fieldPaths) },
      remote: { try BlobInfo(try await $0.localUpdate(request, options: PeerClients.unary).info) })
    let answer: BlobInfo
    if let primary = results.first(where: { $0.0 == view.primary(of: digest) }), case .success(let info) = primary.1 {
      answer = info
    } else {
      answer = try pickSuccess(results, what: "blob \(digest)").max { $0.updatedAt < $1.updatedAt }!
    }
    let applied = Set(results.compactMap { r in if case .success = r.1 { r.0 } else { nil } })
    await node.spreadLabels(of: digest, appliedOn: applied, view: view)
    return answer
  }

  public func list(_ filter: Filter) async throws -> [BlobInfo] {
    let request = Containerd_Services_Content_V1_ListContentRequest.with { $0.filters = filter.sources }
    let results = await everywhere(
      local: { try await local.list(filter) },
      remote: { api in
        try await api.localList(request: ClientRequest(message: request), options: PeerClients.listing) { r in
          var out: [BlobInfo] = []
          for try await m in r.messages { out += try m.info.map { try BlobInfo($0) } }
          return out
        }
      })
    var merged: [Digest: BlobInfo] = [:]
    for case .success(let infos) in results.map(\.1) {
      for i in infos where merged[i.digest].map({ $0.updatedAt < i.updatedAt }) ?? true { merged[i.digest] = i }
    }
    if merged.isEmpty, let failure = results.first(where: { $0.0 == node.config.me })?.1, case .failure(let e) = failure {
      throw e
    }
    return merged.values.sorted { $0.digest.description < $1.digest.description }
  }

  /// Deletes every copy on every live node and leaves a tombstone on each; a node that is
  /// down keeps its copy until anti-entropy brings it the tombstone.
  public func delete(_ digest: Digest) async throws {
    let at = try node.deletionStamp()
    let results = await everywhere(
      local: { try await node.deleteLocally(digest, at: at) },
      remote: {
        _ = try await $0.localDelete(
          .with {
            $0.digest = digest.description
            $0.deletedAt = .init(at)
          }, options: PeerClients.unary)
      })
    _ = try pickSuccess(results, what: "blob \(digest)")
  }

  /// Each node decides under its own metadata lock. If a hold arrived first somewhere,
  /// that node keeps its copy and the nodes that deleted theirs forget their tombstones,
  /// so that repair copies the blob back to them rather than deleting it everywhere.
  public func delete(_ digest: Digest, unlessLabeled prefix: String) async throws -> Bool {
    let at = try node.deletionStamp()
    let results = await everywhere(
      local: { try await node.deleteLocally(digest, at: at, unlessLabeled: prefix) },
      remote: {
        try await !$0.localDelete(
          .with {
            $0.digest = digest.description
            $0.unlessLabelPrefix = prefix
            $0.deletedAt = .init(at)
          }, options: PeerClients.unary
        ).kept
      })
    let deleted = try pickSuccess(results, what: "blob \(digest)")
    if deleted.contains(false) {
      let gone = results.compactMap { n, r in (try? r.get()) == true ? n : nil }
      await node.forgetTombstone(digest, on: gone)
    }
    return deleted.allSatisfy { $0 }
  }

  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader {
    if let reader = try await localIfPresent({ try await local.read(digest, offset: offset, size: size) }) {
      return reader
    }
    let reader = try await node.fetches.read(digest, offset: offset, size: size, node: node)
    node.scheduleRepair(digest)  // read repair, if this node is a replica that lacks it
    return reader
  }

  // MARK: Ingests

  public func status(ref: String) async throws -> IngestStatus {
    if ClusterNode.isReserved(ref) { throw ContentError.notFound("no ingest for ref \(quoted(ref))") }
    let view = node.view
    let owner = view.owner(ofRef: ref)
    let request = Containerd_Services_Content_V1_StatusRequest.with { $0.ref = ref }
    let ask: @Sendable (PeerAPI) async throws -> IngestStatus = {
      try IngestStatus(try await $0.localStatus(request, options: PeerClients.unary).status)
    }
    // The owner holds the ingest; a former owner may still hold an older one.
    if owner == view.me {
      if let s = try await localIfPresent({ try await local.status(ref: ref) }) { return s }
    } else if let owner, let s = try? await node.peers.call(owner, ask) {
      return s
    }
    if owner != view.me, let s = try await localIfPresent({ try await local.status(ref: ref) }) { return s }
    return try await firstFound(view.livePeers.filter { $0 != owner }, what: "ingest for ref \(quoted(ref))", ask)
  }

  public func listStatuses(_ filter: Filter) async throws -> [IngestStatus] {
    let request = Containerd_Services_Content_V1_ListStatusesRequest.with { $0.filters = filter.sources }
    let results = await everywhere(
      local: { try await local.listStatuses(filter) },
      remote: { try await $0.localListStatuses(request, options: PeerClients.unary).statuses.map { try IngestStatus($0) } })
    // The ref's owner's ingest is the one; another node's (its mirror, lagging behind, or
    // a former owner's) only when the owner has none. Not simply the newest: a mirror that
    // began after the owner's last write showed offset 0 for an upload at 5000.
    let view = node.view
    var merged: [Bytewise: (status: IngestStatus, owner: Bool)] = [:]  // by ref
    for case (let id, .success(let all)) in results {
      for s in all where !ClusterNode.isReserved(s.ref) {
        let owner = view.owner(ofRef: s.ref) == id
        if let m = merged[Bytewise(s.ref)], m.owner && !owner || m.owner == owner && m.status.updatedAt >= s.updatedAt { continue }
        merged[Bytewise(s.ref)] = (s, owner)
      }
    }
    return merged.values.map(\.status).sorted { $0.ref.bytewisePrecedes($1.ref) }
  }

  public func abort(ref: String) async throws {
    if ClusterNode.isReserved(ref) { throw ContentError.notFound("no ingest for ref \(quoted(ref))") }
    let results = await everywhere(
      local: { try await local.abort(ref: ref) },
      remote: { _ = try await $0.localAbort(.with { $0.ref = ref }, options: PeerClients.unary) })
    _ = try pickSuccess(results, what: "ingest for ref \(quoted(ref))")
  }

  public func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter {
    if ClusterNode.isReserved(ref) {
      throw ContentError.invalidArgument("refs beginning with \(ClusterNode.replicaRefPrefix) are reserved for replication")
    }
    guard let owner = node.view.owner(ofRef: ref) else { throw ContentError.unavailable("no live node owns ref \(quoted(ref))") }
    let writer = try await openUnwrapped(ref: ref, total: total, expected: expected, owner: owner)
    // Forwarded for a client (not the owner's side of OwnerWrite): it moves to the next
    // owner if this one dies under it.
    guard let forwarded = writer as? ForwardedWriter, !servesOwnerWrites else { return writer }
    return FailoverWriter(
      first: forwarded, owner: owner, store: self, total: total, expected: expected, opened: try await forwarded.state())
  }

  /// The ref's writer on `owner`: the local ingest if that is this node, else forwarded.
  func openUnwrapped(ref: String, total: Int64, expected: Digest?, owner: NodeID) async throws -> any IngestWriter {
    var delegator: NodeID?
    if owner != node.config.me && servesOwnerWrites {
      delegator = node.delegator(ofRef: ref)
      if delegator == nil { try node.requireOwnership(of: ref) }
    }
    if owner == node.config.me || delegator != nil {
      try node.requireOwnership(of: ref, delegatedBy: delegator)
      if let expected, try await exists(expected) {
        throw ContentError.alreadyExists("blob with expected digest \(expected) exists")
      }
      if delegator == nil, let to = try await node.delegate(ofRef: ref, total: total) {
        return try await DelegatingWriter.open(node: node, to: to, ref: ref, total: total, expected: expected)
      }
      do {
        let inner = try await local.openWriter(ref: ref, total: total, expected: expected)
        let owned = OwnedWriter(inner: inner, store: self, delegatedBy: delegator)
        if servesOwnerWrites, let caller = CallContext.current?.node, caller != node.config.me.name {
          owned.releaseRef(whenDead: NodeID(caller))
        }
        return owned
      } catch let e as ContentError where e.code == .alreadyExists {
        if let expected { try await ensureDurable(expected) }
        throw e
      }
    }
    return try await ForwardedWriter.open(node: node, owner: owner, ref: ref, total: total, expected: expected)
  }

  public func ingestEvents() -> AsyncStream<IngestEvent> {
    node.events.subscribe()
  }

  // MARK: Helpers

  /// The local answer, or nil if the local store has no such blob or ingest.
  private func localIfPresent<T>(_ body: () async throws -> T) async throws -> T? {
    do {
      return try await body()
    } catch let e as ContentError where e.code == .notFound {
      return nil
    }
  }

  /// Asks `nodes` at once; the first answer wins. NOT_FOUND when every node that answered
  /// says so; UNAVAILABLE when none could answer.
  /// The first answer of `nodes`, asked at once. When none has it: NOT_FOUND if `absent`
  /// accepts the nodes that said so (without `absent`: if every node said so), else
  /// UNAVAILABLE.
  private func firstFound<T: Sendable>(
    _ nodes: [NodeID], what: String, _ ask: @escaping @Sendable (PeerAPI) async throws -> T,
    absent: ((Set<NodeID>) -> Bool)? = nil
  ) async throws -> T {
    let peers = node.peers
    let (found, lacking) = await withTaskGroup(of: (NodeID, Result<T, ContentError>).self) { group in
      for n in nodes {
        group.addTask { [node] in
          do {
            return (n, .success(try await node.untilDead(n) { try await peers.call(n, ask) }))
          } catch {
            return (n, .failure(ContentError.from(error)))
          }
        }
      }
      var failure: ContentError?
      var lacking: Set<NodeID> = []
      for await (n, r) in group {
        switch r {
        case .success:
          group.cancelAll()
          return (Optional(r), lacking)
        case .failure(let e):
          if e.code == .notFound { lacking.insert(n) } else { failure = e }
        }
      }
      return (failure.map { .failure($0) }, lacking)
    }
    if case .success(let v) = found { return v }
    if case .failure(let e) = found, ![.unavailable, .deadlineExceeded, .cancelled].contains(e.code) { throw e }
    if let absent, absent(lacking) { throw ContentError.notFound("\(what) not found") }
    if case .failure(let e) = found { throw ContentError.unavailable("no replica of \(what) could be reached: \(e.message)") }
    if absent == nil { throw ContentError.notFound("\(what) not found") }
    throw ContentError.unavailable("\(what): too few of its replicas reachable to tell whether it exists")
  }

  /// Runs `local` here and `remote` on every live peer, concurrently.
  private func everywhere<T: Sendable>(
    local: @escaping @Sendable () async throws -> T, remote: @escaping @Sendable (PeerAPI) async throws -> T
  ) async -> [(NodeID, Result<T, ContentError>)] {
    let peers = node.peers
    let me = node.config.me
    return await withTaskGroup(of: (NodeID, Result<T, ContentError>).self) { group in
      group.addTask {
        do { return (me, .success(try await local())) } catch { return (me, .failure(ContentError.from(error))) }
      }
      for n in node.view.livePeers {
        group.addTask {
          do { return (n, .success(try await peers.call(n, remote))) } catch { return (n, .failure(ContentError.from(error))) }
        }
      }
      var out: [(NodeID, Result<T, ContentError>)] = []
      for await r in group { out.append(r) }
      return out
    }
  }

  /// The successes of a fan-out; if none: NOT_FOUND when every node said so, else the
  /// first other failure.
  private func pickSuccess<T>(_ results: [(NodeID, Result<T, ContentError>)], what: String) throws(ContentError) -> [T] {
    var ok: [T] = []
    var failure: ContentError?
    for (_, r) in results {
      switch r {
      case .success(let v): ok.append(v)
      case .failure(let e) where e.code != .notFound: failure = failure ?? e
      case .failure: break
      }
    }
    if !ok.isEmpty { return ok }
    if let failure { throw failure }
    throw .notFound("\(what) not found")
  }
}
