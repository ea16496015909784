import CairnCore
import Foundation

/// A failed conformance check, with what was expected.
public struct ConformanceFailure: Error, CustomStringConvertible {
  public let description: String
  public init(_ d: String) { description = d }
}

/// The behaviour every ContentStore must show (containerd's content/testsuite plus
/// DESIGN.md section 1), as named cases that a test target runs against each store.
public enum StoreConformance {
  public struct Case: Sendable, CustomStringConvertible {
    public let name: String
    public let run: @Sendable (any ContentStore) async throws -> Void
    public var description: String { name }
  }

  public static let cases: [Case] = [
    Case(name: "write, commit, info, read", run: writeCommitRead),
    Case(name: "resume after close", run: resumeAfterClose),
    Case(name: "second writer is UNAVAILABLE", run: secondWriterUnavailable),
    Case(name: "a writer naming its digest waits for the holder's commit", run: waiterGetsCommit),
    Case(name: "existing blob is ALREADY_EXISTS", run: alreadyExists),
    Case(name: "size and digest mismatch are FAILED_PRECONDITION", run: mismatch),
    Case(name: "truncate restarts an ingest", run: truncateRestarts),
    Case(name: "labels at commit and update masks", run: labels),
    Case(name: "list filters", run: listFilters),
    Case(name: "delete", run: delete),
    Case(name: "conditional delete keeps a labelled blob", run: conditionalDelete),
    Case(name: "status, listStatuses, abort", run: statusAndAbort),
    Case(name: "read ranges", run: readRanges),
    Case(name: "ingest events", run: ingestEvents),
    Case(name: "sha512 expected digest", run: sha512),
    Case(name: "empty blob", run: emptyBlob),
    Case(name: "refs are opaque strings", run: opaqueRefs),
    Case(name: "refs and label keys compare as bytes, not as Unicode", run: bytewiseRefsAndKeys),
    Case(name: "aborting a held ingest fails its writer", run: abortHeld),
  ]

  // MARK: helpers

  /// Limits for running the suite quickly: a short lock wait (contention cases wait for it)
  /// and small Read chunks (so that reads span several chunks).
  public static var testLimits: Limits {
    var l = Limits()
    l.lockWaitSeconds = 0.05
    l.readChunkBytes = 64 << 10
    return l
  }

