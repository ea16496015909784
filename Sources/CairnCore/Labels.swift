import Foundation

/// containerd's label rules, and the bounds that keep a blob's metadata readable whatever
/// its clients ask for.
///
/// Two levels: what a caller may *request* (`validateRequest`: containerd's per-label size,
/// the label count, and no key under Cairn's reserved prefixes), and what a store may
/// *keep* (`validateStored`: the same sizes for plain labels, client holds capped by
/// `maxHoldersPerBlob`, client-scoped labels allowed their prefix, and the whole metadata
/// within `maxMetadataBytes`, so that it always reads back).
public enum LabelRules {
  /// Keys Cairn writes itself (ScopedStore: holds and client-scoped labels); no API caller
  /// may set them.
  public static let reservedPrefixes = [ScopedStore.holderPrefix, ScopedStore.labelPrefix]

  public static func isReserved(_ key: String) -> Bool { reservedPrefixes.contains { key.bytewiseHasPrefix($0) } }

  /// What a caller may ask for: containerd's rule (key + value ≤ `maxLabelBytes`), at most
  /// `maxLabelsPerBlob` labels, no empty key, no reserved key. Clearing a reserved key
  /// (an operator dropping a stale hold) is allowed: it only takes away.
  public static func validateRequest(_ labels: [String: String], limits: Limits = .default) throws(ContentError) {
    if labels.count > limits.maxLabelsPerBlob {
      throw .invalidArgument("\(labels.count) labels, over the limit max_labels_per_blob = \(limits.maxLabelsPerBlob)")
    }
    for (k, v) in labels {
      if isReserved(k) && !v.isEmpty {
        throw .invalidArgument("label \(quoted(k, limit: 80)) is reserved for Cairn (prefixes \(reservedPrefixes.joined(separator: ", ")))")
      }
      try validateOne(k, v, limit: limits.maxLabelBytes)
    }
  }

  /// What a store may keep after an update or a commit.
  public static func validateStored(_ labels: [String: String], limits: Limits = .default) throws(ContentError) {
    var plain = 0
    var holders = 0
    for (k, v) in labels {
      if k.bytewiseHasPrefix(ScopedStore.holderPrefix) {
        holders += 1
      } else if !k.bytewiseHasPrefix(ScopedStore.labelPrefix) {
        plain += 1
      }
      // A client's label carries its scope's prefix on top of containerd's size.
      try validateOne(k, v, limit: limits.maxLabelBytes + (isReserved(k) ? ScopedStore.maxScopePrefixBytes : 0))
    }
    if plain > limits.maxLabelsPerBlob {
      throw .invalidArgument("\(plain) labels, over the limit max_labels_per_blob = \(limits.maxLabelsPerBlob)")
    }
    if holders > limits.maxHoldersPerBlob {
      throw .resourceExhausted("\(holders) clients hold the blob, over the limit max_holders_per_blob = \(limits.maxHoldersPerBlob)")
    }
    // Labels may not take the room holds need: taking a hold (a client's Info, its upload
    // of the same bytes) must never fail because of other clients' labels.
    let reserve = limits.maxHoldersPerBlob * holdBytes
    let labelBytes = try metadataBytes(holders == 0 ? labels : labels.filter { !$0.key.bytewiseHasPrefix(ScopedStore.holderPrefix) })
    if labelBytes > limits.maxMetadataBytes - metadataEnvelopeBytes - reserve {
      throw .invalidArgument(
        "the blob's labels would take \(labelBytes) bytes encoded, over the limit max_metadata_bytes = \(limits.maxMetadataBytes) (less \(reserve) kept for \(limits.maxHoldersPerBlob) holds and \(metadataEnvelopeBytes) for the rest)")
    }
    let bytes = holders == 0 ? labelBytes : try metadataBytes(labels)
    if bytes > limits.maxMetadataBytes - metadataEnvelopeBytes {
      throw .invalidArgument(
        "the blob's metadata would take \(bytes) bytes encoded, over the limit max_metadata_bytes = \(limits.maxMetadataBytes)")
    }
  }

  /// Room in a metadata file for what is not a label (its update time, the JSON around).
  public static let metadataEnvelopeBytes = 128
  /// One hold, encoded: `"cairn.io/holder.<64-byte client>":"<RFC 3339 time>",` is 116.
  public static let holdBytes = 128

  /// The labels as stored: JSON with sorted keys (what `meta/` files hold). Escaping makes
  /// this up to six times the raw size, which is why the limit is on the encoded form.
  public static func encode(_ labels: [String: String]) throws(ContentError) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do { return try encoder.encode(labels) } catch { throw .internalError("labels cannot be encoded: \(error)") }
  }

  public static func metadataBytes(_ labels: [String: String]) throws(ContentError) -> Int { try encode(labels).count }

  private static func validateOne(_ k: String, _ v: String, limit: Int) throws(ContentError) {
    if k.isEmpty { throw .invalidArgument("label key must not be empty") }
    let n = k.utf8.count + v.utf8.count
    if n > limit {
      throw .invalidArgument(
        "label key and value length (\(n) bytes) greater than maximum size (\(limit) bytes), key: \(quoted(k, limit: 64)) (limit max_label_bytes)"
      )
    }
  }

  /// Applies an Update: no paths (or "labels") replaces all labels; "labels.KEY" sets or,
  /// with an empty or absent value, removes one key; any other path is INVALID_ARGUMENT.
  /// Replacing all labels keeps the reserved ones: they belong to other clients.
  public static func applyUpdate(
    current: [String: String], requested: [String: String], fieldPaths: [String]
  ) throws(ContentError) -> [String: String] {
    var replaceAll = fieldPaths.isEmpty
    var keyed: [String: String] = [:]
    for path in fieldPaths {
      if path == "labels" {
        replaceAll = true
      } else if let key = path.bytewiseRemovingPrefix("labels.") {
        keyed[key] = requested[key] ?? ""
      } else {
        throw .invalidArgument("cannot update \(quoted(path)) field on content info")
      }
    }
    var result = current
    if replaceAll { result = current.filter { isReserved($0.key) }.merging(requested.filter { !isReserved($0.key) }) { $1 } }
    for (k, v) in keyed { result[k] = v }
    return result.filter { !$0.value.isEmpty }
  }
}
