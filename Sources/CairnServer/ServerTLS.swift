import CairnCore
import Crypto
import Foundation
import NIOCore
import CairnTransport
import NIOSSL
import Synchronization
import X509

/// TLS on a node's TCP listener. The context is rebuilt when the files change
/// (`reloadIfChanged`, run periodically), so a renewed certificate is served to new
/// connections without a restart; a broken renewal is logged and the old one kept.
///
/// Client certificates: with a cluster CA, a certificate is asked for and, if presented,
/// must chain to that CA (a peer with another CA's certificate fails the handshake).
/// Optional unless `requireClientCertificate`: clients may come with a token instead,
/// while the peer protocol needs the certificate (AccessControl).
public final class ServerTLS: Sendable {
  public struct Settings: Sendable, Hashable {
    public var certificatePath: String
    public var keyPath: String
    public var clientCAPath: String?
    public var requireClientCertificate = false

    public init(certificatePath: String, keyPath: String, clientCAPath: String? = nil, requireClientCertificate: Bool = false) {
      self.certificatePath = certificatePath
      self.keyPath = keyPath
      self.clientCAPath = clientCAPath
      self.requireClientCertificate = requireClientCertificate
    }
  }

  public let settings: Settings
  private let state: Mutex<(context: NIOSSLContext, fingerprint: String)>

  public init(_ settings: Settings) throws(ContentError) {
    self.settings = settings
    let (context, fingerprint) = try Self.load(settings)
    state = Mutex((context, fingerprint))
  }

  var context: NIOSSLContext { state.withLock { $0.context } }

  /// Re-reads the files; true if they changed and the new ones are now served.
  public func reloadIfChanged() throws(ContentError) -> Bool {
    let now = try Self.fingerprint(settings)
    guard now != state.withLock({ $0.fingerprint }) else { return false }
    let (context, fingerprint) = try Self.load(settings)
    state.withLock { $0 = (context, fingerprint) }
    return true
  }

  /// Adds the TLS handler in front of gRPC's HTTP/2 handlers of an accepted connection.
  func install(on channel: any Channel) throws {
    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), position: .first)
  }

  /// The Cairn role of the (first) certificate in a PEM file: what its holder is.
  public static func role(ofCertificateAt path: String) throws(ContentError) -> CertificateRole? {
    let text = String(decoding: try read(path, "certificate"), as: UTF8.self)
    guard let end = text.range(of: "-----END CERTIFICATE-----") else {
      throw .invalidArgument("\(path): no PEM certificate in it")
    }
    do {
      let certificate = try Certificate(pemEncoded: String(text[..<end.upperBound]))
      return CertificateRole.from(uris: CertificateURIs.of(certificate))
    } catch {
      throw .invalidArgument("\(path): not a certificate (\(error))")
    }
  }

  private static func read(_ path: String, _ what: String) throws(ContentError) -> Data {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw .invalidArgument("\(what) \(path) cannot be read")
    }
    return data
  }

  private static func fingerprint(_ s: Settings) throws(ContentError) -> String {
    var h = SHA256()
    for (path, what) in [(s.certificatePath, "tls_cert"), (s.keyPath, "tls_key")] + (s.clientCAPath.map { [($0, "tls_client_ca")] } ?? []) {
      h.update(data: try read(path, what))
    }
    return h.finalize().description
  }

  private static func load(_ s: Settings) throws(ContentError) -> (NIOSSLContext, String) {
    let fingerprint = try fingerprint(s)
    do {
      let chain: [NIOSSLCertificate]
      do { chain = try NIOSSLCertificate.fromPEMFile(s.certificatePath) } catch {
        throw ContentError.invalidArgument("tls_cert \(s.certificatePath): not a PEM certificate chain (\(error))")
      }
      guard !chain.isEmpty else { throw ContentError.invalidArgument("tls_cert \(s.certificatePath): no certificate in it") }
      let key: NIOSSLPrivateKey
      do { key = try NIOSSLPrivateKey(file: s.keyPath, format: .pem) } catch {
        throw ContentError.invalidArgument("tls_key \(s.keyPath): not a PEM private key (\(error))")
      }
      var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
      config.minimumTLSVersion = .tlsv12
      // grpc-go (containerd) refuses TLS connections that do not negotiate h2.
      config.applicationProtocols = ["h2"]
      if let ca = s.clientCAPath {
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(ca) } catch {
          throw ContentError.invalidArgument("tls_client_ca \(ca): not a PEM certificate (\(error))")
        }
        config.trustRoots = .certificates(roots)
        config.certificateVerification = s.requireClientCertificate ? .noHostnameVerification : .optionalVerification
      }
      do {
        return (try NIOSSLContext(configuration: config), fingerprint)
      } catch {
        throw ContentError.invalidArgument("tls_cert and tls_key do not make a TLS context (is the key the certificate's?): \(error)")
      }
    } catch let e as ContentError {
      throw e
    } catch {
      throw ContentError.invalidArgument("TLS: \(error)")
    }
  }
}
