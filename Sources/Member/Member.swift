import Logging
import Raft
import Transport
import WAL
#if canImport(Glibc)
import Glibc
#endif

/// One member of a Raft group, on its event loop: it drives the Raft
/// state machine (ticks from a timer, proposals, reads), persists each
/// `Ready` through the group-commit WAL before anything that depends on it
/// happens, sends its messages, and hands committed entries to the
/// application in log order. A member alone is a group of one and runs the
/// same code.
///
/// One `Ready` is in flight at a time: while its records are being made
/// durable, proposals gather in Raft's log and go out together in the next
/// one (this is the group commit).
public final class Member {
    public struct Timing: Sendable {
        /// Seconds per Raft tick (etcd's --heartbeat-interval).
        public var heartbeatInterval: Double
        /// Ticks without a leader before campaigning (etcd's
        /// --election-timeout over --heartbeat-interval).
        public var electionTicks: Int
        /// Raft's pre-vote (etcd's --pre-vote).
        public var preVote: Bool

        public init(heartbeatInterval: Double = 0.1, electionTicks: Int = 10, preVote: Bool = true) {
            self.heartbeatInterval = heartbeatInterval
            self.electionTicks = electionTicks
            self.preVote = preVote
        }
    }

    public enum ProposalError: Error, Equatable {
        /// No leader is known to this member.
        case noLeader
        /// The WAL failed: nothing more can be made durable.
        case stopped
        /// A membership change is in the log, not yet applied.
        case pending
    }

    public let id: NodeID
    private let loop: EventLoop
    private let logger: Logger
    private var raft: RaftNode
    private let storage: MemoryStorage
    private let wal: GroupCommitWAL
    private var readyTask: DeferredTask!
    private var tickTimer: Transport.Timer?
    private var failure: WALError?
    /// The last entry handed to the application.
    public private(set) var appliedIndex: UInt64
    private let apply: ([Entry]) -> Void
    private let onFailure: (String) -> Void
    /// Where a Ready that only moves the commit index goes instead of the
    /// WAL (nil: to the WAL, written without a sync).
    public var commitMark: CommitMark?
    /// After a lone entry is handed to the WAL, the loop polls instead of
    /// sleeping for this long (its fsync is about that far away).
    public var loneWritePoll: Double = 0
    /// The lone entry last handed to the WAL and when; and whether the one
    /// before became durable within the poll. When fsyncs take longer than
    /// the poll (a slower disk), polling only burns the CPU: it stops until
    /// a lone write is that fast again (every one is timed, polled or not).
    private var loneWrite: (index: UInt64, started: UInt64)?
    private var lonePollPays = true

    // Linearizable reads: reads waiting for an index to be applied, reads
    // waiting for the next ReadIndex round, and the round in flight.
    private var readsWaitingForApply: [(index: UInt64, read: () -> Void)] = []
    private var readsWaitingForRound: [() -> Void] = []
    private var readRound: (context: [UInt8], reads: [() -> Void], ticks: Int)?
    private var readContexts: UInt64 = 0
    /// Ticks after which a read round that got no answer is asked again.
    private let readRetryTicks = 5

    /// Where messages to other members go (none for a member alone).
    public let transport: PeerTransport?

    /// Called when this member becomes leader (true) or stops leading.
    public var onLeadership: ((Bool) -> Void)?
    /// Called when a leader becomes known (after none, or another).
    public var onLeaderKnown: (() -> Void)?
    private var wasLeader = false

    public private(set) var leaderChanges = 0
    private var lastLeader: NodeID = noNode
    /// Entries kept in memory behind the applied index, for followers that
    /// are a little behind (etcd's snapshot catch-up entries).
    public var catchUpEntries: UInt64 = 5_000
    /// Applied entries after which the log is compacted (etcd's
    /// --snapshot-count).
    public var snapshotCount: UInt64 = 100_000
    /// Sends the application's state to a follower that needs entries
    /// compacted away (the message carries the snapshot's index and term);
    /// when it has installed it, the follower answers through Raft.
    public var sendSnapshot: ((Message) -> Void)?
    /// Replaces the application's state with a leader's snapshot, then
    /// calls back on the loop (nil: installed; else why not).
    public var installSnapshot: ((Snapshot, @escaping (String?) -> Void) -> Void)?

