import Raft
import Testing

/// A group driven by hand, for scenarios that read as transcripts: who
/// campaigns, which messages get through, who crashes.
struct Scenario {
    let ids: [NodeID]
    var nodes: [NodeID: RaftNode] = [:]
    var storages: [NodeID: MemoryStorage] = [:]
    var mailbox: [Message] = []
    var applied: [NodeID: [Entry]] = [:]
    /// Every ReadState each member handed out.
    var readStates: [NodeID: [ReadState]] = [:]
    let preVote: Bool
    let checkQuorum: Bool

    /// Classic Raft by default (the paper's): no pre-vote, no check-quorum,
    /// one entry per append so each can be delivered on its own.
    init(members: Int, preVote: Bool = false, checkQuorum: Bool = false) {
        ids = (1...UInt64(members)).map { $0 }
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        for id in ids {
            storages[id] = MemoryStorage()
            start(id)
        }
    }

    mutating func start(_ id: NodeID) {
        var config = RaftConfig(id: id, peers: ids, seed: id)
        config.preVote = preVote
        config.checkQuorum = checkQuorum
        config.maxEntriesPerMessage = 1
        nodes[id] = RaftNode(config: config, storage: storages[id]!)
        applied[id] = []
    }

    subscript(id: NodeID) -> RaftNode { nodes[id]! }

    /// Every live member persists, sends (into the mailbox) and applies.
    mutating func flush() {
        for id in ids {
            guard var n = nodes[id], n.hasReady else { continue }
            let r = n.ready()
            storages[id]!.append(r.entries)
            if let h = r.hardState { storages[id]!.setHardState(h) }
            mailbox += r.messages
            applied[id]! += r.committedEntries
            readStates[id, default: []] += r.readStates
            n.advance(r)
            nodes[id] = n
        }
    }

    /// Delivers messages among `among` until none are left; messages to or
    /// from anyone else are lost.
    mutating func deliver(among: Set<NodeID>, rounds: Int = 50) {
        for _ in 0..<rounds {
            flush()
            let batch = mailbox
            mailbox = []
            if batch.isEmpty { return }
            for m in batch where among.contains(m.from) && among.contains(m.to) {
                nodes[m.to]?.step(m)
            }
        }
    }

    /// Ticks `id` (only) until it leads, letting messages flow among
    /// `among` after each tick; what the new leader sends first stays in
    /// the mailbox for the scenario to deliver or lose.
    mutating func campaign(_ id: NodeID, among: Set<NodeID>) {
        for _ in 0..<200 where nodes[id]!.role != .leader {
            nodes[id]!.tick()
            deliver(among: among) { $0.nodes[id]!.role == .leader }
        }
    }

    /// Delivers one message at a time among `among` until `done` holds.
    mutating func deliver(among: Set<NodeID>, until done: (Scenario) -> Bool) {
        deliver(only: { among.contains($1.from) && among.contains($1.to) }, until: done)
    }

    /// Delivers, one at a time, the messages `only` lets through (losing
    /// the others) until `done` holds.
    mutating func deliver(only: (Scenario, Message) -> Bool, until done: (Scenario) -> Bool) {
        for _ in 0..<1000 where !done(self) {
            flush()
            guard !mailbox.isEmpty else { return }
            let m = mailbox.removeFirst()
            if only(self, m) { nodes[m.to]?.step(m) }
        }
    }

    mutating func propose(_ id: NodeID, _ text: String) {
        try? nodes[id]!.propose(Array(text.utf8))
    }

    /// The member stops; only what it persisted survives, and what it had
    /// not yet sent is lost.
    mutating func crash(_ id: NodeID) {
        nodes[id] = nil
        mailbox.removeAll { $0.from == id }
    }

    func terms(_ id: NodeID) -> [UInt64] { storages[id]!.entries(1, storages[id]!.lastIndex + 1).map(\.term) }
}

