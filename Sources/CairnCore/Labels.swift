/// containerd's label rules and its Update field-mask semantics.
public enum LabelRules {
  public static func validate(_ labels: [String: String], limits: Limits = .default) throws(ContentError) {
    // Client holds (ScopedStore) have their own limit, maxHoldersPerBlob.
    let count = labels.keys.count { !ScopedStore.isReservedLabel($0) }
    if count > limits.maxLabelsPerBlob {
      throw .invalidArgument(
        "\(count) labels, over the limit max_labels_per_blob = \(limits.maxLabelsPerBlob)")
    }
    for (k, v) in labels {
      if k.isEmpty { throw .invalidArgument("label key must not be empty") }
      let n = k.utf8.count + v.utf8.count
      if n > limits.maxLabelBytes {
        throw .invalidArgument(
          "label key and value length (\(n) bytes) greater than maximum size (\(limits.maxLabelBytes) bytes), key: \(quoted(k, limit: 64)) (limit max_label_bytes)"
        )
      }
    }
  }

  /// Applies an Update: no paths (or "labels") replaces all labels; "labels.KEY" sets or,
  /// with an empty or absent value, removes one key; any other path is INVALID_ARGUMENT.
  public static func applyUpdate(
    current: [String: String], requested: [String: String], fieldPaths: [String]
  ) throws(ContentError) -> [String: String] {
    if fieldPaths.isEmpty { return requested.filter { !$0.value.isEmpty } }
    var result = current
    var replaceAll = false
    var keyed: [String: String] = [:]
    for path in fieldPaths {
      if path == "labels" {
        replaceAll = true
      } else if path.hasPrefix("labels.") {
        let key = String(path.dropFirst("labels.".count))
        keyed[key] = requested[key] ?? ""
      } else {
        throw .invalidArgument("cannot update \(quoted(path)) field on content info")
      }
    }
    if replaceAll { result = requested }
    for (k, v) in keyed { result[k] = v }
    return result.filter { !$0.value.isEmpty }
  }
}