    /// - Parameters:
    ///   - storage: what the WAL held (`RecoveredRaftLog`). Committed
    ///     entries after its snapshot are handed over again at start; the
    ///     application skips those its backend holds.
    ///   - apply: committed entries, in order, on the loop.
    ///   - onFailure: the WAL failed; no entry is applied after this.
    public init(id: NodeID, voters: [NodeID], storage: MemoryStorage, wal: GroupCommitWAL,
                loop: EventLoop, timing: Timing, seed: UInt64, logger: Logger, transport: PeerTransport? = nil,
                apply: @escaping ([Entry]) -> Void, onFailure: @escaping (String) -> Void) {
        self.id = id
        self.transport = transport
        self.loop = loop
        self.logger = logger
        self.storage = storage
        self.wal = wal
        self.apply = apply
        self.onFailure = onFailure
        self.appliedIndex = storage.firstIndex - 1
        var config = RaftConfig(id: id, peers: voters, seed: seed)
        config.electionTick = timing.electionTicks
        config.heartbeatTick = 1
        config.preVote = timing.preVote
        config.asyncStorageWrites = true
        raft = RaftNode(config: config, storage: storage)
        readyTask = loop.makeDeferredTask { [unowned self] in processReady() }
        transport?.receive = { [unowned self] in step($0) }
        tickTimer = loop.schedule(every: timing.heartbeatInterval) { [unowned self] in tick() }
    }

    /// Starts: a member that alone is the quorum leads at once, and what
    /// the log holds beyond the backend is applied before this returns
    /// (before any client is served).
    public func start() {
        if raft.voters == [id] { raft.campaignNow() }
        while raft.hasReady && failure == nil {
            let rd = raft.ready()
            let records = Self.records(of: rd)
            if !records.isEmpty {
                let done = WaitForCompletion()
                wal.submit(records) { done.finish($0) }
                if case .failure(let e) = done.wait() {
                    fail(e)
                    return
                }
                stabilize(rd)
            }
            finish(rd)
        }
        // Alone after what it applied (a forced new cluster): lead now.
        if raft.voters == [id] && !isLeader && failure == nil {
            raft.campaignNow()
            readyTask.trigger()
        }
    }

    /// A message from another member.
    public func step(_ m: Message) {
        guard failure == nil else { return }
        raft.step(m)
        readyTask.trigger()
    }

    /// Hands leadership to `target` (Raft's leadership transfer; a leader
    /// only, and `target` a voter): Raft drops a transfer not done within
    /// an election timeout.
    public func transferLeadership(to target: NodeID) {
        guard failure == nil else { return }
        raft.transferLeadership(to: target)
        readyTask.trigger()
    }

    /// Whether `id` is a voting member.
    public func isVoter(_ id: NodeID) -> Bool { raft.voters.contains(id) }

    /// Proposes a membership change (an encoded `raftpb.ConfChange`): the
    /// application sees it, in log order, when it is committed, and says
    /// whether it takes effect (`applyConfChange`). One at a time: while
    /// one is in the log unapplied, `.pending`.
    public func proposeConfChange(_ data: [UInt8]) throws(ProposalError) {
        if failure != nil { throw .stopped }
        do {
            try raft.propose(data, kind: .confChange)
        } catch {
            throw error == .confChangePending ? .pending : .noLeader
        }
        readyTask.trigger()
    }

    /// The application applied a membership entry (while it is handed
    /// its entries): Raft's membership changes with it.
    public func applyConfChange(_ change: ConfChange) {
        raft.applyConfChange(change)
        readyTask.trigger()
    }

    /// The membership as the application's state has it (at start, after
    /// installing a leader's snapshot).
    public func setMembership(voters: [NodeID], learners: [NodeID]) {
        raft.setMembership(voters: voters, learners: learners)
    }

    /// On the leader, how much of its log `member` is known to hold.
    public func matchIndex(of member: NodeID) -> UInt64? { raft.matchIndex(of: member) }

    public var term: UInt64 { raft.term }
    public var leader: NodeID { raft.leader }
    public var isLeader: Bool { raft.role == .leader }
    public var commitIndex: UInt64 { raft.commitIndex }
    public var lastIndex: UInt64 { raft.lastIndex }
    public var isStopped: Bool { failure != nil }

    /// The term of an entry still held (for snapshot markers).
    public func term(of index: UInt64) -> UInt64? { storage.term(index) }

