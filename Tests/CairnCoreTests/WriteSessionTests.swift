import CairnCore
import Foundation
import Testing

@Suite struct WriteSessionTests {
  func open(_ first: WriteStep) throws -> WriteSession {
    var s = WriteSession()
    _ = try s.start(first)
    return s
  }

  @Test func firstMessageNeedsARef() {
    var s = WriteSession()
    #expect(throws: ContentError.invalidArgument("first message must have a reference")) {
      try s.start(WriteStep(action: .stat))
    }
  }

  @Test func statOnlyResponds() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    #expect(try s.plan(WriteStep(action: .stat, ref: "r"), currentOffset: 7) == [.respond])
    #expect(s.phase == .open)
  }

  @Test func writeAtCurrentOffsetAppends() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    let data = Data("abc".utf8)
    #expect(try s.plan(WriteStep(action: .write, offset: 3, data: data), currentOffset: 3) == [.append(data), .respond])
  }

  @Test func writeAtZeroWithDataTruncates() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    let data = Data("abc".utf8)
    #expect(try s.plan(WriteStep(action: .write, offset: 0, data: data), currentOffset: 10) == [.truncate, .append(data), .respond])
  }

  @Test func writeWithoutDataIsAStatus() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    #expect(try s.plan(WriteStep(action: .write, offset: 0), currentOffset: 10) == [.respond])
    #expect(try s.plan(WriteStep(action: .write, offset: 99), currentOffset: 10) == [.respond])
  }

  @Test func wrongOffsetIsOutOfRange() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    do {
      _ = try s.plan(WriteStep(action: .write, offset: 99, data: Data("x".utf8)), currentOffset: 5)
      Issue.record("expected OUT_OF_RANGE")
    } catch {
      #expect(error.code == .outOfRange)
    }
    do {
      _ = try s.plan(WriteStep(action: .commit, offset: 4), currentOffset: 5)
      Issue.record("expected OUT_OF_RANGE")
    } catch {
      #expect(error.code == .outOfRange)
    }
  }

  @Test func expectedDigestIsCheckedWhenNamedAndCommitUsesLatest() throws {
    var s = try open(WriteStep(action: .stat, ref: "r", total: 3))
    let d = Digest.of(Data("abc".utf8))
    let cmds = try s.plan(WriteStep(action: .commit, expected: d.description, offset: 3), currentOffset: 3)
    #expect(cmds == [.rejectIfCommitted(d), .setExpectations(total: nil, expected: d), .commit(size: 3, expected: d, labels: [:]), .respond])
    #expect(s.phase == .finished)
    #expect(throws: ContentError.self) { try s.plan(WriteStep(action: .stat), currentOffset: 3) }
    // The digest the stream opened with was checked at open; naming it again costs nothing.
    var t = try open(WriteStep(action: .stat, ref: "r", expected: d.description))
    #expect(try t.plan(WriteStep(action: .stat, expected: d.description), currentOffset: 0) == [.respond])
    let other = Digest.of(Data("xyz".utf8))
    #expect(try t.plan(WriteStep(action: .stat, expected: other.description), currentOffset: 0).first == .rejectIfCommitted(other))
  }

  @Test func abortEndsTheStream() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    #expect(try s.plan(WriteStep(action: .abort), currentOffset: 1) == [.abort, .respond])
    #expect(s.phase == .finished)
  }

  @Test func oneRefPerStream() throws {
    var s = try open(WriteStep(action: .stat, ref: "r"))
    #expect(throws: ContentError.self) { try s.plan(WriteStep(action: .write, ref: "other"), currentOffset: 0) }
  }

  @Test func badInputsAreInvalidArgument() throws {
    var s = WriteSession()
    #expect(throws: ContentError.self) { try s.start(WriteStep(action: .stat, ref: "r", expected: "sha256:zz")) }
    var t = try open(WriteStep(action: .stat, ref: "r"))
    #expect(throws: ContentError.self) {
      try t.plan(WriteStep(action: .commit, labels: ["k": String(repeating: "v", count: 5000)]), currentOffset: 0)
    }
  }

  @Test func blobSizeLimit() throws {
    var limits = Limits()
    limits.maxBlobBytes = 10
    var s = WriteSession(limits: limits)
    _ = try s.start(WriteStep(action: .stat, ref: "r"))
    do {
      _ = try s.plan(WriteStep(action: .write, offset: 8, data: Data("abc".utf8)), currentOffset: 8)
      Issue.record("expected RESOURCE_EXHAUSTED")
    } catch {
      #expect(error.code == .resourceExhausted)
      #expect(error.message.contains("max_blob_bytes"))
    }
  }
}
