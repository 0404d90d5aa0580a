import Raft
import TestSupport

/// A deterministic simulation of a Raft group: members with storage that
/// survives their crashes, and a seeded network that delays, drops,
/// duplicates and reorders messages and partitions the members. Every
/// step is checked against Raft's safety properties; `violations` lists
/// what broke (empty when none did).
struct Simulation {
    struct InFlight {
        var deliverAt: Int
        var message: Message
    }

    var rng: SeededRandom
    /// Every member ever started (removed ones included).
    var ids: [NodeID]
    /// The voters the group started with (not in the log: a member
    /// starting afresh begins from them and replays the log's changes).
    let bootstrap: [NodeID]
    /// Members removed from the group: stopped for good.
    var retired = Set<NodeID>()
    var membershipChanges = 0
    var nodes: [NodeID: RaftNode] = [:]  // live members only
    var storages: [NodeID: MemoryStorage] = [:]
    var network: [InFlight] = []
    var now = 0
    /// Members in different groups cannot reach each other.
    var group: [NodeID: Int] = [:]
    var lossy = true
    var restarts = 0

    // What the checks remember.
    var appliedByAnyone: [UInt64: Entry] = [:]
    var appliedCount: [NodeID: UInt64] = [:]
    var leaderOfTerm: [UInt64: NodeID] = [:]
    var leaderLog: [NodeID: (term: UInt64, entries: [Entry])] = [:]
    var violations: [String] = []
    var proposals = 0

    // Linearizable reads: each remembers what it must see (the highest
    // write acknowledged, and the highest state another read served,
    // before it began) and is checked when served.
    struct PendingRead {
        var context: [UInt8]
        var node: NodeID
        var mustSeeWrite: UInt64
        var mustSeeRead: UInt64
        var index: UInt64?
    }
    var pendingReads: [PendingRead] = []
    var reads = 0, readsServed = 0, transfers = 0
    var proposer: [[UInt8]: NodeID] = [:]
    var highestAckedWrite: UInt64 = 0
    var highestServedRead: UInt64 = 0

    /// Members take their next Ready while earlier ones are still being
    /// written (RaftConfig.asyncStorageWrites), as swetcd's members do;
    /// a crash loses what was still being written, and a hard state that
    /// only moves the commit index is not written at all.
    let asyncWrites: Bool
    /// Per member, Readys taken and not yet persisted, oldest first, with
    /// the messages that wait for them.
    var writing: [NodeID: [(ready: Ready, held: [Message])]] = [:]

    init(seed: UInt64, members: Int, asyncWrites: Bool = false) {
        self.asyncWrites = asyncWrites
        rng = SeededRandom(seed: seed)
        ids = (1...UInt64(members)).map { $0 }
        bootstrap = ids
        for id in ids {
            storages[id] = MemoryStorage()
            start(id)
            group[id] = 0
        }
    }

    mutating func start(_ id: NodeID) {
        var config = RaftConfig(id: id, peers: bootstrap, seed: rng.next())
        config.electionTick = 10
        config.maxEntriesPerMessage = Int(rng.next() % 4) + 1
        config.maxInflight = 4
        config.asyncStorageWrites = asyncWrites
        writing[id] = []
        nodes[id] = RaftNode(config: config, storage: storages[id]!)
        // The state machine restarts from the member's snapshot.
        let snapshot = storages[id]!.snapshot
        appliedCount[id] = snapshot.index
        stateHash[id] = Self.decode(snapshot.data)
    }

    // The state machine: a running hash of the entries applied, which a
    // snapshot carries; every member must reach the same hash at an index.
    var stateHash: [NodeID: UInt64] = [:]
    var hashAt: [UInt64: UInt64] = [0: 0]
    var snapshotsInstalled = 0, compactions = 0

    static func mix(_ h: UInt64, _ e: Entry) -> UInt64 {
        var x = h &* 0x100000001B3 ^ e.term ^ (e.index << 20)
        for b in e.data { x = (x ^ UInt64(b)) &* 0x100000001B3 }
        return x
    }

