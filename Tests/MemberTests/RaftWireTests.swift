import Member
import Raft
import Testing
import TestSupport

/// Raft messages in etcd's raftpb wire format.
@Suite struct RaftWireTests {
    /// An append as etcd's gogoproto encoding writes it, field by field
    /// (numbers and types from etcd's raftpb/raft.proto).
    @Test func anAppendIsEtcdsBytes() throws {
        var m = Message(type: .append, from: 1, to: 2, term: 5)
        m.logTerm = 4
        m.index = 10
        m.entries = [Entry(term: 5, index: 11, data: Array("x".utf8))]
        m.commit = 9
        let bytes: [UInt8] = [
            0x08, 3,  // type MsgApp
            0x10, 2, 0x18, 1, 0x20, 5, 0x28, 4, 0x30, 10,  // to, from, term, logTerm, index
            0x3a, 9, 0x08, 0, 0x10, 5, 0x18, 11, 0x22, 1, 0x78,  // entries: {EntryNormal, term 5, index 11, "x"}
            0x40, 9,  // commit
            0x4a, 8, 0x12, 6, 0x0a, 0, 0x10, 0, 0x18, 0,  // snapshot: empty metadata, always written
            0x50, 0, 0x58, 0,  // reject, rejectHint
        ]
        #expect(try RaftWire.encode(m) == bytes)
        #expect(try RaftWire.decode(bytes) == m)
    }

    @Test func aMembershipEntryIsARaftpbConfChange() {
        // ConfChange{type: ConfChangeAddLearnerNode, node_id: 0x8e9e05c52164694d}
        let learner = ConfChange.addLearner(0x8e9e05c52164694d)
        #expect(learner.encoded == [0x10, 3, 0x18, 0xcd, 0xd2, 0x91, 0x8b, 0xd2, 0xb8, 0x81, 0xcf, 0x8e, 0x01])
        #expect(ConfChange(encoded: learner.encoded) == learner)
        // etcd writes the ID field first; a context may follow.
        #expect(ConfChange(encoded: [0x08, 7, 0x10, 1, 0x18, 9, 0x22, 2, 0x61, 0x62]) == .remove(9))
        #expect(ConfChange(encoded: [0x10, 2, 0x18, 9]) == nil, "ConfChangeUpdateNode changes no membership")
        #expect(ConfChange(encoded: [0x10]) == nil)
    }

    @Test func everyMessageRoundTrips() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let types: [MessageType] = [.vote, .voteResponse, .preVote, .preVoteResponse, .append, .appendResponse, .heartbeat,
                                    .heartbeatResponse, .readIndex, .readIndexResponse, .timeoutNow, .snapshot, .propose]
        for _ in 0..<500 {
            let type = types.randomElement(using: &rng)!
            func n() -> UInt64 { Bool.random(using: &rng) ? UInt64.random(in: 0...3, using: &rng) : UInt64.random(in: 0...UInt64.max, using: &rng) }
            func bytes() -> [UInt8] { (0..<Int.random(in: 0...5, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            var m = Message(type: type, from: n(), to: n(), term: n())
            m.logTerm = n()
            m.index = n()
            m.commit = n()
            m.reject = Bool.random(using: &rng)
            m.rejectHint = n()
            m.context = bytes()
            m.entries = (0..<Int.random(in: 0...3, using: &rng)).map { _ in
                Entry(term: n(), index: n(), kind: Bool.random(using: &rng) ? .normal : .confChange, data: bytes())
            }
            if type == .snapshot {
                m.snapshot = Snapshot(index: n(), term: n(), data: bytes(), voters: [n(), n()], learners: [n()])
            }
            #expect(try RaftWire.decode(try RaftWire.encode(m)) == m, "seed \(seed): \(m)")
        }
    }

    @Test func garbageAndLocalTypesAreRefused() {
        #expect(throws: RaftWire.Failure.undecodable) { try RaftWire.decode([0x08]) }
        #expect(throws: RaftWire.Failure.unsupportedType(0)) { try RaftWire.decode([0x08, 0]) }  // MsgHup
        #expect(throws: RaftWire.Failure.unsupportedType(2)) { try RaftWire.decode([0x08, 3, 0x3a, 2, 0x08, 2]) }  // ConfChangeV2
    }
}
