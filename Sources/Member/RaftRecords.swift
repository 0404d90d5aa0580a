import Raft
import WAL

/// Raft's durable state as WAL records: entries, the hard state, and
/// snapshot markers (everything up to a marker's index is in the backend,
/// so recovery starts the log after it). Integers are little-endian and
/// fixed-width: these are read once, at start.
///
///     raftEntry  term u64, index u64, kind u8, data
///     hardState  term u64, vote u64, commit u64
///     snapshot   index u64, term u64
public enum RaftRecords {
    public static func entry(_ e: Entry) -> WALRecord {
        var out: [UInt8] = []
        out.reserveCapacity(17 + e.data.count)
        append(e.term, to: &out)
        append(e.index, to: &out)
        out.append(e.kind.rawValue)
        out.append(contentsOf: e.data)
        return WALRecord(type: .raftEntry, data: out)
    }

    public static func hardState(_ h: HardState) -> WALRecord {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        append(h.term, to: &out)
        append(h.vote, to: &out)
        append(h.commit, to: &out)
        return WALRecord(type: .hardState, data: out)
    }

    public static func snapshotMarker(index: UInt64, term: UInt64) -> WALRecord {
        var out: [UInt8] = []
        append(index, to: &out)
        append(term, to: &out)
        return WALRecord(type: .snapshot, data: out)
    }

    /// An entry record's index, without copying its data (the WAL asks
    /// this of every record it writes, to know which segments a
    /// checkpoint covers).
    public static func entryIndex(_ r: WALRecord) -> UInt64? {
        guard r.type == .raftEntry, r.data.count >= 17 else { return nil }
        return read(r.data, at: 8)
    }

    static func decodeEntry(_ d: [UInt8]) -> Entry? {
        guard d.count >= 17, let kind = Entry.Kind(rawValue: d[16]) else { return nil }
        return Entry(term: read(d, at: 0), index: read(d, at: 8), kind: kind, data: Array(d[17...]))
    }

    static func decodeHardState(_ d: [UInt8]) -> HardState? {
        guard d.count == 24 else { return nil }
        return HardState(term: read(d, at: 0), vote: read(d, at: 8), commit: read(d, at: 16))
    }

    static func decodeSnapshotMarker(_ d: [UInt8]) -> (index: UInt64, term: UInt64)? {
        guard d.count == 16 else { return nil }
        return (read(d, at: 0), read(d, at: 8))
    }

    private static func append(_ v: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }

    private static func read(_ d: [UInt8], at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(d[at + i]) << UInt64(8 * i) }
        return v
    }
}

/// What the WAL holds of Raft, read back at start: the storage Raft
/// starts from (the last snapshot marker, the entries after it, the last
/// hard state).
public struct RecoveredRaftLog {
    public let storage: MemoryStorage
    /// Entries read after the snapshot.
    public let entryCount: Int

    public enum Failure: Error, CustomStringConvertible {
        case undecodable(WALRecordType)
        /// An entry past the end of the log so far: the log has a hole.
        case gap(expected: UInt64, found: UInt64)

        public var description: String {
            switch self {
            case .undecodable(let t): "an undecodable WAL record of type \(t)"
            case .gap(let expected, let found): "the WAL's Raft log has a hole: entry \(found) follows \(expected - 1)"
            }
        }
    }

    /// - Parameters:
    ///   - voters: the membership when no snapshot says otherwise.
    ///   - defaultSnapshot: where the log starts when the WAL has no
    ///     marker (a data dir of the member before Raft: its backend index
    ///     and the term it wrote entries in).
    ///   - commitMark: the commit index the member had applied up to when
    ///     the WAL's hard state says less (`CommitMark`).
    public init(records: [WALRecord], voters: [NodeID], defaultSnapshot: (index: UInt64, term: UInt64),
                commitMark: UInt64? = nil) throws(Failure) {
        var marker: (index: UInt64, term: UInt64)?
        var hardState: HardState?
        for r in records {
            switch r.type {
            case .snapshot:
                guard let m = RaftRecords.decodeSnapshotMarker(r.data) else { throw .undecodable(r.type) }
                if m.index >= (marker?.index ?? 0) { marker = m }
            case .hardState:
                guard let h = RaftRecords.decodeHardState(r.data) else { throw .undecodable(r.type) }
                hardState = h
            default: break
            }
        }
        let start = marker ?? defaultSnapshot
        let storage = MemoryStorage()
        if start.index > 0 {
            storage.apply(Snapshot(index: start.index, term: start.term, voters: voters))
        }
        // Every entry in order, a later one at an index already held
        // replacing it and what follows (a follower's log overwritten by
        // its leader); only then is the part the marker covers dropped, so
        // an overwrite below the marker still removes what it replaced.
        var log: [Entry] = []
        for r in records {
            if r.type == .snapshot, let m = RaftRecords.decodeSnapshotMarker(r.data), let last = log.last, m.index > last.index {
                // A leader's snapshot installed past the log's end: the
                // entries that follow start after it.
                log.removeAll()
            }
            guard r.type == .raftEntry else { continue }
            guard let e = RaftRecords.decodeEntry(r.data) else { throw .undecodable(r.type) }
            if let first = log.first, e.index >= first.index {
                let next = first.index + UInt64(log.count)
                guard e.index <= next else { throw .gap(expected: next, found: e.index) }
                log.removeSubrange(Int(e.index - first.index)...)
            } else {
                // The first entry the WAL still holds, or one before it
                // (everything after it replaced).
                log.removeAll()
            }
            log.append(e)
        }
        log.removeAll { $0.index <= storage.snapshot.index }
        if let first = log.first, first.index != storage.snapshot.index + 1 {
            throw .gap(expected: storage.snapshot.index + 1, found: first.index)
        }
        storage.append(log)
        let count = log.count
        var hard = hardState ?? HardState()
        // Raft's commit never goes back, nor below what the backend holds
        // or what the member had applied (entries it had applied were
        // committed, so no leader can have replaced them since).
        hard.commit = max(hard.commit, storage.snapshot.index, commitMark ?? 0)
        hard.commit = min(hard.commit, storage.lastIndex)
        hard.term = max(hard.term, storage.term(storage.lastIndex) ?? 0)
        storage.setHardState(hard)
        self.storage = storage
        entryCount = count
    }
}