    /// Proposes `data` as a log entry; the application sees it when it is
    /// committed. While no leader is known (an election), proposals wait
    /// here, at most `maxWaitingProposals` of them, and go to the next
    /// leader: a client sees a pause, not an error. (One that is never
    /// committed is the application's to time out.)
    public func propose(_ data: [UInt8]) throws(ProposalError) {
        if failure != nil { throw .stopped }
        if !waitingForLeader.isEmpty || raft.leader == noNode {
            guard waitingForLeader.count < Self.maxWaitingProposals else { throw .noLeader }
            waitingForLeader.append(data)
            return
        }
        do {
            try raft.propose(data)
        } catch {
            // Handing leadership over: wait for the next leader.
            waitingForLeader.append(data)
            return
        }
        readyTask.trigger()
    }

    /// Proposals made while no leader was known, or forwarded to a leader
    /// known to be down, in order: proposed again on each tick and when a
    /// leader is elected.
    private var waitingForLeader: [[UInt8]] = []
    public static let maxWaitingProposals = 10_000

    private func proposeWaiting() {
        guard !waitingForLeader.isEmpty, raft.leader != noNode else { return }
        var sent = 0
        for data in waitingForLeader {
            guard (try? raft.propose(data)) != nil else { break }
            sent += 1
        }
        waitingForLeader.removeFirst(sent)
        if sent > 0 { readyTask.trigger() }
    }

    /// Runs `read` once this member has applied everything committed when
    /// it was asked (Raft's ReadIndex): one confirmation round serves every
    /// read waiting for it. After a WAL failure reads see what was applied.
    public func linearizableRead(_ read: @escaping () -> Void) {
        if failure != nil { return read() }
        if let index = raft.immediateReadIndex { return afterApplying(index, read) }
        readsWaitingForRound.append(read)
        startReadRound()
    }

    /// Whether a linearizable read may be served at once (no round of
    /// confirmation needed, everything committed applied): the read's
    /// fast path, without a closure.
    public var canReadNow: Bool {
        if failure != nil { return true }
        guard let index = raft.immediateReadIndex else { return false }
        return appliedIndex >= index
    }

    private func afterApplying(_ index: UInt64, _ read: @escaping () -> Void) {
        if appliedIndex >= index { return read() }
        readsWaitingForApply.append((index, read))
    }

    private func startReadRound() {
        guard readRound == nil, !readsWaitingForRound.isEmpty else { return }
        readContexts += 1
        let context = (0..<8).map { UInt8(truncatingIfNeeded: readContexts >> (8 * UInt64($0))) }
        readRound = (context, readsWaitingForRound, 0)
        readsWaitingForRound = []
        raft.readIndex(context)
        readyTask.trigger()
    }

    /// Read index rounds that timed out and were asked again (etcd's
    /// `etcd_server_slow_read_indexes_total`).
    public private(set) var slowReadIndexes = 0

    private func readIndexArrived(_ state: ReadState) {
        guard let round = readRound, round.context == state.context else { return }
        readRound = nil
        for read in round.reads { afterApplying(state.index, read) }
        startReadRound()
    }

    private func tick() {
        raft.tick()
        proposeWaiting()
        if var round = readRound {
            round.ticks += 1
            if round.ticks >= readRetryTicks {
                // Lost (no leader then, or a message dropped): ask again.
                round.ticks = 0
                slowReadIndexes += 1
                raft.readIndex(round.context)
            }
            readRound = round
        }
        readyTask.trigger()
    }

    // MARK: Ready

    private static func records(of rd: Ready) -> [WALRecord] {
        var records = rd.entries.map(RaftRecords.entry)
        if let h = rd.hardState { records.append(RaftRecords.hardState(h)) }
        return records
    }

