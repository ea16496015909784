import CairnAdmin
import CairnCore
import CairnDisk
import CairnNode
import CairnProto
import CairnServer
import Foundation

/// The state gauges of /metrics, refreshed before each scrape.
enum NodeGauges {
  static func install(
    metrics: NodeMetrics, store: DiskStore, node: ClusterNode?, server: ContentServer, notReady: @escaping @Sendable () async -> String?
  ) {
    metrics.addCollector { m in
      let (buffered, waiting) = server.budget.usage
      m.gauge("cairn_buffered_request_bytes", "Request bytes received and not yet taken by their calls (max_buffered_bytes)").set(to: Double(buffered))
      m.gauge("cairn_streams_waiting_for_buffer", "Streams holding back their next message until there is room").set(to: Double(waiting))
      m.gauge("cairn_connections_open", "TCP connections open on the client port (max_connections)").set(to: Double(server.admission.openConnections))
      let u = await store.usage()
      m.gauge("cairn_ingests_active", "Uploads open for writing on this node").set(to: Double(u.activeIngests))
      m.gauge("cairn_blobs_stored", "Blobs in this node's store").set(to: Double(u.blobs))
      m.gauge("cairn_stored_bytes", "Bytes of blobs in this node's store").set(to: Double(u.storedBytes))
      m.gauge("cairn_disk_used_bytes", "Bytes in use on the data directory's filesystem").set(to: Double(u.diskUsedBytes))
      m.gauge("cairn_disk_capacity_bytes", "Size of the data directory's filesystem").set(to: Double(u.diskCapacityBytes))
      m.gauge("cairn_ready", "1 when /readyz answers ready").set(to: await notReady() == nil ? 1.0 : 0.0)
      guard let node else { return }
      let s = node.statusReport()
      m.gauge("cairn_replication_backlog", "Replica copies owed to peers that were unreachable (hints)").set(to: Double(s.hintsPending))
      m.gauge("cairn_repair_backlog", "Blobs this node lacked at the end of its last anti-entropy round").set(to: Double(s.repair.backlog))
      m.gauge("cairn_handoff_pending", "Blobs held here that belong to other replicas, not yet handed off").set(to: Double(s.repair.handoffPending))
      m.gauge("cairn_repair_pulled_bytes", "Bytes fetched by repair since start").set(to: Double(s.repair.bytesPulled))
      m.gauge("cairn_tombstones", "Deletions remembered for anti-entropy").set(to: Double(s.repair.tombstones))
      m.gauge("cairn_clock_offset_seconds", "This node's wall clock minus the cluster's median clock").set(to: Double(s.clockOffsetNanos) / 1e9)
      m.gauge("cairn_clock_readings_refused", "Peer clock readings refused for running ahead by more than max_clock_skew, since start")
        .set(to: Double(s.clockReadingsRefused))
      var counts = ["alive": 0, "suspect": 0, "dead": 0]
      for member in s.members {
        let (id, state) = (member.state.id, StatusPage.stateName(member.state.status))
        counts[state, default: 0] += 1
        for candidate in ["alive", "suspect", "dead"] {
          m.gauge("cairn_member_state", "1 for each member's state in this node's view", labels: [("member", id), ("state", candidate)])
            .set(to: candidate == state ? 1.0 : 0.0)
        }
      }
      for (state, n) in counts {
        m.gauge("cairn_cluster_members", "Members by state in this node's view", labels: [("state", state)]).set(to: Double(n))
      }
    }
  }
}

/// /api/status: this node's view of every member, each member's own report of its usage.
enum StatusPage {
  static func document(
    node: ClusterNode?, usage: @Sendable () async -> Cairn_Peer_V1_NodeUsage, notReadyReason: String?, security: String, metrics: NodeMetrics
  ) async -> StatusDocument {
    var doc = await document(node: node, usage: usage, ready: notReadyReason == nil)
    doc.security = security
    doc.version = CairnVersion.current
    doc.startedAt = ProcessGauges.startTime ?? 0
    doc.notReadyReason = notReadyReason
    doc.problems = StatusDocument.problems(ready: doc.ready, notReadyReason: notReadyReason, replicas: doc.replicas, members: doc.members)
    doc.methods = metrics.methodTotals.mapValues { .init(calls: $0.calls, errors: $0.errors, buckets: $0.buckets) }
    doc.latencyBucketSeconds = NodeMetrics.latencyBucketSeconds
    return doc
  }

  static func document(node: ClusterNode?, usage: @Sendable () async -> Cairn_Peer_V1_NodeUsage, ready: Bool) async -> StatusDocument {
    let now = Date().timeIntervalSince1970
    guard let node else {
      let me = ProcessInfo.processInfo.hostName
      let member = StatusDocument.Member(
        id: me, state: "alive", ownership: 1, replicaShare: 1, usage: convert(await usage()), repairBacklog: nil, hintsPending: nil)
      return StatusDocument(node: me, cluster: false, replicas: 1, writeQuorum: 1, ready: ready, time: now, members: [member])
    }
    // Membership and ring from this node's view; usage from each member's own report.
    let mine = node.statusReport()
    let reports = await node.clusterOverview()
    let members = mine.members.map { m -> StatusDocument.Member in
      let id = m.state.id
      let report = reports.first { $0.id == id }?.status
      var state = stateName(m.state.status)
      if state == "alive" && report == nil { state = "unreachable" }
      return StatusDocument.Member(
        id: id, state: state, ownership: m.ownership, replicaShare: m.replicaShare, usage: report.map { convert($0.usage) },
        repairBacklog: report?.repair.backlog, hintsPending: report?.hintsPending)
    }
    return StatusDocument(
      node: mine.nodeID, cluster: true, replicas: Int(mine.replicas), writeQuorum: Int(mine.writeQuorum), ready: ready, time: now,
      members: members)
  }

  static func stateName(_ s: Cairn_Peer_V1_MemberState.Status) -> String {
    switch s {
    case .alive: "alive"
    case .suspect: "suspect"
    case .dead: "dead"
    case .UNRECOGNIZED: "unknown"
    }
  }

  static func convert(_ u: Cairn_Peer_V1_NodeUsage) -> StatusDocument.Usage {
    .init(
      blobs: u.blobs, storedBytes: u.storedBytes, diskUsedBytes: u.diskUsedBytes, diskCapacityBytes: u.diskCapacityBytes,
      activeIngests: u.activeIngests, bytesReceived: u.bytesReceived, bytesSent: u.bytesSent, calls: u.calls,
      failedCalls: u.failedCalls, receivedPerSecond: u.receivedPerSecond, sentPerSecond: u.sentPerSecond,
      sampleSeconds: NodeMetrics.sampleSeconds)
  }
}
