import CairnCluster
import Foundation

/// SWIM's message handling: one member of a 3-node cluster, fed arbitrary gossip (any kind,
/// sequence number, target, sender; member updates naming known and unknown nodes, with
/// any incarnation up to 2^64-1 and any status) and arbitrary passage of time. Invariants:
/// never a trap (issue 15: a refutation's `+ 1` on a DEAD report at 2^64-1 crashed the node
/// it named, after every restart); the node never believes itself suspect or dead; its
/// incarnation stays within SWIM.maxIncarnation; messages go only to configured members.
public func fuzzSWIM(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  let ids: [NodeID] = ["n1", "n2", "n3"]
  let peers = Dictionary(uniqueKeysWithValues: ids.map { ($0, "\($0.name):7400") })
  var now: Int64 = 1_000_000_000
  var swim = SWIM(me: "n1", address: "n1:7400", incarnation: input.uint64Edge() % (SWIM.maxIncarnation / 2), peers: peers, seed: 7, now: now)
  let names: [NodeID] = ids + ["stranger", ""]
  func member() -> Member {
    Member(
      id: input.pick(names), address: input.string(max: 12), incarnation: input.uint64Edge(),
      status: input.pick([.alive, .suspect, .dead]))
  }
  func updates() -> [Member] { (0..<Int(input.byte() % 4)).map { _ in member() } }
  while !input.isExhausted {
    let actions: [SWIM.Action]
    switch input.byte() % 4 {
    case 0:
      now = now.addingReportingOverflow(Int64(input.byte()) * 100_000_000).partialValue
      actions = swim.tick(now: now)
    case 1: actions = swim.receive(.ping(seq: input.uint64Edge(), updates: updates(), fullSync: input.bool()), from: input.pick(names), now: now)
    case 2:
      actions = swim.receive(.pingRequest(seq: input.uint64Edge(), target: input.pick(names), updates: updates()), from: input.pick(names), now: now)
    default:
      actions = swim.receive(.ack(seq: input.uint64Edge(), target: input.pick(names), updates: updates()), from: input.pick(names), now: now)
    }
    fuzzCheck(swim.myself.status == .alive, "n1 believes itself \(swim.myself.status)")
    fuzzCheck(swim.myself.incarnation <= SWIM.maxIncarnation, "n1's incarnation \(swim.myself.incarnation) is past the bound")
    for case .send(let to, _) in actions { fuzzCheck(peers[to] != nil, "a message to \(to), not a member") }
  }
}
