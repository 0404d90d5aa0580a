/// How one member's Raft behaves.
public struct RaftConfig: Sendable {
    public var id: NodeID
    /// Every voting member at the start (this one included, unless it
    /// starts as a learner); later changes come through the log.
    public var peers: [NodeID]
    /// Members that receive the log but do not vote.
    public var learners: [NodeID] = []
    /// Ticks without a leader before campaigning: randomized in
    /// [electionTick, 2 * electionTick) from `seed`.
    public var electionTick = 10
    public var heartbeatTick = 1
    /// Ask for votes first without raising the term (a member cut off
    /// cannot disrupt the group when it comes back).
    public var preVote = true
    /// A leader steps down when it has not heard from a quorum within an
    /// election timeout; followers ignore votes while they hear a leader.
    public var checkQuorum = true
    /// Most entries in one append.
    public var maxEntriesPerMessage = 64
    /// Most appends in flight to one follower while replicating.
    public var maxInflight = 16
    /// The member may take the next `Ready` while earlier ones are still
    /// being persisted (`accept`, later `persisted`), as etcd's raft with
    /// asynchronous storage writes: committed entries are then handed out
    /// only once this member holds them durably.
    public var asyncStorageWrites = false
    public var seed: UInt64

    public init(id: NodeID, peers: [NodeID], seed: UInt64) {
        self.id = id
        self.peers = peers
        self.seed = seed
    }
}

/// What a leader knows of one follower: the last index known to match,
/// the next to send, and whether it is probing (one append at a time,
/// until one matches) or replicating (appends streamed optimistically).
struct Progress {
    enum State { case probe, replicate }
    var match: UInt64 = 0
    var next: UInt64
    var state = State.probe
    /// Probing: an append is out and unanswered.
    var probeSent = false
    /// Replicating: last indexes of the appends in flight.
    var inflights: [UInt64] = []
    /// Heard from since the last quorum check.
    var recentActive = false

    init(next: UInt64) { self.next = next }

    mutating func becomeProbe() {
        state = .probe
        next = match + 1
        probeSent = false
        inflights = []
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        inflights = []
    }

    /// An acknowledged index; false when it tells nothing new.
    mutating func maybeUpdate(_ n: UInt64) -> Bool {
        var updated = false
        if match < n {
            match = n
            updated = true
            probeSent = false
        }
        next = max(next, n + 1)
        inflights.removeAll { $0 <= n }
        return updated
    }

    /// A rejected append at `rejected`; `hint` is where to look next.
    mutating func maybeDecrease(rejected: UInt64, hint: UInt64) -> Bool {
        if state == .replicate {
            guard rejected > match else { return false }  // stale
            next = match + 1
            return true
        }
        guard next - 1 == rejected else { return false }  // stale
        next = max(min(rejected, hint + 1), 1)
        probeSent = false
        return true
    }

    func isPaused(maxInflight: Int) -> Bool {
        state == .probe ? probeSent : inflights.count >= maxInflight
    }
}

/// One member's Raft: a state machine with no I/O, clock, thread or
/// unseeded randomness. Time passes by `tick()`, messages come in by
/// `step(_:)`; what to persist, send and apply comes out of `ready()`.
public struct RaftNode {
    public let id: NodeID
    public private(set) var term: UInt64
    public private(set) var vote: NodeID
    public private(set) var leader: NodeID = noNode
    public private(set) var role = Role.follower
    var log: RaftLog
    let config: RaftConfig
    private var progress: [NodeID: Progress] = [:]
    private var votes: [NodeID: Bool] = [:]
    private var outbox: [Message] = []
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout: Int
    private var rng: SplitMix64
    private var persistedHardState: HardState
    /// ReadIndex at the leader: reads waiting for a quorum's heartbeat
    /// answers, in order, with who asked and the commit index then.
    private var pendingReads: [(context: [UInt8], from: NodeID, index: UInt64, acks: Set<NodeID>)] = []
    /// Reads asked before this leader committed an entry of its term.
    private var readsBeforeFirstCommit: [(context: [UInt8], from: NodeID)] = []
    private var readStates: [ReadState] = []
    /// The member leadership is being handed to, if any.
    public private(set) var transferee: NodeID = noNode
    public private(set) var voters: Set<NodeID> { didSet { membershipChanged() } }
    public private(set) var learners: Set<NodeID> { didSet { membershipChanged() } }
    /// The members this one talks to (voters and learners, itself aside),
    /// and the voters among them, sorted: kept as the membership changes,
    /// since every proposal walks them.
    private var others: [NodeID] = []
    private var otherVoters: [NodeID] = []
    /// Index of the last membership change proposed; another waits until
    /// it is applied.
    private var pendingConfIndex: UInt64 = 0

