import ArgumentParser
import CairnCore
import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// What a secure cluster needs, made in one command: a CA, node certificates with the peer
/// role, operator and client certificates (docs/operations.md, Security). The role is a
/// SAN URI (`cairn://peer/NODE`, ...), which any CA tool can set too (cert-manager's
/// `uris`, openssl's `subjectAltName=URI:...`).
struct CertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "certs", abstract: "Make the certificates of a secure cluster: a CA, node (peer), operator and client certificates.",
    subcommands: [CertsInit.self, CertsIssue.self])
}

struct CertsInit: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "init",
    abstract: "A new cluster CA, a peer certificate per node, an operator certificate and client certificates.",
    discussion: """
      Writes DIR/ca.pem and DIR/ca.key (keep the key offline; `cairn certs issue` needs it to add nodes and clients), \
      ROLE-NAME.pem / ROLE-NAME.key for each certificate (keys P-256, mode 0600), and DIR/tokens, a tokens_file \
      granting the token in DIR/monitor.token the monitor permission (Prometheus, the dashboard). With \
      --kubernetes NAMESPACE it also writes DIR/kubernetes-secrets.yaml: the Secrets deploy/kubernetes mounts \
      (cairn-tls: ca.pem and the peer files, never ca.key; cairn-tokens; cairn-monitor-token).
      """)

  @Option(help: "Directory to write into (created; existing files are not overwritten).") var dir = "cairn-certs"
  @Option(help: "Node ids, comma separated: one peer certificate each.") var nodes: String
  @Option(help: "Host names and IP addresses the nodes are reached at (their server certificates), comma separated; wildcards like *.cairn-peers.cairn.svc.cluster.local allowed. localhost and 127.0.0.1 are always included.")
  var hosts = ""
  @Option(help: "Operator certificate names, comma separated (membership changes, cluster views).") var operators = "admin"
  @Option(help: "Client certificate names, comma separated (each a client identity: a containerd host's agent, a build runner).")
  var clients = ""
  @Option(help: "Days the certificates are valid.") var days = 365
  @Option(help: "Also write the Kubernetes Secrets of deploy/kubernetes for this namespace.") var kubernetes: String?

  func run() async throws {
    let pki = try PKIDirectory(dir)
    let ca = try pki.createCA(days: days)
    var made = [("CA", "ca.pem", "ca.key")]
    let hostList = split(hosts)
    for node in split(nodes) { made.append(try pki.issue(.peer(node), hosts: hostList, days: days, ca: ca)) }
    for name in split(operators) { made.append(try pki.issue(.operatorRole(name), hosts: [], days: days, ca: ca)) }
    for name in split(clients) { made.append(try pki.issue(.client(try ClientID(name)), hosts: [], days: days, ca: ca)) }
    let (monitorToken, monitorLine) = TokenTable.newToken(client: "*", permissions: [.monitor])
    try pki.write("tokens", "# tokens_file (cairn token new ... appends more): who may call this cluster with a bearer token\n\(monitorLine)\n")
    try pki.write("monitor.token", monitorToken + "\n")
    made.append(("monitor token", "tokens", "monitor.token"))
    if let namespace = kubernetes {
      let peers = split(nodes).flatMap { ["peer-\($0).pem", "peer-\($0).key"] }
      try pki.write(
        "kubernetes-secrets.yaml",
        try pki.secret("cairn-tls", namespace: namespace, files: ["ca.pem"] + peers)
          + "---\n" + (try pki.secret("cairn-tokens", namespace: namespace, files: ["tokens"]))
          + "---\n" + (try pki.secret("cairn-monitor-token", namespace: namespace, files: ["monitor.token"])))
      made.append(("Kubernetes Secrets", "kubernetes-secrets.yaml", "-"))
    }
    print(textTable([["WHAT", "FILE", "KEY / SECRET"]] + made.map { [$0.0, "\(dir)/\($0.1)", $0.2 == "-" ? "" : "\(dir)/\($0.2)"] }))
    let first = split(nodes).first ?? "n1"
    print(
      """

      Each node:   tls_cert = \(dir)/peer-NODE.pem, tls_key = \(dir)/peer-NODE.key, tls_ca = \(dir)/ca.pem
                   (e.g. cairn serve --node-id \(first) --tls-cert \(dir)/peer-\(first).pem --tls-key \(dir)/peer-\(first).key --tls-ca \(dir)/ca.pem ...)
      Operators:   CAIRN_TLS_CA=\(dir)/ca.pem CAIRN_TLS_CERT=\(dir)/operator-\(split(operators).first ?? "admin").pem CAIRN_TLS_KEY=... cairn cluster status
      Clients:     --tls-ca, --tls-cert client-NAME.pem, --tls-key client-NAME.key (or a token: cairn token new)
      Tokens:      tokens_file = \(dir)/tokens; Prometheus and the dashboard use the token in \(dir)/monitor.token
      Keep \(dir)/ca.key away from the nodes; `cairn certs issue --dir \(dir)` uses it to add more.
      """)
  }
}

