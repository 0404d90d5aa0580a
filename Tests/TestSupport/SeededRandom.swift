#if canImport(Glibc)
import Glibc
#endif

/// A seeded generator (SplitMix64) for the randomized tests: one seed
/// replays one run.
public struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The seed for a randomized test: SWETCD_SEED when set, else a fresh one.
public func testSeed() -> UInt64 {
    if let s = getenv("SWETCD_SEED"), let v = UInt64(String(cString: s)) { return v }
    var g = SystemRandomNumberGenerator()
    return g.next()
}
