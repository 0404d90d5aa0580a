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

    public var encoded: [UInt8] {
        let (kind, node): (UInt8, NodeID) = switch self {
        case .addVoter(let n): (0, n)
        case .addLearner(let n): (1, n)
        case .remove(let n): (2, n)
        }
        return [kind] + (0..<8).map { UInt8(truncatingIfNeeded: node >> (8 * $0)) }
    }

    public init?(encoded d: [UInt8]) {
        guard d.count == 9 else { return nil }
        let node = (1..<9).reduce(UInt64(0)) { $0 | UInt64(d[$1]) << (8 * ($1 - 1)) }
        switch d[0] {
        case 0: self = .addVoter(node)
        case 1: self = .addLearner(node)
        case 2: self = .remove(node)
        default: return nil
        }
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
    /// Only a leader takes proposals.
    case notLeader
    /// The leader is handing leadership over: proposals wait for the next.
    case transferring
    /// A membership change is in the log and not yet applied: one at a time.
    case confChangePending
}