    /// A member starting (or restarting) from what `storage` holds.
    public init(config: RaftConfig, storage: RaftStorage) {
        id = config.id
        self.config = config
        log = RaftLog(storage: storage)
        let hard = storage.hardState
        term = hard.term
        vote = hard.vote
        persistedHardState = hard
        rng = SplitMix64(seed: config.seed)
        let snapshot = storage.snapshot
        if snapshot.index > 0 && !snapshot.voters.isEmpty {
            voters = Set(snapshot.voters)
            learners = Set(snapshot.learners)
        } else {
            voters = Set(config.peers)
            learners = Set(config.learners)
        }
        randomizedElectionTimeout = config.electionTick
        resetTimeout()
        membershipChanged()
    }

    public var commitIndex: UInt64 { log.committed }
    public var appliedIndex: UInt64 { log.applied }
    public var lastIndex: UInt64 { log.lastIndex }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    private var quorum: Int { voters.count / 2 + 1 }
    /// The members this one talks to: voters and learners, itself aside.

    private mutating func membershipChanged() {
        others = voters.union(learners).subtracting([id]).sorted()
        otherVoters = voters.subtracting([id]).sorted()
    }

    /// Every entry in this member's log after its snapshot (persisted or
    /// not), for tests.
    public var allEntries: [Entry] { log.entries(log.firstIndex, log.lastIndex + 1) }
    /// The first index in the log (the snapshot's + 1).
    public var firstIndex: UInt64 { log.firstIndex }

    // MARK: Time

    public mutating func tick() {
        if role == .leader {
            heartbeatElapsed += 1
            electionElapsed += 1
            if electionElapsed >= config.electionTick {
                electionElapsed = 0
                // A transfer not done within an election timeout is dropped.
                transferee = noNode
                if config.checkQuorum && !quorumActive() {
                    becomeFollower(term: term, leader: noNode)
                    return
                }
            }
            if heartbeatElapsed >= config.heartbeatTick {
                heartbeatElapsed = 0
                for peer in others { sendHeartbeat(to: peer, context: pendingReads.last?.context ?? []) }
            }
        } else {
            electionElapsed += 1
            // Learners (and members removed) never campaign.
            if electionElapsed >= randomizedElectionTimeout && voters.contains(id) {
                electionElapsed = 0
                campaign()
            }
        }
    }

    /// Whether a quorum (this leader included) was heard from since the
    /// last check; clears the marks.
    private mutating func quorumActive() -> Bool {
        var active = 1
        for peer in otherVoters {
            if progress[peer]?.recentActive == true { active += 1 }
            progress[peer]?.recentActive = false
        }
        return active >= quorum
    }

    // MARK: Proposals

    /// Appends `data` as a new entry and sends it (a leader), or passes it
    /// on to the leader (a follower that knows one; as with etcd's raft, a
    /// proposal lost on the way is simply not committed, and the proposer
    /// times out). A membership change (`kind` .confChange, an encoded
    /// `raftpb.ConfChange`) waits for the one before it to be applied: a
    /// leader refuses it meanwhile, and one forwarded meanwhile becomes an
    /// empty entry (as etcd's raft does), so the proposer times out.
    public mutating func propose(_ data: [UInt8], kind: Entry.Kind = .normal) throws(RaftError) {
        switch role {
        case .leader:
            guard transferee == noNode else { throw .transferring }
            if kind == .confChange {
                guard pendingConfIndex <= log.applied else { throw .confChangePending }
                pendingConfIndex = log.lastIndex + 1
            }
            appendAsLeader([Entry(term: term, index: log.lastIndex + 1, kind: kind, data: data)])
        case .follower where leader != noNode:
            var m = Message(type: .propose, from: id, to: leader, term: term)
            m.entries = [Entry(term: 0, index: 0, kind: kind, data: data)]
            outbox.append(m)
        default:
            throw .notLeader
        }
    }

