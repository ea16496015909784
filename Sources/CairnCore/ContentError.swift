/// The one error type of Cairn's domain. Its code maps 1:1 onto a gRPC status code
/// (same numbers), so adapters translate without interpretation and clients see the
/// codes containerd would return.
public struct ContentError: Error, Hashable, Sendable, CustomStringConvertible {
  public enum Code: Int, Sendable, CaseIterable {
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case internalError = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    /// gRPC's canonical upper-case name, as CLIs and logs show it.
    public var name: String {
      switch self {
      case .cancelled: "CANCELLED"
      case .unknown: "UNKNOWN"
      case .invalidArgument: "INVALID_ARGUMENT"
      case .deadlineExceeded: "DEADLINE_EXCEEDED"
      case .notFound: "NOT_FOUND"
      case .alreadyExists: "ALREADY_EXISTS"
      case .permissionDenied: "PERMISSION_DENIED"
      case .resourceExhausted: "RESOURCE_EXHAUSTED"
      case .failedPrecondition: "FAILED_PRECONDITION"
      case .aborted: "ABORTED"
      case .outOfRange: "OUT_OF_RANGE"
      case .unimplemented: "UNIMPLEMENTED"
      case .internalError: "INTERNAL"
      case .unavailable: "UNAVAILABLE"
      case .dataLoss: "DATA_LOSS"
      case .unauthenticated: "UNAUTHENTICATED"
      }
    }
  }

  public var code: Code
  /// What the caller is told.
  public var message: String
  /// What only this node's log may say: a server path, a file name. Never sent to a
  /// client or a peer (a client learns the ref or digest it asked about, not where the
  /// node keeps it).
  public var detail: String?

  public init(_ code: Code, _ message: String, detail: String? = nil) {
    self.code = code
    self.message = message
    self.detail = detail
  }

  /// For logs: the detail too.
  public var description: String { detail.map { "\(code.name): \(message) (\($0))" } ?? "\(code.name): \(message)" }

  public static func invalidArgument(_ m: String) -> Self { .init(.invalidArgument, m) }
  public static func notFound(_ m: String) -> Self { .init(.notFound, m) }
  public static func alreadyExists(_ m: String) -> Self { .init(.alreadyExists, m) }
  public static func failedPrecondition(_ m: String) -> Self { .init(.failedPrecondition, m) }
  public static func outOfRange(_ m: String) -> Self { .init(.outOfRange, m) }
  public static func unavailable(_ m: String) -> Self { .init(.unavailable, m) }
  public static func resourceExhausted(_ m: String) -> Self { .init(.resourceExhausted, m) }
  public static func internalError(_ m: String) -> Self { .init(.internalError, m) }
  public static func dataLoss(_ m: String) -> Self { .init(.dataLoss, m) }
  public static func unimplemented(_ m: String) -> Self { .init(.unimplemented, m) }
  public static func cancelled(_ m: String) -> Self { .init(.cancelled, m) }
  public static func permissionDenied(_ m: String) -> Self { .init(.permissionDenied, m) }
  public static func deadlineExceeded(_ m: String) -> Self { .init(.deadlineExceeded, m) }
}

extension ContentError {
  /// Wraps any error as a ContentError: domain errors pass through, cancellation stays
  /// cancellation, everything else is INTERNAL with its description.
  public static func from(_ error: any Error) -> ContentError {
    if let e = error as? ContentError { return e }
    if error is CancellationError { return .cancelled("operation cancelled") }
    return .internalError(String(describing: error))
  }
}
