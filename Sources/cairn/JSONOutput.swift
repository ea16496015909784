import CairnCore
import Foundation

/// What `--json` prints: one object (or array) per answer, keys sorted, times RFC 3339,
/// sizes in bytes. The field names are the CLI's contract with scripts: add, never rename.
enum JSONOutput {
  struct Blob: Encodable {
    let digest: String
    let size: Int64
    let created: String
    let updated: String
    let labels: [String: String]
    init(_ i: BlobInfo) {
      digest = i.digest.description
      size = i.size
      created = i.createdAt.rfc3339
      updated = i.updatedAt.rfc3339
      labels = i.labels
    }
  }

  struct Upload: Encodable {
    let ref: String
    let offset: Int64
    let total: Int64
    let expected: String?
    let started: String
    let updated: String
    init(_ s: IngestStatus) {
      ref = s.ref
      offset = s.offset
      total = s.total
      expected = s.expected?.description
      started = s.startedAt.rfc3339
      updated = s.updatedAt.rfc3339
    }
  }

  static func print<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    Swift.print(String(decoding: try encoder.encode(value), as: UTF8.self))
  }
}
