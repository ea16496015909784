import CairnCore
import Foundation
import Testing

@Suite struct FilterTests {
  let d = Digest.of(Data("x".utf8))
  var info: BlobInfo {
    BlobInfo(digest: d, size: 1, createdAt: .zero, updatedAt: .zero, labels: ["a.b": "1", "k": "v w"])
  }

  @Test func equalityPresenceAndOr() throws {
    #expect(try Filter.parse([]).matches(info))
    #expect(try Filter.parse(["digest==\(d)"]).matches(info))
    #expect(try !Filter.parse(["digest==sha256:00"]).matches(info))
    #expect(try Filter.parse(["labels.\"a.b\"==1"]).matches(info))
    #expect(try Filter.parse(["labels.a.b==1"]).matches(info))  // dotted path joins
    #expect(try Filter.parse(["labels.k"]).matches(info))
    #expect(try !Filter.parse(["labels.missing"]).matches(info))
    #expect(try Filter.parse(["labels.k==\"v w\""]).matches(info))
    #expect(try Filter.parse(["labels.k!=x"]).matches(info))
    #expect(try !Filter.parse(["labels.k==x,digest==\(d)"]).matches(info))
    #expect(try Filter.parse(["labels.k==x", "digest==\(d)"]).matches(info))
  }

  @Test func regexMatches() throws {
    let s = IngestStatus(ref: "x123-ingest", offset: 0, total: 0, expected: nil, startedAt: .zero, updatedAt: .zero)
    #expect(try Filter.parse(["ref~=\"^x123\""]).matches(s))
    #expect(try Filter.parse(["ref~=/ingest$/"]).matches(s))
    #expect(try !Filter.parse(["ref~=\"^y\""]).matches(s))
    #expect(try Filter.parse(["ref==\"x123-ingest\""]).matches(s))
  }

  @Test(arguments: ["==x", "labels.", "labels.k=x", "labels.k===x", "a,", "labels.k==\"unterminated", "ref~=\"(\""])
  func rejectsMalformed(_ f: String) {
    #expect(throws: ContentError.self) { try Filter.parse([f]) }
  }

  @Test func limitsAreNamed() {
    var limits = Limits()
    limits.maxFilters = 1
    do {
      _ = try Filter.parse(["a", "b"], limits: limits)
      Issue.record("expected a limit error")
    } catch {
      #expect(error.code == .invalidArgument)
      #expect(error.message.contains("max_filters"))
    }
  }
}

@Suite struct LabelTests {
  @Test func updateSemantics() throws {
    let cur = ["a": "1", "b": "2", "gc": "x"]
    #expect(try LabelRules.applyUpdate(current: cur, requested: ["a": "9"], fieldPaths: []) == ["a": "9"])
    #expect(try LabelRules.applyUpdate(current: cur, requested: ["a": "9", "z": "1"], fieldPaths: ["labels.a"]) == ["a": "9", "b": "2", "gc": "x"])
    #expect(try LabelRules.applyUpdate(current: cur, requested: [:], fieldPaths: ["labels.b"]) == ["a": "1", "gc": "x"])
    #expect(try LabelRules.applyUpdate(current: cur, requested: ["q": "1"], fieldPaths: ["labels"]) == ["q": "1"])
    #expect(throws: ContentError.self) { try LabelRules.applyUpdate(current: cur, requested: [:], fieldPaths: ["size"]) }
  }

  @Test func sizeLimit() throws {
    try LabelRules.validateRequest(["k": String(repeating: "v", count: 4095)])
    #expect(throws: ContentError.self) { try LabelRules.validateRequest(["k": String(repeating: "v", count: 4096)]) }
    #expect(throws: ContentError.self) { try LabelRules.validateRequest(["": "v"]) }
  }

  @Test func reservedLabelsAreCairnsAlone() throws {
    let cur = ["a": "1", "cairn.io/holder.h1": "t", "cairn.io/label/h1/x": "y"]
    // A caller may not set a reserved key, only clear one (an operator dropping a stale hold).
    #expect(throws: ContentError.self) { try LabelRules.validateRequest(["cairn.io/holder.me": "t"]) }
    #expect(throws: ContentError.self) { try LabelRules.validateRequest(["cairn.io/label/other/k": "v"]) }
    try LabelRules.validateRequest(["cairn.io/holder.stale": ""])
    // Replacing every label keeps what belongs to clients.
    #expect(try LabelRules.applyUpdate(current: cur, requested: ["q": "1"], fieldPaths: []) == ["q": "1", "cairn.io/holder.h1": "t", "cairn.io/label/h1/x": "y"])
  }

  /// A blob's stored metadata always reads back: holds are capped apart from labels, and
  /// the whole encoded form (JSON escapes a control character as six bytes) is bounded.
  @Test func storedMetadataIsBoundedByConstruction() throws {
    var limits = Limits()
    limits.maxMetadataBytes = 64 << 10
    limits.maxHoldersPerBlob = 3
    // 16 labels of 4 KiB of control characters: within containerd's rules, 6x that encoded.
    let inflated = Dictionary(uniqueKeysWithValues: (0..<16).map { ("k\($0)", String(repeating: "\u{1}", count: 4000)) })
    try LabelRules.validateRequest(inflated, limits: limits)
    do {
      try LabelRules.validateStored(inflated, limits: limits)
      Issue.record("accepted \(try LabelRules.metadataBytes(inflated)) bytes of metadata")
    } catch {
      #expect(error.code == .invalidArgument && error.message.contains("max_metadata_bytes"), "\(error)")
    }
    let holds = Dictionary(uniqueKeysWithValues: (0..<4).map { ("cairn.io/holder.c\($0)", "t") })
    #expect(throws: ContentError.self) { try LabelRules.validateStored(holds, limits: limits) }
    try LabelRules.validateStored(holds.filter { $0.key != "cairn.io/holder.c0" }, limits: limits)
    // Labels never take the room holds need: labels up to their share, then every hold fits.
    let room = limits.maxMetadataBytes - LabelRules.metadataEnvelopeBytes - limits.maxHoldersPerBlob * LabelRules.holdBytes
    var filling = Dictionary(uniqueKeysWithValues: (0..<(room / 4020)).map { ("f\($0)", String(repeating: "x", count: 4000)) })
    #expect(try LabelRules.metadataBytes(filling) > room - 4100, "the labels fill their share")
    try LabelRules.validateStored(filling, limits: limits)
    for i in 0..<3 { filling["cairn.io/holder.\(String(repeating: "c", count: 63))\(i)"] = Timestamp.now().description }
    try LabelRules.validateStored(filling, limits: limits)
    // A client's label may carry its scope prefix on top of containerd's 4096 bytes.
    let scoped = "cairn.io/label/\(String(repeating: "c", count: 64))/k"
    try LabelRules.validateStored([scoped: String(repeating: "v", count: 4095)], limits: limits)
  }
}

@Suite struct LockTableTests {
  @Test func handsOffToWaiterOnRelease() async {
    let locks = LockTable()
    #expect(locks.tryAcquire("r"))
    #expect(!locks.tryAcquire("r"))
    async let waiter = locks.acquire("r", timeout: 30)
    // Whether the waiter registered before this release or arrives after it, it ends up
    // holding the lock.
    locks.release("r")
    #expect(await waiter)
    #expect(locks.isHeld("r"))
    locks.release("r")
    #expect(!locks.isHeld("r"))
  }

  @Test func timesOut() async {
    let locks = LockTable()
    #expect(locks.tryAcquire("r"))
    #expect(await locks.acquire("r", timeout: 0.05) == false)
    #expect(locks.isHeld("r"))
  }
}
