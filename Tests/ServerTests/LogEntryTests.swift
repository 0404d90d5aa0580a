import Testing
@testable import Server

@Suite struct LogEntryTests {
    @Test func entriesRoundTripAndGarbageIsRejected() {
        for (term, index) in [(UInt64(0), UInt64(0)), (2, 1), (7, 300), (UInt64.max, UInt64.max)] {
            let e = LogEntry(term: term, index: index, kind: .txn, request: [1, 2, 3])
            #expect(LogEntry(decoding: e.encoded()) == e)
        }
        #expect(LogEntry(decoding: []) == nil)
        #expect(LogEntry(decoding: [9, 1, 1]) == nil, "unknown kind")
        #expect(LogEntry(decoding: [1, 0x80]) == nil, "truncated varint")
    }
}
