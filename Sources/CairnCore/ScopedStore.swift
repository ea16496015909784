import Foundation
import Synchronization

/// Who is asking: one containerd host (one `cairn agent`), one build runner. Carried in the
/// `cairn-client` gRPC header; requests without it see the unscoped store (operators).
public struct ClientID: Hashable, Sendable, CustomStringConvertible {
  public let name: String
  public static let maxBytes = 64

  /// Letters, digits and `.`, `_`, `:`, `-`: it becomes part of label keys and refs.
  public init(_ name: String) throws(ContentError) {
    if name.isEmpty || name.utf8.count > Self.maxBytes {
      throw .invalidArgument("client id must be 1 to \(Self.maxBytes) bytes, got \(name.utf8.count)")
    }
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
    if !name.allSatisfy(allowed.contains) {
      throw .invalidArgument("client id \(quoted(name, limit: 64)) may only contain letters, digits and . _ : -")
    }
    self.name = name
  }

  public var description: String { name }
}

/// One client's view of a shared store. containerd's garbage collector Lists the store and
/// Deletes every blob its host does not know, so hosts sharing a store would delete each
/// other's blobs. Here each client sees and deletes only blobs it holds: it holds a blob
/// once it committed it, was told it already exists (at open or commit), or found it with
/// Info (containerd's proxy client claims a blob exactly that way) — if it may write: a
/// read-only caller never takes a hold by looking. A client's Delete drops its hold; the
/// blob goes away when the last holder lets go. Holds are labels on the blob
/// (`cairn.io/holder.<client>`), so they are stored and replicated with it and one
/// physical copy serves every client. Refs are prefixed with the client, so two hosts'
/// identical ingest names (`default/1/tar-blobs/...`) never collide or lock each other.
///
/// A client's labels are its own: stored as `cairn.io/label/<client>/<key>`, shown to it
/// without the prefix, invisible to every other client. So one client's labels never
/// change what another sees of a blob, and the store's bound on a blob's metadata
/// (`max_metadata_bytes`) keeps any client from making it unreadable.
///
/// The last release deletes only where no hold exists, decided under each copy's
/// metadata lock (`delete(_:unlessLabeled:)`), so a claim racing it keeps the blob.
public struct ScopedStore: ContentStore {
  public let base: any ContentStore
  public let client: ClientID
  /// Whether Info and ALREADY_EXISTS take a hold (callers with the write permission).
  public let mayClaim: Bool

  public static let holderPrefix = "cairn.io/holder."
  public static let labelPrefix = "cairn.io/label/"
  /// The longest scope prefix a stored label key carries.
  public static let maxScopePrefixBytes = labelPrefix.utf8.count + ClientID.maxBytes + 1

  public init(base: any ContentStore, client: ClientID, mayClaim: Bool = true) {
    self.base = base
    self.client = client
    self.mayClaim = mayClaim
  }

  public var limits: Limits { base.limits }
  var holderKey: String { Self.holderPrefix + client.name }
  var labelScope: String { Self.labelPrefix + client.name + "/" }
  var scope: String { Self.refPrefix + client.name + "/" }
  public static let refPrefix = "cairn.io/client/"

  public static func isReservedLabel(_ key: String) -> Bool { LabelRules.isReserved(key) }

  /// The clients holding a blob, from its labels.
  public static func holders(_ info: BlobInfo) -> [String] {
    info.labels.keys.compactMap { $0.bytewiseRemovingPrefix(holderPrefix) }.sorted { $0.bytewisePrecedes($1) }
  }

  // MARK: Blobs

  public func info(_ digest: Digest) async throws -> BlobInfo {
    let found = try await base.info(digest)
    if found.labels[holderKey] != nil || !mayClaim { return visible(found) }
    return visible(try await claim(digest, holders: Self.holders(found).count))
  }

  public func update(_ digest: Digest, labels: [String: String], fieldPaths: [String]) async throws -> BlobInfo {
    let current = try await held(digest)
    try LabelRules.validateRequest(labels, limits: limits)
    for path in fieldPaths where path != "labels" && !path.bytewiseHasPrefix("labels.") {
      throw ContentError.invalidArgument("cannot update \(quoted(path)) field on content info")
    }
    // Always keyed paths in the client's own label scope: a whole-map replace would race
    // with another client's claim and touch what is not this client's.
    let own = visible(current).labels
    var keys = Set(fieldPaths.compactMap { $0.bytewiseRemovingPrefix("labels.") })
    if fieldPaths.isEmpty || fieldPaths.contains("labels") { keys.formUnion(own.keys.filter { labels[$0] == nil } + labels.keys) }
    let after = try LabelRules.applyUpdate(current: own, requested: labels, fieldPaths: keys.map { "labels." + $0 })
    if after.count > limits.maxLabelsPerBlob {
      throw ContentError.invalidArgument("\(after.count) labels, over the limit max_labels_per_blob = \(limits.maxLabelsPerBlob)")
    }
    if keys.isEmpty { return visible(current) }
    let stored = Dictionary(uniqueKeysWithValues: keys.map { (labelScope + $0, labels[$0] ?? "") })
    return visible(try await base.update(digest, labels: stored, fieldPaths: keys.map { "labels." + labelScope + $0 }))
  }

  public func list(_ filter: Filter) async throws -> [BlobInfo] {
    // The store (every node, in a cluster) selects the client's blobs; the client's own
    // filter then sees them as the client does, without hold labels.
    let held = try Filter.parse(["labels.\"\(holderKey)\""], limits: limits)
    return try await base.list(held).filter { $0.labels[holderKey] != nil }.map(visible).filter(filter.matches)
  }

