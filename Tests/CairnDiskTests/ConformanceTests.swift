import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Testing

/// The store conformance suite, run against every store implementation.
@Suite(.timeLimit(.minutes(2))) struct StoreConformanceTests {
  @Test(arguments: StoreConformance.cases)
  func memoryStore(_ c: StoreConformance.Case) async throws {
    try await c.run(MemoryStore(limits: StoreConformance.testLimits))
  }

  /// One client's view of a shared store behaves as a whole store.
  @Test(arguments: StoreConformance.cases)
  func scopedStore(_ c: StoreConformance.Case) async throws {
    let dir = try TemporaryDirectory()
    let disk = try await DiskStore.open(root: dir.path, limits: StoreConformance.testLimits)
    try await c.run(ScopedStore(base: disk, client: try ClientID("host-a")))
    await disk.shutdown()
  }

  @Test(arguments: StoreConformance.cases)
  func diskStore(_ c: StoreConformance.Case) async throws {
    let dir = try TemporaryDirectory()
    let store = try await DiskStore.open(root: dir.path, limits: StoreConformance.testLimits)
    try await c.run(store)
    await store.shutdown()
  }
}

