import X509

/// The subject alternative name URIs of a certificate: where a Cairn certificate carries its
/// role (`cairn://peer/NODE`, …; CairnCore's CertificateRole reads them). Both ends need
/// them: a node to know who called it, a node to know whom it called.
public enum CertificateURIs {
  public static func of(_ certificate: Certificate) -> [String] {
    guard let names = try? certificate.extensions.subjectAlternativeNames else { return [] }
    return names.compactMap { if case .uniformResourceIdentifier(let u) = $0 { u } else { nil } }
  }
}
