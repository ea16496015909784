import CairnCore
import GRPCNIOTransportHTTP2

/// A server address as users write it: `HOST:PORT`, `tcp://HOST:PORT`, `unix:///path` or
/// a bare socket path.
public enum ServerAddress: Sendable, Hashable, CustomStringConvertible {
  case tcp(host: String, port: Int)
  case unix(path: String)

  public init(parsing text: String) throws(ContentError) {
    if text.hasPrefix("unix://") {
      let path = String(text.dropFirst("unix://".count))
      guard !path.isEmpty else { throw .invalidArgument("empty unix socket path in \(quoted(text))") }
      self = .unix(path: path)
      return
    }
    if text.hasPrefix("/") || text.hasPrefix("./") {
      self = .unix(path: text)
      return
    }
    let hostPort = text.hasPrefix("tcp://") ? String(text.dropFirst("tcp://".count)) : text
    guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]),
      (0...65535).contains(port)
    else {
      throw .invalidArgument("address \(quoted(text)) is not HOST:PORT, tcp://HOST:PORT or unix:///PATH")
    }
    var host = String(hostPort[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
  }

  public var description: String {
    switch self {
    case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    case .unix(let path): "unix://\(path)"
    }
  }

  public var target: any ResolvableTarget {
    switch self {
    case .unix(let path):
      return .unixDomainSocket(path: path)
    case .tcp(let host, let port):
      let isIPv4 = host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
      if isIPv4 { return .ipv4(host: host, port: port) }
      if host.contains(":") { return .ipv6(host: host, port: port) }
      return .dns(host: host, port: port)
    }
  }
}
