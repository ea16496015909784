import CairnCore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

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
      do {
        return try .mTLS(certificateReloader: reloader) {
          $0.trustRoots = roots
          $0.serverCertificateVerification = verify
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
