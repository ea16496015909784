import CairnCore

/// What a node knows about one digest: it holds the blob (created at `at`), or it holds a
/// tombstone (deleted at `at`). Times are nanoseconds since the epoch; the later event
/// wins (a blob committed again after a Delete is alive, a copy older than a Delete dies).
public struct RepairEntry: Sendable, Hashable {
  public enum State: Sendable, Hashable { case present, deleted }
  public var digest: Digest
  public var state: State
  public var at: Int64
  public var size: Int64

  public init(digest: Digest, state: State, at: Int64, size: Int64 = 0) {
    self.digest = digest
    self.state = state
    self.at = at
    self.size = size
  }

  /// The entry that wins when one node knows both a blob and a tombstone of the same digest.
  public static func newer(_ a: RepairEntry, _ b: RepairEntry) -> RepairEntry {
    if a.at != b.at { return a.at > b.at ? a : b }
    return a.state == .deleted ? a : b  // a Delete at the very instant of a commit wins
  }
}

/// Anti-entropy between two replicas, as pure functions (the node drives them over the
/// peer protocol, the simulation over its simulated network).
///
/// Two nodes compare only the digests both of them are replicas of (`shared`), in 256
/// buckets by the digest's first byte. A bucket's summary is a sum of 64-bit hashes of
/// (digest, state), so equal sets cost one 2 KiB message for the whole pair, and a
/// difference is narrowed to the buckets that differ before any digest is listed.
/// Timestamps stay out of the summary: two copies of a blob are equal whatever their
/// creation times, and so are two tombstones.
///
/// Repair is pull-only: each node fetches what it lacks and applies the tombstones it
/// learns; it never pushes. A wiped node thus receives each blob once (from the first peer
/// it compares with), not once per peer that notices.
public enum AntiEntropy {
  public static let bucketCount = 256

  public static func bucket(of digest: Digest) -> Int {
    Int(UInt8(digest.hex.prefix(2), radix: 16) ?? 0)
  }

  /// Whether both `a` and `b` are replicas of `digest` in `view`: the entries they compare.
  public static func shared(_ digest: Digest, _ a: NodeID, _ b: NodeID, in view: ClusterView) -> Bool {
    let replicas = view.replicas(of: digest)
    return replicas.contains(a) && replicas.contains(b)
  }

  public static func summary(_ entries: some Sequence<RepairEntry>) -> [UInt64] {
    var sums = [UInt64](repeating: 0, count: bucketCount)
    for e in entries {
      var mix = SplitMix64(seed: Ring.position(of: e.digest) ^ (e.state == .deleted ? 0x9E37_79B9_7F4A_7C15 : 0))
      sums[bucket(of: e.digest)] &+= mix.next()
    }
    return sums
  }

  public static func differingBuckets(_ a: [UInt64], _ b: [UInt64]) -> [Int] {
    guard a.count == bucketCount, b.count == bucketCount else { return Array(0..<bucketCount) }
    return (0..<bucketCount).filter { a[$0] != b[$0] }
  }

  public enum Action: Sendable, Hashable {
    /// Fetch the blob from the peer and keep it (with its original creation time).
    case pull(Digest, size: Int64)
    /// The local copy is older than the peer's tombstone: delete it, keep the tombstone.
    case delete(Digest, deletedAt: Int64)
    /// Remember the peer's tombstone (nothing to delete here).
    case recordTombstone(Digest, deletedAt: Int64)
  }

