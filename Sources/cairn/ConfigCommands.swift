import ArgumentParser
import CairnCore
import Foundation

struct ConfigCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "config", abstract: "Check a node's config file; list every option.",
    subcommands: [ConfigCheck.self, ConfigKeys.self])
}

struct ConfigCheck: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check",
    abstract: "Validate a config file as `cairn serve --config FILE` would, without starting anything.",
    discussion: "Exit 0 and a summary if it is valid; otherwise every problem (key, value, where it was set, why), one per line, and exit 64. Files it names (certificates, tokens) must exist and parse. With --env, CAIRN_* variables apply on top, as they would for serve.")

  @Argument(help: "The config file.") var file: String
  @Flag(help: "Apply CAIRN_* environment variables on top of the file.") var env = false

  func run() async throws {
    let plan = try configurationProblems {
      // Every problem, not just the first: the file's bad lines, then its values; after a
      // value's problem the key's default stands in for it and the check goes on (a problem
      // that follows from a default is still a problem).
      var found: [String] = []
      let loaded = try ConfigFile.load(file, allowed: OptionCatalog.keys, problems: &found)
      var settings = Settings(file: loaded, env: env ? ProcessInfo.processInfo.environment : [:], flags: [:])
      for _ in 0..<OptionCatalog.options.count {
        do {
          let plan = try NodePlan(settings)
          if found.isEmpty { return plan }
          break
        } catch let problem as ConfigProblem {
          if !found.contains(problem.message) { found.append(problem.message) }
          // A key that is not set cannot be dropped: the problem is another key's absence.
          guard settings.string(problem.key) != nil else { break }
          settings = settings.without(problem.key)
        } catch {
          found.append(ContentError.from(error).message)
          break
        }
      }
      throw ContentError.invalidArgument(found.joined(separator: "\n"))
    }
    var summary = ["\(file): valid"]
    summary.append("data \(plan.dataDir); listen \(plan.tcp.map { "\($0.host):\($0.port)" } ?? "none")\(plan.tls != nil ? " (TLS\(plan.tls?.clientCAPath != nil ? ", cluster CA" : ""))" : "")\(plan.unixPath.map { "; unix \($0)" } ?? "")\(plan.admin.map { "; admin \($0.host):\($0.port)" } ?? "")")
    switch plan.cluster {
    case .single: summary.append("single node")
    case .peers(let c): summary.append("cluster node \(c.me) of \(c.peers.count), replicas \(c.replicas), write quorum \(c.writeQuorum)")
    case .dns(let service, let size, _): summary.append("cluster of \(size) from DNS \(service)")
    case .join(let seed, let id): summary.append("joins through \(seed) as \(id)")
    }
    if let t = plan.tokens { summary.append("\(t.grants.count) tokens; TCP calls need a token or a cluster certificate") }
    print(summary.joined(separator: "\n"))
  }
}

struct ConfigKeys: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "keys", abstract: "List every option (key, environment variable, flag, default).")
  @Flag(help: "As the Markdown tables of docs/configuration.md.") var markdown = false

  func run() async throws {
    if markdown {
      print(OptionCatalog.markdown(), terminator: "")
      return
    }
    print(textTable([["key", "environment", "default", "section"]] + OptionCatalog.options.map { [$0.key, $0.env, $0.defaultText, $0.section] }))
  }
}

struct TokenCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "token", abstract: "Make bearer tokens.", subcommands: [TokenNew.self])
}

struct TokenNew: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "new", abstract: "Print a new random token and the tokens_file line that grants it.",
    discussion: "The file stores only the token's SHA-256. Give the token to the client (CAIRN_TOKEN or --token) and append the line to the node's tokens_file; nodes reload it within tls_reload_interval.")

  @Argument(help: "The client identity calls with this token act as (their own view of the store); * = the whole store.")
  var client: String
  @Option(help: "Comma-separated: read, write, delete (a client's); admin, monitor (an operator's); peer (a node's, alone, CLIENT = its node id).")
  var permissions = "read,write"

  func run() async throws {
    var perms: [Permission] = []
    for p in permissions.split(separator: ",") {
      guard let perm = Permission(rawValue: String(p)) else {
        throw ValidationError("unknown permission \(p); known: \(Permission.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      perms.append(perm)
    }
    if client != "*" {
      do { _ = try ClientID(client) } catch { throw ValidationError(error.message) }
    }
    if perms.contains(.peer) && (perms.count > 1 || client == "*") {
      throw ValidationError("a peer token names its node (cairn token new NODE --permissions peer) and has no other permission")
    }
    let (token, line) = TokenTable.newToken(client: client, permissions: perms)
    print("token: \(token)")
    print("tokens_file line: \(line)")
  }
}

/// Runs `body`; a problem with the configuration is printed alone (key, value, source, why)
/// and exits 64, without the usage text ArgumentParser appends to a ValidationError: the
/// command line was fine, the configuration was not.
func configurationProblems<T>(_ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch {
    let message =
      switch error {
      case let e as ValidationError: e.message
      case let e as ConfigProblem: e.message
      case let e as ContentError: e.message
      default: throw error
      }
    // One line per problem, each marked.
    for line in message.split(separator: "\n") { FileHandle.standardError.write(Data("Error: \(line)\n".utf8)) }
    throw ExitCode(64)
  }
}
