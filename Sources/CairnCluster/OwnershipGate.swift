/// Whether a node may hold ref locks. Views disagree for a while after a partition: the
/// cut-off node still owns its refs in its own view while the others, who declared it dead,
/// gave them to the next node. The chaos harness caught two writers holding one ref that
/// way, a second after a partition healed. So a node holds locks only while it sees a
/// majority of the cluster live (not declared dead), and after seeing less, only once it
/// has seen a majority again for `settle`: long enough for the others to learn that it is
/// back and hand its refs back to it. (A cut-off node steps down when it declares the
/// others dead, about when they declare it dead and take over: the two can overlap by a
/// fraction of a probe period; leases would close that, and are not built.)
public struct OwnershipGate: Sendable {
  public let settle: Int64
  private var majoritySince: Int64?

  /// A starting node may own at once (it has no stale view to act on).
  public init(settle: Int64, now: Int64) {
    self.settle = settle
    majoritySince = now - settle
  }

  /// After every view: `alive` members (this node included, suspects too) of `size`.
  public mutating func observe(alive: Int, of size: Int, now: Int64) {
    if alive * 2 <= size {
      majoritySince = nil
    } else if majoritySince == nil {
      majoritySince = now
    }
  }

  public func mayOwn(now: Int64) -> Bool {
    guard let since = majoritySince else { return false }
    return now - since >= settle
  }
}
