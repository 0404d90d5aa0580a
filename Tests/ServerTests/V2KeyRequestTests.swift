import Testing
@testable import Server

@Suite struct V2KeyRequestTests {
    /// A TTL of any size expires no later than Go can write as JSON (and
    /// never overflows: a huge `ttl=` once stopped the server).
    @Test func expiryIsBounded() {
        let now: UInt64 = 1_800_000_000_000
        #expect(V2KeyRequest.expiry(now: now, ttl: 5) == now + 5_000)
        #expect(V2KeyRequest.expiry(now: now, ttl: 0) == now)
        for ttl in [UInt64.max, UInt64.max / 1000, UInt64.max / 1000 + 1, 9_223_372_036_854_775, 300_000_000_000] {
            #expect(V2KeyRequest.expiry(now: now, ttl: ttl) == V2KeyRequest.latestExpiry, "ttl \(ttl)")
        }
    }

    @Test func percentDecodingAsGo() throws {
        #expect(try V2KeyRequest.unescape("a+b%21%2F", plusIsSpace: true) == "a b!/")
        #expect(try V2KeyRequest.unescape("a+b", plusIsSpace: false) == "a+b")
        #expect(throws: (any Error).self) { try V2KeyRequest.unescape("x%zz", plusIsSpace: true) }
        #expect(throws: (any Error).self) { try V2KeyRequest.unescape("x%2", plusIsSpace: true) }
    }

    /// Found by the v2-request fuzz target: a status past Int.max trapped.
    @Test func anAnswerWithAnImpossibleStatusIsRefused() {
        let answer = V2Answer(status: 201, etcdIndex: 3, raftIndex: 4, body: Array("{}".utf8))
        #expect(V2Answer(encoded: answer.encoded()) == answer)
        var bytes = answer.encoded()
        bytes[0] = 0x80
        #expect(V2Answer(encoded: bytes) == nil)
    }
}