/// One test per safety claim of the Raft paper (§5.2–5.4, Figure 3), each
/// a scenario that breaks the claim if the rule behind it is broken.
@Suite struct PaperClaimsTests {
    /// Election safety: at most one leader per term. Two members campaign
    /// in the same term; each voter votes once.
    @Test func electionSafety() {
        var s = Scenario(members: 5)
        let all = Set(s.ids)
        // Both time out; 1's and 2's requests race through the network.
        for _ in 0..<40 where s[1].role == .follower { s.nodes[1]!.tick() }
        for _ in 0..<40 where s[2].role == .follower { s.nodes[2]!.tick() }
        #expect(s[1].term == s[2].term && s[1].role == .candidate && s[2].role == .candidate)
        s.deliver(among: all)
        let leaders = s.ids.filter { s[$0].role == .leader && s[$0].term == s[1].term }
        #expect(leaders.count <= 1, "leaders of term \(s[1].term): \(leaders)")
    }

    /// Leader append-only: a leader never overwrites or deletes its own
    /// entries, even when a deposed leader's append says otherwise.
    @Test func leaderAppendOnly() {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        #expect(s[1].role == .leader)
        s.propose(1, "a")
        s.deliver(among: [1, 2, 3])
        // 1 is cut off; 2 leads a newer term and takes proposals.
        s.campaign(2, among: [2, 3])
        #expect(s[2].role == .leader && s[2].term > s[1].term)
        s.propose(2, "b")
        s.deliver(among: [2, 3])
        let before = s[2].allEntries
        // An append from the deposed leader, with other entries, reaches 2.
        var stale = Message(type: .append, from: 1, to: 2, term: s[1].term)
        stale.index = 1
        stale.logTerm = before[0].term
        stale.entries = [Entry(term: s[1].term, index: 2, data: Array("x".utf8))]
        s.nodes[2]!.step(stale)
        s.flush()
        #expect(s[2].allEntries == before && s[2].role == .leader)
        // The deposed leader hears the newer term (a heartbeat) and follows.
        s.nodes[2]!.tick()
        s.deliver(among: [1, 2, 3])
        #expect(s[1].role == .follower && s[1].term == s[2].term)
    }

    /// Log matching: a follower with entries the leader lacks (from a lost
    /// term) has them replaced, and ends with the leader's log; the leader
    /// finds the match point by terms, not one index at a time.
    @Test func logMatching() {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        for i in 0..<3 { s.propose(1, "a\(i)") }
        s.deliver(among: [1, 2, 3])
        // 1 goes on alone: its entries never reach a quorum.
        for i in 0..<6 { s.propose(1, "lost\(i)") }
        s.deliver(among: [1])
        s.campaign(2, among: [2, 3])
        for i in 0..<4 { s.propose(2, "b\(i)") }
        s.deliver(among: [2, 3])
        #expect(s.terms(1) != s.terms(2))
        // Reunited: 1 must end up with 2's log exactly.
        s.deliver(among: [1, 2, 3])
        for _ in 0..<3 {
            s.nodes[2]!.tick()  // heartbeats
            s.deliver(among: [1, 2, 3])
        }
        #expect(s[1].allEntries == s[2].allEntries && s[3].allEntries == s[2].allEntries)
        #expect(!s[1].allEntries.contains { $0.data.starts(with: Array("lost".utf8)) })
    }

    /// Leader completeness: a candidate whose log lacks committed entries
    /// cannot win, so every leader holds every committed entry.
    @Test func leaderCompleteness() {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        s.propose(1, "committed")
        s.deliver(among: [1, 2])  // 3 never gets it
        #expect(s.applied[1]!.contains { $0.data == Array("committed".utf8) })
        s.crash(1)
        // 3, behind, campaigns: 2 refuses it.
        s.campaign(3, among: [2, 3])
        #expect(s[3].role != .leader)
        // 2, up to date, wins, and holds the entry.
        s.campaign(2, among: [2, 3])
        #expect(s[2].role == .leader && s[2].allEntries.contains { $0.data == Array("committed".utf8) })
    }

