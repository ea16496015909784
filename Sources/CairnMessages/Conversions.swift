import CairnCore
import Foundation
import SwiftProtobuf

// Domain values to and from their protobuf forms: the one place both ends convert.

extension Google_Protobuf_Timestamp {
  public init(_ t: Timestamp) {
    self.init()
    seconds = t.seconds
    nanos = t.nanos
  }
}

extension Timestamp {
  public init(_ t: Google_Protobuf_Timestamp) { self.init(seconds: t.seconds, nanos: t.nanos) }
}

extension Containerd_Services_Content_V1_Info {
  public init(_ info: BlobInfo) {
    self.init()
    digest = info.digest.description
    size = info.size
    createdAt = .init(info.createdAt)
    updatedAt = .init(info.updatedAt)
    labels = info.labels
  }
}

extension Containerd_Services_Content_V1_Status {
  public init(_ s: IngestStatus) {
    self.init()
    ref = s.ref
    offset = s.offset
    total = s.total
    expected = s.expected?.description ?? ""
    startedAt = .init(s.startedAt)
    updatedAt = .init(s.updatedAt)
  }
}

extension Containerd_V1_StatusResponse {
  public init(_ s: IngestStatus) {
    self.init()
    ref = s.ref
    offset = s.offset
    startedAt = .init(s.startedAt)
    updatedAt = .init(s.updatedAt)
  }
}

extension BlobInfo {
  public init(_ i: Containerd_Services_Content_V1_Info) throws {
    self.init(
      digest: try Digest(parsing: i.digest), size: i.size, createdAt: Timestamp(i.createdAt),
      updatedAt: Timestamp(i.updatedAt), labels: i.labels)
  }
}

extension IngestStatus {
  public init(_ s: Containerd_Services_Content_V1_Status) throws {
    self.init(
      ref: s.ref, offset: s.offset, total: s.total, expected: try Digest.parseOptional(s.expected),
      startedAt: Timestamp(s.startedAt), updatedAt: Timestamp(s.updatedAt))
  }
}
