/// Which watchers want which changes: the watch hub of DESIGN.md, as a pure
/// state machine. The server feeds it every write (`dispatch`), asks it to
/// catch lagging watchers up from history (`catchUp`), and sends what they
/// return.
///
/// Every watcher is in one of two groups:
/// - **synced**: it has been sent every change up to the current revision
///   (or waits for a future start revision), and receives each new write as
///   it is dispatched. Single-key watchers sit in a hash map and range
///   watchers in a `RangeIndex`, so a write costs a lookup per changed key
///   plus the matches, not a visit to every watcher.
/// - **unsynced**: it still needs history from `next` on, read from the
///   backend in bounded batches. New watchers with an old start revision
///   start here; so does a watcher whose stream was too backed up to take
///   its events (the server calls `desync`), which is how a slow consumer
///   costs bounded memory and loses nothing: it falls back to history.
///
/// A watcher whose position has been compacted away is cancelled by
/// `catchUp` with the compaction revision, as etcd does.
public final class WatchHub {
    public typealias ID = Int

    public struct Watcher: Sendable {
        public let range: KeyRange
        public let noPut: Bool
        public let noDelete: Bool
        public fileprivate(set) var isSynced: Bool
        /// The first revision not yet sent (for synced watchers only
        /// meaningful while it is in the future: a start revision to wait for).
        public fileprivate(set) var next: Int64
        /// A synced watcher's place in its key's or range's member list.
        fileprivate var place: Int32 = 0

        func wants(_ e: WatchEvent) -> Bool {
            if e.kind == .put && noPut || e.kind == .delete && noDelete { return false }
            return e.revision >= next && range.contains(e.kv.key)
        }
    }

    /// By ID: IDs are dense (the server reuses them), so a slab, not a hash
    /// table, holds watchers (see `Slab`).
    public private(set) var watchers = Slab<Watcher>()
    /// Synced watchers by key, and by range.
    private var singleKey: [[UInt8]: MemberList] = [:]
    private var ranges = RangeIndex()
    private var unsynced = Set<ID>()

    /// Bounds of one catch-up pass.
    public var catchUpMaxEvents = 1_000
    /// A pass also stops after about this many bytes of history, so a
    /// stream that drained is not handed more than it can take at once
    /// (it backs up again and waits for the next drain).
    public var catchUpMaxBytes = 1 << 20
    public var catchUpMaxWatchers = 512

    public init() {}

    public var hasUnsynced: Bool { !unsynced.isEmpty }
    /// Watchers behind the store, catching up from history.
    public var unsyncedCount: Int { unsynced.count }
    public func isSynced(_ id: ID) -> Bool { watchers[id]?.isSynced ?? false }

    /// Adds a watcher. `startRevision` 0 means "from the next write".
    public func add(_ id: ID, range: KeyRange, startRevision: Int64, noPut: Bool = false, noDelete: Bool = false,
                    currentRevision: Int64) {
        precondition(watchers[id] == nil, "watcher \(id) exists")
        precondition(id < Int(Int32.max), "watcher IDs are dense: one past Int32 is a leak")
        let next = startRevision <= 0 ? currentRevision + 1 : startRevision
        watchers[id] = Watcher(range: range, noPut: noPut, noDelete: noDelete, isSynced: false, next: next)
        if next > currentRevision { sync(id) } else { unsynced.insert(id) }
    }

    public func remove(_ id: ID) {
        guard let w = watchers.removeValue(forKey: id) else { return }
        if w.isSynced { unindex(w) } else { unsynced.remove(id) }
    }

    /// The changes of one write, for every synced watcher that wants some of
    /// them. All of a revision's events go to a watcher together. The order
    /// across watchers is unspecified (each watcher's own order is kept).
    public func dispatch(revision: Int64, events: [WatchEvent]) -> [(ID, [WatchEvent])] {
        // The common write changes one key: every interested watcher shares
        // the one events array, and nothing is keyed or sorted per watcher.
        if events.count == 1 {
            var out: [(ID, [WatchEvent])] = []
            forEachRecipient(of: events[0]) { id in out.append((id, events)) }
            return out
        }
        var byWatcher: [ID: [WatchEvent]] = [:]
        var order: [ID] = []
        for e in events {
            forEachCandidate(e.kv.key) { m in
                guard m.wants(e) else { return }
                let id = ID(m.id)
                if byWatcher[id] == nil { order.append(id) }
                byWatcher[id, default: []].append(e)
            }
        }
        return order.map { ($0, byWatcher[$0]!) }
    }

