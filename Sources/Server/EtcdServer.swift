import Auth
import EtcdProto
import EtcdStatus
import Lease
import Logging
import Member
import Metrics
import MVCC
import Raft
import SwiftProtobuf
import Transport
import V2Store
import WAL
#if canImport(Glibc)
import Glibc
#endif

/// The version this server reports (Status, /version): the etcd API level
/// its clients may expect.
public enum ServerVersion {
    public static let server = "3.5.0"
    public static let cluster = "3.5.0"
}

/// One swetcd member: the store and the services over it, on one event loop.
/// Everything here runs on the loop thread.
public final class EtcdServer {
    public let config: ServerConfig
    /// The listen URLs with the ports actually bound (a port 0 in the
    /// configuration is a free one), once listening.
    public var listenedClientURLs: [ServerConfig.ClientURL]?
    let loop: EventLoop
    let logger: Logger
    let backend: LMDBBackend
    let store: Store
    let memberID: UInt64
    let clusterID: UInt64
    /// This member's Raft: every write is a proposal to it.
    var member: Member!
    /// The members the flags name at bootstrap (or, for a member joining
    /// a cluster, the members the cluster named): ID, name, peer URLs.
    var bootstrapMembers: [(id: UInt64, name: String, peerURLs: [String])] = []
    /// The cluster's members as the applied log says (empty until the
    /// first membership entry of a new data dir is applied).
    var membership = Membership()
    /// Whether this member is a learner (refuses most requests).
    var isLearner = false
    var attributesPublished = false
    var attributesPublishing = false
    /// Where peers' Raft streams and requests are served.
    public var peerRouter: GRPCRouter { member.transport! }
    /// Whether to listen on --listen-peer-urls: always in a cluster of
    /// more than one (or one joining), and alone when the flag was given
    /// (so it can grow); a member alone on the default URL listens for
    /// none, so many can run on one machine.
    public var listensForPeers: Bool {
        config.listenPeerURLsGiven || bootstrapMembers.count > 1 || membership.members.count > 1 || config.initialClusterState == "existing"
    }
    /// This member was removed from the cluster: the process should stop
    /// (it logged why).
    public var onRemoved: (() -> Void)?
    var stopping = false
    var removalTimer: Transport.Timer?
    /// False for a member that joined a cluster until its published
    /// attributes are applied (it has caught up to them, as etcd's
    /// ReadyNotify): until then unary client calls wait, streams are
    /// refused, so no client sees the empty store it started with.
    var servingClients = true
    var heldUntilServing: [() -> Void] = []
    var corruptionCheckRunning = false
    private var corruptionCheckTimer: Transport.Timer?
    /// Membership changes this member proposed, by request ID, until
    /// applied or refused; with when each was made.
    var pendingConfChanges: [UInt64: (reply: (Result<[Etcdserverpb_Member], GRPCStatus>) -> Void, at: UInt64)] = [:]
    /// Index of the last log entry applied (the backend's consistent index).
    var appliedIndex: UInt64
    let walWriter: GroupCommitWAL
    /// Set once a write can no longer be made durable (the WAL or the
    /// backend failed): every later write gets this, reads go on.
    var writesRefused: GRPCStatus?
    /// Proposals this member made, by ID, until applied; with when each
    /// was made (monotonic nanoseconds), for the request timeout.
    var pendingProposals: [UInt64: (decoded: DecodedWrite, reply: (Result<GRPCMessageBuffer, GRPCStatus>) -> Void, at: UInt64)] = [:]
    private var proposalTimeoutTimer: Transport.Timer?
    var nextProposalID: UInt64
    var proposalsFailed = 0
    let metrics: ServerMetrics

    private var methods: [String: GRPCMethod] = [:]
    private var services = Set<String>()
    private var backendCommitTimer: Transport.Timer?
    private var compactionTask: DeferredTask!
    private var awaitingCompaction: [() -> Void] = []
    var snapshotsInProgress = 0
    /// Followers a snapshot is being sent to, and whether one is arriving.
    var snapshotTransfers = Set<UInt64>()
    var receivingSnapshot = false
    var installRetry: Transport.Timer?

    // Watch: the hub, every watcher's stream and options, and the streams.
    let watchHub = WatchHub()
    /// By watcher ID; IDs are reused (`freeWatcherIDs`) so that slabs, not
    /// hash tables, can hold watchers here and in the hub.
    var servedWatches = Slab<ServedWatch>()
    /// When the compaction being done began (for its finished log line).
    var compactionStartedAt: UInt64?
    var watchStreams: [ObjectIdentifier: WatchStream] = [:]
    var nextWatcherID = 0
    var freeWatcherIDs: [WatchHub.ID] = []
    /// Each distinct watched range once, with how many watchers use it.
    var watchRanges: [KeyRange: (range: KeyRange, users: Int)] = [:]
    /// Changes applied but not yet given to watchers, in order.
    var undispatchedChanges: [(Int64, [WatchEvent])] = []
    var watchCatchUpTask: DeferredTask!
    // Lock and Election calls waiting on keys; and the changes applied
    // but not yet given to them, in order.
    var keyWaits = KeyWaits()
    var keyWaiters: [KeyWaits.ID: KeyWaiter] = [:]
    var keyChanges: [(Int64, [WatchEvent])] = []
    private var progressTimer: Transport.Timer?
    /// MoveLeader calls waiting for their member to lead, by a number of
    /// their own.
    var leaderMoves: [Int: Transport.Timer] = [:]
    var nextLeaderMoveID = 0
    private var checkpointTimer: Transport.Timer?
    var checkpointInProgress = false
    private var checkpointedIndex: UInt64 = 0
    /// The backend's `revisionBytesPut` when the last checkpoint began.
    private var bytesPutAtCheckpoint = 0

