import Crypto
import Foundation

/// Hash algorithms a digest may name. sha256 is canonical: content without an expected
/// digest is identified by its sha256.
public enum DigestAlgorithm: String, Sendable, CaseIterable, Hashable {
  case sha256, sha384, sha512

  public var hexLength: Int {
    switch self {
    case .sha256: 64
    case .sha384: 96
    case .sha512: 128
    }
  }
}

/// `algorithm:hex`, validated as go-digest validates it: a known algorithm, lowercase hex
/// of exactly the algorithm's length.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible {
  public let algorithm: DigestAlgorithm
  public let hex: String

  public init(parsing text: String) throws(ContentError) {
    guard let colon = text.firstIndex(of: ":") else {
      throw .invalidArgument("invalid digest \(quoted(text)): expected algorithm:hex")
    }
    let alg = String(text[..<colon])
    let hex = String(text[text.index(after: colon)...])
    guard let algorithm = DigestAlgorithm(rawValue: alg) else {
      throw .invalidArgument("invalid digest \(quoted(text)): unsupported algorithm \(quoted(alg))")
    }
    guard hex.utf8.count == algorithm.hexLength,
      hex.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
    else {
      throw .invalidArgument(
        "invalid digest \(quoted(text)): want \(algorithm.hexLength) lowercase hex characters")
    }
    self.algorithm = algorithm
    self.hex = hex
  }

  init(algorithm: DigestAlgorithm, hex: String) {
    self.algorithm = algorithm
    self.hex = hex
  }

  public var description: String { "\(algorithm.rawValue):\(hex)" }

  public static func < (a: Digest, b: Digest) -> Bool { a.description < b.description }

  /// Parses an optional wire field: "" means "not given".
  public static func parseOptional(_ text: String) throws(ContentError) -> Digest? {
    text.isEmpty ? nil : try Digest(parsing: text)
  }

  public static func of(_ bytes: some DataProtocol, algorithm: DigestAlgorithm = .sha256) -> Digest {
    var d = Digester(algorithm)
    d.update(bytes)
    return d.digest()
  }

  public static let emptySHA256 = Digest.of(Data())
}

/// An incremental hasher whose running digest can be read at any point without ending it
/// (the Write protocol reports the digest of the bytes so far after every message).
public struct Digester: Sendable {
  private enum State: Sendable {
    case sha256(SHA256)
    case sha384(SHA384)
    case sha512(SHA512)
  }

  private var state: State
  public let algorithm: DigestAlgorithm

  public init(_ algorithm: DigestAlgorithm = .sha256) {
    self.algorithm = algorithm
    switch algorithm {
    case .sha256: state = .sha256(SHA256())
    case .sha384: state = .sha384(SHA384())
    case .sha512: state = .sha512(SHA512())
    }
  }

  public mutating func update(_ bytes: some DataProtocol) {
    switch state {
    case .sha256(var h): h.update(data: bytes); state = .sha256(h)
    case .sha384(var h): h.update(data: bytes); state = .sha384(h)
    case .sha512(var h): h.update(data: bytes); state = .sha512(h)
    }
  }

  public mutating func update(_ buffer: UnsafeRawBufferPointer) {
    switch state {
    case .sha256(var h): h.update(bufferPointer: buffer); state = .sha256(h)
    case .sha384(var h): h.update(bufferPointer: buffer); state = .sha384(h)
    case .sha512(var h): h.update(bufferPointer: buffer); state = .sha512(h)
    }
  }

  public func digest() -> Digest {
    let bytes: [UInt8]
    switch state {
    case .sha256(let h): bytes = Array(h.finalize())
    case .sha384(let h): bytes = Array(h.finalize())
    case .sha512(let h): bytes = Array(h.finalize())
    }
    return Digest(algorithm: algorithm, hex: hexString(bytes))
  }
}

func hexString(_ bytes: [UInt8]) -> String {
  let digits = Array("0123456789abcdef".utf8)
  var out = [UInt8]()
  out.reserveCapacity(bytes.count * 2)
  for b in bytes {
    out.append(digits[Int(b >> 4)])
    out.append(digits[Int(b & 0x0f)])
  }
  return String(decoding: out, as: UTF8.self)
}

/// Quotes user input for error messages, bounded so a hostile input cannot bloat them.
public func quoted(_ s: String, limit: Int = 200) -> String {
  let clipped = s.utf8.count > limit ? String(s.prefix(limit)) + "…" : s
  return "\"\(clipped)\""
}
