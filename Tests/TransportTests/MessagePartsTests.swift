import Testing
import TestSupport
@testable import Transport

/// A message put together from parts is framed with its true length and
/// holds head, the varint field (omitted when zero, as proto3 does) and
/// tail, for values of every varint width.
@Suite struct MessagePartsTests {
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        return out + [UInt8(v)]
    }

    @Test func framedAsItsPartsSay() {
        var rng = SeededRandom(seed: testSeed())
        for _ in 0..<2_000 {
            let head = (0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Tails long enough to be queued by reference, and short ones.
            let tail = (0..<Int.random(in: 0..<(Bool.random(using: &rng) ? 300 : 3000), using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let field = UInt64.random(in: 0...3, using: &rng)
            let value = Bool.random(using: &rng) ? UInt64.random(in: 0...300, using: &rng)
                : UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)
            let parts = MessageParts(head: head, field: field, value: value, tail: tail)
            var outbound = OutboundQueue()
            GRPCFrame.encode(parts, into: &outbound)
            var queue = ByteQueue()
            while !outbound.isEmpty { outbound.write(Int.random(in: 1...700, using: &rng)) { queue.append($0) } }
            let middle = field == 0 || value == 0 ? [] : Self.varint(field << 3) + Self.varint(value)
            let message = head + middle + tail
            #expect(parts.count == message.count)
            #expect(parts.bytes == message)
            guard case .message(let got) = GRPCFrame.next(from: &queue, maxMessageBytes: 1 << 20) else {
                Issue.record("not one whole message")
                return
            }
            #expect(got == message, "field \(field) value \(value)")
            #expect(queue.isEmpty)
        }
    }
    /// Framing one message for many values of its field (a stream's
    /// watchers of one event) gives the bytes of framing each in turn, for
    /// short tails (written in one pass) and long ones (kept shared), and
    /// says how many bytes it framed.
    @Test func framedForEachValueAsOneByOne() {
        var rng = SeededRandom(seed: testSeed())
        func drain(_ q: inout OutboundQueue) -> [UInt8] {
            var out: [UInt8] = []
            q.write(q.count) { out.append(contentsOf: $0) }
            return out
        }
        for _ in 0..<500 {
            let head = (0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let tail = (0..<Int.random(in: 0..<(Bool.random(using: &rng) ? 300 : 3000), using: &rng))
                .map { _ in UInt8.random(in: 0...255, using: &rng) }
            let field = UInt64.random(in: 0...3, using: &rng)
            let values = (0..<Int.random(in: 0..<20, using: &rng)).map { _ in
                Bool.random(using: &rng) ? UInt64.random(in: 0...300, using: &rng) : UInt64.random(in: 0...UInt64.max, using: &rng)
            }
            let parts = MessageParts(head: head, field: field, value: 0, tail: tail)
            var together = OutboundQueue(), oneByOne = OutboundQueue()
            // Something queued before, so the block is appended, not adopted.
            if Bool.random(using: &rng) {
                together.append([1, 2, 3])
                oneByOne.append([1, 2, 3])
            }
            let before = together.count
            let framed = GRPCFrame.encode(parts, withEachValue: values, into: &together)
            #expect(framed == together.count - before && framed == parts.framedBytes(withEachValue: values))
            for v in values {
                var one = parts
                one.value = v
                GRPCFrame.encode(one, into: &oneByOne)
            }
            #expect(together.count == oneByOne.count)
            #expect(drain(&together) == drain(&oneByOne))
        }
    }
}
