import CairnCore
import CairnProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// What an upload achieved.
public struct UploadResult: Sendable, Hashable {
  public var digest: Digest
  public var size: Int64
  /// Bytes the server already held for the ref and that were not sent again.
  public var resumedFrom: Int64
  /// The blob was already committed (ALREADY_EXISTS, which containerd treats as success).
  public var alreadyExisted: Bool = false
}

/// A Write response in terms common to both APIs.
struct WriteReply: Sendable {
  var offset: Int64
  var digest: String
  var committed: Bool
}

extension ContentClient {
  /// Uploads `source` under `ref`: asks the server where the ref stands (resuming when the
  /// source's prefix matches), streams the rest without waiting for each acknowledgement,
  /// and commits. `progress` sees every acknowledged offset. When the blob is already
  /// committed (ALREADY_EXISTS, which containerd treats as success) the result says so.
  ///
  /// With `resume: false` the upload starts at offset 0 without asking first (data at
  /// offset 0 restarts any ingest the ref had), saving a round trip per blob.
  /// `commitSent` runs just before the COMMIT goes out (the chaos workload's lock record).
  public func write(
    ref: String, source: any BlobSource, size: Int64 = 0, expected: Digest? = nil,
    labels: [String: String] = [:], chunkBytes: Int = 1 << 20, resume: Bool = true,
    progress: (@Sendable (Int64) -> Void)? = nil, commitSent: (@Sendable () -> Void)? = nil
  ) async throws -> UploadResult {
    try await call {
      switch api {
      case .modern:
        return try await upload(
          ref: ref, source: source, size: size, expected: expected, labels: labels, chunkBytes: chunkBytes,
          resume: resume, progress: progress, commitSent: commitSent,
          stat: { first in
            .with {
              $0.action = .stat
              $0.ref = ref
              if first {
                $0.total = size
                $0.expected = expected?.description ?? ""
              }
            }
          },
          data: { offset, data in
            .with {
              $0.action = .write
              $0.offset = offset
              $0.data = data
            }
          },
          commit: { offset in
            .with {
              $0.action = .commit
              $0.offset = offset
              $0.total = size > 0 ? size : offset
              $0.expected = expected?.description ?? ""
              $0.labels = labels
            }
          },
          reply: { (m: Containerd_Services_Content_V1_WriteContentResponse) in
            WriteReply(offset: m.offset, digest: m.digest, committed: m.action == .commit)
          },
          call: { request, handler in try await modern.write(request: request, options: options, onResponse: handler) })
      case .seed:
        if !labels.isEmpty { throw ContentError.unimplemented("labels are not part of the seed API; use --api modern") }
        return try await upload(
          ref: ref, source: source, size: size, expected: expected, labels: labels, chunkBytes: chunkBytes,
          resume: resume, progress: progress, commitSent: commitSent,
          stat: { first in
            .with {
              $0.action = .stat
              $0.ref = ref
              if first {
                $0.expectedSize = size
                $0.expectedDigest = expected?.description ?? ""
              }
            }
          },
          data: { offset, data in
            .with {
              $0.action = .write
              $0.offset = offset
              $0.data = data
            }
          },
          commit: { offset in
            .with {
              $0.action = .commit
              $0.offset = offset
              $0.expectedSize = size > 0 ? size : offset
              $0.expectedDigest = expected?.description ?? ""
            }
          },
          reply: { (m: Containerd_V1_WriteResponse) in
            WriteReply(offset: m.offset, digest: m.digest, committed: m.action == .commit)
          },
          call: { request, handler in try await seed.write(request: request, options: options, onResponse: handler) })
      }
    }
  }