    /// Each synced watcher that wants `e` (a revision's only event), once:
    /// the fan-out's common case, with no list built. `body` must not
    /// change the hub.
    public func forEachRecipient(of e: WatchEvent, _ body: (ID) -> Void) {
        forEachCandidate(e.kv.key) { m in
            if m.wants(e) { body(ID(m.id)) }
        }
    }

    /// Synced watchers whose key or range holds `key` (each once: a watcher
    /// is in the key map or in one range group).
    private func forEachCandidate(_ key: [UInt8], _ body: (Member) -> Void) {
        if let list = singleKey[key] { for m in list.members { body(m) } }
        ranges.forEachContaining(key) { members in for m in members { body(m) } }
    }

    /// The watcher could not take events from `revision` on (its stream is
    /// backed up): it will get them from history instead.
    public func desync(_ id: ID, from revision: Int64) {
        guard var w = watchers[id], w.isSynced else { return }
        unindex(w)
        w.isSynced = false
        w.next = revision
        watchers[id] = w
        unsynced.insert(id)
    }

    public struct CatchUp {
        public var deliveries: [(ID, [WatchEvent])] = []
        /// For each delivery, which events array it shares: watchers that
        /// read history from the same revision with the same range and
        /// filters get one array, and the same number here, so the server
        /// encodes it once for all of them.
        public var deliveryGroups: [Int] = []
        /// Watchers removed because history from their position is gone
        /// (with their range, which the hub no longer knows).
        public var compacted: [(ID, compactRevision: Int64, range: KeyRange)] = []
        /// Revision the deliveries bring their watchers up to (for headers).
        public var revision: Int64 = 0
    }

    /// One bounded pass: reads history once from the oldest position among
    /// the unsynced watchers that `canSend` allows, hands each its part, and
    /// moves the ones that reach the current revision to synced.
    public func catchUp(_ store: Store, canSend: (ID) -> Bool) throws -> CatchUp {
        var result = CatchUp()
        let current = store.currentRevision
        result.revision = current
        let eligible = unsynced.sorted().filter(canSend).prefix(catchUpMaxWatchers)
        var active: [ID] = []
        for id in eligible {
            let w = watchers[id]!
            if w.next < store.compactedRevision {
                result.compacted.append((id, store.compactedRevision, w.range))
                remove(id)
            } else if w.next > current {
                sync(id)
            } else {
                active.append(id)
            }
        }
        guard let from = active.map({ watchers[$0]!.next }).min() else { return result }
        let (events, end) = try store.events(from: from, through: current, maxEvents: catchUpMaxEvents, maxBytes: catchUpMaxBytes)
        // Many watchers of one prefix fall behind together (a stream that
        // backed up, a restart): their share of the history is picked once.
        struct Selection: Hashable {
            let next: Int64
            let range: KeyRange
            let noPut: Bool
            let noDelete: Bool
        }
        var selections: [Selection: (group: Int, events: [WatchEvent])] = [:]
        for id in active {
            var w = watchers[id]!
            let key = Selection(next: w.next, range: w.range, noPut: w.noPut, noDelete: w.noDelete)
            let mine: (group: Int, events: [WatchEvent])
            if let chosen = selections[key] {
                mine = chosen
            } else {
                mine = (selections.count, events.filter { w.wants($0) && $0.revision < end })
                selections[key] = mine
            }
            if !mine.events.isEmpty {
                result.deliveries.append((id, mine.events))
                result.deliveryGroups.append(mine.group)
            }
            w.next = max(w.next, end)
            watchers[id] = w
            if w.next > current { sync(id) }
        }
        return result
    }

    private func sync(_ id: ID) {
        guard var w = watchers[id] else { return }
        unsynced.remove(id)
        w.isSynced = true
        let m = Member(next: w.next, id: Int32(id), noPut: w.noPut, noDelete: w.noDelete)
        switch w.range {
        case .single(let key): w.place = singleKey[key, default: MemberList()].append(m)
        case .from(let start, let end): w.place = ranges.insert(m, start: start, end: end)
        }
        watchers[id] = w
    }

    private func unindex(_ w: Watcher) {
        let moved: Int32?
        switch w.range {
        case .single(let key):
            moved = singleKey[key]?.remove(at: w.place)
            if singleKey[key]?.members.isEmpty == true { singleKey[key] = nil }
        case .from(let start, let end):
            moved = ranges.remove(at: w.place, start: start, end: end)
        }
        if let moved { watchers[ID(moved)]!.place = w.place }
    }
}

