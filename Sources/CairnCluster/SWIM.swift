/// The SWIM failure detector and membership protocol as a pure state machine: no sockets,
/// no clocks, no threads. The driver feeds it the time (`tick`) and the messages it
/// receives (`receive`), and performs the actions it returns (send a message, announce a
/// change). Randomness comes from a seeded generator, so a run replays exactly.
///
/// Each protocol period a node pings one member (round robin over a shuffled list). No
/// ack within `probeTimeout`: it asks `indirectProbes` other members to ping the target
/// for it. Still nothing by the end of the period: the target becomes suspect, and dead
/// if nobody refutes within `suspicionTimeout`. Membership changes travel piggybacked on
/// every message, each a bounded number of times. A member that hears it is suspected or
/// dead refutes by raising its incarnation.
///
/// Three of Lifeguard's refinements (Dadgar et al., 2018) keep a slow node from accusing
/// healthy ones: a node whose own probes go unanswered, that must refute suspicions of
/// itself, or whose ticks come late stretches its probe timeout and interval (`healthScore`);
/// time during which the node did not run at all (a tick far later than asked for: CPU
/// starvation, a paused process) does not count against the members it waits for; and a
/// member is told of its suspicion at once, by the node that suspects it, so that a live
/// one refutes within a round trip rather than when gossip happens to reach it.
///
/// Two additions to the paper close the gaps a real network opens: every `syncEvery`
/// periods the probe carries the sender's whole view and the ack answers with the
/// receiver's (push-pull anti-entropy), and dead members are probed too, at that pace,
/// so that two sides of a healed partition that declared each other dead find out.
public struct SWIM: Sendable {
  /// The highest incarnation a member may claim. Incarnations start at a node's start time
  /// in milliseconds (about 2^41 today) and rise by one per refutation, so anything above
  /// 2^53 (the year 287 000) is a lie or a corruption: updates at or beyond it are ignored,
  /// and a refutation (`+ 1`) never overflows and never passes it. One gossip update at 2^64 − 1 used to crash
  /// the node it named, and again after every restart.
  public static let maxIncarnation: UInt64 = 1 << 53
  /// Ping-requests relayed at once (each waits a probe interval for its ack): a peer that
  /// floods them cannot grow this node's memory.
  public static let maxRelays = 1024

  public struct Config: Sendable, Hashable {
    /// Nanoseconds.
    public var probeInterval: Int64 = 1_000_000_000
    public var probeTimeout: Int64 = 400_000_000
    public var suspicionTimeout: Int64 = 4_000_000_000
    public var indirectProbes: Int = 3
    public var maxPiggyback: Int = 8
    /// An update is piggybacked on `retransmitFactor × ⌈log2(n+1)⌉` messages.
    public var retransmitFactor: Int = 3
    /// Every this many periods the probe is a full-state exchange (and may go to a dead member).
    public var syncEvery: Int = 5
    /// The highest `healthScore`: probe timeout and interval stretch at most (1 + this) times.
    public var maxHealthScore: Int = 8

    public init() {}
  }

  public enum Message: Sendable, Hashable {
    case ping(seq: UInt64, updates: [Member], fullSync: Bool)
    case pingRequest(seq: UInt64, target: NodeID, updates: [Member])
    case ack(seq: UInt64, target: NodeID, updates: [Member])
  }

  public enum Action: Sendable, Hashable {
    case send(to: NodeID, Message)
    /// The view changed: this member's state is new.
    case changed(Member)
  }

  private struct Probe: Sendable {
    var target: NodeID
    var seq: UInt64
    /// No ack by then: others are asked to probe the target.
    var timeoutAt: Int64
    /// No ack by then: the target is suspected.
    var endsAt: Int64
    var askedOthers = false
    var acked = false
  }

  private struct Relay: Sendable {
    var requester: NodeID
    var requesterSeq: UInt64
    var expiresAt: Int64
  }

  public let me: NodeID
  public let config: Config
  public private(set) var members: [NodeID: Member]
  /// Raised on every change of this node's view.
  public private(set) var version: UInt64 = 0

