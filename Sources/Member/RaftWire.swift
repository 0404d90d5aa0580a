import EtcdProto
import Foundation
import Raft
import SwiftProtobuf

/// Raft messages in etcd's wire format (`raftpb.Message`): what one member
/// sends another over the peer transport, byte for byte what etcd's raft
/// would decode. As etcd's gogoproto encoding writes them: every scalar
/// field, zero or not, and the snapshot's metadata; bytes fields only when
/// not empty.
public enum RaftWire {
    public enum Failure: Error, Equatable {
        /// A message type this member never sends nor acts on (MsgHup,
        /// MsgBeat, ...: local to etcd's raft).
        case unsupportedType(Int)
        case undecodable
    }

    public static func encode(_ m: Raft.Message) throws -> [UInt8] {
        var p = Raftpb_Message()
        p.type = messageType(m.type)
        p.to = m.to
        p.from = m.from
        p.term = m.term
        p.logTerm = m.logTerm
        p.index = m.index
        p.entries = m.entries.map { e in
            var pe = Raftpb_Entry()
            pe.type = e.kind == .confChange ? .entryConfChange : .entryNormal
            pe.term = e.term
            pe.index = e.index
            if !e.data.isEmpty { pe.data = Data(e.data) }
            return pe
        }
        p.commit = m.commit
        var snapshot = Raftpb_Snapshot()
        snapshot.metadata.confState = Raftpb_ConfState()
        if let s = m.snapshot {
            if !s.data.isEmpty { snapshot.data = Data(s.data) }
            snapshot.metadata.index = s.index
            snapshot.metadata.term = s.term
            snapshot.metadata.confState.voters = s.voters
            snapshot.metadata.confState.learners = s.learners
        } else {
            snapshot.metadata.index = 0
            snapshot.metadata.term = 0
        }
        p.snapshot = snapshot
        p.reject = m.reject
        p.rejectHint = m.rejectHint
        if !m.context.isEmpty { p.context = Data(m.context) }
        return try p.serializedBytes()
    }

    public static func decode(_ bytes: [UInt8]) throws(Failure) -> Raft.Message {
        guard let p = try? Raftpb_Message(serializedBytes: bytes) else { throw .undecodable }
        guard let type = messageType(p.type) else { throw .unsupportedType(p.type.rawValue) }
        var m = Raft.Message(type: type, from: p.from, to: p.to, term: p.term)
        m.logTerm = p.logTerm
        m.index = p.index
        m.entries = try p.entries.map { (pe) throws(Failure) -> Entry in
            let kind: Entry.Kind
            switch pe.type {
            case .entryNormal: kind = .normal
            case .entryConfChange: kind = .confChange
            default: throw .unsupportedType(pe.type.rawValue)  // joint consensus: not built
            }
            return Entry(term: pe.term, index: pe.index, kind: kind, data: [UInt8](pe.data))
        }
        m.commit = p.commit
        if type == .snapshot {
            let s = p.snapshot
            m.snapshot = Snapshot(index: s.metadata.index, term: s.metadata.term, data: [UInt8](s.data),
                                  voters: s.metadata.confState.voters, learners: s.metadata.confState.learners)
        }
        m.reject = p.reject
        m.rejectHint = p.rejectHint
        m.context = [UInt8](p.context)
        return m
    }

    static func messageType(_ t: MessageType) -> Raftpb_MessageType {
        switch t {
        case .vote: .msgVote
        case .voteResponse: .msgVoteResp
        case .preVote: .msgPreVote
        case .preVoteResponse: .msgPreVoteResp
        case .append: .msgApp
        case .appendResponse: .msgAppResp
        case .heartbeat: .msgHeartbeat
        case .heartbeatResponse: .msgHeartbeatResp
        case .readIndex: .msgReadIndex
        case .readIndexResponse: .msgReadIndexResp
        case .timeoutNow: .msgTimeoutNow
        case .snapshot: .msgSnap
        case .propose: .msgProp
        }
    }

    static func messageType(_ t: Raftpb_MessageType) -> MessageType? {
        switch t {
        case .msgVote: .vote
        case .msgVoteResp: .voteResponse
        case .msgPreVote: .preVote
        case .msgPreVoteResp: .preVoteResponse
        case .msgApp: .append
        case .msgAppResp: .appendResponse
        case .msgHeartbeat: .heartbeat
        case .msgHeartbeatResp: .heartbeatResponse
        case .msgReadIndex: .readIndex
        case .msgReadIndexResp: .readIndexResponse
        case .msgTimeoutNow: .timeoutNow
        case .msgSnap: .snapshot
        case .msgProp: .propose
        default: nil
        }
    }
}
