import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Testing

/// Two containerd hosts on one store: neither sees nor deletes the other's blobs or
/// ingests, and the bytes are stored once.
@Suite(.timeLimit(.minutes(1))) struct ScopedStoreTests {
  let base = MemoryStore(limits: StoreConformance.testLimits)
  var a: ScopedStore { ScopedStore(base: base, client: try! ClientID("host-a")) }
  var b: ScopedStore { ScopedStore(base: base, client: try! ClientID("host-b")) }

  @Test func eachClientListsAndDeletesOnlyWhatItHolds() async throws {
    let data = StoreConformance.bytes(1000, seed: 1)
    let d = try await StoreConformance.put(a, data, ref: "default/1/tar-blobs/x")
    #expect(try await b.list(.always).isEmpty)
    #expect(try await a.list(.always).map(\.digest) == [d])
    // B's garbage collector deletes what it does not know: NOT_FOUND for B, A keeps it.
    await #expect(throws: ContentError.self) { try await b.delete(d) }
    #expect(try await a.info(d).size == 1000)
    // B's Info finds the blob and so holds it too (containerd claims blobs this way).
    #expect(try await b.info(d).labels.isEmpty)
    #expect(ScopedStore.holders(try await base.info(d)) == ["host-a", "host-b"])
    try await a.delete(d)
    #expect(try await a.list(.always).isEmpty)
    #expect(try await StoreConformance.readAll(b, d) == data)
    try await b.delete(d)
    await #expect(throws: ContentError.self) { try await base.info(d) }
  }

  @Test func identicalRefsOfTwoClientsDoNotCollide() async throws {
    let ref = "default/1/tar-blobs/sha256:abc"
    let wa = try await a.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await wa.append(Data("aaa".utf8))
    // B opens the same ref while A holds it: no UNAVAILABLE, separate ingests.
    let wb = try await b.openWriter(ref: ref, total: 0, expected: nil)
    _ = try await wb.append(Data("b".utf8))
    #expect(try await a.status(ref: ref).offset == 3)
    #expect(try await b.status(ref: ref).offset == 1)
    #expect(try await a.listStatuses(.always).map(\.ref) == [ref])
    try await b.abort(ref: ref)
    #expect(try await a.status(ref: ref).offset == 3)
    await wa.close()
    await wb.close()
  }

  @Test func alreadyExistsAtOpenOrCommitHoldsTheBlob() async throws {
    let data = StoreConformance.bytes(500, seed: 2)
    let d = try await StoreConformance.put(a, data, ref: "r1")
    await #expect(throws: ContentError.self) { try await b.openWriter(ref: "r2", total: 0, expected: d) }
    #expect(try await b.list(.always).map(\.digest) == [d])
    let c = ScopedStore(base: base, client: try ClientID("host-c"))
    let w = try await c.openWriter(ref: "r3", total: 0, expected: nil)
    _ = try await w.append(data)
    await #expect(throws: ContentError.self) { try await w.commit(size: 500, expected: nil, labels: [:]) }
    #expect(ScopedStore.holders(try await base.info(d)) == ["host-a", "host-b", "host-c"])
  }

  /// A client's labels are its own: another client holding the same blob neither sees nor
  /// changes them, and cannot touch its hold.
  @Test func labelsAreEachClientsOwnAndHoldsAreProtected() async throws {
    let d = try await StoreConformance.put(a, StoreConformance.bytes(10, seed: 3), ref: "r", labels: ["k": "v"])
    #expect(try await a.info(d).labels == ["k": "v"])
    #expect(try await b.info(d).labels == [:], "B holds the blob now, but A's labels are A's")
    // A full-map replace by A keeps B's hold; B's own label is untouched by it.
    _ = try await b.update(d, labels: ["z": "1"], fieldPaths: ["labels.z"])
    let updated = try await a.update(d, labels: ["x": "y"], fieldPaths: [])
    #expect(updated.labels == ["x": "y"])
    #expect(try await b.info(d).labels == ["z": "1"])
    #expect(ScopedStore.holders(try await base.info(d)) == ["host-a", "host-b"])
    // Clearing "B's hold" from A only touches A's own label space; setting a reserved key
    // is refused.
    _ = try await a.update(d, labels: [:], fieldPaths: ["labels.\(ScopedStore.holderPrefix)host-b"])
    #expect(ScopedStore.holders(try await base.info(d)) == ["host-a", "host-b"])
    await #expect(throws: ContentError.self) {
      try await a.update(d, labels: [ScopedStore.holderPrefix + "host-c": "t"], fieldPaths: ["labels.\(ScopedStore.holderPrefix)host-c"])
    }
    #expect(try await a.list(try Filter.parse(["labels.x==y"])).count == 1)
    #expect(try await b.list(try Filter.parse(["labels.x==y"])).isEmpty)
    // A's release takes its labels with its hold.
    try await a.delete(d)
    #expect(try await base.info(d).labels.keys.sorted() == [ScopedStore.holderPrefix + "host-b", ScopedStore.labelPrefix + "host-b/z"])
  }

  /// Looking is not holding: a caller that may not write never pins a blob with Info.
  @Test func readOnlyCallersTakeNoHold() async throws {
    let d = try await StoreConformance.put(a, StoreConformance.bytes(10, seed: 4), ref: "r")
    let reader = ScopedStore(base: base, client: try ClientID("dash"), mayClaim: false)
    _ = try await reader.info(d)
    #expect(ScopedStore.holders(try await base.info(d)) == ["host-a"])
    try await a.delete(d)
    await #expect(throws: ContentError.self) { try await base.info(d) }
  }

  @Test func clientIDsAreValidated() {
    #expect(throws: ContentError.self) { try ClientID("") }
    #expect(throws: ContentError.self) { try ClientID("a/b") }
    #expect(throws: ContentError.self) { try ClientID(String(repeating: "x", count: 65)) }
    #expect((try? ClientID("node-7.example:1")) != nil)
  }
}
