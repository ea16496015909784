import Foundation

/// Reads a fuzzer's bytes as the fields of a structured input: every read succeeds (an
/// exhausted input reads as zeros), so each byte string is some valid sequence of events,
/// and small changes to the bytes make small changes to the events (what coverage-guided
/// mutation needs).
public struct FuzzInput {
  private let bytes: [UInt8]
  private var at = 0

  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  public var isExhausted: Bool { at >= bytes.count }

  public mutating func byte() -> UInt8 {
    defer { at += 1 }
    return at < bytes.count ? bytes[at] : 0
  }

  public mutating func bool() -> Bool { byte() & 1 == 1 }

  public mutating func uint64() -> UInt64 {
    var v: UInt64 = 0
    for _ in 0..<8 { v = v << 8 | UInt64(byte()) }
    return v
  }

  /// Mostly small numbers and the edges (0, ±1, the extremes), sometimes any value: the
  /// edges are where overflow traps live.
  public mutating func int64() -> Int64 {
    switch byte() % 8 {
    case 0: return 0
    case 1: return .max
    case 2: return .min
    case 3: return -1
    case 4: return Int64(bitPattern: uint64())
    default: return Int64(byte()) - 16
    }
  }

  public mutating func uint64Edge() -> UInt64 {
    switch byte() % 6 {
    case 0: return 0
    case 1: return .max
    case 2: return .max - 1
    case 3: return uint64()
    default: return UInt64(byte())
    }
  }

  /// Up to `max` bytes as a string (invalid UTF-8 repaired, as a gRPC string field would
  /// be refused before: the fuzz target sees what a decoded message can hold).
  public mutating func string(max: Int = 64) -> String {
    let n = Int(byte()) % (max + 1)
    var out: [UInt8] = []
    for _ in 0..<n where !isExhausted { out.append(byte()) }
    return String(decoding: out, as: UTF8.self)
  }

  public mutating func data(max: Int) -> Data {
    let n = Int(byte()) % (max + 1)
    var out: [UInt8] = []
    for _ in 0..<n where !isExhausted { out.append(byte()) }
    return Data(out)
  }

  public mutating func pick<T>(_ options: [T]) -> T { options[Int(byte()) % options.count] }

  /// The rest of the input, as text lines.
  public mutating func rest() -> [UInt8] {
    defer { at = bytes.count }
    return at < bytes.count ? Array(bytes[at...]) : []
  }
}

/// A broken invariant a fuzz target found: the target traps, so the fuzzer keeps the input.
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
  if !condition() { fatalError("fuzz invariant: \(message())") }
}

/// Every fuzz target by name: `cairn-fuzz` (libFuzzer) and `FuzzReplayTests` (the corpora)
/// run the same functions.
public enum FuzzTargets {
  public static let all: [String: @Sendable ([UInt8]) -> Void] = [
    "filter": fuzzFilter,
    "regex": fuzzRegex,
    "write-session": fuzzWriteSession,
    "swim": fuzzSWIM,
    "peer-messages": fuzzPeerMessages,
  ]

  /// Hand-made starting inputs of a target, where mutation alone would take long to reach
  /// a well-formed message (replayed by FuzzReplayTests too).
  public static let seeds: [String: [[UInt8]]] = ["peer-messages": peerMessageSeeds()]
}
