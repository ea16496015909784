/// A hybrid logical clock (Kulkarni et al.), in nanoseconds since the epoch: what orders a
/// commit against a Delete across nodes. Wall clocks lie by minutes or days; this clock
/// never goes backwards, exceeds every reading it accepted from a peer, and stays within
/// `maxSkew` of its peers' clocks, so that an event that follows another (a Delete fans out
/// to every node before it is acknowledged; the upload that follows reaches some node
/// after that) always gets the larger time, whatever the wall clocks say.
///
/// A reading is one Int64: wall time where the wall clock is sane, with the logical part
/// folded into the nanoseconds (each stamp at least one more than the last). Every peer
/// message carries the sender's reading and its wall clock (`message`, `observe`).
///
/// Which clock is wrong, when two disagree? The median of this node's wall clock and its
/// peers' latest wall clocks (each advanced by the time since it arrived): a reading
/// beyond median + `maxSkew` is refused (a node a day ahead cannot drag the cluster's clocks
/// a day forward), and this node's physical time is its wall clock kept within
/// `maxSkew / 2` of the median (a node whose wall clock runs a day ahead still stamps near
/// its peers' time, and a node a day behind is pulled up to it), so either still serves
/// Deletes and commits correctly. The median is of wall clocks, not of readings: a
/// reading a little ahead (within the bound) raises the readings of everyone who takes it,
/// and a median of readings would ratchet up with them.
///
/// Pure: the wall and monotonic times are passed in.
public struct HybridClock: Sendable {
  public let maxSkew: Int64
  /// The largest time this clock gave out or accepted.
  public private(set) var last: Int64 = 0
  private var peers: [String: (wall: Int64, at: Int64)] = [:]
  /// Peer readings older than this (monotonic) no longer vote: a peer that went silent.
  public static let readingLifetime: Int64 = 60_000_000_000

  public init(maxSkew: Int64) { self.maxSkew = max(1, maxSkew) }

  /// The median of this node's wall clock and its peers' current wall clocks (nil
  /// while no peer spoke recently). The lower median: with two clocks, this node's own
  /// decides when its peer's is ahead.
  public func median(wall: Int64, mono: Int64) -> Int64? {
    var values = [wall]
    for p in peers.values where mono - p.at < Self.readingLifetime {
      values.append(p.wall.addingSaturating(mono - p.at))
    }
    guard values.count > 1 else { return nil }
    values.sort()
    return values[(values.count - 1) / 2]
  }

  /// The physical part of this node's time: its wall clock, kept within half the skew
  /// bound of the median.
  public func physical(wall: Int64, mono: Int64) -> Int64 {
    guard let m = median(wall: wall, mono: mono) else { return wall }
    return min(max(wall, m.addingSaturating(-maxSkew / 2)), m.addingSaturating(maxSkew / 2))
  }

  /// The time of an event here: later than anything this clock said or accepted before.
  /// Before any peer spoke, the wall clock as it is, not remembered: a node whose clock is
  /// a day ahead must not carry that day into every later stamp (nothing that orders
  /// events across nodes happens before a node hears its peers: it owns no ref and takes
  /// no Delete until then).
  public mutating func stamp(wall: Int64, mono: Int64) -> Int64 {
    guard median(wall: wall, mono: mono) != nil else { return wall }
    last = max(last.addingSaturating(1), physical(wall: wall, mono: mono))
    return last
  }

  /// Whether a peer spoke recently.
  public func isSynced(mono: Int64) -> Bool { !heard(mono: mono).isEmpty }

  /// The peers that spoke recently (their wall clocks vote in the median).
  public func heard(mono: Int64) -> Set<String> {
    Set(peers.compactMap { mono - $0.value.at < Self.readingLifetime ? $0.key : nil })
  }

  /// What this node tells its peers its time is (no event, no advance).
  public func reading(wall: Int64, mono: Int64) -> Int64 { max(last, physical(wall: wall, mono: mono)) }

  /// What a message to a peer carries: this clock's reading and the wall clock as it reads
  /// (which votes in the peer's median). Not the physical time (the wall clock pulled
  /// towards this node's median): with that, two skewed nodes that heard each other first
  /// agreed on a day-behind time and then pulled the one true clock to it.
  public func message(wall: Int64, mono: Int64) -> (reading: Int64, wall: Int64) {
    (reading(wall: wall, mono: mono), wall)
  }

  /// A peer's reading and wall clock: the wall clock is remembered (it votes in the
  /// median) and the reading, unless beyond the median by more than `maxSkew`, taken (this
  /// clock is then past it). Returns the excess of a refused reading, nil when taken.
  public mutating func observe(_ remote: Int64, peerWall: Int64, from peer: String, wall: Int64, mono: Int64) -> Int64? {
    peers[peer] = (peerWall, mono)
    let m = median(wall: wall, mono: mono) ?? wall
    let excess = remote.addingSaturating(-m)
    if excess > maxSkew { return excess }
    last = max(last, remote)
    return nil
  }

  /// Whether a time a peer sent (a deletion's, a copy's creation) is within the skew bound
  /// of this node's own clock: nothing later may order events here.
  public func admits(_ time: Int64, wall: Int64, mono: Int64) -> Bool {
    time.addingSaturating(-reading(wall: wall, mono: mono)) <= maxSkew
  }

  /// Peers that spoke recently, and how far each one's wall clock is from this node's physical time.
  public func offsets(wall: Int64, mono: Int64) -> [String: Int64] {
    let mine = physical(wall: wall, mono: mono)
    var out: [String: Int64] = [:]
    for (id, p) in peers where mono - p.at < Self.readingLifetime {
      out[id] = p.wall.addingSaturating(mono - p.at).addingSaturating(-mine)
    }
    return out
  }
}

extension Int64 {
  /// Addition that stops at Int64's ends instead of trapping.
  public func addingSaturating(_ other: Int64) -> Int64 {
    let (sum, overflow) = addingReportingOverflow(other)
    return overflow ? (other < 0 ? .min : .max) : sum
  }
}
