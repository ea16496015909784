/// What one node believes about another.
public struct Member: Hashable, Sendable, CustomStringConvertible {
  public enum Status: Int, Hashable, Sendable, Comparable, CustomStringConvertible {
    case alive = 0, suspect = 1, dead = 2
    public static func < (a: Status, b: Status) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
      switch self {
      case .alive: "alive"
      case .suspect: "suspect"
      case .dead: "dead"
      }
    }
  }

  public var id: NodeID
  public var address: String
  /// Only the member itself raises its incarnation, to refute suspicion of it.
  public var incarnation: UInt64
  public var status: Status

  public init(id: NodeID, address: String, incarnation: UInt64, status: Status) {
    self.id = id
    self.address = address
    self.incarnation = incarnation
    self.status = status
  }

  /// SWIM's precedence: a higher incarnation wins; at equal incarnations dead beats
  /// suspect beats alive. So a suspicion or death is undone only by the member itself,
  /// announcing a higher incarnation.
  public func supersedes(_ other: Member) -> Bool {
    if incarnation != other.incarnation { return incarnation > other.incarnation }
    return status > other.status
  }

  /// Alive or suspected: still owns what it owns (a suspect may be alive).
  public var isLive: Bool { status != .dead }

  public var description: String { "\(id)@\(incarnation):\(status)" }
}
