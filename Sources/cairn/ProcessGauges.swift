import CairnCore
import CairnServer
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The series every Prometheus client library exports about its process (process_*, from
/// /proc/self), and `cairn_build_info`: dashboards and alerts written for other services
/// work on a node unchanged (restarts, memory, file descriptors against their limit).
enum ProcessGauges {
  static func install(metrics: NodeMetrics) {
    metrics.gauge("cairn_build_info", "1, labelled with this build's version", labels: [("version", CairnVersion.current)]).set(to: 1)
    let cpu = metrics.registry.makeCounter(name: "process_cpu_seconds_total", labels: [], help: "User and system CPU time spent, in seconds")
    let counted = Mutex<Double>(0)
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    let page = Double(sysconf(Int32(_SC_PAGESIZE)))
    metrics.addCollector { m in
      guard let field = statFields() else { return }
      let seconds = (field(14) + field(15)) / ticks
      let delta = counted.withLock { last -> Double in
        defer { last = max(last, seconds) }
        return max(0, seconds - last)
      }
      if delta > 0 { cpu.increment(by: delta) }
      m.gauge("process_resident_memory_bytes", "Resident memory size in bytes").set(to: field(24) * page)
      m.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes").set(to: field(23))
      if let start = startTime {
        m.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds").set(to: start)
      }
      let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
      m.gauge("process_open_fds", "Open file descriptors").set(to: Double(fds))
      var limit = rlimit()
      if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        m.gauge("process_max_fds", "Limit on open file descriptors").set(to: Double(limit.rlim_cur))
      }
    }
  }

  /// /proc/self/stat's field n (1-based, as proc(5) numbers them), as a number.
  static func statFields() -> ((Int) -> Double)? {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
    // Fields after the command name, which may itself hold spaces and parentheses: state
    // is field 3, so field n is at index n - 3.
    let f = stat[stat.index(after: close)...].split(separator: " ")
    return { n in f.count > n - 3 ? Double(f[n - 3]) ?? 0 : 0 }
  }

  /// When this process started, seconds since 1970 (the metric, and the dashboard's uptime).
  static let startTime: Double? = {
    guard let boot = bootTime, let field = statFields() else { return nil }
    return boot + field(22) / Double(sysconf(Int32(_SC_CLK_TCK)))
  }()

  /// The system's boot time (btime in /proc/stat), to which a process's start ticks count.
  private static let bootTime: Double? = {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
      return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
    }
    return nil
  }()
}