    // Leases: the lessor, and the leases whose backend entry holds a
    // remaining TTL from a checkpoint (a keep-alive clears it).
    var lessor = Lessor()
    /// Each lease's remaining TTL as last checkpointed (kept in the
    /// backend too); and the leases whose checkpoint is being cleared.
    var checkpointedRemaining: [Int64: Int64] = [:]
    var clearingCheckpoints = Set<Int64>()
    var leaseExpiryTimer: Transport.Timer?
    var leaseCheckpointTimer: Transport.Timer?
    var alarms = Set<RaisedAlarm>()
    /// Writes refused for space, waiting for the NOSPACE alarm's proposal.
    var noSpaceWaiters: [() -> Void]?
    var authStore = AuthStore()
    var tokens: SimpleTokens
    /// Password hashing and checking off the loop: how many run, and the
    /// jobs waiting for a thread.
    var passwordWork: (running: Int, waiting: [() -> Void]) = (0, [])
    private var tokenExpiryTimer: Transport.Timer?
    let passwordHasher: PasswordHasher
    var defragmentTask: DeferredTask!
    var defragmentRun = DefragmentRun()
    private var autoCompactor: AutoCompactor?
    // The v2 keys API (--enable-v2): its store, long-polling watchers,
    // expiry, counters.
    var v2Store = V2Store()
    var v2Watches: [V2Watch] = []
    private var v2ExpiryTimer: Transport.Timer?
    var v2ExpiryProposed = false
    var v2Stats = V2Stats()
    /// When the member started (wall clock in milliseconds, monotonic).
    let startedAt = (wall: EtcdServer.wallClockMilliseconds(), monotonic: monotonicNanoseconds())
    private var autoCompactionTimer: Transport.Timer?