  public func delete(_ digest: Digest) async throws {
    let current = try await held(digest)
    // The hold goes, and with it this client's labels: nobody else could remove them.
    let mine = current.labels.keys.filter { $0.bytewiseEquals(holderKey) || $0.bytewiseHasPrefix(labelScope) }
    let after = try await base.update(digest, labels: [:], fieldPaths: mine.map { "labels." + $0 })
    if Self.holders(after).isEmpty {
      do {
        // Conditional: a claim that lands between the release and here keeps the blob.
        _ = try await base.delete(digest, unlessLabeled: Self.holderPrefix)
      } catch let e as ContentError where e.code == .notFound {}
    }
  }

  public func read(_ digest: Digest, offset: Int64, size: Int64) async throws -> BlobReader {
    // A digest is its own capability: knowing it is enough to read the bytes.
    try await base.read(digest, offset: offset, size: size)
  }

  // MARK: Ingests

  public func status(ref: String) async throws -> IngestStatus {
    var s = try await base.status(ref: try scoped(ref))
    s.ref = ref
    return s
  }

  public func listStatuses(_ filter: Filter) async throws -> [IngestStatus] {
    try await base.listStatuses(.always).compactMap(unscoped).filter(filter.matches)
  }

  public func abort(ref: String) async throws {
    try await base.abort(ref: try scoped(ref))
  }

  public func openWriter(ref: String, total: Int64, expected: Digest?) async throws -> any IngestWriter {
    do {
      let inner = try await base.openWriter(ref: try scoped(ref), total: total, expected: expected)
      return DelegatingWriter(ref: ref, inner: inner) { inner, c in try await commitHolding(inner, c) }
    } catch let e as ContentError where e.code == .alreadyExists {
      // The client now believes it has the blob (containerd records it): it holds it.
      if let expected { _ = try await claimIfMissing(expected) }
      throw e
    }
  }

  public func ingestEvents() -> AsyncStream<IngestEvent> {
    let hub = EventHub<IngestEvent>()
    let cancel = Mutex<Task<Void, Never>?>(nil)
    let stream = hub.subscribe(onCancel: { cancel.withLock { $0?.cancel() } })
    // Subscribe now, not inside the task: events emitted before the task first runs must not be lost.
    let upstream = base.ingestEvents()
    let task = Task { [scope] in
      for await e in upstream {
        guard let ref = e.ref.bytewiseRemovingPrefix(scope) else { continue }
        switch e {
        case .progress(var s):
          s.ref = ref
          hub.publish(.progress(s))
        case .committed(_, let d, let size): hub.publish(.committed(ref: ref, digest: d, size: size))
        case .aborted: hub.publish(.aborted(ref: ref))
        }
      }
      hub.finish()
    }
    cancel.withLock { $0 = task }
    return stream
  }

  // MARK: Holds

  /// COMMIT with this client's hold among the labels; ALREADY_EXISTS holds the blob too.
  private func commitHolding(_ inner: any IngestWriter, _ c: DelegatingWriter.Commit) async throws -> WriterState {
    try LabelRules.validateRequest(c.labels, limits: limits)
    var all = Dictionary(uniqueKeysWithValues: c.labels.filter { !$0.value.isEmpty }.map { (labelScope + $0.key, $0.value) })
    all[holderKey] = Timestamp.now().description
    do {
      return try await inner.commit(size: c.size, expected: c.expected, labels: all, createdAt: c.createdAt)
    } catch let e as ContentError where e.code == .alreadyExists {
      if let d = c.digest { _ = try await claimIfMissing(d) }
      throw e
    }
  }

  func claimIfMissing(_ digest: Digest) async throws -> BlobInfo {
    let found = try await base.info(digest)
    if found.labels[holderKey] != nil || !mayClaim { return found }
    return try await claim(digest, holders: Self.holders(found).count)
  }

  private func claim(_ digest: Digest, holders: Int) async throws -> BlobInfo {
    if holders >= limits.maxHoldersPerBlob {
      throw ContentError.resourceExhausted(
        "blob \(digest) is held by \(holders) clients (limit max_holders_per_blob = \(limits.maxHoldersPerBlob))")
    }
    return try await base.update(digest, labels: [holderKey: Timestamp.now().description], fieldPaths: ["labels." + holderKey])
  }

  /// The blob, if this client holds it; NOT_FOUND otherwise (as if it did not exist).
  private func held(_ digest: Digest) async throws -> BlobInfo {
    let found = try await base.info(digest)
    guard found.labels[holderKey] != nil else { throw ContentError.notFound("content \(digest): not found") }
    return found
  }

  /// The blob as this client sees it: its own labels, without their scope prefix.
  private func visible(_ info: BlobInfo) -> BlobInfo {
    var out = info
    out.labels = Dictionary(
      uniqueKeysWithValues: info.labels.compactMap { k, v in k.bytewiseRemovingPrefix(labelScope).map { ($0, v) } })
    return out
  }

  func scoped(_ ref: String) throws(ContentError) -> String {
    try RefRules.validate(ref, limits: limits)
    let full = scope + ref
    if full.utf8.count > limits.maxRefBytes {
      throw .invalidArgument(
        "ref is \(ref.utf8.count) bytes; with the client scope (\(scope.utf8.count) bytes) it is over the limit max_ref_bytes = \(limits.maxRefBytes)")
    }
    return full
  }

  private func unscoped(_ s: IngestStatus) -> IngestStatus? {
    guard let ref = s.ref.bytewiseRemovingPrefix(scope) else { return nil }
    var out = s
    out.ref = ref
    return out
  }
}
