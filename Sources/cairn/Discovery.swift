import CairnCluster
import CairnCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Resolves a headless service until it names `size` peers (pods start one by one), with
/// a progress line per change; the peer list is then fixed for the node's lifetime.
func discoverPeers(service: String, size: Int, timeout: Double, announce: (String) -> Void) async throws -> [NodeID: String] {
  guard let colon = service.lastIndex(of: ":"), let port = Int(service[service.index(after: colon)...]) else {
    throw ContentError.invalidArgument("--discover-dns \(quoted(service)) is not NAME:PORT")
  }
  let host = String(service[..<colon])
  let deadline = Date().addingTimeInterval(timeout)
  var last = -1
  while true {
    let names = reverseNames(of: resolve(host))
    let peers = try DNSDiscovery.peers(fromNames: names, port: port)
    if peers.count != last {
      announce("discovered \(peers.count) of \(size) peers via \(host): \(peers.keys.sorted().map(\.name).joined(separator: " "))")
      fflush(nil)
      last = peers.count
    }
    if peers.count >= size { return peers }
    if Date() > deadline {
      throw ContentError.unavailable("DNS discovery found \(peers.count) of \(size) peers behind \(host) in \(Int(timeout)) s")
    }
    try await Task.sleep(nanoseconds: 1_000_000_000)
  }
}

/// Every IPv4/IPv6 address `host` resolves to.
private func resolve(_ host: String) -> [sockaddr_storage] {
  var hints = addrinfo()
  hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
  var list: UnsafeMutablePointer<addrinfo>?
  guard getaddrinfo(host, nil, &hints, &list) == 0 else { return [] }
  defer { freeaddrinfo(list) }
  var out: [sockaddr_storage] = []
  var p = list
  while let ai = p {
    var storage = sockaddr_storage()
    withUnsafeMutableBytes(of: &storage) { dst in
      dst.copyMemory(from: UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
    }
    out.append(storage)
    p = ai.pointee.ai_next
  }
  return out
}

/// The reverse (PTR) name of each address that has one, without duplicates.
private func reverseNames(of addresses: [sockaddr_storage]) -> [String] {
  var names: Set<String> = []
  for var a in addresses {
    var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
    let len = socklen_t(a.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafePointer(to: &a) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        getnameinfo($0, len, &buffer, socklen_t(buffer.count), nil, 0, NI_NAMEREQD)
      }
    }
    if rc == 0 { names.insert(String(cString: buffer)) }
  }
  return names.sorted()
}
