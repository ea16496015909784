import CairnCore
import Foundation

/// The Write protocol's state machine, fed a stream of arbitrary messages (any action, ref,
/// size, offset, digest, labels; sizes and offsets at Int64's edges) against a model
/// ingest that executes its commands. Invariants: never a trap; every answer is one of the
/// protocol's statuses; an append lands exactly at the ingest's offset (or after a
/// truncate); the ingest never outgrows max_blob_bytes; nothing is planned after a commit
/// or an abort.
public func fuzzWriteSession(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  var limits = Limits()
  limits.maxBlobBytes = 4096
  limits.maxRefBytes = 64
  var session = WriteSession(limits: limits, fromPeer: input.bool())
  let refs = ["", "r", "r2", "ref/with/slash", String(repeating: "x", count: 70), "caf\u{E9}", "cafe\u{301}"]
  let digests = ["", Digest.of(Data("a".utf8)).description, "sha256:zz", "sha512:" + String(repeating: "0", count: 128), "md5:00"]
  func step() -> WriteStep {
    var labels: [String: String] = [:]
    for _ in 0..<Int(input.byte() % 3) { labels[input.string(max: 8)] = input.string(max: 8) }
    return WriteStep(
      action: input.pick([.stat, .write, .commit, .abort]), ref: input.pick(refs), total: input.int64(),
      expected: input.pick(digests), offset: input.int64(), data: input.data(max: 64), labels: labels)
  }
  let allowed: Set<ContentError.Code> = [.invalidArgument, .outOfRange, .resourceExhausted, .failedPrecondition, .notFound]
  do {
    _ = try session.start(step())
  } catch {
    fuzzCheck(allowed.contains(error.code), "start answered \(error.code)")
    return
  }
  var offset: Int64 = 0
  while !input.isExhausted {
    let wasOpen = session.phase == .open
    do {
      let next = step()
      let commands = try session.plan(next, currentOffset: offset)
      fuzzCheck(wasOpen, "planned after the stream ended")
      fuzzCheck(commands.last == .respond, "a plan that does not answer: \(commands)")
      if commands.contains(where: { if case .append = $0 { true } else { false } }) {
        // Where the client said its bytes go: at the ingest's offset, or at 0 (a restart).
        let at = max(0, next.offset)
        fuzzCheck(commands.contains(.truncate) ? at == 0 : at == offset, "bytes for @\(at) appended at \(offset)")
      }
      for c in commands {
        switch c {
        case .truncate: offset = 0
        case .append(let d):
          offset += Int64(d.count)
          fuzzCheck(offset <= limits.maxBlobBytes, "the ingest grew to \(offset), past max_blob_bytes")
        case .abort, .commit: fuzzCheck(session.phase == .finished, "a commit or abort left the stream open")
        default: break
        }
      }
    } catch {
      fuzzCheck(allowed.contains(error.code), "plan answered \(error.code): \(error.message)")
      fuzzCheck(wasOpen || error.code == .failedPrecondition, "a closed stream answered \(error.code)")
    }
  }
}