    /// A proposal passed on by a follower: appended if this member still
    /// leads (and is not handing over), else dropped.
    private mutating func forwardedProposal(_ m: Message) {
        guard role == .leader, transferee == noNode, !m.entries.isEmpty else { return }
        let first = log.lastIndex + 1
        appendAsLeader(m.entries.enumerated().map { i, e in
            let index = first + UInt64(i)
            guard e.kind == .confChange else { return Entry(term: term, index: index, kind: .normal, data: e.data) }
            guard pendingConfIndex <= log.applied else { return Entry(term: term, index: index) }
            pendingConfIndex = index
            return Entry(term: term, index: index, kind: .confChange, data: e.data)
        })
    }

    private mutating func appendAsLeader(_ entries: [Entry]) {
        log.append(entries)
        progress[id]?.match = log.lastIndex
        progress[id]?.next = log.lastIndex + 1
        maybeCommit()
        for peer in others { sendAppend(to: peer) }
    }

    // MARK: Membership

    /// Proposes one membership change (leader only, one at a time).
    public mutating func proposeConfChange(_ change: ConfChange) throws(RaftError) {
        guard role == .leader else { throw .notLeader }
        try propose(change.encoded, kind: .confChange)
    }

    /// The membership as the application's state says it is (at start,
    /// and after it installed a leader's snapshot, whose state may be
    /// ahead of the snapshot's index).
    public mutating func setMembership(voters: [NodeID], learners: [NodeID]) {
        self.voters = Set(voters)
        self.learners = Set(learners).subtracting(voters)
        guard role == .leader else { return }
        progress = progress.filter { voters.contains($0.key) || learners.contains($0.key) }
        for peer in others where progress[peer] == nil { progress[peer] = Progress(next: log.lastIndex + 1) }
    }

    /// A leader's knowledge of how much of its log `member` holds (nil on
    /// a follower, or for a member it does not replicate to).
    public func matchIndex(of member: NodeID) -> UInt64? {
        guard role == .leader else { return nil }
        return member == id ? log.lastIndex : progress[member]?.match
    }

    /// The application applied a membership change's entry: it takes
    /// effect here now.
    public mutating func applyConfChange(_ change: ConfChange) {
        switch change {
        case .addVoter(let n):
            learners.remove(n)
            voters.insert(n)
        case .addLearner(let n):
            guard !voters.contains(n) else { return }  // a voter is not demoted
            learners.insert(n)
        case .remove(let n):
            voters.remove(n)
            learners.remove(n)
            progress[n] = nil
        }
        guard role == .leader else { return }
        if !voters.contains(id) {
            // Removed (or made a learner): the others elect a leader.
            becomeFollower(term: term, leader: noNode)
            return
        }
        for peer in others where progress[peer] == nil { progress[peer] = Progress(next: log.lastIndex + 1) }
        // The quorum changed: what it now holds may commit.
        if maybeCommit() { for peer in others { sendAppend(to: peer) } }
        for peer in others { sendAppend(to: peer) }
    }

    // MARK: Leadership transfer

    /// Hands leadership to `target` (leader only): once `target` has every
    /// entry, it is told to campaign at once, and wins a higher term.
    /// Proposals are refused meanwhile; a transfer not done within an
    /// election timeout is dropped.
    public mutating func transferLeadership(to target: NodeID) {
        guard role == .leader, target != id, voters.contains(target) else { return }
        transferee = target
        electionElapsed = 0
        if progress[target]?.match == log.lastIndex {
            outbox.append(Message(type: .timeoutNow, from: id, to: target, term: term))
        } else {
            sendAppend(to: target)
        }
    }

    /// Campaigns now instead of after an election timeout (etcd raft's
    /// `Campaign`): for a member that alone is the quorum, so that it leads
    /// as soon as it starts. Does nothing on a leader or a learner.
    public mutating func campaignNow() {
        guard voters.contains(id) else { return }
        campaign()
    }

    // MARK: Linearizable reads (ReadIndex)

    /// The read index at once, when no other member need confirm it: this
    /// member is the leader, the only voter, and has committed an entry of
    /// its term (as etcd raft answers a single-voter group's ReadIndex at
    /// once). Otherwise nil: ask with `readIndex`.
    public var immediateReadIndex: UInt64? {
        guard role == .leader, voters.count == 1, committedInThisTerm else { return nil }
        return log.committed
    }