  /// What this node does after seeing the peer's entries of the buckets that differ.
  /// `mine` holds this node's entries of the same buckets (its newest one per digest).
  /// A tombstone older than the retention is not learned again: every replica that
  /// forgot it did so because all of them had applied it (TombstoneLedger).
  public static func plan(
    mine: [Digest: RepairEntry], theirs: some Sequence<RepairEntry>, now: Int64, retention: Int64
  ) -> [Action] {
    var actions: [Action] = []
    for t in theirs {
      let m = mine[t.digest]
      switch (t.state, m?.state) {
      case (.present, nil):
        actions.append(.pull(t.digest, size: t.size))
      case (.present, .deleted):
        // A commit after our tombstone: the blob lives again.
        if t.at > m!.at { actions.append(.pull(t.digest, size: t.size)) }
      case (.deleted, .present):
        if RepairEntry.newer(t, m!).state == .deleted { actions.append(.delete(t.digest, deletedAt: t.at)) }
      case (.deleted, nil):
        if now - t.at < retention { actions.append(.recordTombstone(t.digest, deletedAt: t.at)) }
      case (.present, .present), (.deleted, .deleted):
        break
      }
    }
    return actions
  }

  /// Which of this node's tombstones the peer has applied, as shown by an exchange: it
  /// holds a tombstone of the digest (and therefore refuses older copies) or a newer
  /// commit. Holding nothing is not enough while the tombstone is younger than the
  /// retention: the peer could still fetch an old copy from a replica that missed the
  /// Delete. `theirs` covers the buckets that differed; in the others the peer's set
  /// equals ours, so it holds every tombstone we hold there.
  public static func confirmedTombstones(
    mine: some Sequence<RepairEntry>, theirs: [Digest: RepairEntry], differing: Set<Int>, now: Int64, retention: Int64
  ) -> [Digest] {
    mine.compactMap { m in
      guard m.state == .deleted else { return nil }
      guard differing.contains(bucket(of: m.digest)) else { return m.digest }
      guard let t = theirs[m.digest] else { return now - m.at >= retention ? m.digest : nil }
      return t.state == .deleted || t.at > m.at ? m.digest : nil
    }
  }
}

/// The tombstones a node holds, with who has confirmed them: a tombstone may be forgotten
/// once it is older than the retention and every other replica of its digest confirmed it
/// (a node that is not a replica keeps one only for the retention: it guards that node's
/// own transfers still under way). Until then it keeps repair from bringing the blob back.
///
/// Safety rests on one operating rule: a node down for longer than the retention rejoins
/// with an empty data directory (docs/operations.md). Within the retention, a replica
/// confirms only by holding the tombstone itself, so the last replica to forget it knows
/// that no replica holds an older copy.
public struct TombstoneLedger: Sendable {
  public struct Stone: Sendable, Hashable {
    public var deletedAt: Int64
    public var confirmedBy: Set<NodeID> = []
  }

  public private(set) var stones: [Digest: Stone] = [:]

  public init() {}

  /// Records a deletion (the later of two deletions of one digest wins); true if new.
  @discardableResult
  public mutating func record(_ digest: Digest, at: Int64) -> Bool {
    if let old = stones[digest], old.deletedAt >= at { return false }
    stones[digest] = Stone(deletedAt: at)
    return true
  }

  public mutating func remove(_ digest: Digest) { stones[digest] = nil }

  public mutating func confirm(_ digests: some Sequence<Digest>, by node: NodeID) {
    for d in digests { stones[d]?.confirmedBy.insert(node) }
  }

  public func deletedAt(_ digest: Digest) -> Int64? { stones[digest]?.deletedAt }

  /// Tombstones older than this node's own copy: the blob was committed again after the
  /// Delete, and any copy anywhere holds the same bytes, so they guard nothing.
  public func superseded(byCopiesCreatedAt present: [Digest: Int64]) -> [Digest] {
    stones.compactMap { digest, stone in
      guard let created = present[digest], created > stone.deletedAt else { return nil }
      return digest
    }
  }

  /// Tombstones that may be dropped at `now`.
  public func collectable(now: Int64, retention: Int64, view: ClusterView) -> [Digest] {
    stones.compactMap { digest, stone in
      guard now - stone.deletedAt >= retention else { return nil }
      let others = view.replicas(of: digest).filter { $0 != view.me }
      guard view.replicas(of: digest).contains(view.me) else { return digest }
      return others.allSatisfy(stone.confirmedBy.contains) ? digest : nil
    }
  }
}
