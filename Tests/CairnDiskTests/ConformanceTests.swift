import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Testing

/// The store conformance suite, run against every store implementation.
@Suite(.timeLimit(.minutes(2))) struct StoreConformanceTests {
  static var testLimits: Limits {
    var l = Limits()
    l.lockWaitSeconds = 0.05
    l.readChunkBytes = 64 << 10
    return l
  }

  @Test(arguments: StoreConformance.cases)
  func memoryStore(_ c: StoreConformance.Case) async throws {
    try await c.run(MemoryStore(limits: Self.testLimits))
  }

  @Test(arguments: StoreConformance.cases)
  func diskStore(_ c: StoreConformance.Case) async throws {
    let dir = try TemporaryDirectory()
    let store = try await DiskStore.open(root: dir.path, limits: Self.testLimits)
    try await c.run(store)
    await store.shutdown()
  }
}