    private func processReady() {
        guard failure == nil, !installingSnapshot, raft.hasReady else { return }
        if raft.hasPendingSnapshot {
            // After everything being written, the leader's state replaces
            // this member's.
            if inFlight.isEmpty { installLeaderSnapshot() }
            return
        }
        guard inFlight.count < Self.maxInFlight else { return }
        let rd = raft.ready()
        raft.accept(rd)
        applyHandedOut(rd)
        if failure != nil { return }
        let records = Self.records(of: rd)
        let sync = Self.mustSync(rd, after: storage.hardState)
        // A leader's messages go out while it writes the same entries (its
        // own copy counts toward the quorum only once durable), unless the
        // Ready changes its term or vote, which must be durable first;
        // everyone else's wait for what they acknowledge.
        let sendNow = transport != nil && raft.role == .leader
            && rd.hardState.map({ $0.term == storage.hardState.term && $0.vote == storage.hardState.vote }) ?? true
        if records.isEmpty || (!sync && rd.entries.isEmpty && commitMark != nil) {
            // Nothing for the WAL, or only a commit index the mark covers.
            if let h = rd.hardState { keepHardState(h) }
            raft.persisted(rd)
            if sendNow || inFlight.isEmpty { send(rd.messages) } else { inFlight[inFlight.count - 1].messages += rd.messages }
        } else {
            if sendNow { send(rd.messages) }
            inFlight.append((rd, sendNow ? [] : rd.messages))
            persist(rd, first: [], sync: sync)
            // A lone write: its answer is about one fsync away.
            if rd.entries.count == 1 && loneWritePoll > 0 {
                loneWrite = (rd.entries[0].index, monotonicNanoseconds())
                if lonePollPays { loop.poll(for: loneWritePoll) }
            }
        }
        noteLeader()
        compactLog()
        if raft.hasReady { readyTask.trigger() }
    }

    /// Readys with the WAL and not yet durable, oldest first, each with
    /// the messages that wait for it. Raft hands out only entries committed
    /// and durable here, so applying never waits for them.
    private var inFlight: [(rd: Ready, messages: [Message])] = []
    private static let maxInFlight = 4
    private var installingSnapshot = false

    /// The committed entries of a Ready (all durable here): the
    /// commit mark covers them first, so that a process killed after
    /// serving them restarts at least there.
    private func applyHandedOut(_ rd: Ready) {
        let fresh = rd.committedEntries.drop { $0.index <= appliedIndex }
        if let last = fresh.last {
            if let commitMark {
                do { try commitMark.write(last.index) } catch { return fail(error) }
            }
            apply(Array(fresh))
            appliedIndex = last.index
        }
        for state in rd.readStates { readIndexArrived(state) }
        releaseReads()
    }

    /// Whether a Ready must reach the disk before what depends on it
    /// (Raft's rule): new entries, a new term or vote. A hard state that
    /// only moves the commit index need not, since a member that loses it
    /// learns the commit again from the leader.
    static func mustSync(_ rd: Ready, after current: HardState) -> Bool {
        guard rd.entries.isEmpty, rd.snapshot == nil else { return true }
        guard let h = rd.hardState else { return false }
        return h.term != current.term || h.vote != current.vote
    }

    private func keepHardState(_ h: HardState) {
        // Readys complete in order, but one the mark covered may have
        // overtaken one the WAL was writing: the commit index never goes back.
        storage.setHardState(HardState(term: h.term, vote: h.vote, commit: max(h.commit, storage.hardState.commit)))
    }

    private func persist(_ rd: Ready, first: [WALRecord], sync: Bool = true) {
        let me = LoopBound(self), loop = self.loop
        wal.submit(first + Self.records(of: rd), sync: sync) { result in
            loop.execute { me.value.persisted(result) }
        }
    }

    /// The oldest Ready in flight is durable (or the WAL failed).
    private func persisted(_ result: Result<Void, WALError>) {
        guard failure == nil, !inFlight.isEmpty else { return }
        let (rd, messages) = inFlight.removeFirst()
        if case .failure(let e) = result { return fail(e) }
        if let lone = loneWrite, rd.entries.last?.index == lone.index {
            lonePollPays = monotonicNanoseconds() - lone.started <= UInt64(loneWritePoll * 1e9)
            loneWrite = nil
        }
        stabilize(rd)
        raft.persisted(rd)
        send(messages)
        noteLeader()
        processReady()
    }

    /// A leader's snapshot, with nothing else in flight: the application
    /// installs it first, then the marker says the log starts after it (a
    /// crash in between leaves a backend ahead of the log, whose entries
    /// are skipped when applied again; never a log that starts after what
    /// the backend holds).
    private func installLeaderSnapshot() {
        let rd = raft.ready()
        guard let snapshot = rd.snapshot else { return }
        guard let installSnapshot else {
            return fail(.io(operation: "install a snapshot from the leader (no installer)", path: "", errno: 0))
        }
        installingSnapshot = true
        let me = LoopBound(self), loop = self.loop
        installSnapshot(snapshot) { error in
            if let error { return me.value.fail(.io(operation: "install the leader's snapshot: \(error)", path: "", errno: 0)) }
            let marker = RaftRecords.snapshotMarker(index: snapshot.index, term: snapshot.term)
            me.value.wal.submit([marker] + Self.records(of: rd)) { result in
                loop.execute { me.value.snapshotPersisted(rd, result) }
            }
        }
    }

