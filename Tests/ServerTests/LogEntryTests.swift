import Raft
import Testing
@testable import Server

@Suite struct LogEntryTests {
    @Test func proposedRequestsRoundTripAndGarbageIsRejected() {
        for id: UInt64 in [0, 1, 0x1234 << 48 | 77, .max] {
            let p = ProposedRequest(kind: .txn, id: id, request: [1, 2, 3])
            #expect(ProposedRequest(decoding: p.encoded()) == p)
        }
        #expect(ProposedRequest(decoding: ProposedRequest(kind: .put, id: 9, request: []).encoded())?.request == [])
        #expect(ProposedRequest(decoding: []) == nil)
        #expect(ProposedRequest(decoding: [9, 1, 1, 1, 1, 1, 1, 1, 1]) == nil, "unknown kind")
        #expect(ProposedRequest(decoding: [1, 1, 1]) == nil, "truncated ID")
    }

    /// Entries the member wrote before Raft still decode, and become Raft
    /// entries of their term and index carrying the same request.
    @Test func entriesOfTheMemberBeforeRaftBecomeRaftEntries() {
        for (term, index) in [(UInt64(0), UInt64(0)), (2, 1), (7, 300), (UInt64.max, UInt64.max)] {
            let e = LegacyLogEntry(term: term, index: index, kind: .txn, request: [1, 2, 3])
            #expect(LegacyLogEntry(decoding: e.encoded()) == e)
            let raft = e.raftEntry
            #expect(raft.term == term && raft.index == index && raft.kind == .normal)
            #expect(ProposedRequest(decoding: raft.data) == ProposedRequest(kind: .txn, id: 0, request: [1, 2, 3]))
        }
        #expect(LegacyLogEntry(decoding: []) == nil)
        #expect(LegacyLogEntry(decoding: [9, 1, 1]) == nil, "unknown kind")
        #expect(LegacyLogEntry(decoding: [1, 0x80]) == nil, "truncated varint")
    }
}