  private var rng: SplitMix64
  private var probeOrder: [NodeID] = []
  private var nextProbeAt: Int64
  private var probe: Probe?
  private var periods = 0
  private var seq: UInt64 = 0
  private var suspicionDeadlines: [NodeID: Int64] = [:]
  private var relays: [UInt64: Relay] = [:]
  /// Updates still to piggyback, with how many more messages each rides on.
  private var pending: [NodeID: Int] = [:]
  /// How unsure this node is of its own timeliness (Lifeguard's local health multiplier),
  /// 0...maxHealthScore: up by one for each probe of a live member left unanswered, each
  /// suspicion of itself it refutes and each late tick; down by one for each probe
  /// answered. Probe timeout and interval are stretched by (1 + healthScore).
  public private(set) var healthScore = 0
  private var lastTick: Int64?

  /// `incarnation` should exceed any this node used before (a restarted node starts
  /// from its start time, so that it supersedes what others remember of it).
  public init(me: NodeID, address: String, incarnation: UInt64, peers: [NodeID: String], config: Config = Config(), seed: UInt64, now: Int64) {
    self.me = me
    self.config = config
    rng = SplitMix64(seed: seed)
    var members: [NodeID: Member] = [me: Member(id: me, address: address, incarnation: incarnation, status: .alive)]
    for (id, addr) in peers where id != me {
      members[id] = Member(id: id, address: addr, incarnation: 0, status: .alive)
    }
    self.members = members
    // Spread the first probes of a cluster that starts at once.
    nextProbeAt = now.saturatingAdd(Int64(rng.next() % UInt64(max(1, config.probeInterval))))
    lastTick = now
    pending[me] = retransmitLimit
  }

  public var myself: Member { members[me]! }

  public var liveMembers: [NodeID] { members.values.filter(\.isLive).map(\.id).sorted() }

  public func isLive(_ id: NodeID) -> Bool { members[id]?.isLive ?? false }

  private var retransmitLimit: Int {
    var log2 = 0
    var n = members.count + 1
    while n > 1 {
      n = (n + 1) / 2
      log2 += 1
    }
    return config.retransmitFactor * max(1, log2)
  }

  // MARK: Time

  /// A tick later than this after the previous one means the node did not run in between.
  public var stallThreshold: Int64 { config.probeTimeout }

  private func stretched(_ base: Int64) -> Int64 {
    let (v, overflow) = base.multipliedReportingOverflow(by: Int64(1 + healthScore))
    return overflow ? .max : v
  }

  private mutating func adjustHealth(_ delta: Int) {
    healthScore = min(config.maxHealthScore, max(0, healthScore + delta))
  }

  /// The node did not run for `stall` nanoseconds: every deadline it keeps moves by as
  /// much, so members are not blamed for answers it was not there to take.
  private mutating func postpone(by stall: Int64) {
    if var p = probe {
      p.timeoutAt = p.timeoutAt.saturatingAdd(stall)
      p.endsAt = p.endsAt.saturatingAdd(stall)
      probe = p
    }
    nextProbeAt = nextProbeAt.saturatingAdd(stall)
    suspicionDeadlines = suspicionDeadlines.mapValues { $0.saturatingAdd(stall) }
    relays = relays.mapValues { r in
      var r = r
      r.expiresAt = r.expiresAt.saturatingAdd(stall)
      return r
    }
  }

  /// Set by `leave`: this node stopped taking part.
  public private(set) var hasLeft = false

  /// A graceful stop: this node declares itself dead at its own incarnation, which every
  /// member takes at once (at one incarnation dead beats alive), and tells each live
  /// member directly instead of by piggyback, so their views give its refs to the next
  /// owners before it stops serving rather than a suspicion timeout after. From then on
  /// it neither probes nor answers, nor refutes its death; a restart supersedes it (a
  /// later incarnation, as after a crash).
  public mutating func leave(now: Int64) -> [Action] {
    guard !hasLeft else { return [] }
    hasLeft = true
    var gone = myself
    gone.status = .dead
    var actions = apply(gone, now: now)
    for id in members.keys.sorted() where id != me && members[id]!.isLive {
      seq &+= 1
      actions.append(.send(to: id, .ping(seq: seq, updates: [gone], fullSync: false)))
    }
    probe = nil
    return actions
  }

