#if canImport(Glibc)
import Glibc
#endif
@testable import MVCC

/// A seeded generator (SplitMix64): one seed replays one run.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A fresh directory under /tmp, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/swetcd-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    var database: String { path + "/db" }

    func remove() {
        unlink(path + "/db")
        unlink(path + "/db-lock")
        rmdir(path)
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The seed for a randomized test: SWETCD_SEED when set, else a fresh one.
func testSeed() -> UInt64 {
    if let s = getenv("SWETCD_SEED"), let v = UInt64(String(cString: s)) { return v }
    var g = SystemRandomNumberGenerator()
    return g.next()
}
