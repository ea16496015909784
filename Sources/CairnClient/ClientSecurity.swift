import CairnCore
import CairnTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOSSL
import Synchronization
import X509

/// How a client proves itself and checks the server: TLS trust, an optional client
/// certificate (mTLS: peers present their node certificate), an optional bearer token.
public struct ClientSecurity: Sendable, Hashable {
  /// PEM file of the CA that signed the server's certificate; nil = plaintext.
  public var caPath: String?
  /// PEM files of this client's certificate chain and key (mTLS).
  public var certificatePath: String?
  public var keyPath: String?
  /// Check the server certificate's name against the address (off for peers: pod
  /// addresses change, the cluster CA is what identifies a member).
  public var verifyHostname = true
  /// Sent as `authorization: Bearer TOKEN` on every call.
  public var token: String?
  /// Who the server must be, by its certificate's role: a node calling a peer checks that
  /// the server at the peer's address *is* that peer (`cairn://peer/ID`), not merely a
  /// holder of some certificate from the cluster CA (which would let anyone who takes over
  /// an address, with a client's or a role-less certificate, serve it a cluster config).
  public var serverRole: ServerRole?

  public enum ServerRole: Sendable, Hashable {
    /// The node with this id.
    case peer(String)
    /// Some node of the cluster (a seed to join through).
    case anyPeer

    func admits(_ role: CertificateRole?) -> Bool {
      guard case .peer(let name) = role else { return false }
      switch self {
      case .peer(let expected): return name == expected
      case .anyPeer: return true
      }
    }
  }

  public init(caPath: String? = nil, certificatePath: String? = nil, keyPath: String? = nil, verifyHostname: Bool = true, token: String? = nil) {
    self.caPath = caPath
    self.certificatePath = certificatePath
    self.keyPath = keyPath
    self.verifyHostname = verifyHostname
    self.token = token
  }

  public static let none = ClientSecurity()

  /// What clients use unless told otherwise: the CLI sets it once from its flags and
  /// environment (`cairn --tls-ca ... --token ...`), before it connects anywhere.
  public static var current: ClientSecurity {
    get { processDefault.withLock { $0 } }
    set { processDefault.withLock { $0 = newValue } }
  }
  private static let processDefault = Mutex(ClientSecurity.fromEnvironment())

  /// The CLI's credentials from CAIRN_TLS_CA, CAIRN_TLS_CERT, CAIRN_TLS_KEY and
  /// CAIRN_TOKEN (flags override them).
  public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> ClientSecurity {
    ClientSecurity(
      caPath: env["CAIRN_TLS_CA"].flatMap { $0.isEmpty ? nil : $0 },
      certificatePath: env["CAIRN_TLS_CERT"].flatMap { $0.isEmpty ? nil : $0 },
      keyPath: env["CAIRN_TLS_KEY"].flatMap { $0.isEmpty ? nil : $0 },
      token: env["CAIRN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
  }

  func transportSecurity(for address: ServerAddress) throws(ContentError) -> HTTP2ClientTransport.Posix.TransportSecurity {
    // Unix sockets never speak TLS (their file permissions protect them), so a CA set in
    // the environment for a cluster's TCP addresses does not break local calls.
    if case .unix = address { return .plaintext }
    guard let caPath else {
      if certificatePath != nil { throw .invalidArgument("a client certificate needs the server's CA too (--tls-ca)") }
      return .plaintext
    }
    for path in [caPath, certificatePath, keyPath].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
      throw .invalidArgument("TLS file \(path) cannot be read")
    }
    let verify: TLSConfig.CertificateVerification = verifyHostname ? .fullVerification : .noHostnameVerification
    let roots = TLSConfig.TrustRootsSource.certificates([.file(path: caPath, format: .pem)])
    if let certificatePath {
      guard let keyPath else { throw .invalidArgument("a client certificate needs its key (--tls-key)") }
      let reloader = FileCertificateReloader(certificatePath: certificatePath, keyPath: keyPath)
      let check = try serverRole.map { role throws(ContentError) in try Self.roleCheck(role, caPath: caPath) }
      do {
        return try .mTLS(certificateReloader: reloader) {
          $0.trustRoots = roots
          $0.serverCertificateVerification = verify
          if let check { $0.customVerificationCallback = check }
        }
      } catch {
        throw .invalidArgument("client certificate \(certificatePath) or key \(keyPath) cannot be loaded: \(error)")
      }
    }
    return .tls {
      $0.trustRoots = roots
      $0.serverCertificateVerification = verify
    }
  }

  /// Verifies the server's chain against the CA (as BoringSSL would; a custom callback
  /// replaces its check) and then its role.
  static func roleCheck(_ role: ServerRole, caPath: String) throws(ContentError)
    -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void
  {
    let roots: [Certificate]
    do {
      roots = try NIOSSLCertificate.fromPEMFile(caPath).map { try Certificate(derEncoded: try $0.toDERBytes()) }
    } catch {
      throw .invalidArgument("the CA \(caPath) cannot be read as PEM certificates: \(error)")
    }
    return { presented, promise in
      let chain: [Certificate]
      do { chain = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) } } catch {
        promise.succeed(.failed)
        return
      }
      guard let leaf = chain.first else { return promise.succeed(.failed) }
      promise.completeWithTask {
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) { RFC5280Policy(validationTime: Date()) }
        guard case .validCertificate = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst())) else {
          return .failed
        }
        return role.admits(CertificateRole.from(uris: CertificateURIs.of(leaf))) ? .certificateVerified(VerificationMetadata(nil)) : .failed
      }
    }
  }

  public var interceptors: [any ClientInterceptor] {
    token.map { [BearerTokenInterceptor(token: $0)] } ?? []
  }
}

/// Adds the bearer token to every call.
struct BearerTokenInterceptor: ClientInterceptor {
  let token: String

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingClientRequest<Input>, context: ClientContext,
    next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
  ) async throws -> StreamingClientResponse<Output> {
    var request = request
    request.metadata.replaceOrAddString("Bearer \(token)", forKey: "authorization")
    return try await next(request, context)
  }
}