struct CertsIssue: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "issue", abstract: "One more certificate from an existing CA (a new node, operator or client).")

  @Option(help: "Directory holding ca.pem and ca.key; the new files go there too.") var dir = "cairn-certs"
  @Option(help: "peer (a node), operator or client.") var role: String
  @Argument(help: "The node id, operator name or client identity.") var name: String
  @Option(help: "Host names and IP addresses (peers: what clients connect to), comma separated.") var hosts = ""
  @Option(help: "Days the certificate is valid.") var days = 365

  func run() async throws {
    let pki = try PKIDirectory(dir)
    let ca = try pki.loadCA()
    let which: CertificateRole
    switch role {
    case "peer": which = .peer(try ClientID(name).name)
    case "operator": which = .operatorRole(try ClientID(name).name)
    case "client": which = .client(try ClientID(name))
    default: throw ValidationError("--role is peer, operator or client")
    }
    let (what, cert, key) = try pki.issue(which, hosts: split(hosts), days: days, ca: ca)
    print("\(what): \(dir)/\(cert), key \(dir)/\(key)")
  }
}

private func split(_ list: String) -> [String] { list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

/// A directory of PEM files: the CA and what it signed.
struct PKIDirectory {
  let dir: String

  init(_ dir: String) throws {
    self.dir = dir
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  struct Authority {
    let certificate: Certificate
    let key: Certificate.PrivateKey
  }

  func createCA(days: Int) throws -> Authority {
    let key = P256.Signing.PrivateKey()
    let name = try DistinguishedName {
      OrganizationName("Cairn")
      CommonName("Cairn cluster CA")
    }
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
      notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
      issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        Critical(KeyUsage(keyCertSign: true, cRLSign: true))
      },
      issuerPrivateKey: .init(key))
    try write("ca.pem", try certificate.serializeAsPEM().pemString)
    try write("ca.key", try Certificate.PrivateKey(key).serializeAsPEM().pemString)
    return Authority(certificate: certificate, key: .init(key))
  }

  func loadCA() throws -> Authority {
    func text(_ name: String) throws -> String {
      guard let data = FileManager.default.contents(atPath: "\(dir)/\(name)") else { throw ValidationError("\(dir)/\(name) cannot be read") }
      return String(decoding: data, as: UTF8.self)
    }
    return Authority(certificate: try Certificate(pemEncoded: try text("ca.pem")), key: try Certificate.PrivateKey(pemEncoded: try text("ca.key")))
  }

  /// A certificate for `role`, signed by `ca`: (what, certificate file, key file).
  func issue(_ role: CertificateRole, hosts: [String], days: Int, ca: Authority) throws -> (String, String, String) {
    let key = P256.Signing.PrivateKey()
    let (kind, name): (String, String) =
      switch role {
      case .peer(let n): ("peer", n)
      case .operatorRole(let n): ("operator", n)
      case .client(let c): ("client", c.name)
      }
    var names: [GeneralName] = [.uniformResourceIdentifier(role.uri)]
    var usages: [ExtendedKeyUsage.Usage] = [.clientAuth]
    if kind == "peer" {
      // A node is a server to its clients and peers, and a client of its peers.
      usages.append(.serverAuth)
      for host in Array(Set(hosts + ["localhost", "127.0.0.1", "::1"])).sorted() {
        if let ip = ipBytes(host) {
          names.append(.ipAddress(ASN1OctetString(contentBytes: ip[...])))
        } else {
          names.append(.dnsName(host))
        }
      }
    }
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
      notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
      issuer: ca.certificate.subject,
      subject: try DistinguishedName {
        OrganizationName("Cairn")
        CommonName("\(kind) \(name)")
      },
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
        try ExtendedKeyUsage(usages)
        SubjectAlternativeNames(names)
      },
      issuerPrivateKey: ca.key)
    let base = "\(kind)-\(name)"
    try write("\(base).pem", try certificate.serializeAsPEM().pemString + "\n")
    try write("\(base).key", try Certificate.PrivateKey(key).serializeAsPEM().pemString + "\n")
    return (role.uri, "\(base).pem", "\(base).key")
  }

  private func ipBytes(_ host: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
  }

  /// A Kubernetes Secret holding `files` of this directory (by their names).
  func secret(_ name: String, namespace: String, files: [String]) throws -> String {
    var out = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: \(name)\n  namespace: \(namespace)\ntype: Opaque\nstringData:\n"
    for file in files {
      guard let data = FileManager.default.contents(atPath: "\(dir)/\(file)") else { throw ValidationError("\(dir)/\(file) cannot be read") }
      out += "  \(file): |\n" + String(decoding: data, as: UTF8.self).split(separator: "\n").map { "    \($0)\n" }.joined()
    }
    return out
  }

  /// Creates the file owner-only; an existing file is an error (never overwrite keys).
  func write(_ name: String, _ text: String) throws {
    let path = "\(dir)/\(name)"
    let secret = name.hasSuffix(".key") || name.hasSuffix(".token") || name.hasSuffix("secrets.yaml")
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, secret ? 0o600 : 0o644)
    guard fd >= 0 else {
      throw ValidationError(errno == EEXIST ? "\(path) exists already; remove it or choose another --dir" : "cannot create \(path): errno \(errno)")
    }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard Glibc.write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else { throw ValidationError("cannot write \(path)") }
  }
}
