import Foundation

/// One message of a Write stream, in terms common to both Content APIs.
public struct WriteStep: Sendable {
  public enum Action: Sendable, Hashable { case stat, write, commit, abort }

  public var action: Action
  public var ref: String
  /// Expected total size; 0 or less = not given.
  public var total: Int64
  /// Expected digest as sent; "" = not given.
  public var expected: String
  public var offset: Int64
  public var data: Data
  public var labels: [String: String]

  public init(
    action: Action, ref: String = "", total: Int64 = 0, expected: String = "", offset: Int64 = 0,
    data: Data = Data(), labels: [String: String] = [:]
  ) {
    self.action = action
    self.ref = ref
    self.total = total
    self.expected = expected
    self.offset = offset
    self.data = data
    self.labels = labels
  }
}

/// What the driver of a Write stream must do, in order, for one message.
public enum WriteCommand: Sendable, Equatable {
  /// If this digest is already committed: abort the ingest and fail with ALREADY_EXISTS.
  /// Planned when a message names an expected digest that was not checked yet (the one
  /// the stream opened with is checked when the writer opens; a blob committed meanwhile
  /// still fails the commit with ALREADY_EXISTS).
  case rejectIfCommitted(Digest)
  case setExpectations(total: Int64?, expected: Digest?)
  case truncate
  case append(Data)
  case commit(size: Int64, expected: Digest?, labels: [String: String])
  case abort
  /// Answer the message with the writer's current state.
  case respond
}

/// The Write protocol as a pure state machine (containerd's contentserver.Write, with the
/// seed's ABORT action): it validates each message against the ingest's current offset
/// and says what to do. It performs no I/O; the server's driver executes the commands.
public struct WriteSession: Sendable {
  public enum Phase: Sendable, Equatable { case awaitingFirst, open, finished }

  public private(set) var phase: Phase = .awaitingFirst
  public private(set) var ref = ""
  public private(set) var total: Int64 = 0
  public private(set) var expected: Digest?
  private let limits: Limits
  /// A peer's stream (a forwarded upload) carries the labels a scoped client's commit
  /// stores (its hold, its scoped labels): checked as a store keeps them, not as a client
  /// may ask for them.
  private let fromPeer: Bool

  public init(limits: Limits = .default, fromPeer: Bool = false) {
    self.limits = limits
    self.fromPeer = fromPeer
  }

  /// The first message names the ref; returns what to open the writer with.
  public mutating func start(_ first: WriteStep) throws(ContentError) -> (ref: String, total: Int64, expected: Digest?) {
    precondition(phase == .awaitingFirst)
    if first.ref.isEmpty { throw .invalidArgument("first message must have a reference") }
    try RefRules.validate(first.ref, limits: limits)
    ref = first.ref
    total = max(0, first.total)
    try checkTotal(total)
    expected = try Digest.parseOptional(first.expected)
    phase = .open
    return (ref, total, expected)
  }

  /// Plans one message (the first one included) given the ingest's current offset.
  public mutating func plan(_ step: WriteStep, currentOffset: Int64) throws(ContentError) -> [WriteCommand] {
    guard phase == .open else {
      throw .failedPrecondition("write stream for ref \(quoted(ref)) has already ended")
    }
    if !step.ref.isEmpty && !step.ref.bytewiseEquals(ref) {
      throw .invalidArgument("a write stream writes one ref: started with \(quoted(ref)), got \(quoted(step.ref))")
    }
    var commands: [WriteCommand] = []
    var newTotal: Int64?
    var newExpected: Digest?
    if let d = try Digest.parseOptional(step.expected), d != expected {
      commands.append(.rejectIfCommitted(d))
      newExpected = d
      expected = d
    }
    if step.total > 0 {
      try checkTotal(step.total)
      if step.total != total { newTotal = step.total }
      total = step.total
    }
    if newTotal != nil || newExpected != nil {
      commands.append(.setExpectations(total: newTotal, expected: newExpected))
    }

    switch step.action {
    case .stat:
      break
    case .abort:
      commands.append(.abort)
      phase = .finished
    case .write, .commit:
      let offset = max(0, step.offset)
      if !step.data.isEmpty {
        var base = currentOffset
        if offset == 0 && currentOffset > 0 {
          commands.append(.truncate)
          base = 0
        } else if offset != currentOffset {
          throw .outOfRange("write @\(offset) must occur at current offset \(currentOffset)")
        }
        if base + Int64(step.data.count) > limits.maxBlobBytes {
          throw .resourceExhausted(
            "ingest \(quoted(ref)) would exceed \(limits.maxBlobBytes) bytes (limit max_blob_bytes)")
        }
        commands.append(.append(step.data))
      } else if step.action == .commit && offset > 0 && offset != currentOffset {
        throw .outOfRange("commit @\(offset) must occur at current offset \(currentOffset)")
      }
      if step.action == .commit {
        if fromPeer {
          try LabelRules.validateStored(step.labels, limits: limits)
        } else {
          try LabelRules.validateRequest(step.labels, limits: limits)
        }
        commands.append(.commit(size: total, expected: expected, labels: step.labels))
        phase = .finished
      }
    }
    commands.append(.respond)
    return commands
  }

  private func checkTotal(_ t: Int64) throws(ContentError) {
    if t > limits.maxBlobBytes {
      throw .resourceExhausted("expected size \(t) exceeds \(limits.maxBlobBytes) bytes (limit max_blob_bytes)")
    }
  }
}
