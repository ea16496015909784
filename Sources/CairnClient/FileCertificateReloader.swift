import Foundation
import NIOCertificateReloading
import NIOSSL
import Synchronization

/// A node's certificate and key as its peers see them, re-read when the files change.
/// NIOSSL asks for them at every handshake, so a renewed certificate is presented on the
/// next connection without a restart (the server side has its own reload: ServerTLS).
/// A renewal that does not parse keeps the previous pair.
final class FileCertificateReloader: CertificateReloader, Sendable {
  private struct Loaded {
    var stamp: String
    var override: NIOSSLContextConfigurationOverride
  }

  let certificatePath: String
  let keyPath: String
  private let loaded = Mutex<Loaded?>(nil)

  init(certificatePath: String, keyPath: String) {
    self.certificatePath = certificatePath
    self.keyPath = keyPath
  }

  var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
    let stamp = Self.stamp(certificatePath) + "|" + Self.stamp(keyPath)
    if let current = loaded.withLock({ $0 }), current.stamp == stamp { return current.override }
    guard let chain = try? NIOSSLCertificate.fromPEMFile(certificatePath), !chain.isEmpty,
      let key = try? NIOSSLPrivateKey(file: keyPath, format: .pem)
    else {
      return loaded.withLock { $0?.override } ?? .noChanges
    }
    var override = NIOSSLContextConfigurationOverride()
    override.certificateChain = chain.map { .certificate($0) }
    override.privateKey = .privateKey(key)
    loaded.withLock { $0 = Loaded(stamp: stamp, override: override) }
    return override
  }

  /// Modification time and size: changes when a renewal rewrites or replaces the file.
  private static func stamp(_ path: String) -> String {
    var st = stat()
    guard stat(path, &st) == 0 else { return "missing" }
    return "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec).\(st.st_size).\(st.st_ino)"
  }
}
