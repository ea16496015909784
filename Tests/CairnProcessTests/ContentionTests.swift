import CairnClient
import CairnCore
import CairnTestKit
import Foundation
import Testing

/// Issue 17: writers racing on one ref got `NOT_FOUND: open <data dir>/ingest/…` and
/// `NOT_FOUND: link …/blobs/…`: an Abort (a client's, or the store's own on ALREADY_EXISTS)
/// removed ingest files after the ref's lock had passed to the next writer, and the error
/// carried the server's path. Here many writers hammer one ref through every node of a
/// real cluster, both APIs, with and without an expected digest, while others Abort it.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ContentionTests {
  /// What a writer of a contended ref may be told: containerd's lock, ALREADY_EXISTS, or
  /// that an Abort took its ingest. Nothing else, and never where a node keeps its files.
  static func allowedForWriter(_ e: ContentError) -> Bool {
    switch e.code {
    case .unavailable: e.message.contains("locked")
    case .alreadyExists: true
    case .notFound: e.message.contains("aborted")
    default: false
    }
  }

  @Test func oneRefHammeredThroughEveryNode() async throws {
    try await withCluster(try await converged(ClusterProcesses.start(count: 3))) { cluster in
      let ref = "contended"
      var outcomes: [String: Int] = [:]
      var wrong: [String] = []
      for round in 0..<8 {
        // Small blobs race densest; every third round a larger one keeps streams open.
        let data = StoreConformance.bytes(round % 3 == 2 ? 3 << 20 : 40_000 + round, seed: UInt64(900 + round))
        let digest = Digest.of(data)
        let results = await withTaskGroup(of: (String, ContentError?).self) { group in
          for w in 0..<12 {
            group.addTask {
              let api: ContentAPI = w % 2 == 0 ? .modern : .seed
              do {
                let r = try await ContentClient.with(address: cluster.address(w % 3), api: api) {
                  try await $0.write(
                    ref: ref, source: DataSource(data), size: Int64(data.count), expected: w % 4 < 2 ? digest : nil, resume: w % 3 != 1)
                }
                return (r.alreadyExisted ? "already stored" : "committed", r.digest == digest ? nil : .dataLoss("committed \(r.digest)"))
              } catch let e as ContentError {
                return ("writer \(e.code.name)", e)
              } catch {
                return ("writer error", ContentError(.unknown, "\(error)"))
              }
            }
          }
          for a in 0..<4 {
            group.addTask {
              do {
                try await ContentClient.with(address: cluster.address(a % 3)) { try await $0.abort(ref: ref) }
                return ("abort OK", nil)
              } catch let e as ContentError where e.code == .notFound && !e.message.contains("/") {
                return ("abort NOT_FOUND", nil)
              } catch {
                return ("abort failed", ContentError.from(error))
              }
            }
          }
          var all: [(String, ContentError?)] = []
          for await r in group { all.append(r) }
          return all
        }
        for (outcome, error) in results {
          outcomes[outcome, default: 0] += 1
          guard let error else { continue }
          let isWriter = outcome.hasPrefix("writer")
          if !isWriter || !Self.allowedForWriter(error) || error.message.contains(cluster.dir.path) || error.message.contains("/ingest") {
            wrong.append("round \(round), \(outcome): \(error)")
          }
        }
        // Whoever won, the blob is there, whole, through every node (unless every writer
        // lost to an Abort, which these numbers make vanishingly rare: then write it once).
        if !results.contains(where: { $0.0 == "committed" || $0.0 == "already stored" }) {
          _ = try await put(cluster.address(0), data, ref: "contended-fallback-\(round)")
        }
        for i in 0..<3 {
          #expect(try await get(cluster.address(i), digest) == data, "round \(round) through n\(i + 1)")
        }
      }
      print("contention: outcomes over 8 rounds of 12 writers and 4 Aborts on one ref: \(outcomes.sorted { $0.key < $1.key })")
      #expect(wrong.isEmpty, "\(wrong.count) wrong answers:\n\(wrong.prefix(20).joined(separator: "\n"))")
      #expect(outcomes["committed", default: 0] >= 4, "\(outcomes)")
    }
  }
}
