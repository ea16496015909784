import CairnFuzzTargets
import Foundation
import Testing

/// Every input of the committed corpora (Tests/Fuzz/corpus/TARGET/, grown by scripts/fuzz
/// and kept minimal with its --merge) through its target, in every test run: what a fuzzer
/// once found stays fixed. A target's invariant that breaks traps, failing the run.
@Suite struct FuzzReplayTests {
  static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz/corpus")

  @Test(arguments: FuzzTargets.all.keys.sorted())
  func corpusReplays(_ name: String) throws {
    let dir = Self.corpus.appendingPathComponent(name)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    #expect(!files.isEmpty, "no corpus for \(name) in \(dir.path)")
    for file in files {
      let data = try Data(contentsOf: dir.appendingPathComponent(file))
      FuzzTargets.all[name]!(Array(data))
    }
  }

  @Test func seedsReplay() {
    for (name, seeds) in FuzzTargets.seeds {
      for s in seeds { FuzzTargets.all[name]!(s) }
    }
  }
}