    /// State machine safety, the paper's Figure 8: an entry of an earlier
    /// term stored on a majority is not committed by counting replicas; a
    /// later leader may still replace it, so it must never have applied.
    @Test func figureEightOldTermEntriesAreNotCommittedByCounting() {
        var s = Scenario(members: 5)
        let fromS1 = Array("from S1".utf8)
        // (a) S1 leads and writes index 2 on S1 and S2 only.
        s.campaign(1, among: [1, 2, 3, 4, 5])
        let oldTerm = s[1].term
        s.propose(1, "from S1")
        s.deliver(among: [1, 2])
        #expect(s.storages[2]!.entries(2, 3).first?.data == fromS1)
        // (b) S1 crashes; S5 leads a newer term with S3's and S4's votes
        // and writes index 2 (its own empty entry) and 3 on itself only.
        s.crash(1)
        s.campaign(5, among: [3, 4, 5])
        #expect(s[5].role == .leader)
        let s5Term = s[5].term
        s.propose(5, "from S5")
        s.deliver(among: [5])
        // (c) S5 crashes; S1 restarts and leads a newer term still, with
        // S2's and S3's votes; it sends its old index 2 to S3 and S4 and
        // hears both acknowledge it: a majority holds it, as S1 knows.
        s.crash(5)
        s.start(1)
        s.campaign(1, among: [1, 2, 3])
        #expect(s[1].role == .leader && s[1].term > s5Term)
        // Between S1 and S3, S4 only; nothing of S1's own term (index 3)
        // reaches a member that would take it.
        let oldEntriesOnly = { (s: Scenario, m: Message) in
            let pair = Set([m.from, m.to])
            let wouldTakeIndex3 = m.entries.contains { $0.index >= 3 } && s.storages[m.to]!.term(m.index) == m.logTerm
            return (pair == [1, 3] || pair == [1, 4]) && !wouldTakeIndex3
        }
        s.deliver(only: oldEntriesOnly) { _ in false }
        s.flush()
        #expect([1, 2, 3, 4].allSatisfy { s.storages[$0]!.term(2) == oldTerm }, "\([1, 2, 3, 4, 5].map { s.terms($0) }), old term \(oldTerm)")
        // Held by a majority, but of an old term: not committed.
        #expect(s[1].commitIndex < 2 && !s.applied[1]!.contains { $0.data == fromS1 })
        // S1 crashes before an entry of its own term reaches a majority.
        s.crash(1)
        // (d) S5 restarts and wins with S2's, S3's and S4's votes (its last
        // entry is of a later term than theirs), and replaces index 2.
        s.start(5)
        s.campaign(5, among: [2, 3, 4, 5])
        #expect(s[5].role == .leader)
        for _ in 0..<3 {
            s.nodes[5]!.tick()
            s.deliver(among: [2, 3, 4, 5])
        }
        #expect([2, 3, 4, 5].allSatisfy { s.storages[$0]!.term(2) == s5Term })
        // S1's entry was never applied anywhere: replacing it broke nothing.
        #expect(s.applied.values.allSatisfy { !$0.contains { $0.data == fromS1 } })
        #expect([2, 3, 4, 5].allSatisfy { id in s.applied[id]!.contains { $0.data == Array("from S5".utf8) } })
    }
}

