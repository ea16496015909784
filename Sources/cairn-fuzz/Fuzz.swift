import CairnFuzzTargets
import Foundation

// Built two ways (scripts/fuzz):
// - with -DFUZZING -sanitize=fuzzer -parse-as-library: libFuzzer's entry point; the target
//   is CAIRN_FUZZ_TARGET (one of FuzzTargets.all);
// - normally: `cairn-fuzz TARGET FILE...` runs files through a target once each (to
//   reproduce a crash libFuzzer saved, in a debugger-friendly build).

#if FUZZING
let selected: @Sendable ([UInt8]) -> Void = {
  let name = ProcessInfo.processInfo.environment["CAIRN_FUZZ_TARGET"] ?? ""
  guard let target = FuzzTargets.all[name] else {
    fatalError("CAIRN_FUZZ_TARGET must be one of \(FuzzTargets.all.keys.sorted()), not \"\(name)\"")
  }
  return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  selected(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
  return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
  _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main` (so that tests can import
/// it); here that entry point hands over to libFuzzer's driver.
@_cdecl("cairn_fuzz_main")
public func cairnFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  var (count, values) = (argc, argv)
  return LLVMFuzzerRunDriver(&count, &values) { data, size in fuzzOne(data, size) }
}
#else
@main struct Replay {
  static func main() {
    let args = CommandLine.arguments.dropFirst()
    if args.first == "--write-seeds", args.count == 3, let seeds = FuzzTargets.seeds[args[args.startIndex + 1]] {
      let dir = URL(fileURLWithPath: args[args.startIndex + 2])
      for (i, s) in seeds.enumerated() { try! Data(s).write(to: dir.appendingPathComponent("seed-\(i)")) }
      print("wrote \(seeds.count) seeds to \(dir.path)")
      return
    }
    guard let name = args.first, let target = FuzzTargets.all[name] else {
      FileHandle.standardError.write(Data("usage: cairn-fuzz TARGET FILE... (targets: \(FuzzTargets.all.keys.sorted().joined(separator: ", ")))\n".utf8))
      exit(64)
    }
    for path in args.dropFirst() {
      guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
        exit(66)
      }
      target(Array(data))
      print("\(path): ok")
    }
  }
}
#endif
