import CairnCluster
import CairnCore
import CairnProto
import GRPCCore

extension ClusterNode {
  /// Relays every ingest event of the cluster into `events`: this node's own, and each
  /// peer's over a LocalEvents stream held open for the node's lifetime (re-opened a
  /// second after it breaks). Watches subscribe to the relay, so a watch sees events of
  /// ingests on other nodes from its first moment, without a subscription race of its own.
  func relayEventsForever() async {
    let localEvents = local.ingestEvents()
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        for await e in localEvents where self.isClientEvent(e) { self.events.publish(e) }
      }
      group.addTask { await self.relayPeersForever() }
    }
  }

  /// One relay per peer of the current config, following membership changes.
  private func relayPeersForever() async {
    var relays: [NodeID: Task<Void, Never>] = [:]
    defer { for t in relays.values { t.cancel() } }
    while !Task.isCancelled {
      let wanted = Set(config.peers.keys).subtracting([config.me])
      for gone in Set(relays.keys).subtracting(wanted) { relays.removeValue(forKey: gone)?.cancel() }
      for peer in wanted where relays[peer] == nil { relays[peer] = Task { await self.relay(peer) } }
      try? await Task.sleep(nanoseconds: 1_000_000_000)
    }
  }

  private func relay(_ peer: NodeID) async {
    while !Task.isCancelled {
      try? await peers.call(peer) { api in
        try await api.localEvents(request: ClientRequest(message: .init()), options: PeerClients.options()) { r in
          defer { self.relaying.withLock { _ = $0.remove(peer) } }
          for try await m in r.messages {
            if m.kind == .subscribed { self.relaying.withLock { _ = $0.insert(peer) } }
            if let e = IngestEvent(m), !ClusterNode.isReserved(e.ref) { self.events.publish(e) }
          }
        }
      }
      try? await Task.sleep(nanoseconds: 1_000_000_000)
    }
  }

  /// Peers whose events are being relayed right now.
  public var relayedPeers: Set<NodeID> { relaying.withLock { $0 } }
}