/// ReadIndex scenarios: a read is answered only with a commit index a
/// quorum has confirmed is still the leader's.
@Suite struct ReadIndexTests {
    /// A leader cut off from the others, not yet aware it was replaced,
    /// must not answer a read: the others elected a leader that already
    /// acknowledged a write the old one never saw.
    @Test func aDeposedLeaderDoesNotAnswerReads() {
        var s = Scenario(members: 3, preVote: true, checkQuorum: true)
        s.campaign(1, among: [1, 2, 3])
        s.propose(1, "before")
        s.deliver(among: [1, 2, 3])
        // 2 and 3 stop hearing from 1; 2 takes over and commits a write.
        for _ in 0..<25 {
            s.nodes[3]!.tick()
        }
        s.campaign(2, among: [2, 3])
        #expect(s[2].role == .leader && s[1].role == .leader, "1 does not know yet")
        s.propose(2, "after")
        s.deliver(among: [2, 3])
        #expect(s.applied[2]!.contains { $0.data == Array("after".utf8) })
        // A read at 1, still cut off: no answer.
        s.nodes[1]!.readIndex(Array("stale?".utf8))
        for _ in 0..<5 {
            s.nodes[1]!.tick()
            s.deliver(among: [1])
        }
        #expect(s.readStates[1, default: []].isEmpty, "the deposed leader answered \(s.readStates[1]!)")
        // Through the new leader (asked by a follower), a read sees the write.
        s.nodes[3]!.readIndex(Array("fresh".utf8))
        for _ in 0..<5 {
            s.deliver(among: [2, 3])
            s.nodes[2]!.tick()
        }
        let after = s.applied[2]!.first { $0.data == Array("after".utf8) }!.index
        let fresh = s.readStates[3, default: []].first { $0.context == Array("fresh".utf8) }
        #expect(fresh != nil && fresh!.index >= after, "\(s.readStates)")
    }
}

/// Leadership transfer scenarios.
@Suite struct LeadershipTransferTests {
    /// The leader brings a lagging follower up to date, then has it take
    /// over at once; proposals are refused meanwhile; nothing is lost.
    @Test func aLaggingFollowerTakesOver() throws {
        var s = Scenario(members: 3, preVote: true, checkQuorum: true)
        s.campaign(1, among: [1, 2, 3])
        for i in 0..<5 { s.propose(1, "e\(i)") }
        s.deliver(among: [1, 2])  // 3 misses them
        let term = s[1].term
        s.nodes[1]!.transferLeadership(to: 3)
        #expect(throws: RaftError.transferring) { try s.nodes[1]!.propose(Array("during".utf8)) }
        // Heartbeats let the leader find what 3 lacks; then 3 takes over.
        for _ in 0..<5 where s[3].role != .leader {
            s.nodes[1]!.tick()
            s.deliver(among: [1, 2, 3])
        }
        #expect(s[3].role == .leader && s[3].term > term, "3 leads a newer term")
        #expect(s[1].role == .follower && s[1].leader == 3)
        s.deliver(among: [1, 2, 3])
        let data = Set(s[3].allEntries.map(\.data))
        #expect((0..<5).allSatisfy { data.contains(Array("e\($0)".utf8)) }, "every entry kept")
    }

    /// A transfer to a member that cannot be reached is dropped after an
    /// election timeout; the leader leads on and takes proposals again.
    @Test func anUnreachableSuccessorIsGivenUp() throws {
        var s = Scenario(members: 3, preVote: true, checkQuorum: true)
        s.campaign(1, among: [1, 2, 3])
        s.nodes[1]!.transferLeadership(to: 3)
        #expect(s[1].transferee == 3)
        for _ in 0..<10 {
            s.nodes[1]!.tick()
            s.deliver(among: [1, 2])
        }
        #expect(s[1].role == .leader && s[1].transferee == noNode)
        try s.nodes[1]!.propose(Array("after".utf8))
        s.deliver(among: [1, 2])
        #expect(s.applied[2]!.contains { $0.data == Array("after".utf8) })
    }
}

