/// A member of a Raft group. 0 means none.
public typealias NodeID = UInt64

public let noNode: NodeID = 0

/// One log entry: its term and index, and the request it carries (opaque
/// to Raft). An empty entry is what a new leader appends to commit the
/// entries of earlier terms.
public struct Entry: Equatable, Sendable {
    public enum Kind: UInt8, Sendable { case normal, confChange }
    public var term: UInt64
    public var index: UInt64
    public var kind: Kind
    /// A request, or an encoded `ConfChange`.
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: Kind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }
}

/// A membership change, one member at a time: it takes effect on each
/// member when that member applies its entry (`RaftNode.applyConfChange`).
/// Adding a learner's ID as a voter promotes it.
public enum ConfChange: Equatable, Sendable {
    case addVoter(NodeID)
    case addLearner(NodeID)
    case remove(NodeID)

    /// etcd's `raftpb.ConfChange` wire format (type = 2, node_id = 3, as
    /// protobuf varints; etcd's raft always writes both), so a
    /// membership entry is what etcd's raft would decode.
    public var encoded: [UInt8] {
        let (type, node): (UInt64, NodeID) = switch self {
        case .addVoter(let n): (0, n)  // ConfChangeAddNode
        case .addLearner(let n): (3, n)  // ConfChangeAddLearnerNode
        case .remove(let n): (1, n)  // ConfChangeRemoveNode
        }
        var out: [UInt8] = [2 << 3]
        Self.appendVarint(type, to: &out)
        out.append(3 << 3)
        Self.appendVarint(node, to: &out)
        return out
    }

    public init?(encoded d: [UInt8]) {
        var type: UInt64 = 0, node: UInt64 = 0, at = 0
        while at < d.count {
            guard let tag = Self.readVarint(d, at: &at) else { return nil }
            switch (tag >> 3, tag & 7) {
            case (2, 0): guard let v = Self.readVarint(d, at: &at) else { return nil }; type = v
            case (3, 0): guard let v = Self.readVarint(d, at: &at) else { return nil }; node = v
            case (_, 0): guard Self.readVarint(d, at: &at) != nil else { return nil }  // id
            case (_, 2):  // context
                guard let n = Self.readVarint(d, at: &at), n <= UInt64(d.count - at) else { return nil }
                at += Int(n)
            default: return nil
            }
        }
        switch type {
        case 0: self = .addVoter(node)
        case 3: self = .addLearner(node)
        case 1: self = .remove(node)
        default: return nil  // ConfChangeUpdateNode changes no membership
        }
    }

    private static func appendVarint(_ v: UInt64, to out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private static func readVarint(_ d: [UInt8], at: inout Int) -> UInt64? {
        var v: UInt64 = 0, shift: UInt64 = 0
        while at < d.count && shift < 64 {
            let b = d[at]
            at += 1
            v |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return v }
            shift += 7
        }
        return nil
    }
}

/// What must be on disk before any message that depends on it is sent:
/// the current term, the vote cast in it, and the commit index.
public struct HardState: Equatable, Sendable {
    public var term: UInt64 = 0
    public var vote: NodeID = noNode
    public var commit: UInt64 = 0

    public init(term: UInt64 = 0, vote: NodeID = noNode, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

public enum MessageType: Sendable, Equatable {
    case vote, voteResponse
    case preVote, preVoteResponse
    case append, appendResponse
    case heartbeat, heartbeatResponse
    /// A follower asks the leader for a read index; the answer carries it.
    case readIndex, readIndexResponse
    /// Leadership transfer: the leader tells its chosen successor, caught
    /// up, to campaign at once.
    case timeoutNow
    /// The leader's snapshot, for a follower that needs entries the leader
    /// has compacted away.
    case snapshot
    /// A proposal a follower passes on to its leader (etcd's MsgProp): its
    /// entries carry data only; the leader appends them in its term.
    case propose
}

/// A message between members. Which fields mean what depends on `type`,
/// as in etcd's raftpb.Message: `index`/`logTerm` are the entry before
/// `entries` (append) or the sender's last entry (votes), or the index a
/// response is about; `rejectHint` is where a follower suggests the leader
/// look next.
public struct Message: Equatable, Sendable {
    public var type: MessageType
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    public var logTerm: UInt64 = 0
    public var index: UInt64 = 0
    public var entries: [Entry] = []
    public var commit: UInt64 = 0
    public var reject = false
    public var rejectHint: UInt64 = 0
    /// Heartbeats and read-index messages: the read request this is about.
    public var context: [UInt8] = []
    public var snapshot: Snapshot?

    public init(type: MessageType, from: NodeID, to: NodeID, term: UInt64) {
        self.type = type
        self.from = from
        self.to = to
        self.term = term
    }
}

public enum Role: Sendable, Equatable {
    case follower, preCandidate, candidate, leader
}

/// What the application must do, in this order: persist `hardState` and
/// `entries`, send `messages`, apply `committedEntries`; then call
/// `advance`.
public struct Ready: Sendable {
    public var hardState: HardState?
    public var entries: [Entry]
    public var messages: [Message]
    public var committedEntries: [Entry]
    /// Reads that may be served once this member has applied their index.
    public var readStates: [ReadState] = []
    /// A snapshot from the leader to persist and restore the state machine
    /// from, before the committed entries (which follow it).
    public var snapshot: Snapshot?

    public init(hardState: HardState? = nil, entries: [Entry] = [], messages: [Message] = [],
                committedEntries: [Entry] = [], readStates: [ReadState] = [], snapshot: Snapshot? = nil) {
        self.hardState = hardState
        self.entries = entries
        self.messages = messages
        self.committedEntries = committedEntries
        self.readStates = readStates
        self.snapshot = snapshot
    }

    public var isEmpty: Bool {
        hardState == nil && entries.isEmpty && messages.isEmpty && committedEntries.isEmpty && readStates.isEmpty
            && snapshot == nil
    }
}

/// The application's state as of entry `index` (of `term`), which stands
/// in for every entry up to it: the log before it can be dropped.
public struct Snapshot: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var data: [UInt8]
    /// The membership as of `index`.
    public var voters: [NodeID]
    public var learners: [NodeID]

    public init(index: UInt64 = 0, term: UInt64 = 0, data: [UInt8] = [], voters: [NodeID] = [], learners: [NodeID] = []) {
        self.index = index
        self.term = term
        self.data = data
        self.voters = voters
        self.learners = learners
    }
}

/// A linearizable read's answer: serve it once the member has applied
/// `index` (everything committed when the read was asked for).
public struct ReadState: Equatable, Sendable {
    public var index: UInt64
    public var context: [UInt8]

    public init(index: UInt64, context: [UInt8]) {
        self.index = index
        self.context = context
    }
}

public enum RaftError: Error, Equatable {
    /// No leader is known to take the proposal.
    case notLeader
    /// The leader is handing leadership over: proposals wait for the next.
    case transferring
    /// A membership change is in the log and not yet applied: one at a time.
    case confChangePending
}
