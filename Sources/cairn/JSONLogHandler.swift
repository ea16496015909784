import Foundation
import Logging

/// One JSON object per line on standard error: time, level, logger, message, source
/// location and metadata, for log shippers (Loki, Elasticsearch, Cloud Logging).
struct JSONLogHandler: LogHandler {
  let label: String
  var logLevel: Logger.Level = .info
  var metadata: Logger.Metadata = [:]

  init(label: String) { self.label = label }

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    var fields: [String: Any] = [
      "time": Self.timestamp(), "level": event.level.rawValue, "logger": label, "message": event.message.description,
      "source": "\(event.source):\((event.file as NSString).lastPathComponent):\(event.line)",
    ]
    if let error = event.error { fields["error"] = "\(error)" }
    for (k, v) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) where fields[k] == nil {
      fields[k] = Self.plain(v)
    }
    Self.write(fields, to: .standardError)
  }

  /// One line: the fields as a JSON object.
  static func write(_ fields: [String: Any], to handle: FileHandle) {
    guard var data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
    data.append(0x0A)
    handle.write(data)
  }

  /// What `cairn serve` announces on standard output (listening, data directory, …) as a
  /// JSON line of the same shape, whatever the log level.
  static func announce(_ message: String) {
    write(["time": timestamp(), "level": "notice", "logger": "cairn", "message": message], to: .standardOutput)
  }

  static func plain(_ v: Logger.Metadata.Value) -> Any {
    switch v {
    case .string(let s): s
    case .stringConvertible(let c): c.description
    case .array(let a): a.map(plain)
    case .dictionary(let d): d.mapValues(plain)
    }
  }

  /// One format style for every line (a formatter per line was built and thrown away).
  private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

  static func timestamp() -> String { Date().formatted(timeFormat) }
}