    /// Asks for a read index for `context` (unique per read): a ReadState
    /// with it comes out of `ready()` once a quorum has confirmed this
    /// member's leader is still the leader; nothing comes if there is no
    /// leader or the request is lost (ask again).
    public mutating func readIndex(_ context: [UInt8]) {
        if role == .leader {
            leaderRead(context, from: id)
        } else if leader != noNode {
            var m = Message(type: .readIndex, from: id, to: leader, term: term)
            m.context = context
            outbox.append(m)
        }
    }

    private var committedInThisTerm: Bool { log.term(log.committed) == term }

    private mutating func leaderRead(_ context: [UInt8], from: NodeID) {
        // Until an entry of this term commits, the commit index may lag
        // what earlier leaders committed.
        guard committedInThisTerm else {
            readsBeforeFirstCommit.append((context, from))
            return
        }
        if quorum == 1 {
            answerRead(context, from: from, index: log.committed)
            return
        }
        pendingReads.append((context, from, log.committed, [id]))
        for peer in others { sendHeartbeat(to: peer, context: context) }
    }

    /// A heartbeat answer for `context`: once a quorum answered, that read
    /// and every one asked before it can be served.
    private mutating func readAcknowledged(_ context: [UInt8], by peer: NodeID) {
        guard voters.contains(peer), let i = pendingReads.firstIndex(where: { $0.context == context }) else { return }
        pendingReads[i].acks.insert(peer)
        guard pendingReads[i].acks.count >= quorum else { return }
        let done = pendingReads[...i]
        pendingReads.removeFirst(i + 1)
        for r in done { answerRead(r.context, from: r.from, index: r.index) }
    }

    private mutating func answerRead(_ context: [UInt8], from: NodeID, index: UInt64) {
        if from == id {
            readStates.append(ReadState(index: index, context: context))
        } else {
            var m = Message(type: .readIndexResponse, from: id, to: from, term: term)
            m.index = index
            m.context = context
            outbox.append(m)
        }
    }

    // MARK: Roles

    private mutating func resetTimeout() {
        randomizedElectionTimeout = config.electionTick + Int(rng.next() % UInt64(config.electionTick))
    }

    private mutating func reset(term newTerm: UInt64) {
        if newTerm != term {
            term = newTerm
            vote = noNode
        }
        leader = noNode
        electionElapsed = 0
        heartbeatElapsed = 0
        resetTimeout()
        votes = [:]
        progress = [:]
        pendingReads = []
        readsBeforeFirstCommit = []
        transferee = noNode
    }

    private mutating func becomeFollower(term: UInt64, leader: NodeID) {
        reset(term: term)
        role = .follower
        self.leader = leader
    }

    private mutating func becomePreCandidate() {
        // The term stays: a pre-vote raises nobody's.
        votes = [:]
        leader = noNode
        role = .preCandidate
    }

