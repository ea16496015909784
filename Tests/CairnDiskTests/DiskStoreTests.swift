import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Synchronization
import Testing

/// A clock the test moves by hand.
final class ManualClock: Sendable {
  private let now = Mutex(Timestamp(seconds: 1_800_000_000, nanos: 0))
  func read() -> Timestamp { now.withLock { $0 } }
  func advance(seconds: Double) { now.withLock { $0 = $0.adding(seconds: seconds) } }
}

@Suite(.timeLimit(.minutes(2))) struct DiskStoreTests {
  /// A full owner decides on a client's announced total (Delegation.swift): the largest
  /// one is "would not fit", compared, never added to the bytes in use (a trap).
  @Test func anAnnouncedTotalOfInt64MaxIsTooBigNotACrash() async throws {
    let dir = try TemporaryDirectory()
    var limits = Limits.default
    limits.diskHighWatermark = 0.999_999
    let store = try await DiskStore.open(root: dir.path, limits: limits)
    defer { Task { await store.shutdown() } }
    #expect(store.isFull(adding: .max))
    #expect(!store.isFull(adding: 0))
  }

  @Test func staleIngestsExpire() async throws {
    let dir = try TemporaryDirectory()
    let clock = ManualClock()
    let store = try await DiskStore.open(root: dir.path, clock: { clock.read() })
    defer { Task { await store.shutdown() } }
    let old = try await store.openWriter(ref: "old", total: 0, expected: nil)
    _ = try await old.append(Data("abc".utf8))
    await old.close()
    clock.advance(seconds: 23 * 3600)
    let young = try await store.openWriter(ref: "young", total: 0, expected: nil)
    _ = try await young.append(Data("abc".utf8))
    await young.close()
    let held = try await store.openWriter(ref: "held", total: 0, expected: nil)
    _ = try await held.append(Data("abc".utf8))
    clock.advance(seconds: 2 * 3600)
    // "old" is 25 h untouched, "young" 2 h, "held" is open (whatever its age).
    #expect(try await store.expireIngests(olderThan: 24 * 3600) == ["old"])
    #expect(try await store.listStatuses(.always).map(\.ref) == ["held", "young"])
    clock.advance(seconds: 30 * 3600)
    #expect(try await store.expireIngests(olderThan: 24 * 3600) == ["young"])
    await held.close()
  }

  /// A replica's copy brings the labels and the time they were set on the sender; the later
  /// setting wins, on disk (also after a reopen) as in memory.
  @Test func laterLabelsWinOverEarlierOnes() async throws {
    let dir = try TemporaryDirectory()
    let clock = ManualClock()
    var disk = try await DiskStore.open(root: dir.path, clock: { clock.read() })
    let data = Data("labels".utf8)
    let diskLabelled = clock.read().adding(seconds: 11)
    for store in [disk, MemoryStore(clock: { clock.read() })] as [any ReplicaStore] {
      let created = clock.read()
      let w = try await store.openWriter(ref: "r", total: 0, expected: nil)
      _ = try await w.append(data)
      let d = try await w.commit(size: 0, expected: nil, labels: ["k": "commit"]).digest
      await w.close()
      clock.advance(seconds: 10)
      let updated = try await store.update(d, labels: ["k": "update"], fieldPaths: [])
      #expect(try await !store.adoptLabels(d, labels: ["k": "late copy"], updatedAt: created.adding(seconds: 5)))
      #expect(try await !store.adoptLabels(d, labels: ["k": "same time"], updatedAt: updated.updatedAt))
      #expect(try await store.info(d).labels == ["k": "update"])
      let later = updated.updatedAt.adding(seconds: 1)
      #expect(try await store.adoptLabels(d, labels: ["k": "newer"], updatedAt: later))
      let info = try await store.info(d)
      #expect(info.labels == ["k": "newer"] && info.updatedAt == later && info.createdAt == created)
      await #expect(throws: ContentError.self) {
        try await store.adoptLabels(Digest.of(Data("absent".utf8)), labels: [:], updatedAt: later)
      }
    }
    await disk.shutdown()
    disk = try await DiskStore.open(root: dir.path, clock: { clock.read() })
    let info = try await disk.info(Digest.of(data))
    #expect(info.labels == ["k": "newer"] && info.updatedAt == diskLabelled)
    await disk.shutdown()
  }

  /// Concurrent commits all go through the group sync and all land (the sharing itself is
  /// shown deterministically by GroupSyncTests).
  @Test func concurrentCommitsAllNeedADirectorySync() async throws {
    let dir = try TemporaryDirectory()
    let store = try await DiskStore.open(root: dir.path)
    defer { Task { await store.shutdown() } }
    let n = 64
    try await withThrowingTaskGroup(of: Void.self) { group in
      for i in 0..<n {
        group.addTask {
          try await StoreConformance.put(store, StoreConformance.bytes(4096, seed: UInt64(i + 1)), ref: "c\(i)")
        }
      }
      try await group.waitForAll()
    }
    #expect(store.groupCommitCounters().served == n)
    #expect(try await store.list(.always).count == n)
  }

  /// An upload the stream leaves behind is on disk in containerd's layout and resumes
  /// after the store is reopened (a node restart).
  @Test func interruptedUploadSurvivesReopen() async throws {
    let dir = try TemporaryDirectory()
    let data = StoreConformance.bytes(100_000, seed: 7)
    var store = try await DiskStore.open(root: dir.path)
    let w = try await store.openWriter(ref: "default/1/tar-blobs/x", total: 100_000, expected: nil)
    _ = try await w.append(data.prefix(40_000))
    await w.close()
    await store.shutdown()
    let ingest = dir.path + "/ingest/" + RefRules.ingestKey("default/1/tar-blobs/x")
    for name in ["ref", "startedat", "updatedat", "total", "data"] {
      #expect(FileManager.default.fileExists(atPath: ingest + "/" + name), "missing \(name)")
    }
    #expect(try String(contentsOfFile: ingest + "/ref", encoding: .utf8) == "default/1/tar-blobs/x")
    store = try await DiskStore.open(root: dir.path)
    let r = try await store.openWriter(ref: "default/1/tar-blobs/x", total: 0, expected: nil)
    let s = try await r.state()
    #expect(s.status.offset == 40_000 && s.status.total == 100_000)
    #expect(s.digest == Digest.of(data.prefix(40_000)))
    _ = try await r.append(data.suffix(from: 40_000))
    let done = try await r.commit(size: 100_000, expected: Digest.of(data), labels: [:])
    await r.close()
    #expect(FileManager.default.fileExists(atPath: dir.path + "/blobs/sha256/" + done.digest.hex))
    #expect(!FileManager.default.fileExists(atPath: ingest))
    await store.shutdown()
  }

  /// What a crash leaves (a half-created ingest directory, a temporary metadata file) is
  /// cleaned up when the store opens.
  @Test func openCleansCrashLeftovers() async throws {
    let dir = try TemporaryDirectory()
    var store = try await DiskStore.open(root: dir.path)
    await store.shutdown()
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir.path + "/ingest/half", withIntermediateDirectories: true)
    try Data("x".utf8).write(to: URL(fileURLWithPath: dir.path + "/meta/sha256/abc.tmp"))
    store = try await DiskStore.open(root: dir.path)
    #expect(!fm.fileExists(atPath: dir.path + "/ingest/half"))
    #expect(!fm.fileExists(atPath: dir.path + "/meta/sha256/abc.tmp"))
    await store.shutdown()
  }

  /// Committed blobs are plain, read-only files at containerd's path, with the commit
  /// time (to the nanosecond) as their modification time.
  @Test func blobsAreContainerdLayout() async throws {
    let dir = try TemporaryDirectory()
    let store = try await DiskStore.open(root: dir.path)
    defer { Task { await store.shutdown() } }
    let data = Data("hello, containerd".utf8)
    let d = try await StoreConformance.put(store, data, ref: "r")
    let path = dir.path + "/blobs/sha256/" + d.hex
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data)
    let attrs = try FileManager.default.attributesOfItem(atPath: path)
    #expect((attrs[.posixPermissions] as? Int).map { $0 & 0o222 } == 0)
    let info = try await store.info(d)
    let mtime = try #require(attrs[.modificationDate] as? Date)
    #expect(abs(mtime.timeIntervalSince1970 - Double(info.createdAt.seconds) - Double(info.createdAt.nanos) / 1e9) < 1e-6)
  }
}
