import CFuzzerDriver
#if canImport(Glibc)
import Glibc
#endif

// FUZZ_LIST=1: print the targets' names and stop.
if getenv("FUZZ_LIST") != nil {
    print(targets.keys.sorted().joined(separator: "\n"))
    exit(0)
}
// FUZZ_WRITE_SEEDS=DIR: write the seed corpora and stop.
if let dir = getenv("FUZZ_WRITE_SEEDS") {
    do { try writeSeeds(to: String(cString: dir)) } catch { fatalError("seeds: \(error)") }
    exit(0)
}

/// The target FUZZ_TARGET names, chosen once.
let chosen: Target = {
    let name = getenv("FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = targets[name] else {
        let message = "FUZZ_TARGET must name one of: \(targets.keys.sorted().joined(separator: ", "))\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
    return target
}()

/// libFuzzer's callback, by the name its runtime expects to find.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    chosen(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

// libFuzzer runs from here (SwiftPM's executables keep their own main).
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
