import CairnCore
import CairnDisk
import CairnTestKit
import Foundation
import Testing

/// The one helper for small files that must survive a crash: every failure is thrown
/// (a caller such as a Delete then fails), and a failed write leaves the old content.
@Suite struct DurableFilesTests {
  @Test func writeReplacesWholeAndLeavesNoTemp() throws {
    let dir = try TemporaryDirectory("cairn-durable")
    let path = dir.path + "/f"
    try DurableFiles.write(path, Data("one".utf8))
    try DurableFiles.write(path, Data("two".utf8))
    #expect(try DurableFiles.read(path) == Data("two".utf8))
    #expect(try DurableFiles.list(dir.path) == ["f"])
  }

  @Test func aFailedWriteThrowsAndKeepsTheOldContent() throws {
    let dir = try TemporaryDirectory("cairn-durable")
    let path = dir.path + "/f"
    try DurableFiles.write(path, Data("old".utf8))
    // A directory where the temp file goes: open fails as on a full disk.
    try FileManager.default.createDirectory(atPath: path + ".tmp", withIntermediateDirectories: false)
    #expect(throws: ContentError.self) { try DurableFiles.write(path, Data("new".utf8)) }
    #expect(try DurableFiles.read(path) == Data("old".utf8))
    #expect(throws: ContentError.self) { try DurableFiles.write(dir.path + "/missing/f", Data()) }
    #expect(throws: ContentError.self) { try DurableFiles.create(dir.path + "/missing/f") }
  }

  @Test func markersAndDirectories() throws {
    let dir = try TemporaryDirectory("cairn-durable")
    try DurableFiles.makeDirectory(dir.path + "/a/b")
    try DurableFiles.makeDirectory(dir.path + "/a/b")  // again: fine
    try DurableFiles.create(dir.path + "/a/b/m")
    #expect(DurableFiles.exists(dir.path + "/a/b/m"))
    try DurableFiles.remove(dir.path + "/a/b/m", durable: true)
    try DurableFiles.remove(dir.path + "/a/b/m")  // gone already: fine
    #expect(!DurableFiles.exists(dir.path + "/a/b/m"))
    // A file too large for a small-file read is an error, not a truncation.
    try DurableFiles.write(dir.path + "/big", Data(count: 100))
    #expect(throws: ContentError.self) { try DurableFiles.read(dir.path + "/big", limit: 10) }
  }
}