    private mutating func becomeCandidate() {
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    private mutating func becomeLeader() {
        reset(term: term)
        role = .leader
        leader = id
        for peer in voters.union(learners) { progress[peer] = Progress(next: log.lastIndex + 1) }
        // A change in the log and not applied yet may still be pending.
        pendingConfIndex = log.lastIndex
        // Entries of earlier terms commit only with one of this term.
        appendAsLeader([Entry(term: term, index: log.lastIndex + 1)])
    }

    /// `transfer`: the leader asked for it (timeoutNow): no pre-vote, and
    /// voters answer even while they still hear that leader.
    private mutating func campaign(transfer: Bool = false) {
        if role == .leader { return }
        let preVote = config.preVote && !transfer
        if preVote {
            becomePreCandidate()
        } else {
            becomeCandidate()
        }
        let type: MessageType = preVote ? .preVote : .vote
        let electionTerm = preVote ? term + 1 : term
        if tally(id, granted: true, preVote: preVote) { return }
        for peer in otherVoters {
            var m = Message(type: type, from: id, to: peer, term: electionTerm)
            m.index = log.lastIndex
            m.logTerm = log.lastTerm
            if transfer { m.context = Self.transferContext }
            outbox.append(m)
        }
    }

    static let transferContext = Array("transfer".utf8)

    /// Records a vote; true when it decided the election (won or lost).
    private mutating func tally(_ from: NodeID, granted: Bool, preVote: Bool) -> Bool {
        guard voters.contains(from) else { return false }
        if votes[from] == nil { votes[from] = granted }
        let yes = votes.values.filter { $0 }.count, no = votes.count - yes
        if yes >= quorum {
            if preVote {
                becomeCandidate()
                campaignForReal()
            } else {
                becomeLeader()
            }
            return true
        }
        if no >= quorum {
            becomeFollower(term: term, leader: noNode)
            return true
        }
        return false
    }

    private mutating func campaignForReal() {
        if tally(id, granted: true, preVote: false) { return }
        for peer in otherVoters {
            var m = Message(type: .vote, from: id, to: peer, term: term)
            m.index = log.lastIndex
            m.logTerm = log.lastTerm
            outbox.append(m)
        }
    }

    // MARK: Messages

    public mutating func step(_ m: Message) {
        guard m.to == id else { return }
        // A proposal's term says nothing of elections (etcd's raft sends
        // MsgProp with none): it is taken or dropped as it is.
        if m.type == .propose { return forwardedProposal(m) }
        if m.term > term {
            if m.type == .vote || m.type == .preVote {
                // Heard from a leader within the timeout: keep following it
                // (unless that leader handed over).
                let handedOver = m.context == Self.transferContext
                if config.checkQuorum && leader != noNode && electionElapsed < config.electionTick && !handedOver { return }
            }
            if m.type == .preVote || (m.type == .preVoteResponse && !m.reject) {
                // A pre-vote, and a granted pre-vote, raise no term.
            } else {
                let from = [.append, .heartbeat, .snapshot].contains(m.type) ? m.from : noNode
                becomeFollower(term: m.term, leader: from)
            }
        } else if m.term < term {
            if (config.checkQuorum || config.preVote) && [.append, .heartbeat, .snapshot].contains(m.type) {
                // A deposed leader learns the term from this answer.
                var r = Message(type: .appendResponse, from: id, to: m.from, term: term)
                r.index = m.index
                r.reject = true
                r.rejectHint = log.lastIndex
                outbox.append(r)
            } else if m.type == .preVote {
                var r = Message(type: .preVoteResponse, from: id, to: m.from, term: term)
                r.reject = true
                outbox.append(r)
            }
            return
        }

        switch m.type {
        case .vote, .preVote:
            let canVote = vote == m.from || (vote == noNode && leader == noNode) || (m.type == .preVote && m.term > term)
            let type: MessageType = m.type == .vote ? .voteResponse : .preVoteResponse
            if canVote && log.isUpToDate(index: m.index, term: m.logTerm) {
                outbox.append(Message(type: type, from: id, to: m.from, term: m.term))
                if m.type == .vote {
                    electionElapsed = 0
                    vote = m.from
                }
            } else {
                var r = Message(type: type, from: id, to: m.from, term: term)
                r.reject = true
                outbox.append(r)
            }
        default:
            switch role {
            case .leader: stepLeader(m)
            case .candidate, .preCandidate: stepCandidate(m)
            case .follower: stepFollower(m)
            }
        }
    }

    private mutating func stepLeader(_ m: Message) {
        guard var pr = progress[m.from] else { return }
        switch m.type {
        case .appendResponse:
            pr.recentActive = true
            if m.reject {
                // The follower's hint, moved back to the last entry here
                // whose term is at most the term it has there.
                let hint = m.logTerm > 0 ? log.findConflictByTerm(m.rejectHint, m.logTerm) : m.rejectHint
                if pr.maybeDecrease(rejected: m.index, hint: hint) {
                    if pr.state == .replicate { pr.becomeProbe() }
                    progress[m.from] = pr
                    sendAppend(to: m.from)
                } else {
                    progress[m.from] = pr
                }
                return
            }
            let wasPaused = pr.isPaused(maxInflight: config.maxInflight)
            defer {
                // The successor has caught up: hand over now.
                if m.from == transferee && progress[m.from]?.match == log.lastIndex {
                    outbox.append(Message(type: .timeoutNow, from: id, to: m.from, term: term))
                }
            }
            if pr.maybeUpdate(m.index) {
                if pr.state == .probe { pr.becomeReplicate() }
                progress[m.from] = pr
                if maybeCommit() {
                    for peer in others { sendAppend(to: peer) }
                } else if wasPaused {
                    sendAppend(to: m.from)
                }
                // Stream what is left while the window allows.
                while let p = progress[m.from], !p.isPaused(maxInflight: config.maxInflight), p.next <= log.lastIndex {
                    sendAppend(to: m.from)
                    if progress[m.from]?.next == p.next { break }
                }
            } else {
                progress[m.from] = pr
            }
        case .readIndex:
            progress[m.from] = pr
            leaderRead(m.context, from: m.from)
            return
        case .heartbeatResponse:
            if !m.context.isEmpty { readAcknowledged(m.context, by: m.from) }
            pr.recentActive = true
            pr.probeSent = false
            // Appends in flight may have been lost: a full window frees
            // one slot per heartbeat answered, so replication goes on (a
            // gap makes the follower reject, and the leader probes).
            if pr.state == .replicate && pr.inflights.count >= config.maxInflight { pr.inflights.removeFirst() }
            progress[m.from] = pr
            if pr.match < log.lastIndex { sendAppend(to: m.from) }
        default:
            break
        }
    }

    private mutating func stepCandidate(_ m: Message) {
        switch m.type {
        case .append:
            becomeFollower(term: m.term, leader: m.from)
            handleAppend(m)
        case .heartbeat:
            becomeFollower(term: m.term, leader: m.from)
            handleHeartbeat(m)
        case .snapshot:
            becomeFollower(term: m.term, leader: m.from)
            handleSnapshot(m)
        case .voteResponse where role == .candidate:
            _ = tally(m.from, granted: !m.reject, preVote: false)
        case .preVoteResponse where role == .preCandidate:
            _ = tally(m.from, granted: !m.reject, preVote: true)
        default:
            break
        }
    }

    private mutating func stepFollower(_ m: Message) {
        switch m.type {
        case .append:
            electionElapsed = 0
            leader = m.from
            handleAppend(m)
        case .heartbeat:
            electionElapsed = 0
            leader = m.from
            handleHeartbeat(m)
        case .snapshot:
            electionElapsed = 0
            leader = m.from
            handleSnapshot(m)
        case .readIndexResponse:
            readStates.append(ReadState(index: m.index, context: m.context))
        case .timeoutNow:
            campaign(transfer: true)
        default:
            break
        }
    }

    private mutating func handleAppend(_ m: Message) {
        // Only a new commit index, for a log the leader knows matches its
        // own: nothing to answer. (One that does not match is answered.)
        if m.entries.isEmpty && m.context == Self.commitOnly && log.matchTerm(m.index, m.logTerm) {
            log.commitTo(min(m.commit, m.index))
            return
        }
        var r = Message(type: .appendResponse, from: id, to: m.from, term: term)
        if m.index < log.committed {
            r.index = log.committed
        } else if let last = log.maybeAppend(index: m.index, logTerm: m.logTerm, commit: m.commit, entries: m.entries) {
            r.index = last
        } else {
            // Fast backtracking: point the leader at the last entry that
            // could match, by term, instead of one index back.
            let hint = log.findConflictByTerm(min(m.index, log.lastIndex), m.logTerm)
            r.index = m.index
            r.reject = true
            r.rejectHint = hint
            r.logTerm = log.term(hint) ?? 0
        }
        outbox.append(r)
    }

    /// A leader's snapshot: restores from it unless this log already holds
    /// its last entry; answers with the index now held.
    private mutating func handleSnapshot(_ m: Message) {
        guard let s = m.snapshot else { return }
        var r = Message(type: .appendResponse, from: id, to: m.from, term: term)
        if s.index <= log.committed {
            r.index = log.committed
        } else if log.matchTerm(s.index, s.term) {
            log.commitTo(s.index)
            r.index = log.lastIndex
        } else {
            log.restore(s)
            if !s.voters.isEmpty {
                voters = Set(s.voters)
                learners = Set(s.learners)
            }
            r.index = log.lastIndex
        }
        outbox.append(r)
    }

    private mutating func handleHeartbeat(_ m: Message) {
        log.commitTo(min(m.commit, log.lastIndex))
        var r = Message(type: .heartbeatResponse, from: id, to: m.from, term: term)
        r.context = m.context
        outbox.append(r)
    }

    // MARK: Leader's sending

    /// The context of an append that only moves the commit index of a
    /// follower known to hold every entry (after each commit, to every
    /// follower): it asks for no answer, which would tell the leader nothing
    /// new and cost it a message and a wake-up per follower per commit.
    /// Heartbeats keep telling it who is active. A member that does not
    /// know the mark answers as before.
    static let commitOnly: [UInt8] = [0x63]

    private mutating func sendAppend(to peer: NodeID) {
        guard var pr = progress[peer], !pr.isPaused(maxInflight: config.maxInflight) else { return }
        let previous = pr.next - 1
        guard pr.next >= log.firstIndex, let previousTerm = log.term(previous) else {
            // What the follower needs was compacted away: the snapshot
            // instead, one at a time as a probe.
            var m = Message(type: .snapshot, from: id, to: peer, term: term)
            m.snapshot = log.storage.snapshot
            pr.becomeProbe()
            pr.probeSent = true
            progress[peer] = pr
            outbox.append(m)
            return
        }
        var m = Message(type: .append, from: id, to: peer, term: term)
        m.index = previous
        m.logTerm = previousTerm
        m.entries = log.entries(from: pr.next, limit: config.maxEntriesPerMessage)
        m.commit = log.committed
        if m.entries.isEmpty && pr.state == .replicate && pr.match == previous { m.context = Self.commitOnly }
        switch pr.state {
        case .replicate:
            if let last = m.entries.last {
                pr.next = last.index + 1
                pr.inflights.append(last.index)
            }
        case .probe:
            pr.probeSent = true
        }
        progress[peer] = pr
        outbox.append(m)
    }

    private mutating func sendHeartbeat(to peer: NodeID, context: [UInt8] = []) {
        var m = Message(type: .heartbeat, from: id, to: peer, term: term)
        m.commit = min(progress[peer]?.match ?? 0, log.committed)
        m.context = context
        outbox.append(m)
    }

    /// Commits the highest index a quorum holds, if it is of this term.
    @discardableResult
    private mutating func maybeCommit() -> Bool {
        let candidate: UInt64
        if otherVoters.isEmpty {
            candidate = voters.contains(id) ? log.lastIndex : 0  // alone: what it holds
        } else {
            // The leader's own entries count once they are persisted: its
            // member may send them to followers while writing them.
            let matches = voters.map { $0 == id ? log.stableIndex : (progress[$0]?.match ?? 0) }.sorted(by: >)
            candidate = matches[quorum - 1]
        }
        guard candidate > log.committed, log.term(candidate) == term else { return false }
        log.commitTo(candidate)
        // Reads held back until this term's first commit go ahead now.
        let waiting = readsBeforeFirstCommit
        readsBeforeFirstCommit = []
        for r in waiting { leaderRead(r.context, from: r.from) }
        return true
    }

    // MARK: Ready

    /// The last committed entry that may be handed out to apply.
    private var appliableIndex: UInt64 {
        config.asyncStorageWrites ? min(log.committed, log.stableIndex) : log.committed
    }

    public var hasReady: Bool {
        !outbox.isEmpty || log.hasEntriesToPersist || appliableIndex > log.applied || hardState != persistedHardState
            || !readStates.isEmpty || log.pendingSnapshot != nil
    }

    /// A leader's snapshot waits to be installed (its `Ready` is best taken
    /// with nothing else being persisted).
    public var hasPendingSnapshot: Bool { log.pendingSnapshot != nil }

    /// What to persist, send and apply now.
    public func ready() -> Ready {
        Ready(hardState: hardState != persistedHardState ? hardState : nil, entries: log.toPersist, messages: outbox,
              committedEntries: log.nextCommitted(upTo: appliableIndex), readStates: readStates, snapshot: log.pendingSnapshot)
    }

    /// Everything in `ready` was persisted, sent and applied.
    public mutating func advance(_ ready: Ready) {
        accept(ready)
        persisted(ready)
    }

    /// `ready` was taken: its messages are sent (or will be, once it is
    /// persisted), its committed entries applied, and its entries and hard
    /// state are on their way to the disk; the next `Ready` holds only
    /// what came after it.
    public mutating func accept(_ ready: Ready) {
        if let h = ready.hardState { persistedHardState = h }
        if let last = ready.entries.last { log.handedOut(last.index) }
        if let last = ready.committedEntries.last { log.appliedTo(last.index) }
        outbox.removeFirst(ready.messages.count)
        readStates.removeFirst(ready.readStates.count)
    }

    /// The entries and snapshot of an accepted `ready` are durable (in the
    /// order the Readys were taken).
    public mutating func persisted(_ ready: Ready) {
        if let s = ready.snapshot { log.snapshotApplied(s) }
        if let last = ready.entries.last { log.stableTo(last.index, last.term) }
        // The leader's own entries now count toward the quorum.
        if role == .leader && !ready.entries.isEmpty && !otherVoters.isEmpty && maybeCommit() {
            for peer in others { sendAppend(to: peer) }
        }
    }
}

/// SplitMix64: small, seeded, deterministic.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