/// Membership change scenarios, one member at a time.
@Suite struct MembershipTests {
    /// A learner receives the log but does not count: with the other
    /// voter gone, the leader cannot commit; once promoted it counts.
    @Test func aLearnerReplicatesWithoutVotingUntilPromoted() throws {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        // Member 3 is made a learner by hand here: start it as one.
        s.nodes[1]!.applyConfChange(.remove(3))
        s.nodes[2]!.applyConfChange(.remove(3))
        s.nodes[1]!.applyConfChange(.addLearner(3))
        s.nodes[2]!.applyConfChange(.addLearner(3))
        s.nodes[3]!.applyConfChange(.remove(3))
        s.nodes[3]!.applyConfChange(.addLearner(3))
        #expect(s[1].voters == [1, 2] && s[1].learners == [3])
        s.propose(1, "both")
        s.deliver(among: [1, 2, 3])
        #expect(s.applied[3]!.contains { $0.data == Array("both".utf8) }, "the learner gets the log")
        // Voter 2 cut off: 1 and learner 3 are no quorum of {1, 2}.
        s.propose(1, "stuck")
        s.deliver(among: [1, 3])
        #expect(!s.applied[1]!.contains { $0.data == Array("stuck".utf8) }, "a learner does not count")
        // A learner never campaigns.
        for _ in 0..<50 { s.nodes[3]!.tick() }
        #expect(s[3].role == .follower && s[3].term == s[1].term)
        // Promoted through the log (with 2 back), 3 counts from then on.
        s.deliver(among: [1, 2, 3])
        try s.nodes[1]!.proposeConfChange(.addVoter(3))
        s.deliver(among: [1, 2, 3])
        for id in [1, 2, 3] as [NodeID] { s.nodes[id]!.applyConfChange(.addVoter(3)) }
        #expect(s[1].voters == [1, 2, 3])
        s.propose(1, "with 3")
        s.deliver(among: [1, 3])  // 2 away again: 1 and 3 are a quorum of three
        #expect(s.applied[1]!.contains { $0.data == Array("with 3".utf8) })
    }

    /// One change at a time: a second proposal waits for the first to
    /// apply. A removed leader steps down and the rest elect another.
    @Test func oneAtATimeAndARemovedLeaderStepsDown() throws {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        s.deliver(among: [1, 2, 3])
        try s.nodes[1]!.proposeConfChange(.remove(1))
        #expect(throws: RaftError.confChangePending) { try s.nodes[1]!.proposeConfChange(.remove(2)) }
        s.deliver(among: [1, 2, 3])
        for id in [1, 2, 3] as [NodeID] { s.nodes[id]!.applyConfChange(.remove(1)) }
        #expect(s[1].role == .follower && s[2].voters == [2, 3])
        s.campaign(2, among: [2, 3])
        #expect(s[2].role == .leader)
        s.propose(2, "after")
        s.deliver(among: [2, 3])
        #expect(s.applied[3]!.contains { $0.data == Array("after".utf8) })
    }

    /// A membership change proposed on a follower goes to the leader as
    /// such (its entry stays a conf change); one forwarded while another
    /// is in the log unapplied becomes an empty entry, as etcd's raft makes
    /// it. The leader knows how far each member's log matches its own.
    @Test func aFollowersMembershipChangeIsForwardedOneAtATime() throws {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        s.deliver(among: [1, 2, 3])
        let first = ConfChange.addLearner(4).encoded, second = ConfChange.remove(3).encoded
        // Only proposals reach the leader: nothing commits meanwhile.
        let last = s[1].lastIndex
        try s.nodes[2]!.propose(first, kind: .confChange)
        s.deliver(only: { $1.type == .propose }, until: { $0[1].lastIndex == last + 1 })
        try s.nodes[3]!.propose(second, kind: .confChange)
        s.deliver(only: { $1.type == .propose }, until: { $0[1].lastIndex == last + 2 })
        #expect(throws: RaftError.confChangePending) { try s.nodes[1]!.propose(second, kind: .confChange) }
        s.deliver(among: [1, 2, 3])
        for id in s.ids {
            let changes = s.applied[id]!.filter { $0.kind == .confChange }
            #expect(changes.map(\.data) == [first], "member \(id)")
        }
        #expect(s.applied[1]!.last?.data == [], "the second became an empty entry")
        #expect(s[1].matchIndex(of: 3) == s[1].lastIndex && s[1].matchIndex(of: 1) == s[1].lastIndex)
        #expect(s[2].matchIndex(of: 3) == nil, "a follower knows no progress")
        // The application's membership replaces Raft's.
        s.nodes[1]!.setMembership(voters: [1, 2], learners: [3])
        #expect(s[1].voters == [1, 2] && s[1].learners == [3])
    }

