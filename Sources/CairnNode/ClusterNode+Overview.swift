import CairnCluster
import CairnCore
import CairnProto
import GRPCCore

/// What operators look at: readiness, this node's full status, every member's.
extension ClusterNode {
  public func setUsageProvider(_ provider: @escaping @Sendable () async -> Cairn_Peer_V1_NodeUsage) {
    usageProvider.withLock { $0 = provider }
  }

  /// How this node tells callers apart, for `cairn cluster status` and the dashboard.
  public func setSecurity(_ description: String) {
    security.withLock { $0 = description }
  }

  /// The status report with this node's usage.
  public func fullStatus() async -> Cairn_Peer_V1_ClusterStatusResponse {
    var r = statusReport()
    if let provider = usageProvider.withLock({ $0 }) { r.usage = await provider() }
    return r
  }

  /// nil once the node serves as a full member: it is in the cluster's config, has
  /// working connections to a majority (itself included) and may take ref locks (a
  /// settled live majority); otherwise why not. A starting node presumes its peers alive
  /// until probes say otherwise, so the connections are what prove it joined.
  public var notReadyReason: String? {
    let view = self.view
    guard view.config.isMember else { return "removed from the cluster (config epoch \(view.config.epoch))" }
    let size = view.config.peers.count
    let connected = relayedPeers.intersection(view.config.peers.keys).subtracting([config.me]).count + 1
    if connected * 2 <= size { return "connected to \(connected) of \(size) nodes (itself included), a majority is needed" }
    if !clockIsSynced { return "its clock has not heard its peers' readings yet" }
    return membership.ownershipRefusal()
  }

  /// Every member's status as it reports it (nil: it did not answer within 5 s or is
  /// declared dead), this node's included. A member starved of CPU for a moment answers
  /// late, not never: 2 s showed live members as unreachable on a loaded 2-core machine.
  public func clusterOverview() async -> [(id: String, status: Cairn_Peer_V1_ClusterStatusResponse?)] {
    let view = self.view
    let me = config.me
    return await withTaskGroup(of: (String, Cairn_Peer_V1_ClusterStatusResponse?).self) { group in
      for (id, member) in view.members {
        group.addTask {
          if id == me { return (id.name, await self.fullStatus()) }
          if member.status == .dead { return (id.name, nil) }
          let r = try? await self.peers.call(id) { api in
            try await api.clusterStatus(.init(), options: PeerClients.options(timeout: .seconds(5)))
          }
          return (id.name, r)
        }
      }
      var out: [(id: String, status: Cairn_Peer_V1_ClusterStatusResponse?)] = []
      for await (id, s) in group { out.append((id, s)) }
      return out.sorted { $0.id < $1.id }
    }
  }
}