    static func encode(_ h: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: h >> (8 * $0)) } }

    static func decode(_ d: [UInt8]) -> UInt64 {
        d.count == 8 ? (0..<8).reduce(0) { $0 | UInt64(d[$1]) << (8 * $1) } : 0
    }

    /// A member snapshots its state machine and drops the log up to it.
    mutating func compact(_ id: NodeID) {
        guard nodes[id] != nil, let applied = appliedCount[id], applied >= storages[id]!.firstIndex + 2 else { return }
        let node = nodes[id]!
        storages[id]!.compact(to: applied, data: Self.encode(stateHash[id]!), voters: node.voters.sorted(),
                              learners: node.learners.sorted())
        compactions += 1
    }

    mutating func roll(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    var leader: NodeID? {
        nodes.values.filter { $0.role == .leader }.max { $0.term < $1.term }?.id
    }

    // MARK: Steps

    /// One random event.
    mutating func step() {
        now += 1
        let r = roll(1000)
        switch r {
        case 0..<150: tickAll()
        case 150..<600: deliverOne()
        case 600..<640: if lossy, !network.isEmpty { network.remove(at: roll(network.count)) }
        case 640..<685: propose()
        case 685..<695: changeMembership()
        case 695..<700: transfer()
        case 700..<720: read(ids[roll(ids.count)])
        case 720..<975:
            let id = ids[roll(ids.count)]
            if !asyncWrites {
                processReady(id)
            } else if r < 880 || nodes[id]?.hasPendingSnapshot == true && writing[id, default: []].isEmpty {
                takeReady(id)
            } else {
                persistOne(id)
            }
        case 975..<985: compact(ids[roll(ids.count)])
        case 985..<990: if lossy { partition() }
        case 990..<994: heal()
        case 994..<997: if lossy { crash(ids[roll(ids.count)]) }
        default: restartOne()
        }
        checkLeaders()
    }

    mutating func tickAll() {
        for id in ids where nodes[id] != nil {
            nodes[id]!.tick()
        }
    }

    mutating func deliverOne() {
        let due = network.indices.filter { network[$0].deliverAt <= now }
        guard !due.isEmpty else { return }
        let i = due[roll(due.count)]
        let m = network[i].message
        // Sometimes a copy stays behind: delivered twice.
        if !(lossy && roll(20) == 0) { network.remove(at: i) }
        guard nodes[m.to] != nil, group[m.to] == group[m.from] else { return }
        nodes[m.to]!.step(m)
        checkLog(m.to)
    }

    /// A client's proposal, mostly at the leader, sometimes at another
    /// member, which passes it on to the leader it knows: the member that
    /// took it answers its client when it applies the entry.
    mutating func propose() {
        guard let l = leader else { return }
        let live = ids.filter { nodes[$0] != nil }
        let at = rng.next() % 3 == 0 ? live[Int(rng.next() % UInt64(live.count))] : l
        proposals += 1
        let data = Array("p\(proposals)".utf8)
        if (try? nodes[at]!.propose(data)) != nil { proposer[data] = at }
        checkLog(at)
    }

    /// The leader adds a learner, promotes one, or removes a voter.
    mutating func changeMembership() {
        guard let l = leader, membershipChanges < 6 else { return }
        let node = nodes[l]!
        let change: ConfChange
        if let learner = node.learners.sorted().first {
            change = .addVoter(learner)
        } else if node.voters.count > 3 && roll(2) == 0 {
            let voters = node.voters.sorted()
            change = .remove(voters[roll(voters.count)])
        } else {
            change = .addLearner((ids.max() ?? 0) + 1)
        }
        if (try? nodes[l]!.proposeConfChange(change)) != nil { membershipChanges += 1 }
    }

    /// A change a member applied: a learner added joins (started afresh);
    /// a member removed stops for good.
    mutating func changed(_ change: ConfChange) {
        switch change {
        case .addLearner(let n) where !ids.contains(n):
            ids.append(n)
            storages[n] = MemoryStorage()
            group[n] = 0
            start(n)
        case .remove(let n):
            retired.insert(n)
            nodes[n] = nil
            writing[n] = []
            pendingReads.removeAll { $0.node == n }
        default:
            break
        }
    }

    /// The leader hands over to a random member.
    mutating func transfer() {
        guard let l = leader else { return }
        transfers += 1
        nodes[l]!.transferLeadership(to: ids[roll(ids.count)])
    }

    /// A client reads at `id` (a linearizable read through ReadIndex).
    mutating func read(_ id: NodeID) {
        guard nodes[id] != nil else { return }
        reads += 1
        let context = Array("r\(reads)".utf8)
        pendingReads.append(PendingRead(context: context, node: id, mustSeeWrite: highestAckedWrite,
                                        mustSeeRead: highestServedRead, index: nil))
        nodes[id]!.readIndex(context)
    }

    /// Serves the reads at `id` whose index it has applied.
    mutating func serveReads(_ id: NodeID) {
        guard let node = nodes[id] else { return }
        var waiting: [PendingRead] = []
        for r in pendingReads {
            guard r.node == id, let index = r.index, node.appliedIndex >= index else {
                waiting.append(r)
                continue
            }
            let served = node.appliedIndex
            if served < r.mustSeeWrite {
                fail("a read at \(id) served state \(served) without write \(r.mustSeeWrite), acknowledged before it began")
            }
            if served < r.mustSeeRead {
                fail("a read at \(id) served state \(served), older than the \(r.mustSeeRead) another read served before it began")
            }
            highestServedRead = max(highestServedRead, served)
            readsServed += 1
        }
        pendingReads = waiting
    }

    /// Persists, sends and applies what a member has ready.
    mutating func processReady(_ id: NodeID) {
        guard var node = nodes[id], node.hasReady else { return }
        let ready = node.ready()
        let storage = storages[id]!
        if let snapshot = ready.snapshot {
            storage.apply(snapshot)
            install(snapshot, on: id)
        }
        storage.append(ready.entries)
        if let h = ready.hardState { storage.setHardState(h) }
        for m in ready.messages {
            network.append(InFlight(deliverAt: now + (lossy ? roll(8) : 1), message: m))
        }
        var removedItself = false
        for e in ready.committedEntries {
            apply(e, on: id)
            if e.kind == .confChange, let change = ConfChange(encoded: e.data) {
                node.applyConfChange(change)
                if case .remove(id) = change { removedItself = true }
                pendingChanges.append(change)
            }
        }
        for state in ready.readStates {
            if let i = pendingReads.firstIndex(where: { $0.node == id && $0.context == state.context && $0.index == nil }) {
                pendingReads[i].index = state.index
            }
        }
        node.advance(ready)
        nodes[id] = node
        serveReads(id)
        let changes = pendingChanges
        pendingChanges = []
        for c in changes { changed(c) }
        _ = removedItself
    }

    var pendingChanges: [ConfChange] = []

    /// Asynchronous writes: takes a member's Ready, applies its committed
    /// entries, sends a leader's messages at once, and queues the rest for
    /// `persistOne`. A leader's snapshot waits for nothing in flight and is
    /// handled whole.
    mutating func takeReady(_ id: NodeID) {
        guard var node = nodes[id], node.hasReady else { return }
        if node.hasPendingSnapshot {
            if writing[id, default: []].isEmpty { processReady(id) }
            return
        }
        let ready = node.ready()
        node.accept(ready)
        let storage = storages[id]!
        for e in ready.committedEntries {
            apply(e, on: id)
            if e.kind == .confChange, let change = ConfChange(encoded: e.data) {
                node.applyConfChange(change)
                pendingChanges.append(change)
            }
        }
        for state in ready.readStates {
            if let i = pendingReads.firstIndex(where: { $0.node == id && $0.context == state.context && $0.index == nil }) {
                pendingReads[i].index = state.index
            }
        }
        let current = storage.hardState
        let commitOnly = ready.hardState.map { $0.term == current.term && $0.vote == current.vote } ?? true
        let sendNow = node.role == .leader && commitOnly
        if ready.entries.isEmpty && commitOnly {
            // Nothing that must be written: a commit index alone is not.
            node.persisted(ready)
            if sendNow || writing[id, default: []].isEmpty {
                send(ready.messages)
            } else {
                writing[id]![writing[id]!.count - 1].held += ready.messages
            }
        } else {
            if sendNow { send(ready.messages) }
            writing[id, default: []].append((ready, sendNow ? [] : ready.messages))
        }
        nodes[id] = node
        serveReads(id)
        let changes = pendingChanges
        pendingChanges = []
        for c in changes { changed(c) }
    }

    /// Asynchronous writes: the oldest Ready a member is writing is durable.
    mutating func persistOne(_ id: NodeID) {
        guard var node = nodes[id], var queue = writing[id], !queue.isEmpty else { return }
        let (ready, held) = queue.removeFirst()
        writing[id] = queue
        let storage = storages[id]!
        storage.append(ready.entries)
        if let h = ready.hardState { storage.setHardState(h) }
        node.persisted(ready)
        nodes[id] = node
        send(held)
    }

    mutating func send(_ messages: [Message]) {
        for m in messages {
            network.append(InFlight(deliverAt: now + (lossy ? roll(8) : 1), message: m))
        }
    }

    mutating func partition() {
        for id in ids { group[id] = roll(2) }
    }

    mutating func heal() {
        for id in ids { group[id] = 0 }
    }

    /// The member stops; what it had not persisted is lost.
    mutating func crash(_ id: NodeID) {
        guard nodes[id] != nil, nodes.count > 1 else { return }
        nodes[id] = nil
        writing[id] = []
        leaderLog[id] = nil
        pendingReads.removeAll { $0.node == id }  // their clients get an error
    }

    mutating func restartOne() {
        guard let id = ids.first(where: { nodes[$0] == nil && !retired.contains($0) }) else { return }
        start(id)
        restarts += 1
    }

    // MARK: Checks

    mutating func fail(_ what: String) {
        if violations.count < 5 { violations.append("step \(now): \(what)") }
    }

    /// A snapshot from the leader replaces the member's state machine: it
    /// must be the state every member reached at its index.
    mutating func install(_ s: Snapshot, on id: NodeID) {
        snapshotsInstalled += 1
        if let expected = hashAt[s.index], expected != Self.decode(s.data) {
            fail("member \(id) installed a snapshot at \(s.index) whose state differs from the one applied there")
        }
        if s.index <= appliedCount[id]! { fail("member \(id) got a snapshot at \(s.index), not after its applied \(appliedCount[id]!)") }
        appliedCount[id] = s.index
        stateHash[id] = Self.decode(s.data)
    }

    /// State machine safety: every member applies the same entry at an
    /// index, and in index order.
    mutating func apply(_ e: Entry, on id: NodeID) {
        let expected = appliedCount[id]! + 1
        if e.index != expected { fail("member \(id) applied \(e.index), expected \(expected)") }
        appliedCount[id] = e.index
        let hash = Self.mix(stateHash[id]!, e)
        stateHash[id] = hash
        if let h = hashAt[e.index] {
            if h != hash { fail("member \(id) reached another state at \(e.index)") }
        } else {
            hashAt[e.index] = hash
        }
        // The member that took the proposal answers its client now.
        if proposer[e.data] == id { highestAckedWrite = max(highestAckedWrite, e.index) }
        if let other = appliedByAnyone[e.index] {
            if other != e { fail("member \(id) applied \(e) at \(e.index) where another applied \(other)") }
        } else {
            appliedByAnyone[e.index] = e
        }
    }

    /// Election safety, leader completeness, leader append-only.
    mutating func checkLeaders() {
        for (id, node) in nodes where node.role == .leader {
            if let other = leaderOfTerm[node.term], other != id {
                fail("two leaders in term \(node.term): \(other) and \(id)")
            }
            let entries = node.allEntries, first = node.firstIndex
            func entry(_ index: UInt64) -> Entry? {
                index >= first && index < first + UInt64(entries.count) ? entries[Int(index - first)] : nil
            }
            if leaderOfTerm[node.term] == nil {
                leaderOfTerm[node.term] = id
                // Leader completeness: every entry applied anywhere is in
                // a new leader's log (or in its snapshot, before it).
                for (index, e) in appliedByAnyone where index >= first && entry(index) != e {
                    fail("leader \(id) of term \(node.term) lacks applied entry \(e)")
                }
            }
            if let before = leaderLog[id], before.term == node.term {
                for e in before.entries where e.index >= first && entry(e.index) != e {
                    fail("leader \(id) changed its own log in term \(node.term)")
                    break
                }
                if node.lastIndex < before.entries.last?.index ?? 0 { fail("leader \(id) shortened its log in term \(node.term)") }
            }
            leaderLog[id] = (node.term, entries)
        }
    }

    /// Log matching: entries with the same index and term hold the same
    /// data and follow the same previous entry, in every member's log.
    var seenEntries: [UInt64: [UInt64: (data: [UInt8], previousTerm: UInt64)]] = [:]

    mutating func checkLog(_ id: NodeID) {
        guard let node = nodes[id] else { return }
        // Before the first entry (after a snapshot) the term is not known here.
        var previousTerm: UInt64? = node.firstIndex == 1 ? 0 : nil
        for e in node.allEntries {
            if let seen = seenEntries[e.index]?[e.term] {
                if seen.data != e.data || (previousTerm != nil && seen.previousTerm != previousTerm) {
                    fail("member \(id) holds \(e) after term \(previousTerm.map { "\($0)" } ?? "none"); another log holds it with different data or history")
                }
            } else if let previousTerm {
                seenEntries[e.index, default: [:]][e.term] = (e.data, previousTerm)
            }
            previousTerm = e.term
        }
    }

    /// Each member's state, for failure messages.
    var description: String {
        ids.map { id in
            guard let n = nodes[id] else { return "\(id): down" }
            return "\(id): \(n.role) term \(n.term) last \(n.lastIndex) commit \(n.commitIndex) applied \(n.appliedIndex) leader \(n.leader)"
        }.joined(separator: "; ")
    }

    // MARK: Liveness

    /// Heals everything, then runs until a leader commits a new entry on
    /// every member; false if that does not happen within `limit` rounds.
    mutating func settles(limit: Int = 3000) -> Bool {
        heal()
        lossy = false
        while let id = ids.first(where: { nodes[$0] == nil && !retired.contains($0) }) {
            start(id)
        }
        // What was being written lands; from here on writes are taken
        // and persisted together.
        for id in ids where nodes[id] != nil { while !(writing[id] ?? []).isEmpty { persistOne(id) } }
        var proposedAt: UInt64?, proposedIn: UInt64 = 0
        for _ in 0..<limit {
            tickAll()
            for _ in 0..<4 {
                for id in ids where nodes[id] != nil { processReady(id) }
                while let first = network.indices.first(where: { network[$0].deliverAt <= now }) {
                    let m = network.remove(at: first).message
                    nodes[m.to]?.step(m)
                }
                now += 1
            }
            checkLeaders()
            if let l = leader {
                // A proposal to a leader that was then deposed may be
                // lost: propose again to each new leader.
                if proposedAt == nil || nodes[l]!.term != proposedIn, (try? nodes[l]!.propose(Array("final".utf8))) != nil {
                    proposedAt = nodes[l]!.lastIndex
                    proposedIn = nodes[l]!.term
                }
                let members = nodes[l]!.voters.union(nodes[l]!.learners).subtracting(retired)
                if let index = proposedAt, members.allSatisfy({ appliedCount[$0] ?? 0 >= index }),
                   appliedByAnyone[index]?.data == Array("final".utf8) {
                    return true
                }
            }
        }
        return false
    }
}
