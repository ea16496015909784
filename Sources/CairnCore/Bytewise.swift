/// A string compared, hashed and ordered as its UTF-8 bytes.
///
/// Swift's `String` equality and hashing follow Unicode canonical equivalence: "café"
/// spelled with a precomposed é (NFC) equals "café" spelled e + combining accent (NFD).
/// containerd's refs and label keys are opaque byte strings (Go strings), so those are two
/// refs, two locks, two ingests; macOS file names arrive in NFD and Linux ones usually in
/// NFC, so both spellings meet in a build farm. Every map, set, lock or comparison keyed by
/// a ref or label key uses this type or the `String.bytewise…` helpers below.
public struct Bytewise: Hashable, Comparable, Sendable, CustomStringConvertible {
  public let string: String

  public init(_ string: String) { self.string = string }

  public static func == (a: Bytewise, b: Bytewise) -> Bool { a.string.bytewiseEquals(b.string) }

  public func hash(into hasher: inout Hasher) {
    let hashed: Void? = string.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    if hashed == nil { for byte in string.utf8 { hasher.combine(byte) } }
    hasher.combine(0xFF as UInt8)  // never a UTF-8 byte: ends the key
  }

  public static func < (a: Bytewise, b: Bytewise) -> Bool { a.string.utf8.lexicographicallyPrecedes(b.string.utf8) }

  public var description: String { string }
}

extension String {
  /// Equal as bytes (`==` on String is canonical equivalence).
  public func bytewiseEquals(_ other: String) -> Bool { utf8.elementsEqual(other.utf8) }

  /// Starts with `prefix`'s bytes (`hasPrefix` compares grapheme clusters, so "e\u{301}"
  /// does not start with "e").
  public func bytewiseHasPrefix(_ prefix: String) -> Bool { utf8.starts(with: prefix.utf8) }

  /// Ordered by bytes, as Go (and so containerd) orders strings.
  public func bytewisePrecedes(_ other: String) -> Bool { utf8.lexicographicallyPrecedes(other.utf8) }
}

extension String {
  /// What follows `prefix`'s bytes, or nil if the string does not start with them.
  /// (`dropFirst(prefix.count)` counts grapheme clusters: after "ns/" a combining accent
  /// joins the slash into one, so it would drop a byte too many or too few.)
  public func bytewiseRemovingPrefix(_ prefix: String) -> String? {
    guard bytewiseHasPrefix(prefix) else { return nil }
    return String(decoding: utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
  }
}
