import CairnCore

/// Which ingests a seed Status watch follows: exact refs and/or ref prefixes. Both empty
/// means every ingest.
struct StatusWatchQuery: Sendable {
  let refs: Set<Bytewise>
  let prefixes: [String]

  init(refs: [String], prefixes: [String], limits: Limits) throws(ContentError) {
    if refs.count + prefixes.count > limits.maxWatchedRefs {
      throw .invalidArgument("\(refs.count + prefixes.count) refs and prefixes, over the limit maxWatchedRefs=\(limits.maxWatchedRefs)")
    }
    for r in refs { try RefRules.validate(r, limits: limits) }
    self.refs = Set(refs.map(Bytewise.init))
    self.prefixes = prefixes
  }

  func matches(_ ref: String) -> Bool {
    if refs.isEmpty && prefixes.isEmpty { return true }
    return refs.contains(Bytewise(ref)) || prefixes.contains { ref.bytewiseHasPrefix($0) }
  }
}

/// The watch as a state machine: it is fed the snapshot and then store events, and says
/// what to send; it is done when nothing it follows is still in progress.
struct StatusWatch: Sendable {
  let query: StatusWatchQuery
  let limit: Int
  /// The last status sent for each ingest still in progress.
  private(set) var following: [Bytewise: IngestStatus] = [:]  // by ref

  init(query: StatusWatchQuery, limit: Int) {
    self.query = query
    self.limit = limit
  }

  var isDone: Bool { following.isEmpty }

  mutating func onSnapshot(_ s: IngestStatus) throws(ContentError) -> IngestStatus? {
    guard query.matches(s.ref) else { return nil }
    return try follow(s)
  }

  mutating func onEvent(_ e: IngestEvent) throws(ContentError) -> IngestStatus? {
    guard query.matches(e.ref) else { return nil }
    switch e {
    case .progress(let s):
      // Events queued before the snapshot may be older than it.
      if let last = following[Bytewise(s.ref)], s.updatedAt < last.updatedAt { return nil }
      return try follow(s)
    case .committed(let ref, _, let size):
      // The last status, unless the watcher has it already (the final progress of an
      // upload carries the same offset: `cairn status --watch` printed it twice).
      guard var last = following.removeValue(forKey: Bytewise(ref)), last.offset != size else { return nil }
      last.offset = size
      return last
    case .aborted(let ref):
      following[Bytewise(ref)] = nil
      return nil
    }
  }

  private mutating func follow(_ s: IngestStatus) throws(ContentError) -> IngestStatus {
    if following.updateValue(s, forKey: Bytewise(s.ref)) == nil && following.count > limit {
      throw .resourceExhausted("watch follows more than \(limit) ingests (limit max_watched_refs)")
    }
    return s
  }
}
