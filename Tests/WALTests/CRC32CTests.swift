import Checksum
import Testing
import TestSupport

/// CRC-32C eight bytes at a time against the byte-at-a-time definition:
/// random lengths and contents, fed in random pieces (each piece continues
/// the last), and the check value of the standard's test string.
@Suite struct CRC32CTests {
    static func bytewise(_ bytes: [UInt8], from start: UInt32 = 0) -> UInt32 {
        var c = ~start
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    @Test func matchesTheBytewiseDefinition() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        var rng = SeededRandom(seed: testSeed())
        for _ in 0..<2_000 {
            let bytes = (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let seed = Bool.random(using: &rng) ? 0 : UInt32.random(in: 0...UInt32.max, using: &rng)
            var crc = CRC32C()
            crc.seed(seed)
            var at = 0
            while at < bytes.count {
                let piece = Int.random(in: 1...(bytes.count - at), using: &rng)
                crc.update(Array(bytes[at..<at + piece]))
                at += piece
            }
            #expect(crc.value == Self.bytewise(bytes, from: seed))
        }
    }
}