    private func snapshotPersisted(_ rd: Ready, _ result: Result<Void, WALError>) {
        installingSnapshot = false
        if case .failure(let e) = result { return fail(e) }
        stabilize(rd)
        finish(rd)
        processReady()
    }

    /// The Ready's entries and hard state are durable: Raft's storage
    /// holds them now.
    private func stabilize(_ rd: Ready) {
        if let snapshot = rd.snapshot { storage.apply(snapshot) }
        storage.append(rd.entries)
        if let h = rd.hardState { keepHardState(h) }
    }

    /// Sends, applies and advances past a Ready whose records are durable
    /// (at start, and a leader's snapshot).
    private func finish(_ rd: Ready) {
        if let snapshot = rd.snapshot {
            appliedIndex = max(appliedIndex, snapshot.index)
            logger.info("installed the leader's snapshot", metadata: ["index": "\(snapshot.index)", "term": "\(snapshot.term)"])
        }
        send(rd.messages)
        applyHandedOut(rd)
        raft.advance(rd)
        noteLeader()
        compactLog()
    }

    private func send(_ messages: [Message]) {
        guard let transport else { return }
        for m in messages {
            if m.type == .snapshot {
                // A follower needs entries compacted away: the backend goes
                // to it beside the stream (the application's).
                sendSnapshot?(m)
                continue
            }
            guard !transport.send(m), m.type == .propose else { continue }
            // Forwarded to a leader known to be down: it never got them, so
            // they wait for the next leader.
            waitingForLeader += m.entries.map(\.data)
        }
    }

    private func releaseReads() {
        guard !readsWaitingForApply.isEmpty else { return }
        let ready = readsWaitingForApply.filter { $0.index <= appliedIndex }
        readsWaitingForApply.removeAll { $0.index <= appliedIndex }
        for r in ready { r.read() }
    }

    private func noteLeader() {
        if isLeader != wasLeader {
            wasLeader = isLeader
            onLeadership?(wasLeader)
        }
        guard raft.leader != lastLeader else { return }
        let previous = lastLeader
        lastLeader = raft.leader
        proposeWaiting()
        // etcd's raft words, which operators grep for.
        let me = String(id, radix: 16)
        if raft.leader == noNode {
            logger.info("raft.node: \(me) lost leader \(String(previous, radix: 16)) at term \(raft.term)")
        } else {
            leaderChanges += 1
            logger.info("raft.node: \(me) elected leader \(String(raft.leader, radix: 16)) at term \(raft.term)")
            onLeaderKnown?()
        }
    }

    /// Drops applied entries from memory once `snapshotCount` of them
    /// gathered (a member alone: twice `catchUpEntries`), keeping
    /// `catchUpEntries` for followers a little behind; one further behind
    /// gets the backend (`sendSnapshot`).
    private func compactLog() {
        let alone = raft.voters.count + raft.learners.count == 1
        let threshold = alone ? 2 * catchUpEntries : max(snapshotCount, catchUpEntries)
        guard appliedIndex > storage.firstIndex + threshold else { return }
        storage.compact(to: appliedIndex - catchUpEntries, data: [], voters: raft.voters.sorted(), learners: raft.learners.sorted())
    }

    private func fail(_ e: WALError) {
        guard failure == nil else { return }
        failure = e
        logger.critical("the WAL failed: the member stops", metadata: ["error": "\(e)"])
        onFailure("\(e)")
        // What was applied is all there is: waiting reads see it.
        let reads = readsWaitingForApply.map(\.read) + (readRound?.reads ?? []) + readsWaitingForRound
        readsWaitingForApply = []
        readRound = nil
        readsWaitingForRound = []
        for r in reads { r() }
    }
}

/// Blocks until a WAL completion arrives (at start, before the loop runs).
private final class WaitForCompletion: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var result: Result<Void, WALError>?

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    func finish(_ r: Result<Void, WALError>) {
        pthread_mutex_lock(&mutex)
        result = r
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    func wait() -> Result<Void, WALError> {
        pthread_mutex_lock(&mutex)
        while result == nil { pthread_cond_wait(&condition, &mutex) }
        let r = result!
        pthread_mutex_unlock(&mutex)
        return r
    }
}