    public init(config: ServerConfig, loop: EventLoop, logger: Logger) throws {
        self.config = config
        metrics = ServerMetrics(extensive: config.extensiveMetrics)
        self.loop = loop
        self.logger = logger
        tokens = SimpleTokens(ttl: UInt64(config.authTokenTTL) * 1_000_000_000)
        passwordHasher = PasswordHasher(cost: config.bcryptCost)
        for dir in [config.dataDir, config.dataDir + "/member", config.dataDir + "/member/snap", config.dataDir + "/member/wal"] {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw ServerError.dataDir(dir, String(cString: strerror(errno)))
            }
        }
        // Durability comes from the WAL (fsynced before a write is applied);
        // the backend is committed without fsync and caught up from the WAL
        // after a crash.
        backend = try LMDBBackend(path: config.dataDir + "/member/snap/db",
                                  mapSize: Int(max(config.quotaBackendBytes, 1 << 30)), syncOnCommit: false)
        var limits = Limits()
        limits.maxTxnOps = config.maxTxnOps
        limits.backendBatchLimit = config.backendBatchLimit
        store = try Store(backend: backend, limits: limits)
        appliedIndex = try store.consistentIndex
        let cluster = config.effectiveInitialCluster
        // Peers over TLS: this member's certificate, peers' checked
        // against the peer CA.
        let peerTLS = config.peerTLS
            ? try TLSClientContext(.init(caFile: config.peerTrustedCAFile, certFile: config.peerCertFile, keyFile: config.peerKeyFile,
                                         insecureSkipVerify: config.peerAutoTLS && config.peerTrustedCAFile == nil))
            : nil
        // A new data dir takes the IDs etcd derives from the bootstrap
        // flags, or, joining a cluster, those the cluster gave it; an
        // existing one keeps those it has.
        let isNewDataDir = try backend.metaInt64(.memberID) == nil
        var joined: (memberID: UInt64, clusterID: UInt64, members: [Etcdserverpb_Member])?
        if isNewDataDir && config.initialClusterState == "existing" {
            joined = try Self.joinCluster(config, tls: peerTLS, loop: loop)
        }
        servingClients = joined == nil
        memberID = try Self.persistentID(.memberID, backend, new: joined?.memberID
            ?? ClusterIdentity.memberID(peerURLs: config.initialAdvertisePeerURLs, token: config.initialClusterToken))
        clusterID = try Self.persistentID(.clusterID, backend, new: joined?.clusterID ?? cluster.clusterID(token: config.initialClusterToken))
        try store.commit()
        // etcd's proposal IDs: the member's low 16 bits, then a counter
        // that starts at the time in milliseconds (unique across restarts).
        nextProposalID = (memberID & 0xffff) << 48 | (UInt64(Self.wallClockMilliseconds()) << 8) & ((1 << 48) - 1)
        let wal = try WAL(directory: config.dataDir + "/member/wal", segmentBytes: config.walSegmentBytes)
        wal.tagOf = { RaftRecords.entryIndex($0) ?? ($0.type == .entry ? LegacyLogEntry(decoding: $0.data)?.index : nil) }
        var records = try wal.recover()
        if let torn = wal.truncatedTail {
            logger.warning("truncated a torn WAL tail", metadata: ["file": "\(torn.file)", "offset": "\(torn.offset)"])
        }
        // This member as its data dir knows it (one from before derived
        // IDs keeps its own), the others as the flags (or the cluster
        // joined) say.
        let localID = memberID, localName = config.name
        if let joined {
            bootstrapMembers = joined.members.map { ($0.id, $0.name, $0.peerUrls) }
        } else {
            bootstrapMembers = cluster.memberIDs(token: config.initialClusterToken).map { m in
                (m.name == localName ? localID : m.id, m.name, cluster.members.first { $0.name == m.name }!.peerURLs)
            }
        }
        let stored = try Self.storedMembership(backend, appliedIndex: appliedIndex, bootstrapMembers: bootstrapMembers)
        if appliedIndex == 0 && joined == nil && !records.contains(where: { [.entry, .raftEntry, .snapshot].contains($0.type) }) {
            let peers = bootstrapMembers.filter { $0.id != localID }.compactMap { $0.peerURLs.first.flatMap(ServerConfig.ClientURL.init) }
            if !peers.isEmpty && Self.isBootstrapped(localID, peers: peers.map { ($0.host, $0.port) }, tls: peerTLS, loop: loop) {
                throw ServerError.alreadyBootstrapped(localID)
            }
            // A new member: as etcd bootstraps one, its log starts with the
            // initial membership at term 1, one entry per member in ID order
            // (the same on every member), committed; the first election
            // makes term 2.
            var bootstrap = try bootstrapMembers.sorted { $0.id < $1.id }.enumerated().map { i, m in
                let change = Membership.Change.add(Membership.Member(id: m.id, name: m.name, peerURLs: m.peerURLs))
                return RaftRecords.entry(Entry(term: 1, index: UInt64(i + 1), kind: .confChange,
                                               data: try MembershipEntry(requestID: 0, change: change).encoded()))
            }
            bootstrap.append(RaftRecords.hardState(HardState(term: 1, commit: UInt64(bootstrapMembers.count))))
            try wal.append(bootstrap)
            try wal.sync()
            records += bootstrap
        }
        // Raft's membership: the backend's, or at bootstrap the flags'
        // (a member joining learns it from the log, and starts with none).
        let voters = !stored.isEmpty ? stored.voters : joined != nil ? [] : bootstrapMembers.map(\.id)
        let commitMark = try CommitMark(directory: wal.directory)
        let raftLog = try Self.recoverRaftLog(records, voters: voters, backendIndex: appliedIndex,
                                              commitMark: commitMark.read(), dataDir: config.dataDir)
        if config.forceNewCluster && !isNewDataDir {
            let others = (stored.isEmpty ? bootstrapMembers.map(\.id) : stored.sorted.map(\.id)).filter { $0 != localID }
            try Self.forceNewCluster(removing: others, storage: raftLog.storage, wal: wal)
            logger.warning("forcing a new cluster of one: the other members are removed", metadata: [
                "removed": "\(others.map(hex))", "commit-index": "\(raftLog.storage.hardState.commit)"])
        }
        let walLogger = logger
        wal.onSlowSync = { took in
            walLogger.warning("slow fdatasync", metadata: [
                "took": EtcdServer.duration(nanoseconds: UInt64(took * 1e9)), "expected-duration": "1s"])
        }
        // etcd's --max-wals counts the open segment too; 0 keeps every one.
        walWriter = GroupCommitWAL(wal, spinAfterSingleRecord: config.loneWritePoll,
                                   keepSegments: config.maxWALs == 0 ? nil : config.maxWALs - 1)
        backendCommitTimer = loop.schedule(every: config.backendBatchInterval) { [unowned self] in self.commitBackend() }
        compactionTask = loop.makeDeferredTask { [unowned self] in self.compactionBatch() }
        watchCatchUpTask = loop.makeDeferredTask { [unowned self] in self.watchCatchUp() }
        defragmentTask = loop.makeDeferredTask { [unowned self] in self.defragmentStep() }
        progressTimer = loop.schedule(every: config.watchProgressNotifyInterval) { [unowned self] in self.progressTick() }
        checkpointTimer = loop.schedule(every: config.checkpointInterval) { [unowned self] in self.checkpoint() }
        tokenExpiryTimer = loop.schedule(every: 60) { [unowned self] in tokens.expire(now: monotonicNanoseconds()) }
        try loadBackendState()
        var peerAddresses: [UInt64: (host: String, port: UInt16)] = [:]
        let known = stored.isEmpty ? bootstrapMembers : stored.sorted.map { ($0.id, $0.name, $0.peerURLs) }
        for m in known where m.id != memberID {
            guard let url = m.peerURLs.first.flatMap(ServerConfig.ClientURL.init) else { continue }
            peerAddresses[m.id] = (url.host, url.port)
        }
        let transport = PeerTransport(loop: loop, localID: memberID, clusterID: clusterID, peers: peerAddresses, tls: peerTLS, logger: logger)
        transport.allowedCommonName = config.peerCertAllowedCN
        if config.initialCorruptCheck && !isNewDataDir {
            try Self.checkInitialHashKV(store: store, transport: transport, peers: peerAddresses.keys.sorted(), memberID: memberID,
                                        loop: loop, logger: logger)
        }
        member = Member(id: memberID, voters: voters, storage: raftLog.storage, wal: walWriter, loop: loop,
                        timing: Member.Timing(heartbeatInterval: Double(config.heartbeatIntervalMs) / 1000,
                                              electionTicks: max(config.electionTimeoutMs / config.heartbeatIntervalMs, 1),
                                              preVote: config.preVote),
                        seed: memberID ^ nextProposalID, logger: logger, transport: transport,
                        apply: { [unowned self] in applyCommitted($0) },
                        onFailure: { [unowned self] in memberStopped($0) })
        if !stored.isEmpty { member.setMembership(voters: stored.voters, learners: stored.learners) }
        member.loneWritePoll = config.loneWritePoll
        member.commitMark = commitMark
        member.snapshotCount = config.snapshotCount
        member.catchUpEntries = config.snapshotCatchUpEntries
        member.sendSnapshot = { [unowned self] in sendSnapshot($0) }
        member.installSnapshot = { [unowned self] in installSnapshot($0, $1) }
        transport.services[Self.snapshotPath] = snapshotReceiver()
        transport.services[Self.membersPath] = membersService()
        transport.services[Self.promotePath] = promoteService()
        transport.services[Self.hashKVPath] = hashKVService()
        if config.corruptCheckTime > 0 {
            corruptionCheckTimer = loop.schedule(every: config.corruptCheckTime) { [unowned self] in checkHashKVs() }
        }
        transport.isRemoved = { [unowned self] in membership.removed.contains($0) }
        transport.removedByPeers = { [unowned self] in removed() }
        // A member of a cluster publishes its attributes as soon as it
        // knows a leader, and again every half second until that is
        // applied.
        member.onLeaderKnown = { [unowned self] in publishAttributesIfNeeded() }
        proposalTimeoutTimer = loop.schedule(every: 0.5) { [unowned self] in
            timeOutProposals()
            publishAttributesIfNeeded()
        }
        let before = appliedIndex
        member.start()
        try store.commit()
        if appliedIndex > before {
            logger.info("replayed the WAL", metadata: ["entries": "\(appliedIndex - before)", "applied-index": "\(appliedIndex)"])
        }
        registerKV()
        registerLease()
        registerAuth()
        registerWatch()
        registerMaintenance()
        registerCluster()
        registerLock()
        registerElection()
        if store.hasPendingCompaction { compactionTask.trigger() }
        startAutoCompaction()
        if config.enableV2 {
            v2ExpiryTimer = loop.schedule(every: 0.5) { [unowned self] in self.v2ExpiryTick() }
        }
        logger.info("opened the store", metadata: [
            "data-dir": "\(config.dataDir)", "revision": "\(store.currentRevision)",
            "compact-revision": "\(store.compactedRevision)", "keys": "\(store.keyCount)",
            "member-id": "\(hex(memberID))", "cluster-id": "\(hex(clusterID))",
        ])
    }

    /// etcd's --force-new-cluster: the log gets, committed, the removal of
    /// every other member, so this one alone is the quorum. Unlike etcd,
    /// the entries after the commit index this member knew are kept (and
    /// committed): one of them may be a write the old leader acknowledged
    /// before this member heard of its commit.
    private static func forceNewCluster(removing others: [UInt64], storage: MemoryStorage, wal: WAL) throws {
        guard !others.isEmpty else { return }
        let term = max(storage.hardState.term, 1)
        var index = storage.lastIndex
        let removals = try others.map { id in
            index += 1
            return Entry(term: term, index: index, kind: .confChange, data: try MembershipEntry(requestID: 0, change: .remove(id)).encoded())
        }
        let hard = HardState(term: term, vote: storage.hardState.vote, commit: index)
        try wal.append(removals.map(RaftRecords.entry) + [RaftRecords.hardState(hard)])
        try wal.sync()
        storage.append(removals)
        storage.setHardState(hard)
    }

    /// Raft's log as the WAL holds it. A data dir of the member before Raft
    /// holds `entry` records: they become entries of its fixed term, the
    /// log starting after the backend or the first of them.
    private static func recoverRaftLog(_ records: [WALRecord], voters: [UInt64], backendIndex: UInt64,
                                       commitMark: UInt64?, dataDir: String) throws -> RecoveredRaftLog {
        var converted = records
        var firstLegacy: UInt64?
        for (i, r) in records.enumerated() where r.type == .entry {
            guard let legacy = LegacyLogEntry(decoding: r.data) else {
                throw ServerError.dataDir(dataDir, "an undecodable WAL entry")
            }
            if firstLegacy == nil { firstLegacy = legacy.index }
            converted[i] = RaftRecords.entry(legacy.raftEntry)
        }
        let start = min(firstLegacy.map { $0 - 1 } ?? backendIndex, backendIndex)
        let hasRaftRecords = records.contains { $0.type == .raftEntry || $0.type == .snapshot || $0.type == .hardState }
        // A data dir Raft wrote starts its log at index 1 or at a marker;
        // an older one after what it had already applied.
        let defaultStart = hasRaftRecords && firstLegacy == nil ? (index: UInt64(0), term: UInt64(0))
            : (index: start, term: start > 0 ? LegacyLogEntry.term : 0)
        do {
            return try RecoveredRaftLog(records: converted, voters: voters, defaultSnapshot: defaultStart, commitMark: commitMark)
        } catch {
            throw ServerError.dataDir(dataDir, "\(error)")
        }
    }

    /// What the backend holds besides keys, rebuilt from it (at start, and
    /// after a leader's snapshot replaced it): alarms, auth, leases, the v2
    /// store, the members' published attributes.
    func loadBackendState() throws {
        alarms = []
        try loadAlarms()
        authStore = AuthStore()
        try loadAuth()
        lessor = Lessor()
        checkpointedRemaining = [:]
        try restoreLeases()
        try loadV2()
        try loadMembership()
    }

    /// The ID the backend keeps, or `new` the first time (then kept).
    private static func persistentID(_ key: MetaKey, _ backend: LMDBBackend, new: UInt64) throws -> UInt64 {
        if let v = try backend.metaInt64(key) { return UInt64(bitPattern: v) }
        try backend.setMetaInt64(key, Int64(bitPattern: new))
        return new
    }

    /// Commits what is pending and closes the backend and the WAL.
    public func shutdown() {
        walWriter.stop()
        if backend.isDefragmenting { backend.abortDefragment() }
        // A clean stop resumes every lease where it was.
        if config.leaseCheckpointInterval > 0 { checkpointLeases() }
        do {
            try store.commit()
        } catch {
            logger.error("final commit failed", metadata: ["error": "\(error)"])
        }
        backend.close()
    }

    func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
        var h = Etcdserverpb_ResponseHeader()
        h.clusterID = clusterID
        h.memberID = memberID
        h.revision = revision ?? store.currentRevision
        h.raftTerm = member.term
        return h
    }

    // MARK: Backend commits

    /// Commits the applied writes to the backend, every
    /// `--backend-batch-interval` (and inside the store every
    /// `--backend-batch-limit` writes). Replies do not wait for this: the WAL
    /// made the writes durable. A failed commit loses nothing (the WAL still
    /// has every write it held, and restart replays it) but refuses writes.
    private func commitBackend() {
        guard backend.uncommittedWrites > 0 else { return }
        do {
            try store.commit()
        } catch {
            refuseWrites(because: "the backend commit failed: \(error)")
            return
        }
        // Under a burst, a checkpoint every few MiB as well as every few
        // seconds: one sync of seconds of writes (hundreds of MiB) held
        // the WAL's fsyncs back for tens of milliseconds.
        if backend.revisionBytesPut &- bytesPutAtCheckpoint >= Self.checkpointBytes { checkpoint() }
    }

    /// Bytes of values put after which a checkpoint starts early.
    static let checkpointBytes = 32 << 20

    func refuseWrites(because why: String) {
        guard writesRefused == nil else { return }
        logger.critical("refusing writes", metadata: ["reason": "\(why)"])
        writesRefused = GRPCStatus(.unavailable, "swetcd: writes are refused, \(why)")
    }

    /// Makes the backend durable up to the applied index, on a thread of its
    /// own, then lets the WAL drop segments whose entries are all in it.
    private func checkpoint() {
        guard !checkpointInProgress, appliedIndex > checkpointedIndex else { return }
        do {
            try store.commit()
        } catch {
            refuseWrites(because: "the backend commit failed: \(error)")
            return
        }
        checkpointInProgress = true
        bytesPutAtCheckpoint = backend.revisionBytesPut
        let index = appliedIndex
        // Where recovery starts Raft's log once the backend holds `index`
        // durably: written before any segment holding entries up to it goes.
        let marker = member.term(of: index).map { RaftRecords.snapshotMarker(index: index, term: $0) }
        let syncer = backend.syncer
        let writer = walWriter
        let me = LoopBound(self)
        let loop = self.loop
        runOnNewThread {
            let synced = (try? syncer.sync()) != nil
            if synced, let marker {
                writer.submit([marker]) { result in
                    if case .success = result { writer.checkpoint(coveredBy: index) }
                }
            }
            loop.execute {
                me.value.checkpointInProgress = false
                if synced { me.value.checkpointedIndex = index }
            }
        }
    }

    /// Proposes compactions as `--auto-compaction-mode` and `-retention`
    /// ask, through the log like a client's Compact.
    private func startAutoCompaction() {
        guard let mode = config.autoCompaction else { return }
        autoCompactor = AutoCompactor(mode)
        logger.info("auto-compaction", metadata: ["mode": "\(mode)"])
        autoCompactionTimer = loop.schedule(every: autoCompactor!.tickInterval) { [unowned self] in
            let now = Double(monotonicNanoseconds()) / 1e9
            guard let target = autoCompactor?.tick(now: now, revision: store.currentRevision),
                  target > store.compactedRevision, writesRefused == nil else { return }
            var request = Etcdserverpb_CompactionRequest()
            request.revision = target
            guard let bytes: [UInt8] = try? request.serializedBytes() else { return }
            logger.info("starting auto-compaction", metadata: ["revision": "\(target)"])
            propose(.compact, bytes, .compact(request)) { [unowned self] outcome in
                if case .failure(let status) = outcome {
                    logger.warning("auto-compaction failed", metadata: ["revision": "\(target)", "error": "\(status.message)"])
                }
            }
        }
    }

    /// Runs once compaction has deleted everything it had to.
    func afterCompaction(_ reply: @escaping () -> Void) {
        awaitingCompaction.append(reply)
        compactionTask.trigger()
    }

    func startCompaction() { compactionTask.trigger() }

    static func took(since started: UInt64) -> Logger.MetadataValue {
        duration(nanoseconds: monotonicNanoseconds() - started)
    }

    /// A duration as zap writes Go's time.Duration ("1.234567ms", "2s").
    static func duration(nanoseconds ns: UInt64) -> Logger.MetadataValue {
        func go(_ amount: Double, _ unit: String) -> Logger.MetadataValue {
            let text = "\(amount)"
            return "\(text.hasSuffix(".0") ? String(text.dropLast(2)) : text)\(unit)"
        }
        if ns >= 1_000_000_000 { return go(Double(ns) / 1e9, "s") }
        if ns >= 1_000_000 { return go(Double(ns) / 1e6, "ms") }
        if ns >= 1_000 { return go(Double(ns) / 1e3, "µs") }
        return "\(ns)ns"
    }

    /// One bounded batch of compaction per loop iteration, so writes and
    /// reads go on between batches.
    private func compactionBatch() {
        do {
            let done = try store.compactionStep()
            try store.commit()
            if done {
                if let started = compactionStartedAt {
                    compactionStartedAt = nil
                    logger.info("finished scheduled compaction", metadata: [
                        "compact-revision": "\(store.compactedRevision)", "took": Self.took(since: started)])
                }
                let waiting = awaitingCompaction
                awaitingCompaction.removeAll()
                for w in waiting { w() }
            } else {
                compactionTask.trigger()
            }
        } catch {
            logger.critical("compaction failed", metadata: ["error": "\(error)"])
            fatalError("compaction failed: \(error)")
        }
    }

    // MARK: Method registration

    enum Reply<Response: SwiftProtobuf.Message> {
        /// Send now (reads).
        case now(Response)
        /// The handler answers the call itself later.
        case later
    }

    /// Who may call a method while auth is enabled (finer checks, such as
    /// a request's keys, are the method's own).
    enum Access {
        case anyone
        /// Any authenticated caller (etcd's requireAuthInfo).
        case authenticated
        /// A caller with the root role.
        case admin
    }

    func authorize(_ call: GRPCCall, _ access: Access) throws(AuthError) {
        switch access {
        case .anyone: break
        case .authenticated: try authorizeCaller(call)
        case .admin: try authorizeAdmin(call)
        }
    }

    /// Registers a unary method that is not a write (writes are proposed
    /// to the log: see `proposing` in KVService.swift).
    func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ service: String, _ method: String, access: Access,
        _ body: @escaping (Request, GRPCCall) throws -> Reply<Response>
    ) {
        let key = metrics.key(type: "unary", service: service, method: method)
        register(service, method, .unary) { [unowned self] call, bytes in
            guard passes(call, key, { try authorize(call, access) }) else { return }
            let request: Request
            do {
                request = try Request(serializedBytes: bytes)
            } catch {
                finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request: \(error)"))
                return
            }
            do {
                switch try body(request, call) {
                case .now(let response):
                    respond(call, key, response)
                case .later:
                    break
                }
            } catch let error as any EtcdStatusError {
                finish(call, key, status: GRPCStatus(error))
            } catch let status as GRPCStatus {
                finish(call, key, status: status)
            } catch {
                finish(call, key, status: GRPCStatus(.unknown, "\(error)"))
            }
        }
    }

    /// Registers a unary method that answers later by itself (it calls
    /// `respond` or `finish` with the key it is given): the request is
    /// decoded first, and one that does not decode is refused.
    func answeringLater<Request: SwiftProtobuf.Message>(
        _ service: String, _ method: String, access: Access,
        _ body: @escaping (Request, GRPCCall, ServerMetrics.CallKey) -> Void
    ) {
        let key = metrics.key(type: "unary", service: service, method: method)
        register(service, method, .unary) { [unowned self] call, bytes in
            guard passes(call, key, { try authorize(call, access) }) else { return }
            guard let request = try? Request(serializedBytes: bytes) else {
                finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request"))
                return
            }
            body(request, call, key)
        }
    }

    /// Registers a method; every call of it is counted (started, its
    /// messages) before `handler` sees it.
    func register(_ service: String, _ method: String, _ kind: GRPCMethodKind,
                  _ handler: @escaping (GRPCCall, [UInt8]) -> Void) {
        services.insert(service)
        let key = metrics.key(type: ServerMetrics.grpcType(kind), service: service, method: method)
        methods["/\(service)/\(method)"] = GRPCMethod(kind) { [unowned self] call, bytes in
            metrics.callStarted(key, call, request: kind == .bidirectionalStreaming ? nil : bytes)
            handler(call, bytes)
        }
    }

    /// Registers methods that answer UNIMPLEMENTED, naming what they need.
    func refuseUnbuilt(_ service: String, _ names: [String], needs: String) {
        for method in names {
            let key = metrics.key(type: "unary", service: service, method: method)
            register(service, method, .unary) { [unowned self] call, _ in
                finish(call, key, status: GRPCStatus(.unimplemented, "swetcd: \(method) needs \(needs), which is not built yet"))
            }
        }
    }

    func respond<Response: SwiftProtobuf.Message>(_ call: GRPCCall, _ key: ServerMetrics.CallKey, _ response: Response) {
        do {
            call.respond(try response.serializedBytes() as GRPCMessageBuffer)
            metrics.callHandled(key, call, code: 0)
        } catch {
            finish(call, key, status: GRPCStatus(.internal, "grpc: error marshalling response: \(error)"))
        }
    }

    func finish(_ call: GRPCCall, _ key: ServerMetrics.CallKey, status: GRPCStatus) {
        call.finish(status)
        metrics.callHandled(key, call, code: status.code.rawValue)
    }
}

