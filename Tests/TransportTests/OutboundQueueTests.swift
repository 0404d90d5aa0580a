import Testing
import TestSupport
@testable import Transport

/// A stream's outbound queue against a plain array of the bytes appended:
/// random mixes of small copied pieces, long arrays kept by reference,
/// frame headers, varints and adopted buffers, taken out in random amounts
/// while more is appended, come out as they went in.
@Suite struct OutboundQueueTests {
    @Test func writesOutWhatWasAppendedInOrder() {
        var rng = SeededRandom(seed: testSeed())
        for _ in 0..<200 {
            var queue = OutboundQueue()
            var model: [UInt8] = []
            var out: [UInt8] = []
            for _ in 0..<Int.random(in: 1..<60, using: &rng) {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0:
                    let n = UInt32.random(in: 0...UInt32.max, using: &rng)
                    queue.appendFrameHeader(n)
                    model += [0, UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8),
                              UInt8(truncatingIfNeeded: n)]
                case 1:
                    let v = UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)
                    queue.appendVarint(v)
                    var w = v
                    while w >= 0x80 {
                        model.append(UInt8(truncatingIfNeeded: w) | 0x80)
                        w >>= 7
                    }
                    model.append(UInt8(w))
                case 2:
                    let bytes = Self.bytes(Int.random(in: 0..<3 * OutboundQueue.sharedMinBytes, using: &rng), &rng)
                    queue.append(adopting: bytes)
                    model += bytes
                case 3:
                    // Take some out while more is queued.
                    let n = Int.random(in: 0...2 * OutboundQueue.sharedMinBytes, using: &rng)
                    queue.write(n) { out.append(contentsOf: $0) }
                default:
                    let bytes = Self.bytes(Int.random(in: 0..<3 * OutboundQueue.sharedMinBytes, using: &rng), &rng)
                    queue.append(bytes)
                    model += bytes
                }
                #expect(queue.count == model.count - out.count)
            }
            while !queue.isEmpty { queue.write(Int.random(in: 1...5000, using: &rng)) { out.append(contentsOf: $0) } }
            #expect(out == model)
            #expect(queue.count == 0)
        }
    }

    static func bytes(_ n: Int, _ rng: inout SeededRandom) -> [UInt8] {
        (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }
}
