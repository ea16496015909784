import CairnCore
import Foundation

/// containerd's filter syntax, parsed and evaluated on a blob and an ingest made of the
/// same bytes: never a trap, and the same answer twice (evaluation keeps no state but the
/// shared work budget, which a second, fresh parse resets).
public func fuzzFilter(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  var limits = Limits()
  limits.maxFilterWork = 200_000  // a fuzzer's input must run in milliseconds
  let count = Int(input.byte() % 4)
  var filters: [String] = []
  for _ in 0..<count { filters.append(input.string(max: 200)) }
  let key = input.string(max: 16)
  let value = input.string(max: 32)
  let ref = input.string(max: 32)
  let digest = Digest.of(Data(bytes))
  let info = BlobInfo(
    digest: digest, size: 1, createdAt: Timestamp(seconds: 0, nanos: 0), updatedAt: Timestamp(seconds: 0, nanos: 0),
    labels: key.isEmpty ? [:] : [key: value])
  let status = IngestStatus(
    ref: ref, offset: 0, total: 0, expected: nil, startedAt: Timestamp(seconds: 0, nanos: 0), updatedAt: Timestamp(seconds: 0, nanos: 0))
  guard let first = try? Filter.parse(filters, limits: limits) else { return }
  let a = (first.matches(info), first.matches(status))
  guard let second = try? Filter.parse(filters, limits: limits) else {
    fuzzCheck(false, "a filter parsed once and failed the second time: \(filters)")
    return
  }
  let b = (second.matches(info), second.matches(status))
  fuzzCheck(a == b, "one filter, two answers: \(filters)")
}

/// Go's RE2 syntax in linear time: a pattern and a text, never a trap, the work budget only
/// ever spent, and an answer (not nil) whenever work was left.
public func fuzzRegex(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  let pattern = input.string(max: 128)
  let text = String(decoding: input.rest().prefix(512), as: UTF8.self)
  guard let regex = try? LinearRegex(pattern) else { return }
  let start = 5_000_000
  var budget = start
  let result = regex.matches(text, budget: &budget)
  fuzzCheck(budget <= start, "the budget grew: \(pattern)")
  fuzzCheck(result != nil || budget <= 0, "no answer with work left (\(budget)): \(pattern)")
  var again = start
  fuzzCheck(regex.matches(text, budget: &again) == result, "two answers: \(pattern)")
}