extension EtcdServer: GRPCRouter {
    /// `m`, waiting (unary) or refused (streams) until a member that
    /// joined serves clients.
    private func waitingUntilServing(_ m: GRPCMethod) -> GRPCMethod {
        GRPCMethod(m.kind) { [unowned self] call, bytes in
            guard !servingClients else { return m.handler(call, bytes) }
            guard m.kind == .unary, heldUntilServing.count < 10_000 else {
                return call.finish(GRPCStatus(.unavailable, "swetcd: the member is joining the cluster"))
            }
            heldUntilServing.append { m.handler(call, bytes) }
        }
    }

    /// All methods are registered when the server is made.
    public var methodKinds: [String: GRPCMethodKind]? { methods.mapValues(\.kind) }

    public func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
        if let m = methods[path] {
            guard servingClients else { return .success(waitingUntilServing(m)) }
            // A learner serves status and serializable ranges only (the
            // range checks its request).
            if isLearner && path != Self.statusPath && path != Self.rangePath {
                return .success(GRPCMethod(m.kind) { call, _ in
                    call.finish(GRPCStatus(.failedPrecondition, EtcdMessage.notSupportedForLearner))
                })
            }
            return .success(m)
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].isEmpty else {
            return .failure(GRPCStatus(.unimplemented, "malformed method name: \"\(path)\""))
        }
        if services.contains(String(parts[1])) {
            return .failure(GRPCStatus(.unimplemented, "unknown method \(parts[2]) for service \(parts[1])"))
        }
        return .failure(GRPCStatus(.unimplemented, "unknown service \(parts[1])"))
    }
}