  /// The Write conversation, independent of the API's message types.
  private func upload<Req: Sendable, Resp: Sendable>(
    ref: String, source: any BlobSource, size: Int64, expected: Digest?, labels: [String: String],
    chunkBytes: Int, resume: Bool, progress: (@Sendable (Int64) -> Void)?, commitSent: (@Sendable () -> Void)?,
    stat: @escaping @Sendable (Bool) -> Req,
    data: @escaping @Sendable (Int64, Data) -> Req,
    commit: @escaping @Sendable (Int64) -> Req,
    reply: @escaping @Sendable (Resp) -> WriteReply,
    call: (
      StreamingClientRequest<Req>, @escaping @Sendable (StreamingClientResponse<Resp>) async throws -> Void
    ) async throws -> Void
  ) async throws -> UploadResult {
    // The producer needs the answer to its first STAT (where to resume); after that it
    // streams without waiting, sends COMMIT and half-closes at once. Half-closing before
    // the server ends the stream matters: containerd's server ends it right after the
    // commit, and a grpc-go server resets streams the client has not closed.
    let (firstReply, firstReplySink) = AsyncThrowingStream.makeStream(of: WriteReply.self)
    let last = ReplyBox()
    let request = StreamingClientRequest<Req>(metadata: metadata) { writer in
      do {
        // The STAT opens the ingest (it carries the ref, size and expected digest).
        try await writer.write(stat(true))
        var offset: Int64 = 0
        if resume {
          var iterator = firstReply.makeAsyncIterator()
          guard let first = try await iterator.next() else {
            throw ContentError.unavailable("write stream ended before the server answered")
          }
          let serverDigest = try Digest(parsing: first.digest)
          offset = try await source.prepare(resumeAt: first.offset, digest: serverDigest)
        }
        last.started(resumedFrom: offset)
        while let chunk = try await source.next(maxBytes: chunkBytes) {
          try await writer.write(data(offset, chunk))
          offset += Int64(chunk.count)
        }
        last.sent(offset)
        commitSent?()
        try await writer.write(commit(offset))
      } catch let e as ContentError {
        // The source's own failure (stdin that does not match what the server holds, a
        // read error): gRPC reports only that the stream was cancelled, so keep the reason.
        last.producerFailed(e)
        throw e
      }
    }
    do {
      try await call(request) { response in
        do {
          var isFirst = true
          for try await m in response.messages {
            let r = reply(m)
            last.received(r)
            progress?(r.offset)
            if isFirst {
              firstReplySink.yield(r)
              isFirst = false
            }
          }
          firstReplySink.finish()
        } catch {
          firstReplySink.finish(throwing: error)
          throw error
        }
      }
    } catch let e as RPCError where e.code == .alreadyExists {
      // Either the expected digest was already there, or the commit found the content
      // committed: the last acknowledged write carries the digest of everything sent.
      if let expected { return UploadResult(digest: expected, size: size, resumedFrom: 0, alreadyExisted: true) }
      if let (digest, size, resumed) = last.complete() {
        return UploadResult(digest: digest, size: size, resumedFrom: resumed, alreadyExisted: true)
      }
      throw e
    } catch {
      throw last.producerError ?? error
    }
    guard let result = last.committed() else {
      throw ContentError.unavailable("write stream ended before the commit was acknowledged")
    }
    return result
  }
}
/// What an upload saw: the last reply, the bytes sent and where it resumed.
final class ReplyBox: @unchecked Sendable {
  private let lock = NSLock()
  private var reply: WriteReply?
  private var sentBytes: Int64?
  private var resumed: Int64 = 0
  private var producerFailure: ContentError?
  func received(_ r: WriteReply) { lock.withLock { reply = r } }
  func producerFailed(_ e: ContentError) { lock.withLock { producerFailure = e } }
  var producerError: ContentError? { lock.withLock { producerFailure } }
  func started(resumedFrom: Int64) { lock.withLock { resumed = resumedFrom } }
  func sent(_ n: Int64) { lock.withLock { sentBytes = n } }

  /// The blob, when the server acknowledged the commit.
  func committed() -> UploadResult? {
    lock.withLock {
      guard let reply, reply.committed, let d = try? Digest(parsing: reply.digest) else { return nil }
      return UploadResult(digest: d, size: reply.offset, resumedFrom: resumed)
    }
  }

  /// The digest of everything sent, when every byte was acknowledged.
  func complete() -> (Digest, Int64, Int64)? {
    lock.withLock {
      guard let reply, let sentBytes, reply.offset == sentBytes, let d = try? Digest(parsing: reply.digest) else { return nil }
      return (d, sentBytes, resumed)
    }
  }
}
