import CairnCore
import GRPCCore
import NIOCore
import Testing

@testable import CairnServer

/// What a handler's failure becomes on the wire.
@Suite struct RPCErrorTests {
  static func code(_ error: any Error) async -> (RPCError.Code, String)? {
    do {
      _ = try await rpc { () async throws -> Int in throw error }
      return nil
    } catch let e as RPCError {
      return (e.code, e.message)
    } catch {
      return nil
    }
  }

  /// A connection that closed under a call (a forwarded call's peer died) is UNAVAILABLE,
  /// which clients retry on another node; it was INTERNAL "I/O on closed channel".
  @Test func aClosedConnectionIsUnavailable() async {
    let answer = await Self.code(ChannelError.ioOnClosedChannel)
    #expect(answer?.0 == .unavailable, "\(String(describing: answer))")
  }

  /// A ContentError's detail (a server path) stays in the node's log; the caller gets the
  /// message.
  @Test func theDetailIsNotSent() async {
    let answer = await Self.code(ContentError(.internalError, "open of a file of the store: Is a directory", detail: "open /var/lib/cairn/tombstones/x.tmp"))
    #expect(answer?.0 == .internalError && answer?.1.contains("/var/lib/cairn") == false, "\(String(describing: answer))")
  }

  /// An error that is not Cairn's own is INTERNAL without its text (a Foundation error
  /// quotes file names).
  @Test func aForeignErrorsTextIsNotSent() async {
    struct Leaky: Error, CustomStringConvertible { var description: String { "cannot open /etc/cairn/secret" } }
    let answer = await Self.code(Leaky())
    #expect(answer?.0 == .internalError && answer?.1.contains("/etc/cairn") == false, "\(String(describing: answer))")
  }
}