  public mutating func tick(now: Int64) -> [Action] {
    guard !hasLeft else { return [] }
    var actions: [Action] = []
    if let last = lastTick {
      let (gap, overflow) = now.subtractingReportingOverflow(last)
      if !overflow && gap > stallThreshold {
        postpone(by: gap)
        adjustHealth(+1)
      }
    }
    lastTick = now
    if var p = probe {
      if !p.acked && !p.askedOthers && now >= p.timeoutAt {
        p.askedOthers = true
        let helpers = pick(config.indirectProbes, from: members.values.filter { $0.status == .alive && $0.id != me && $0.id != p.target }.map(\.id))
        for h in helpers {
          actions.append(.send(to: h, .pingRequest(seq: p.seq, target: p.target, updates: takeUpdates())))
        }
      }
      probe = p
      if now >= p.endsAt {
        if !p.acked, let target = members[p.target], target.isLive {
          adjustHealth(+1)
          if target.status == .alive {
            actions += suspect(target, now: now)
            // Lifeguard's buddy system: the suspect hears it from us now, and refutes on
            // its ack if it is alive, instead of when gossip reaches it.
            seq &+= 1
            actions.append(.send(to: target.id, .ping(seq: seq, updates: updates(for: target.id), fullSync: false)))
          }
        }
        probe = nil
      }
    }
    if probe == nil && now >= nextProbeAt {
      actions += startProbe(now: now)
      nextProbeAt = now.saturatingAdd(stretched(config.probeInterval))
    }
    for (id, deadline) in suspicionDeadlines where now >= deadline {
      suspicionDeadlines[id] = nil
      if var m = members[id], m.status == .suspect {
        m.status = .dead
        actions += apply(m)
      }
    }
    relays = relays.filter { $0.value.expiresAt > now }
    return actions
  }

  private mutating func startProbe(now: Int64) -> [Action] {
    periods += 1
    let fullSync = periods % config.syncEvery == 0
    let target: NodeID?
    if fullSync, let dead = pick(1, from: members.values.filter { $0.status == .dead }.map(\.id)).first, rng.next() % 2 == 0 {
      target = dead
    } else {
      target = nextRoundRobinTarget()
    }
    guard let target else { return [] }
    seq &+= 1
    probe = Probe(
      target: target, seq: seq, timeoutAt: now.saturatingAdd(stretched(config.probeTimeout)),
      endsAt: now.saturatingAdd(stretched(config.probeInterval)))
    let piggyback = fullSync ? Array(members.values) : updates(for: target)
    return [.send(to: target, .ping(seq: seq, updates: piggyback, fullSync: fullSync))]
  }

  private mutating func nextRoundRobinTarget() -> NodeID? {
    if probeOrder.isEmpty {
      probeOrder = members.values.filter { $0.isLive && $0.id != me }.map(\.id).sorted()
      rng.shuffle(&probeOrder)
    }
    while let candidate = probeOrder.popLast() {
      if members[candidate]?.isLive == true { return candidate }
    }
    return nil
  }

  private mutating func pick(_ n: Int, from candidates: [NodeID]) -> [NodeID] {
    var c = candidates.sorted()
    rng.shuffle(&c)
    return Array(c.prefix(n))
  }

  // MARK: Messages

