import Foundation

/// A writer that hands every step to `inner` and lets its owner decide COMMIT: the store
/// wrappers (one client's view, the agent's publish-on-commit) add their work there. It
/// reports states under `ref` (a wrapper's ref may differ from the inner one) and remembers
/// the digest of the bytes written so far, for a COMMIT without an expected digest that
/// finds the blob already there.
public final class DelegatingWriter: IngestWriter, @unchecked Sendable {
  public struct Commit: Sendable {
    public var size: Int64
    public var expected: Digest?
    public var labels: [String: String]
    public var createdAt: Timestamp?
    /// `expected`, else the digest of the bytes written so far (nil before any step).
    public var digest: Digest?
  }

  public let ref: String
  public let inner: any IngestWriter
  private let onCommit: @Sendable (any IngestWriter, Commit) async throws -> WriterState
  /// Steps are sequential (one Write stream drives a writer), hence unchecked Sendable.
  private var lastDigest: Digest?

  public init(
    ref: String, inner: any IngestWriter, commit: @escaping @Sendable (any IngestWriter, Commit) async throws -> WriterState
  ) {
    self.ref = ref
    self.inner = inner
    onCommit = commit
  }

  private func seen(_ s: WriterState) -> WriterState {
    lastDigest = s.digest
    var out = s
    out.status.ref = ref
    return out
  }

  public func state() async throws -> WriterState { seen(try await inner.state()) }
  public func setExpectations(total: Int64?, expected: Digest?) async throws -> WriterState {
    seen(try await inner.setExpectations(total: total, expected: expected))
  }
  public func append(_ data: Data) async throws -> WriterState { seen(try await inner.append(data)) }
  public func truncate() async throws -> WriterState { seen(try await inner.truncate()) }

  public func commit(size: Int64, expected: Digest?, labels: [String: String], createdAt: Timestamp?) async throws -> WriterState {
    let request = Commit(size: size, expected: expected, labels: labels, createdAt: createdAt, digest: expected ?? lastDigest)
    return seen(try await onCommit(inner, request))
  }

  public func close() async { await inner.close() }
}
