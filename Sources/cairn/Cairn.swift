import ArgumentParser
import CairnClient
import CairnCore
import Foundation

@main
struct Cairn: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cairn",
    abstract: "A replicated, content-addressable blob store that speaks containerd's Content API.",
    discussion: """
      Exit codes: 0 success; 1 local failure (no server asked); 64 usage error; 100+N a gRPC status N from the \
      server (105 NOT_FOUND, 106 ALREADY_EXISTS, 109 FAILED_PRECONDITION, 111 OUT_OF_RANGE, \
      114 UNAVAILABLE, 115 DATA_LOSS, ...).
      """,
    version: "cairn \(CairnVersion.current)",
    subcommands: [
      Serve.self, Put.self, Get.self, Info.self, Health.self, List.self, Remove.self, Label.self, Status.self, Abort.self,
      Bench.self, Herd.self, ClusterCommand.self, Demo.self, Agent.self, ChaosCommand.self, ConfigCommand.self,
      TokenCommand.self, CertsCommand.self, Version.self,
    ])
}

/// Options every client command takes.
struct ClientOptions: ParsableArguments {
  @Option(name: .customLong("address"), help: ArgumentHelp("Server: HOST:PORT or unix:///PATH (default: $CAIRN_ADDRESS, else 127.0.0.1:7400).", valueName: "address"))
  var addressOption: String?
  /// The flag, else $CAIRN_ADDRESS, else the default port on loopback (one place says it,
  /// the help says it once).
  var address: String { addressOption ?? ProcessInfo.processInfo.environment["CAIRN_ADDRESS"] ?? "127.0.0.1:7400" }

  @Option(help: "Content API: seed (containerd.v1.Content) or modern (containerd.services.content.v1.Content).")
  var api: ContentAPI = .modern

  @Option(help: "containerd namespace sent as the containerd-namespace header (needed against containerd).")
  var namespace: String?

  @Option(help: "Client identity sent as the cairn-client header: the server then shows only what this client holds (default: $CAIRN_CLIENT; none = the whole store).")
  var client: String?

  @Option(help: "PEM CA of the server's TLS certificate: connect with TLS (default: $CAIRN_TLS_CA).") var tlsCa: String?
  @Option(help: "PEM client certificate for mTLS (default: $CAIRN_TLS_CERT).") var tlsCert: String?
  @Option(help: "PEM key of --tls-cert (default: $CAIRN_TLS_KEY).") var tlsKey: String?
  @Option(help: "Bearer token sent on every call (default: $CAIRN_TOKEN).") var token: String?

  /// Connects and runs `body`; a server status becomes a message naming it and exit 100+code.
  /// `unimplemented`: what an UNIMPLEMENTED answer means for this command (a single node
  /// has no cluster RPCs), said instead of gRPC's "Requested RPC isn't implemented".
  func run<T: Sendable>(unimplemented: String? = nil, _ body: (ContentClient) async throws -> T) async throws -> T {
    takeOverConcurrencyPool()
    if address.hasPrefix("http://") || address.hasPrefix("https://") {
      throw failLocally(
        ContentError.invalidArgument("--address \(address) is a URL: give HOST:PORT or unix:///PATH (TLS is --tls-ca, not https://)"))
    }
    // A malformed address is the command line's fault, not a server's answer (exit 1).
    do { _ = try ServerAddress(parsing: address) } catch { throw failLocally(error) }
    var security = ClientSecurity.current
    security.caPath = tlsCa ?? security.caPath
    security.certificatePath = tlsCert ?? security.certificatePath
    security.keyPath = tlsKey ?? security.keyPath
    security.token = token ?? security.token
    ClientSecurity.current = security
    do {
      return try await ContentClient.with(address: address, api: api, namespace: namespace, client: client ?? ProcessInfo.processInfo.environment["CAIRN_CLIENT"], body)
    } catch {
      let e = ContentError.from(error)
      if e.code == .unimplemented, let unimplemented { throw fail(ContentError(.unimplemented, unimplemented)) }
      // grpc-swift's "Could not establish a connection to [ipv4]…" says what, not why.
      if e.code == .unavailable, e.message.hasPrefix("Could not establish a connection") {
        throw fail(ContentError.unavailable("nothing answers at \(address): is a node running there (cairn serve)?"))
      }
      if e.code == .unavailable, e.message.contains("HTTP/2 connection preface") {
        throw fail(ContentError.unavailable("\(address) answers, but not with gRPC: is it a node's admin (HTTP) port? Clients use the gRPC port (listen)"))
      }
      throw fail(error)
    }
  }
}

extension ContentAPI: ExpressibleByArgument {}

/// Prints an error the way a person wants to read it and returns the exit code to use.
func fail(_ error: any Error) -> ExitCode {
  if let e = error as? ExitCode { return e }
  let ce = ContentError.from(error)
  FileHandle.standardError.write(Data("cairn: \(ce.code.name): \(ce.message)\n".utf8))
  return ce.code == .internalError && !(error is ContentError) ? ExitCode(1) : ExitCode(Int32(100 + ce.code.rawValue))
}

/// A failure before any server was asked (a file that cannot be read, a malformed digest or
/// address): its message and exit 1, so that scripts tell it from a server's answer (100+N).
func failLocally(_ error: any Error) -> ExitCode {
  if let e = error as? ExitCode { return e }
  FileHandle.standardError.write(Data("cairn: \(ContentError.from(error).message)\n".utf8))
  return ExitCode(1)
}

/// A digest from the command line, checked before connecting (exit 1 if malformed).
func digestArgument(_ text: String) throws -> Digest {
  do { return try Digest(parsing: text) } catch { throw failLocally(error) }
}

func formatBytes(_ n: Int64) -> String { ByteSize.format(n) }

struct Version: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print this build's version (also: cairn --version).")
  @Flag(help: "As a JSON object, for scripts.") var json = false

  func run() {
    if json {
      print(#"{"version":"\#(CairnVersion.current)"}"#)
    } else {
      print("cairn \(CairnVersion.current)")
    }
  }
}