  public mutating func receive(_ message: Message, from sender: NodeID, now: Int64) -> [Action] {
    // Only members speak, and a ping-request names a member other than the two ends (found
    // by fuzzing: a message from an unknown sender was answered, and a ping-request for an
    // unknown target sent a ping there; the node's shell checks senders too).
    guard sender != me, members[sender] != nil, !hasLeft else { return [] }
    var actions: [Action] = []
    switch message {
    case .ping(let s, let updates, let fullSync):
      actions += merge(updates, now: now)
      let reply = fullSync ? Array(members.values) : takeUpdates()
      actions.append(.send(to: sender, .ack(seq: s, target: me, updates: reply)))
    case .pingRequest(let s, let target, let updates):
      actions += merge(updates, now: now)
      guard target != me, target != sender, members[target] != nil, relays.count < Self.maxRelays else { return actions }
      seq &+= 1
      relays[seq] = Relay(requester: sender, requesterSeq: s, expiresAt: now.saturatingAdd(config.probeInterval))
      actions.append(.send(to: target, .ping(seq: seq, updates: takeUpdates(), fullSync: false)))
    case .ack(let s, let target, let updates):
      actions += merge(updates, now: now)
      if var p = probe, p.seq == s, p.target == target {
        if !p.acked { adjustHealth(-1) }
        p.acked = true
        probe = p
      } else if let relay = relays.removeValue(forKey: s) {
        actions.append(.send(to: relay.requester, .ack(seq: relay.requesterSeq, target: target, updates: takeUpdates())))
      }
    }
    return actions
  }

  // MARK: Views

  private mutating func suspect(_ member: Member, now: Int64) -> [Action] {
    var m = member
    m.status = .suspect
    return apply(m, now: now)
  }

  /// Merges states learnt from others; refutes any claim that this node is not alive.
  private mutating func merge(_ updates: [Member], now: Int64) -> [Action] {
    var actions: [Action] = []
    for u in updates where u.incarnation <= Self.maxIncarnation {
      if u.id == me {
        let mine = myself
        // A claim at the bound itself is not refuted: the refutation (+ 1) would pass it,
        // where the others ignore it.
        if u.status != .alive && u.incarnation >= mine.incarnation && u.incarnation < Self.maxIncarnation {
          var refuted = mine
          refuted.incarnation = u.incarnation + 1
          actions += apply(refuted, now: now)
          // Suspected while alive: this node was probably too slow to answer in time.
          adjustHealth(+1)
        }
        continue
      }
      guard let known = members[u.id] else { continue }  // not configured here
      // A suspicion or death at the bound itself could never be refuted (the member would
      // need the bound + 1): a lie that would keep a live member dead for good (found by
      // HostilePeerTests). Each node still suspects a silent member at the bound by its own
      // probes.
      if u.status != .alive && u.incarnation >= Self.maxIncarnation { continue }
      if u.supersedes(known) { actions += apply(u, now: now) }
    }
    return actions
  }

  private mutating func apply(_ m: Member, now: Int64 = 0) -> [Action] {
    members[m.id] = m
    version += 1
    pending[m.id] = retransmitLimit
    switch m.status {
    case .suspect where suspicionDeadlines[m.id] == nil: suspicionDeadlines[m.id] = now.saturatingAdd(config.suspicionTimeout)
    case .alive, .dead: suspicionDeadlines[m.id] = nil
    default: break
    }
    return [.changed(m)]
  }

  /// The piggyback for a ping to `target`: a suspect hears of its own suspicion first.
  private mutating func updates(for target: NodeID) -> [Member] {
    var out = takeUpdates()
    if let m = members[target], m.status == .suspect, !out.contains(where: { $0.id == target }) {
      out.insert(m, at: 0)
      if out.count > config.maxPiggyback { out.removeLast() }
    }
    return out
  }

  /// Up to `maxPiggyback` pending updates, the least sent first.
  private mutating func takeUpdates() -> [Member] {
    let chosen = pending.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(config.maxPiggyback)
    var out: [Member] = []
    for (id, left) in chosen {
      out.append(members[id]!)
      pending[id] = left > 1 ? left - 1 : nil
    }
    return out
  }
}

/// A small, seedable PRNG (SplitMix64): the same seed gives the same run.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  public mutating func shuffle<T>(_ a: inout [T]) {
    guard a.count > 1 else { return }
    for i in stride(from: a.count - 1, to: 0, by: -1) {
      let j = Int(next() % UInt64(i + 1))
      a.swapAt(i, j)
    }
  }
}

extension Int64 {
  /// `self + other`, held at the bounds instead of trapping.
  func saturatingAdd(_ other: Int64) -> Int64 {
    let (v, overflow) = addingReportingOverflow(other)
    return overflow ? (other > 0 ? .max : .min) : v
  }
}