  public static func bytes(_ n: Int, seed: UInt64) -> Data {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: n)
    for i in 0..<n {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      out[i] = UInt8(truncatingIfNeeded: x)
    }
    return Data(out)
  }

  static func unique(_ name: String) -> String { "\(name)-\(UInt64.random(in: 0...UInt64.max))" }

  static func expect(_ cond: Bool, _ msg: @autoclosure () -> String) throws {
    if !cond { throw ConformanceFailure(msg()) }
  }

  static func expectError<T>(_ code: ContentError.Code, _ what: String, _ body: () async throws -> T) async throws {
    do {
      _ = try await body()
    } catch let e as ContentError {
      try expect(e.code == code, "\(what): got \(e), want \(code.name)")
      return
    }
    throw ConformanceFailure("\(what): succeeded, want \(code.name)")
  }

  @discardableResult
  public static func put(_ store: any ContentStore, _ data: Data, ref: String, labels: [String: String] = [:], chunk: Int = 1000) async throws -> Digest {
    let w = try await store.openWriter(ref: ref, total: Int64(data.count), expected: nil)
    var off = 0
    while off < data.count {
      let n = min(chunk, data.count - off)
      _ = try await w.append(data.subdata(in: off..<off + n))
      off += n
    }
    let s = try await w.commit(size: Int64(data.count), expected: Digest.of(data), labels: labels)
    await w.close()
    return s.digest
  }

  public static func readAll(_ store: any ContentStore, _ d: Digest, offset: Int64 = 0, size: Int64 = 0) async throws -> Data {
    var out = Data()
    for try await chunk in try await store.read(d, offset: offset, size: size) {
      try expect(chunk.count <= store.limits.readChunkBytes, "read chunk of \(chunk.count) bytes exceeds readChunkBytes")
      out.append(chunk)
    }
    return out
  }

  // MARK: cases

  static func writeCommitRead(_ store: any ContentStore) async throws {
    let data = bytes(300_000, seed: 1)
    let ref = unique("wcr")
    let before = Timestamp.now()
    let w = try await store.openWriter(ref: ref, total: Int64(data.count), expected: nil)
    let s0 = try await w.state()
    try expect(s0.status.offset == 0 && s0.digest == Digest.emptySHA256, "new ingest: \(s0)")
    try expect(s0.status.startedAt >= before, "startedAt \(s0.status.startedAt) before open \(before)")
    let s1 = try await w.append(data.subdata(in: 0..<100_000))
    try expect(s1.status.offset == 100_000, "offset after 100000 bytes: \(s1.status.offset)")
    try expect(s1.digest == Digest.of(data.subdata(in: 0..<100_000)), "running digest wrong")
    _ = try await w.append(data.subdata(in: 100_000..<data.count))
    let preCommit = Timestamp.now()
    let done = try await w.commit(size: Int64(data.count), expected: nil, labels: [:])
    let postCommit = Timestamp.now()
    await w.close()
    try expect(done.digest == Digest.of(data), "commit digest \(done.digest)")
    let info = try await store.info(done.digest)
    try expect(info.size == Int64(data.count), "info size \(info.size)")
    try expect(info.createdAt >= preCommit && info.createdAt <= postCommit, "createdAt \(info.createdAt) outside commit window")
    try expect(info.updatedAt >= preCommit && info.updatedAt <= postCommit, "updatedAt \(info.updatedAt) outside commit window")
    try expect(try await readAll(store, done.digest) == data, "read back differs")
    try await expectError(.notFound, "status after commit") { try await store.status(ref: ref) }
    try await store.delete(done.digest)
  }

  static func resumeAfterClose(_ store: any ContentStore) async throws {
    let data = bytes(50_000, seed: 2)
    let ref = unique("resume")
    let w = try await store.openWriter(ref: ref, total: Int64(data.count), expected: nil)
    _ = try await w.append(data.subdata(in: 0..<20_000))
    await w.close()
    let st = try await store.status(ref: ref)
    try expect(st.offset == 20_000 && st.total == 50_000, "status after close: \(st)")
    let w2 = try await store.openWriter(ref: ref, total: 0, expected: nil)
    let s = try await w2.state()
    try expect(s.status.offset == 20_000, "resumed offset \(s.status.offset)")
    try expect(s.digest == Digest.of(data.subdata(in: 0..<20_000)), "resumed digest wrong")
    try expect(s.status.total == 50_000, "resumed total \(s.status.total)")
    _ = try await w2.append(data.subdata(in: 20_000..<data.count))
    let done = try await w2.commit(size: 0, expected: Digest.of(data), labels: [:])
    await w2.close()
    try expect(try await readAll(store, done.digest) == data, "resumed blob differs")
    try await store.delete(done.digest)
  }

  static func secondWriterUnavailable(_ store: any ContentStore) async throws {
    let ref = unique("locked")
    let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await w.append(Data("x".utf8))
    try await expectError(.unavailable, "second writer") { try await store.openWriter(ref: ref, total: 0, expected: nil) }
    await w.close()
    let w2 = try await store.openWriter(ref: ref, total: 0, expected: nil)
    try expect(try await w2.state().status.offset == 1, "after release the ingest resumes")
    await w2.close()
    try await store.abort(ref: ref)
  }

  /// The holder keeps the lock well past lockWaitSeconds; a waiter that named the digest
  /// must still be waiting, and learn of the commit (not UNAVAILABLE).
  static func waiterGetsCommit(_ store: any ContentStore) async throws {
    let ref = unique("waiter")
    let data = bytes(4096, seed: 21)
    let d = Digest.of(data)
    let w = try await store.openWriter(ref: ref, total: 4096, expected: d)
    _ = try await w.append(data)
    let waiter = Task { try await store.openWriter(ref: ref, total: 4096, expected: d) }
    try await Task.sleep(for: .seconds(store.limits.lockWaitSeconds * 4))
    _ = try await w.commit(size: 4096, expected: d, labels: [:])
    await w.close()
    try await expectError(.alreadyExists, "waiter after the holder's commit") { try await waiter.value }
    try await store.delete(d)
  }

  static func alreadyExists(_ store: any ContentStore) async throws {
    let data = bytes(256, seed: 3)
    let d = try await put(store, data, ref: unique("exists"))
    try await expectError(.alreadyExists, "open with committed expected digest") {
      try await store.openWriter(ref: unique("exists2"), total: 0, expected: d)
    }
    let ref = unique("exists3")
    let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await w.append(data)
    try await expectError(.alreadyExists, "commit of existing content without expected digest") {
      try await w.commit(size: 256, expected: nil, labels: [:])
    }
    await w.close()
    let w2 = try await store.openWriter(ref: ref, total: 0, expected: nil)
    try expect(try await w2.state().status.offset == 0, "ingest is removed after ALREADY_EXISTS")
    await w2.close()
    try? await store.abort(ref: ref)
    try await store.delete(d)
  }

  static func mismatch(_ store: any ContentStore) async throws {
    let data = bytes(4096, seed: 4)
    let ref = unique("mismatch")
    let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await w.append(data)
    try await expectError(.failedPrecondition, "wrong digest") {
      try await w.commit(size: 4096, expected: Digest.of(Data("other".utf8)), labels: [:])
    }
    await w.close()
    let w2 = try await store.openWriter(ref: ref, total: 0, expected: nil)
    try expect(try await w2.state().status.offset == 4096, "ingest survives a failed commit")
    try await expectError(.failedPrecondition, "wrong size") { try await w2.commit(size: 4097, expected: nil, labels: [:]) }
    await w2.close()
    let w3 = try await store.openWriter(ref: ref, total: 0, expected: nil)
    let done = try await w3.commit(size: 4096, expected: nil, labels: [:])
    await w3.close()
    try expect(done.digest == Digest.of(data), "commit after failures")
    try await store.delete(done.digest)
  }

  static func truncateRestarts(_ store: any ContentStore) async throws {
    let ref = unique("trunc")
    let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await w.append(bytes(500, seed: 5))
    let t = try await w.truncate()
    try expect(t.status.offset == 0 && t.digest == Digest.emptySHA256, "after truncate: \(t)")
    let data = bytes(300, seed: 6)
    _ = try await w.append(data)
    let done = try await w.commit(size: 300, expected: Digest.of(data), labels: [:])
    await w.close()
    try await store.delete(done.digest)
  }

  static func labels(_ store: any ContentStore) async throws {
    let d = try await put(store, bytes(256, seed: 7), ref: unique("labels"), labels: ["k1": "v1", "k2": "v2", "containerd.io/gc.root": "now"])
    try expect(try await store.info(d).labels == ["k1": "v1", "k2": "v2", "containerd.io/gc.root": "now"], "labels at commit")
    let pre = Timestamp.now()
    var info = try await store.update(d, labels: ["k1": "new", "k3": "v3", "containerd.io/gc.root": "now"], fieldPaths: [])
    try expect(info.labels == ["k1": "new", "k3": "v3", "containerd.io/gc.root": "now"], "replace all: \(info.labels)")
    try expect(info.updatedAt >= pre, "updatedAt advances on update")
    info = try await store.update(d, labels: ["k1": "v1"], fieldPaths: ["labels.k3", "labels.k1"])
    try expect(info.labels == ["k1": "v1", "containerd.io/gc.root": "now"], "masked update: \(info.labels)")
    try expect(try await store.info(d).labels == info.labels, "update is persisted")
    try await expectError(.invalidArgument, "update of size") { try await store.update(d, labels: [:], fieldPaths: ["size"]) }
    try await expectError(.invalidArgument, "label over 4096 bytes") {
      try await store.update(d, labels: ["big": String(repeating: "x", count: 4096)], fieldPaths: ["labels.big"])
    }
    try await expectError(.notFound, "update of missing blob") {
      try await store.update(Digest.of(Data("missing-\(UUID())".utf8)), labels: ["a": "b"], fieldPaths: [])
    }
    try await store.delete(d)
  }

  static func listFilters(_ store: any ContentStore) async throws {
    let key = unique("suite")
    let a = try await put(store, bytes(100, seed: 8), ref: unique("la"), labels: [key: "a"])
    let b = try await put(store, bytes(100, seed: 9), ref: unique("lb"), labels: [key: "b"])
    let all = try await store.list(.always).map(\.digest)
    try expect(all.contains(a) && all.contains(b), "list() contains both")
    try expect(try await store.list(Filter.parse(["labels.\"\(key)\"==a"])).map(\.digest) == [a], "labels==a")
    try expect(Set(try await store.list(Filter.parse(["labels.\"\(key)\"==a", "labels.\"\(key)\"==b"])).map(\.digest)) == [a, b], "a OR b")
    try expect(try await store.list(Filter.parse(["digest==\(b)"])).map(\.digest) == [b], "digest==")
    try expect(Set(try await store.list(Filter.parse(["labels.\"\(key)\""])).map(\.digest)) == [a, b], "label present")
    try expect(try await store.list(Filter.parse(["labels.\"\(key)\"==a,digest==\(b)"])).isEmpty, "AND of disjoint")
    try await store.delete(a)
    try await store.delete(b)
  }

  static func delete(_ store: any ContentStore) async throws {
    let d = try await put(store, bytes(1000, seed: 10), ref: unique("del"))
    try await store.delete(d)
    try await expectError(.notFound, "info after delete") { try await store.info(d) }
    try await expectError(.notFound, "read after delete") { try await store.read(d, offset: 0, size: 0) }
    try await expectError(.notFound, "second delete") { try await store.delete(d) }
  }

  static func statusAndAbort(_ store: any ContentStore) async throws {
    let prefix = unique("st")
    let ref = prefix + "/ingest"
    let w = try await store.openWriter(ref: ref, total: 100, expected: nil)
    _ = try await w.append(bytes(10, seed: 11))
    let live = try await store.status(ref: ref)
    try expect(live.offset == 10 && live.total == 100, "status while held: \(live)")
    await w.close()
    let st = try await store.status(ref: ref)
    try expect(st.ref == ref && st.offset == 10 && st.total == 100, "status after close: \(st)")
    try expect(try await store.listStatuses(.always).contains { $0.ref == ref }, "listStatuses()")
    try expect(try await store.listStatuses(Filter.parse(["ref==\"\(ref)\""])).map(\.ref) == [ref], "ref==")
    try expect(try await store.listStatuses(Filter.parse(["ref~=\"^\(prefix)\""])).map(\.ref) == [ref], "ref~=")
    try expect(try await store.listStatuses(Filter.parse(["ref==no-such-ref"])).isEmpty, "ref== none")
    try await store.abort(ref: ref)
    try await expectError(.notFound, "status after abort") { try await store.status(ref: ref) }
    try await expectError(.notFound, "second abort") { try await store.abort(ref: ref) }
    try await expectError(.notFound, "status of unknown ref") { try await store.status(ref: unique("nope")) }
    try await expectError(.invalidArgument, "empty ref") { try await store.openWriter(ref: "", total: 0, expected: nil) }
  }

  static func readRanges(_ store: any ContentStore) async throws {
    let n = 3 * store.limits.readChunkBytes + 123
    let data = bytes(n, seed: 12)
    let d = try await put(store, data, ref: unique("ranges"), chunk: 1 << 20)
    try expect(try await readAll(store, d, offset: -5) == data, "negative offset reads from 0")
    try expect(try await readAll(store, d, offset: 10, size: 100) == data.subdata(in: 10..<110), "range")
    try expect(try await readAll(store, d, offset: Int64(n - 10), size: 100) == data.subdata(in: n - 10..<n), "range past end is clamped")
    try expect(try await readAll(store, d, offset: Int64(n)).isEmpty, "offset == size is empty")
    try await expectError(.outOfRange, "offset past size") { try await store.read(d, offset: Int64(n + 1), size: 0) }
    let r = try await store.read(d, offset: 5, size: 0)
    try expect(r.blobSize == Int64(n) && r.offset == 5 && r.length == Int64(n - 5), "reader geometry")
    try await store.delete(d)
  }

  static func ingestEvents(_ store: any ContentStore) async throws {
    let events = store.ingestEvents()
    let ref = unique("events")
    let data = bytes(10, seed: 13)
    let d = try await put(store, data, ref: ref, chunk: 5)
    var seen: [IngestEvent] = []
    for await e in events where e.ref == ref {
      seen.append(e)
      if case .committed = e { break }
    }
    try expect(seen.contains(.committed(ref: ref, digest: d, size: 10)), "committed event: \(seen)")
    // This reader is slow on purpose (it starts reading after the upload): a slow reader
    // sees an ingest's latest progress, not every step (EventHub coalesces).
    try expect(seen.contains { if case .progress(let s) = $0 { return s.offset >= 5 }; return false }, "a progress event: \(seen)")
    try await store.delete(d)
  }

  static func conditionalDelete(_ store: any ContentStore) async throws {
    let d = try await put(store, bytes(300, seed: 22), ref: unique("cond"), labels: ["hold.a": "1"])
    try expect(try await store.delete(d, unlessLabeled: "hold.") == false, "kept while labelled")
    _ = try await store.info(d)
    _ = try await store.update(d, labels: [:], fieldPaths: ["labels.hold.a"])
    try expect(try await store.delete(d, unlessLabeled: "hold.") == true, "deleted once unlabelled")
    try await expectError(.notFound, "info after conditional delete") { try await store.info(d) }
    try await expectError(.notFound, "conditional delete of a missing blob") { try await store.delete(d, unlessLabeled: "hold.") }
  }

  static func sha512(_ store: any ContentStore) async throws {
    let data = bytes(1000, seed: 14)
    let expected = Digest.of(data, algorithm: .sha512)
    let w = try await store.openWriter(ref: unique("sha512"), total: 0, expected: nil)
    _ = try await w.append(data)
    let done = try await w.commit(size: 1000, expected: expected, labels: [:])
    await w.close()
    try expect(done.digest == expected, "committed as \(done.digest)")
    try expect(try await readAll(store, expected) == data, "read sha512 blob")
    try await store.delete(expected)
  }

  static func emptyBlob(_ store: any ContentStore) async throws {
    let w = try await store.openWriter(ref: unique("empty"), total: 0, expected: nil)
    do {
      let done = try await w.commit(size: 0, expected: Digest.emptySHA256, labels: [:])
      try expect(done.digest == Digest.emptySHA256, "empty digest")
    } catch let e as ContentError where e.code == .alreadyExists {}
    await w.close()
    try expect(try await readAll(store, Digest.emptySHA256).isEmpty, "empty read")
  }

  /// "café" spelled with a precomposed é (NFC) and with e + combining accent (NFD) are
  /// equal as Swift Strings and different as bytes; containerd's refs and label keys are
  /// bytes, so these are two refs with two locks and two ingests.
  static func bytewiseRefsAndKeys(_ store: any ContentStore) async throws {
    let (nfc, nfd) = ("conf/caf\u{E9}", "conf/cafe\u{301}")
    let first = try await store.openWriter(ref: nfc, total: 0, expected: nil)
    _ = try await first.append(Data("a".utf8))
    // Held by the first writer: as one ref, this open would wait and fail UNAVAILABLE.
    let second = try await store.openWriter(ref: nfd, total: 0, expected: nil)
    _ = try await second.append(Data("bb".utf8))
    await first.close()
    await second.close()
    let a = try await store.status(ref: nfc)
    let b = try await store.status(ref: nfd)
    try expect(Array(a.ref.utf8) == Array(nfc.utf8) && a.offset == 1, "the NFC ref's own ingest: \(a)")
    try expect(Array(b.ref.utf8) == Array(nfd.utf8) && b.offset == 2, "the NFD ref's own ingest: \(b)")
    let listed = try await store.listStatuses(.always).map { Array($0.ref.utf8) }
    try expect(listed.contains(Array(nfc.utf8)) && listed.contains(Array(nfd.utf8)), "both listed: \(listed)")
    try expect(try await store.listStatuses(Filter.parse(["ref==\"\(nfc)\""])).map { Array($0.ref.utf8) } == [Array(nfc.utf8)], "ref== by bytes")
    try await store.abort(ref: nfc)
    try expect(try await store.status(ref: nfd).offset == 2, "aborting one left the other")
    try await store.abort(ref: nfd)
    // A ref that starts with a combining mark (it joins whatever precedes it into one
    // Character, such as a scope's "/").
    let mark = "\u{301}mark"
    let w = try await store.openWriter(ref: mark, total: 0, expected: nil)
    _ = try await w.append(Data("x".utf8))
    await w.close()
    try expect(Array(try await store.status(ref: mark).ref.utf8) == Array(mark.utf8), "a ref starting with a combining mark")
    try expect(try await store.listStatuses(.always).contains { Array($0.ref.utf8) == Array(mark.utf8) }, "listed")
    try await store.abort(ref: mark)
    // A label key matches a filter on its own bytes only.
    let d = try await put(store, Data("bytewise labels".utf8), ref: "bytewise-labels", labels: [nfd: "e\u{301}"])
    let byNFD = try await store.list(Filter.parse(["labels.\"\(nfd)\"==\"e\u{301}\""])).map(\.digest)
    let byNFC = try await store.list(Filter.parse(["labels.\"\(nfc)\"==\"e\u{301}\""])).map(\.digest)
    try expect(byNFD == [d] && byNFC.isEmpty, "label filter by bytes: NFD \(byNFD), NFC \(byNFC)")
    try expect(try await store.list(Filter.parse(["labels.\"\(nfd)\"==\"\u{E9}\""])).isEmpty, "values compare by bytes too")
    try await store.delete(d)
  }

  static func opaqueRefs(_ store: any ContentStore) async throws {
    for ref in ["../../etc/passwd", "/absolute/path", "default/1/tar-blobs/sha256:abc", String(repeating: "é/", count: 300), "a\nb"] {
      let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
      _ = try await w.append(Data("x".utf8))
      await w.close()
      try expect(try await store.status(ref: ref).ref == ref, "status keeps the ref verbatim")
      try await store.abort(ref: ref)
    }
    try await expectError(.invalidArgument, "ref over maxRefBytes") {
      try await store.openWriter(ref: String(repeating: "r", count: store.limits.maxRefBytes + 1), total: 0, expected: nil)
    }
  }

  static func abortHeld(_ store: any ContentStore) async throws {
    let ref = unique("aborted")
    let w = try await store.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await w.append(Data("abc".utf8))
    try await store.abort(ref: ref)
    try await expectError(.notFound, "append after abort") { try await w.append(Data("d".utf8)) }
    await w.close()
    try await expectError(.notFound, "status after abort") { try await store.status(ref: ref) }
  }
}
