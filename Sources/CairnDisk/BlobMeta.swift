import CairnCore
import Foundation

/// What containerd keeps about a blob in its own database and content/local keeps in
/// memory: labels and the last update time. Stored as a small JSON file per blob, written
/// only when there is something to say (most blobs have no labels and cost no extra file).
struct BlobMeta: Codable, Sendable, Equatable {
  var labels: [String: String]
  var updatedAt: String

  /// Reads what `encoded` wrote: never more than `max_metadata_bytes`, which every update
  /// and commit checked (LabelRules.validateStored) before writing.
  static func read(_ path: String, limits: Limits) throws(ContentError) -> BlobMeta? {
    guard POSIX.exists(path) else { return nil }
    let data: Data
    do throws(ContentError) {
      data = try POSIX.readFile(path, limit: limits.maxMetadataBytes)
    } catch {
      if error.code == .notFound { return nil }
      throw error
    }
    do {
      return try JSONDecoder().decode(BlobMeta.self, from: data)
    } catch {
      throw ContentError(.dataLoss, "corrupt metadata file: \(error)", detail: path)
    }
  }

  func encoded() throws(ContentError) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do { return try encoder.encode(self) } catch { throw .internalError("metadata cannot be encoded: \(error)") }
  }

  /// Info from the blob's file (size; mtime = commit time, set exactly at commit) and
  /// its optional metadata.
  static func info(_ digest: Digest, blob: POSIX.FileStat, meta: BlobMeta?) -> BlobInfo {
    let updated = meta.flatMap { Timestamp(rfc3339: $0.updatedAt) } ?? blob.mtime
    return BlobInfo(
      digest: digest, size: blob.size, createdAt: blob.mtime, updatedAt: max(updated, blob.mtime),
      labels: meta?.labels ?? [:])
  }
}