extension EtcdServer: HTTP1Handler {
    public func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange) {
        if serveGateway(request, exchange) { return }
        if serveV2(request, exchange) { return }
        exchange.respond(answer(request))
    }

    func answer(_ request: HTTP1Request) -> HTTP1Response {
        let json = "application/json"
        switch request.path {
        case "/health":
            guard request.method == "GET" || request.method == "HEAD" else { return Self.methodNotAllowed }
            // As etcd 3.4: no leader, no health.
            if member.leader == 0 {
                return HTTP1Response(status: 503, contentType: json, text: "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}")
            }
            return HTTP1Response(contentType: json, text: "{\"health\":\"true\",\"reason\":\"\"}")
        case "/version":
            guard request.method == "GET" || request.method == "HEAD" else { return Self.methodNotAllowed }
            return HTTP1Response(contentType: json,
                                 text: "{\"etcdserver\":\"\(ServerVersion.server)\",\"etcdcluster\":\"\(ServerVersion.cluster)\"}")
        case "/metrics":
            guard request.method == "GET" || request.method == "HEAD" else { return Self.methodNotAllowed }
            return HTTP1Response(contentType: "text/plain; version=0.0.4; charset=utf-8", text: metricsText())
        default:
            return HTTP1Response(status: 404, text: "404 page not found\n")
        }
    }

    static let methodNotAllowed = HTTP1Response(status: 405, text: "Method Not Allowed\n")

    /// What a --listen-metrics-urls listener serves: `/metrics` and
    /// `/health` over HTTP/1.1, as etcd's metrics listener; nothing else.
    public var metricsEndpoint: MetricsEndpoint { MetricsEndpoint(server: self) }

    /// etcd's metrics, with its names, types, help and buckets; except that
    /// the seven etcd declares gauges though named `_total` are declared
    /// counters here, which `promtool check metrics` requires
    /// (docs/architecture.md, "Metrics").
    func metricsText() -> String {
        var out = Exposition()
        let transport = member.transport
        // Server.
        out.single("etcd_server_has_leader", .gauge, help: "Whether or not a leader exists. 1 is existence, 0 is not.",
                   member.leader == 0 ? 0 : 1)
        out.single("etcd_server_is_leader", .gauge, help: "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                   member.isLeader ? 1 : 0)
        out.single("etcd_server_leader_changes_seen_total", .counter, help: "The number of leader changes seen.",
                   Double(member.leaderChanges))
        out.single("etcd_server_heartbeat_send_failures_total", .counter,
                   help: "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
                   Double(transport?.heartbeatSendFailures ?? 0))
        out.single("etcd_server_slow_apply_total", .counter,
                   help: "The total number of slow apply requests (likely overloaded from slow disk).", Double(metrics.slowApplies))
        out.single("etcd_server_proposals_committed_total", .counter, help: "The total number of consensus proposals committed.",
                   Double(member.commitIndex))
        out.single("etcd_server_proposals_applied_total", .counter, help: "The total number of consensus proposals applied.",
                   Double(appliedIndex))
        out.single("etcd_server_proposals_pending", .gauge, help: "The current number of pending proposals to commit.",
                   Double(pendingProposals.count))
        out.single("etcd_server_proposals_failed_total", .counter, help: "The total number of failed proposals seen.",
                   Double(proposalsFailed))
        out.single("etcd_server_slow_read_indexes_total", .counter,
                   help: "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
                   Double(member.slowReadIndexes))
        out.single("etcd_server_quota_backend_bytes", .gauge, help: "Current backend storage quota size in bytes.",
                   Double(config.quotaBackendBytes))
        out.single("etcd_server_version", .gauge, help: "Which version is running. 1 for 'server_version' label with current version.",
                   labels: [("server_version", ServerVersion.server)], 1)
        out.single("etcd_cluster_version", .gauge,
                   help: "Which version is running. 1 for 'cluster_version' label with current cluster version",
                   labels: [("cluster_version", ServerVersion.cluster)], 1)
        out.single("etcd_server_id", .gauge, help: "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                   labels: [("server_id", hex(memberID))], 1)
        // Disk.
        out.family("etcd_disk_wal_fsync_duration_seconds", .histogram, help: "The latency distributions of fsync called by WAL.")
        out.histogram("etcd_disk_wal_fsync_duration_seconds", walWriter.fsyncDurations.snapshot)
        out.single("etcd_disk_wal_write_bytes_total", .counter, help: "Total number of bytes written in WAL.",
                   Double(walWriter.bytesWritten.count))
        out.family("etcd_disk_backend_commit_duration_seconds", .histogram, help: "The latency distributions of commit called by backend.")
        out.histogram("etcd_disk_backend_commit_duration_seconds", backend.commitDurations.snapshot)
        out.family("etcd_disk_backend_defrag_duration_seconds", .histogram, help: "The latency distribution of backend defragmentation.")
        out.histogram("etcd_disk_backend_defrag_duration_seconds", metrics.defragDurations.snapshot)
        out.family("etcd_disk_backend_snapshot_duration_seconds", .histogram, help: "The latency distribution of backend snapshots.")
        out.histogram("etcd_disk_backend_snapshot_duration_seconds", metrics.snapshotDurations.snapshot)
        // MVCC.
        out.single("etcd_mvcc_db_total_size_in_bytes", .gauge,
                   help: "Total size of the underlying database physically allocated in bytes.", Double(backend.fileSize))
        out.single("etcd_mvcc_db_total_size_in_use_in_bytes", .gauge,
                   help: "Total size of the underlying database logically in use in bytes.", Double(backend.sizeInUse))
        let ops = store.operations
        out.single("etcd_mvcc_range_total", .counter, help: "Total number of ranges seen by this member.", Double(ops.ranges))
        out.single("etcd_mvcc_put_total", .counter, help: "Total number of puts seen by this member.", Double(ops.puts))
        out.single("etcd_mvcc_delete_total", .counter, help: "Total number of deletes seen by this member.", Double(ops.deletes))
        out.single("etcd_mvcc_txn_total", .counter, help: "Total number of txns seen by this member.", Double(ops.txns))
        out.single("etcd_debugging_mvcc_keys_total", .counter, help: "Total number of keys.", Double(store.liveKeyCount))
        out.single("etcd_debugging_mvcc_watch_stream_total", .counter, help: "Total number of watch streams.",
                   Double(watchStreams.count))
        out.single("etcd_debugging_mvcc_watcher_total", .counter, help: "Total number of watchers.", Double(watchHub.watchers.count))
        out.single("etcd_debugging_mvcc_slow_watcher_total", .counter, help: "Total number of unsynced slow watchers.",
                   Double(watchHub.unsyncedCount))
        out.single("etcd_debugging_mvcc_events_total", .counter, help: "Total number of events sent by this member.",
                   Double(metrics.eventsSent))
        out.single("etcd_debugging_mvcc_current_revision", .gauge, help: "The current revision of store.", Double(store.currentRevision))
        out.single("etcd_debugging_mvcc_compact_revision", .gauge, help: "The revision of the last compaction in store.",
                   Double(store.compactedRevision))
        // Leases.
        out.single("etcd_debugging_lease_granted_total", .counter, help: "The total number of granted leases.",
                   Double(lessor.grantedTotal))
        out.single("etcd_debugging_lease_revoked_total", .counter, help: "The total number of revoked leases.",
                   Double(lessor.revokedTotal))
        // Network and gRPC.
        metrics.writeGRPC(to: &out)
        if let transport { Self.writePeerMetrics(transport, to: &out) }
        // This process; and swetcd's own.
        if let process = ProcessMetrics.read() { ProcessMetrics.write(process, to: &out) }
        out.single("swetcd_wal_entries_total", .counter, help: "Records written to the WAL.", Double(walWriter.stats.records))
        out.single("swetcd_wal_segments_removed_total", .counter, help: "WAL segments deleted after checkpoints.",
                   Double(walWriter.segmentsRemoved))
        return out.text
    }

    /// etcd's peer metrics, labelled by the other member's ID.
    private static func writePeerMetrics(_ t: PeerTransport, to out: inout Exposition) {
        out.family("etcd_network_peer_sent_bytes_total", .counter, help: "The total number of bytes sent to peers.")
        for (id, n) in t.sentBytes.sorted(by: { $0.key < $1.key }) {
            out.sample("etcd_network_peer_sent_bytes_total", [("To", hex(id))], n)
        }
        out.family("etcd_network_peer_received_bytes_total", .counter, help: "The total number of bytes received from peers.")
        for (id, n) in t.receivedBytes.sorted(by: { $0.key < $1.key }) {
            out.sample("etcd_network_peer_received_bytes_total", [("From", hex(id))], n)
        }
        out.family("etcd_network_peer_sent_failures_total", .counter, help: "The total number of send failures from peers.")
        for (id, n) in t.sendFailures.sorted(by: { $0.key < $1.key }) {
            out.sample("etcd_network_peer_sent_failures_total", [("To", hex(id))], n)
        }
        out.family("etcd_network_peer_round_trip_time_seconds", .histogram, help: "Round-Trip-Time histogram between peers")
        for (id, h) in t.roundTrips.sorted(by: { $0.key < $1.key }) {
            out.histogram("etcd_network_peer_round_trip_time_seconds", labels: [("To", hex(id))], h.snapshot)
        }
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case dataDir(String, String)
    /// A member joining a cluster (--initial-cluster-state existing) that
    /// could not.
    case join(String)
    /// The initial corruption check found a mismatch.
    case corrupt(String)
    /// Flags asking for something not built yet.
    case unsupported(String)
    /// A member with no data whose peers know it as started before.
    case alreadyBootstrapped(UInt64)

    public var description: String {
        switch self {
        case .dataDir(let d, let why): return "cannot create data directory \(d): \(why)"
        case .unsupported(let what): return "swetcd: \(what)"
        case .alreadyBootstrapped(let id): return "member \(hex(id)) has already been bootstrapped"
        case .join(let why), .corrupt(let why): return why
        }
    }
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }

/// The handler of a --listen-metrics-urls listener: `/metrics` and
/// `/health` as on the client port, 404 for any other path, and no gRPC.
public final class MetricsEndpoint: GRPCRouter, HTTP1Handler {
    private unowned let server: EtcdServer

    init(server: EtcdServer) { self.server = server }

    public func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
        .failure(GRPCStatus(.unimplemented, "unknown service: the metrics listener serves only /metrics and /health"))
    }

    public func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange) {
        guard request.path == "/metrics" || request.path == "/health" else {
            return exchange.respond(HTTP1Response(status: 404, text: "404 page not found\n"))
        }
        exchange.respond(server.answer(request))
    }
}