    /// A follower passes a proposal on to its leader (etcd's MsgProp), and
    /// it commits there; a member that knows no leader refuses one; a
    /// forwarded proposal that reaches a deposed leader is never committed,
    /// and one that reaches a follower is dropped, not passed on again.
    @Test func aFollowerForwardsProposalsToItsLeader() throws {
        var s = Scenario(members: 3)
        #expect(throws: RaftError.notLeader) { try s.nodes[2]!.propose(Array("nobody leads".utf8)) }
        s.campaign(1, among: [1, 2, 3])
        s.deliver(among: [1, 2, 3])
        try s.nodes[2]!.propose(Array("via 2".utf8))
        s.deliver(among: [1, 2, 3])
        for id in s.ids { #expect(s.applied[id]!.contains { $0.data == Array("via 2".utf8) }, "member \(id)") }
        // 2 forwards to 1, but by the time it arrives 3 leads (1, cut off,
        // does not know yet and appends it in its old term).
        try s.nodes[2]!.propose(Array("late".utf8))
        s.flush()
        let forwarded = s.mailbox.filter { $0.type == .propose }
        #expect(forwarded.count == 1 && forwarded.first?.to == 1)
        s.mailbox.removeAll { $0.type == .propose }
        s.campaign(3, among: [2, 3])
        for m in forwarded { s.nodes[m.to]!.step(m) }
        // A proposal reaching a follower goes nowhere.
        let before = s[2].lastIndex
        var stray = Message(type: .propose, from: 3, to: 2, term: 0)
        stray.entries = [Entry(term: 0, index: 0, data: Array("stray".utf8))]
        s.nodes[2]!.step(stray)
        s.flush()
        #expect(s[2].lastIndex == before && !s.mailbox.contains { $0.type == .propose })
        s.propose(3, "from 3")
        s.deliver(among: [1, 2, 3])
        for id in s.ids {
            #expect(s.applied[id]!.contains { $0.data == Array("from 3".utf8) }, "member \(id)")
            #expect(!s.applied[id]!.contains { $0.data == Array("late".utf8) || $0.data == Array("stray".utf8) }, "member \(id)")
        }
    }
}

/// Appends that only move a follower's commit index.
@Suite struct CommitOnlyAppendTests {
    /// After a commit the leader tells every follower; a follower it knows
    /// holds every entry is not asked to answer (its answer would say what
    /// the leader knows), one it does not know about is, and every member
    /// ends at the same commit index.
    @Test func aFollowerKnownToHoldEverythingDoesNotAnswer() throws {
        var s = Scenario(members: 3)
        s.campaign(1, among: [1, 2, 3])
        s.deliver(among: [1, 2, 3])
        s.propose(1, "x")
        // One message at a time, in order: 2 answers the entry first, so
        // the commit reaches 2 as known and 3 as not yet known.
        var sent: [Message] = []
        for _ in 0..<100 {
            s.flush()
            guard !s.mailbox.isEmpty else { break }
            let m = s.mailbox.removeFirst()
            sent.append(m)
            s.nodes[m.to]!.step(m)
        }
        let last = s[1].lastIndex
        #expect(s[1].commitIndex == last)
        for id in s.ids { #expect(s[id].commitIndex == last, "member \(id)") }
        let commitOnly = sent.filter { $0.type == .append && $0.entries.isEmpty && $0.commit == last }
        let marked = commitOnly.filter { !$0.context.isEmpty }
        #expect(marked.map(\.to) == [2])
        #expect(commitOnly.filter { $0.context.isEmpty }.map(\.to) == [3])
        let answers = { (from: NodeID) in sent.filter { $0.type == .appendResponse && $0.from == from && $0.index == last }.count }
        #expect(answers(2) == 1, "only the entry is answered")
        #expect(answers(3) == 2, "the entry and the unmarked commit")

        // A marked append that does not match a follower's log is answered
        // (rejected), so the leader finds where they differ.
        var stray = try #require(marked.first)
        stray.to = 3
        stray.index = last + 5
        s.nodes[3]!.step(stray)
        s.flush()
        #expect(s.mailbox.contains { $0.type == .appendResponse && $0.from == 3 && $0.reject })
    }
}
