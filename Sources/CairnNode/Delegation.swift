import CairnCluster
import CairnCore
import CairnServer
import Foundation
import Synchronization

/// A ref's owner whose disk is past its high watermark hands the ref's new uploads to the
/// ref's next owner instead of refusing them (chaos's disk-full: a quarter of all writes
/// got RESOURCE_EXHAUSTED for as long as one node was full).
///
/// The owner stays the one place that decides, so a ref still has one writer: every
/// upload of the ref reaches the owner (from the client or forwarded), and the owner either
/// keeps it (an ingest of the ref is already here, or there is room) or passes the whole
/// stream on to the same next owner, whose own ref lock then decides between writers. The
/// next owner takes such a stream only from the ref's owner in its own view, and commits
/// only while that still holds, or once it owns the ref itself (the owner died: it is the
/// node that would have taken the ref over anyway). The next owner does not mirror a
/// delegated upload: the owner has no room for a mirror.
final class Delegations: Sendable {
  /// Refs this node passed on and still streams to: where, and how many writers.
  private let open = Mutex<[Bytewise: (to: NodeID, writers: Int)]>([:])

  /// Where the ref's uploads go while one of them is open, so that a second writer meets
  /// the first one's lock even if this node's disk has room again.
  func target(of ref: String) -> NodeID? { open.withLock { $0[Bytewise(ref)]?.to } }

  /// A new target (the old one died) takes over the entry; the count stays, so the entry
  /// lasts until every writer of the ref, old target or new, has ended.
  func begin(_ ref: String, to: NodeID) {
    open.withLock { o in o[Bytewise(ref)] = (to, (o[Bytewise(ref)]?.writers ?? 0) + 1) }
  }

  func end(_ ref: String) {
    open.withLock { o in
      guard let entry = o[Bytewise(ref)] else { return }
      o[Bytewise(ref)] = entry.writers > 1 ? (entry.to, entry.writers - 1) : nil
    }
  }
}

extension ClusterNode {
  /// Where this node, the ref's owner, sends a new upload of `ref` of `total` bytes (0 =
  /// unknown) rather than to its own disk; nil = here.
  func delegate(ofRef ref: String, total: Int64) async throws -> NodeID? {
    let view = self.view
    if let to = delegations.target(of: ref), view.isLive(to) { return to }
    guard local.isFull(adding: max(0, total)) else { return nil }
    do {
      _ = try await local.status(ref: ref)
      return nil  // its ingest is here: it resumes here, or is refused for room as before
    } catch let e as ContentError where e.code == .notFound {
      return view.nextOwner(ofRef: ref)
    }
  }

  /// The ref's owner that this node takes an upload of `ref` from: the calling node, if
  /// it owns the ref in this node's view and this node is the ref's next owner.
  func delegator(ofRef ref: String) -> NodeID? {
    guard let name = CallContext.current?.node else { return nil }
    let caller = NodeID(name)
    return caller != config.me && owner(ofRef: ref, delegatedBy: caller) ? caller : nil
  }

  /// Fencing of a delegated upload: this node owns the ref, or `delegator` still does and
  /// this node is next.
  func owner(ofRef ref: String, delegatedBy delegator: NodeID) -> Bool {
    let view = self.view
    let owner = view.owner(ofRef: ref)
    if owner == config.me { return true }
    return owner == delegator && view.nextOwner(ofRef: ref) == config.me
  }

  func requireOwnership(of ref: String, delegatedBy delegator: NodeID?) throws(ContentError) {
    guard let delegator else { return try requireOwnership(of: ref) }
    if !owner(ofRef: ref, delegatedBy: delegator) {
      let view = self.view
      throw .unavailable(
        "\(config.me) no longer holds ref \(quoted(ref)) for \(delegator) in membership view \(view.version) (owner: \(view.owner(ofRef: ref)?.name ?? "none")); retry")
    }
    if let why = membership.ownershipRefusal() { throw .unavailable("\(why); retry") }
  }
}

/// The owner's side of a delegated upload: the stream goes on to the next owner, and
/// this node keeps its say (fencing) over the commit.
final class DelegatingWriter: IngestWriter {
  private let inner: ForwardedWriter
  private let node: ClusterNode
  private let ended = Mutex(false)
  var ref: String { inner.ref }

  static func open(node: ClusterNode, to: NodeID, ref: String, total: Int64, expected: Digest?) async throws -> DelegatingWriter {
    node.delegations.begin(ref, to: to)
    do {
      let inner = try await ForwardedWriter.open(node: node, owner: to, ref: ref, total: total, expected: expected)
      node.logger.info("ref \(quoted(ref)): this node's disk is past its high watermark; its upload goes to \(to)")
      return DelegatingWriter(inner: inner, node: node)
    } catch {
      node.delegations.end(ref)
      throw error
    }
  }

  private init(inner: ForwardedWriter, node: ClusterNode) {
    self.inner = inner
    self.node = node
  }

  func state() async throws -> WriterState { try await inner.state() }
  func setExpectations(total: Int64?, expected: Digest?) async throws -> WriterState {
    try await inner.setExpectations(total: total, expected: expected)
  }
  func append(_ data: Data) async throws -> WriterState { try await inner.append(data) }
  func truncate() async throws -> WriterState { try await inner.truncate() }

  func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    try node.requireOwnership(of: ref)
    return try await inner.commit(size: size, expected: expected, labels: labels, createdAt: createdAt)
  }

  func close() async {
    await inner.close()
    if !ended.withLock({ e in defer { e = true }; return e }) { node.delegations.end(ref) }
  }

  deinit {
    if !ended.withLock({ $0 }) { node.delegations.end(ref) }
  }
}
