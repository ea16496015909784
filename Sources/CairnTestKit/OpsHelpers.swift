import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A GET over a real TCP socket (HTTP/1.0, so the server closes when done): status and
/// body. On a thread of its own: a node's status page can take seconds (it asks every
/// peer), and a test's task must not block the cooperative pool (OutputPipe.nextChunk).
public func httpGet(_ hostPort: String, _ path: String, headers: [String: String] = [:]) async throws -> (status: Int, body: String) {
  try await withCheckedThrowingContinuation { c in
    Thread.detachNewThread { c.resume(with: Result { try blockingGet(hostPort, path, headers: headers) }) }
  }
}

private func blockingGet(_ hostPort: String, _ path: String, headers: [String: String]) throws -> (status: Int, body: String) {
  let parts = hostPort.split(separator: ":")
  guard parts.count == 2, let port = UInt16(parts[1]) else { throw ServerProcessError("bad address \(hostPort)") }
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw ServerProcessError("socket failed") }
  defer { close(fd) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_port = port.bigEndian
  inet_pton(AF_INET, String(parts[0]), &addr.sin_addr)
  let connected = withUnsafePointer(to: &addr) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard connected == 0 else { throw ServerProcessError("connect to \(hostPort) failed: errno \(errno)") }
  let extra = headers.map { "\($0.key): \($0.value)\r\n" }.joined()
  let request = Array("GET \(path) HTTP/1.0\r\nHost: \(hostPort)\r\n\(extra)\r\n".utf8)
  guard write(fd, request, request.count) == request.count else { throw ServerProcessError("write failed") }
  var response = [UInt8]()
  var buffer = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = read(fd, &buffer, buffer.count)
    if n <= 0 { break }
    response += buffer[0..<n]
  }
  let text = String(decoding: response, as: UTF8.self)
  guard let headEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
    throw ServerProcessError("not an HTTP response from \(hostPort)\(path): \(text.prefix(100))")
  }
  return (status, String(text[headEnd.upperBound...]))
}

/// A test PKI made with the openssl command (what an operator with their own CA does; the
/// roles are SAN URIs, as `cairn certs` writes them): a cluster CA; a peer certificate per
/// node (`cairn://peer/NODE`, for 127.0.0.1 and localhost, server and client use); an
/// operator and a client certificate; one from the cluster CA without a role; and a
/// "rogue" peer certificate for n1 from another CA.
public struct TestPKI: Sendable {
  public let dir: String
  public var ca: String { dir + "/ca.pem" }
  public func peerCert(_ node: String) -> String { dir + "/peer-\(node).pem" }
  public func peerKey(_ node: String) -> String { dir + "/peer-\(node).key" }
  /// Node n1's certificate (single-node tests).
  public var nodeCert: String { peerCert("n1") }
  public var nodeKey: String { peerKey("n1") }
  public var operatorCert: String { dir + "/operator.pem" }
  public var operatorKey: String { dir + "/operator.key" }
  /// A client certificate: `cairn://client/ci`.
  public var clientCert: String { dir + "/client.pem" }
  public var clientKey: String { dir + "/client.key" }
  public var noRoleCert: String { dir + "/norole.pem" }
  public var noRoleKey: String { dir + "/norole.key" }
  public var rogueCert: String { dir + "/rogue.pem" }
  public var rogueKey: String { dir + "/rogue.key" }

  /// The TLS flags of node `id` of a cluster using this PKI.
  public func nodeArgs(_ id: String) -> [String] { ["--tls-cert", peerCert(id), "--tls-key", peerKey(id), "--tls-ca", ca] }

  public init(in dir: String, nodes: [String] = ["n1"]) async throws {
    self.dir = dir
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let peers = nodes.map { "leaf peer-\($0) ca URI:cairn://peer/\($0),DNS:localhost,IP:127.0.0.1" }.joined(separator: "; ")
    let script = """
      set -e
      cd "$1"
      ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$1" -keyout $1.key -out $1.pem; }
      leaf() {
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" -keyout $1.key -out $1.csr
        printf 'subjectAltName=%s\\nextendedKeyUsage=serverAuth,clientAuth\\n' "$3" > $1.ext
        openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 -extfile $1.ext -out $1.pem
      }
      ca ca; ca other
      \(peers)
      leaf operator ca URI:cairn://operator/admin
      leaf client ca URI:cairn://client/ci
      leaf norole ca DNS:localhost
      leaf rogue other URI:cairn://peer/n1,DNS:localhost,IP:127.0.0.1
      """
    let (status, _, err) = try await runTool("/bin/sh", ["-c", script, "pki", dir])
    guard status == 0 else { throw ServerProcessError("openssl failed: \(err)") }
  }
}