/// A synced watcher as the fan-out reads it: its filters besides the range
/// (which the indexes match), kept inline in its key's or range's list so a
/// dispatch walks contiguous memory and looks nothing up per watcher.
struct Member {
    var next: Int64
    var id: Int32
    var noPut: Bool
    var noDelete: Bool

    func wants(_ e: WatchEvent) -> Bool {
        !(e.kind == .put && noPut || e.kind == .delete && noDelete) && e.revision >= next
    }
}

/// The synced watchers of one key or one range, in no particular order.
/// Each watcher's place is kept by the hub, so a removal moves the last
/// member into the hole instead of searching.
struct MemberList {
    private(set) var members: [Member] = []

    /// Adds `m`; returns its place.
    mutating func append(_ m: Member) -> Int32 {
        members.append(m)
        return Int32(members.count - 1)
    }

    /// Removes the member at `place`; returns the ID of the one moved into
    /// it (nil when it was the last).
    mutating func remove(at place: Int32) -> Int32? {
        let i = Int(place)
        let last = members.removeLast()
        guard i < members.count else { return nil }
        members[i] = last
        return last.id
    }
}

/// Range watchers grouped by their distinct [start, end) interval (many
/// controllers watch the same prefix), sorted by start, with the running
/// maximum of ends: a key's watchers are found by a binary search for the
/// last interval starting at or before it, then a walk back that stops as
/// soon as no earlier interval can reach the key.
struct RangeIndex {
    private struct Group {
        var start: [UInt8]
        var end: [UInt8]?  // nil: unbounded
        var list: MemberList
    }
    private var groups: [Group] = []
    /// maxEnd[i]: the largest end among groups[0...i] (nil: unbounded).
    private var maxEnd: [[UInt8]?] = []

    private func position(_ start: [UInt8], _ end: [UInt8]?) -> (index: Int, found: Bool) {
        var lo = 0, hi = groups.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Self.less(groups[mid].start, groups[mid].end, start, end) { lo = mid + 1 } else { hi = mid }
        }
        let found = lo < groups.count && groups[lo].start == start && groups[lo].end == end
        return (lo, found)
    }

    private static func less(_ s1: [UInt8], _ e1: [UInt8]?, _ s2: [UInt8], _ e2: [UInt8]?) -> Bool {
        let c = compareBytes(s1, s2)
        if c != 0 { return c < 0 }
        switch (e1, e2) {
        case (nil, nil): return false
        case (nil, _): return false
        case (_, nil): return true
        case (let a?, let b?): return compareBytes(a, b) < 0
        }
    }

    /// Adds `m` to the group of [start, end); returns its place there.
    mutating func insert(_ m: Member, start: [UInt8], end: [UInt8]?) -> Int32 {
        let (i, found) = position(start, end)
        if !found {
            groups.insert(Group(start: start, end: end, list: MemberList()), at: i)
            rebuildMaxEnd(from: i)
        }
        return groups[i].list.append(m)
    }

    /// Removes the member at `place` of the group of [start, end); returns
    /// the ID of the member moved into that place, if any.
    mutating func remove(at place: Int32, start: [UInt8], end: [UInt8]?) -> Int32? {
        let (i, found) = position(start, end)
        guard found else { return nil }
        let moved = groups[i].list.remove(at: place)
        if groups[i].list.members.isEmpty {
            groups.remove(at: i)
            rebuildMaxEnd(from: i)
        }
        return moved
    }

    private mutating func rebuildMaxEnd(from i: Int) {
        maxEnd.removeSubrange(i...)
        for j in i..<groups.count {
            maxEnd.append(j == 0 ? groups[0].end : Self.reach(maxEnd[j - 1], groups[j].end))
        }
    }

    /// The larger of two ends, nil (unbounded) winning.
    private static func reach(_ a: [UInt8]?, _ b: [UInt8]?) -> [UInt8]? {
        guard let a, let b else { return nil }
        return compareBytes(a, b) >= 0 ? a : b
    }

    func forEachContaining(_ key: [UInt8], _ body: ([Member]) -> Void) {
        // Last group whose start <= key.
        var lo = 0, hi = groups.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if compareBytes(groups[mid].start, key) <= 0 { lo = mid + 1 } else { hi = mid }
        }
        var i = lo - 1
        while i >= 0 {
            if let reach = maxEnd[i], compareBytes(reach, key) <= 0 { return }  // nothing earlier reaches key
            if groups[i].end.map({ compareBytes(key, $0) < 0 }) ?? true { body(groups[i].list.members) }
            i -= 1
        }
    }
}
