import Foundation
import Member
import Raft
import Testing
import TestSupport
import WAL

/// Raft's state in WAL records, and the log recovery rebuilds from them,
/// against a model: a follower's log is appended to and overwritten from
/// any index, hard states and snapshot markers (checkpoints, and leaders'
/// snapshots past the log's end) come between, and what is recovered is
/// the model's log after the last marker.
@Suite struct RaftRecordsTests {
    @Test func recordsRoundTrip() throws {
        let entries = (1...3).map { Entry(term: 7, index: UInt64($0), kind: $0 == 2 ? .confChange : .normal, data: [UInt8($0), 2, 3]) }
        let records = entries.map(RaftRecords.entry)
            + [RaftRecords.hardState(HardState(term: 9, vote: 4, commit: 2))]
        #expect(records.map(RaftRecords.entryIndex) == [1, 2, 3, nil])
        let s = try RecoveredRaftLog(records: records, voters: [1], defaultSnapshot: (0, 0)).storage
        #expect(s.entries(1, 4) == entries)
        #expect(s.hardState == HardState(term: 9, vote: 4, commit: 2))
    }

    @Test func recoveryRebuildsTheModelsLog() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for round in 0..<200 {
            var log: [Entry] = []  // the model: entries from index 1
            var records: [WALRecord] = []
            var hard = HardState()
            var marker: (index: UInt64, term: UInt64)?
            var term: UInt64 = 1
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<6:
                    // Append a few entries, overwriting from any index after
                    // the committed ones.
                    if Bool.random(using: &rng) { term += 1 }
                    let from = UInt64.random(in: max(hard.commit, marker?.index ?? 0) + 1...UInt64(log.count) + 1, using: &rng)
                    log.removeSubrange(Int(from - 1)...)
                    for i in 0..<Int.random(in: 1...5, using: &rng) {
                        let e = Entry(term: term, index: from + UInt64(i), data: [UInt8.random(in: 0...255, using: &rng)])
                        log.append(e)
                        records.append(RaftRecords.entry(e))
                    }
                case 6..<9:
                    hard = HardState(term: term, vote: UInt64.random(in: 0...3, using: &rng),
                                     commit: UInt64.random(in: hard.commit...UInt64(log.count), using: &rng))
                    records.append(RaftRecords.hardState(hard))
                case 9 where Int.random(in: 0..<3, using: &rng) == 0:
                    // A leader's snapshot, past this log's end: the marker,
                    // then the commit it implies; entries follow after it.
                    term += 1
                    let index = UInt64(log.count) + UInt64.random(in: 1...10, using: &rng)
                    while log.count < index { log.append(Entry(term: term, index: UInt64(log.count + 1), data: [0xff])) }
                    marker = (index, term)
                    hard = HardState(term: term, vote: hard.vote, commit: index)
                    records.append(RaftRecords.snapshotMarker(index: index, term: term))
                    records.append(RaftRecords.hardState(hard))
                default:
                    // A checkpoint: the backend holds everything committed.
                    guard hard.commit > (marker?.index ?? 0) else { continue }
                    marker = (hard.commit, log[Int(hard.commit) - 1].term)
                    records.append(RaftRecords.snapshotMarker(index: marker!.index, term: marker!.term))
                }
            }
            let recovered = try RecoveredRaftLog(records: records, voters: [1], defaultSnapshot: (0, 0))
            let s = recovered.storage
            let start = marker?.index ?? 0
            let context = "seed \(seed) round \(round)"
            #expect(s.snapshot.index == start && s.snapshot.term == (marker?.term ?? 0), "\(context)")
            #expect(s.lastIndex == UInt64(log.count), "\(context)")
            #expect(s.entries(start + 1, s.lastIndex + 1) == Array(log[Int(start)...]), "\(context)")
            #expect(s.hardState.commit == max(hard.commit, start) && s.hardState.vote == hard.vote, "\(context)")
            #expect(s.hardState.term >= hard.term, "\(context)")
        }
    }

    @Test func aHoleInTheLogIsRefused() {
        let records = [RaftRecords.entry(Entry(term: 1, index: 1)), RaftRecords.entry(Entry(term: 1, index: 3))]
        #expect(throws: RecoveredRaftLog.Failure.self) { try RecoveredRaftLog(records: records, voters: [1], defaultSnapshot: (0, 0)) }
        let damaged = [WALRecord(type: .hardState, data: [1, 2, 3])]
        #expect(throws: RecoveredRaftLog.Failure.self) { try RecoveredRaftLog(records: damaged, voters: [1], defaultSnapshot: (0, 0)) }
    }

    /// Without a marker the log starts where the caller says (a data dir
    /// of the member before Raft): entries at or before it are dropped.
    @Test func theDefaultStartHoldsWithoutAMarker() throws {
        let records = (1...5).map { RaftRecords.entry(Entry(term: 2, index: UInt64($0), data: [UInt8($0)])) }
        let s = try RecoveredRaftLog(records: records, voters: [1], defaultSnapshot: (3, 2)).storage
        #expect(s.firstIndex == 4 && s.lastIndex == 5 && s.term(3) == 2)
        #expect(s.hardState.commit == 3, "at least what the backend holds")
    }

    /// The commit mark raises a commit index the WAL's hard state left
    /// behind, never lowers it, and never passes the log's end.
    @Test func theCommitMarkRaisesTheCommitIndexWithinTheLog() throws {
        let records = (1...5).map { RaftRecords.entry(Entry(term: 2, index: UInt64($0), data: [UInt8($0)])) }
            + [RaftRecords.hardState(HardState(term: 2, vote: 1, commit: 2))]
        func commit(_ mark: UInt64?) throws -> UInt64 {
            try RecoveredRaftLog(records: records, voters: [1], defaultSnapshot: (0, 0), commitMark: mark).storage.hardState.commit
        }
        #expect(try commit(nil) == 2)
        #expect(try commit(4) == 4)
        #expect(try commit(1) == 2)
        #expect(try commit(9) == 5)
    }

    /// A mark reads back as written; a missing or damaged one reads as none.
    @Test func aCommitMarkReadsBackAndADamagedOneIsNone() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mark-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mark = try CommitMark(directory: dir)
        #expect(mark.read() == nil)
        for index: UInt64 in [1, 300, 1 << 40, 7] {
            try mark.write(index)
            #expect(mark.read() == index)
            #expect(try CommitMark(directory: dir).read() == index, "another opener sees it")
        }
        let path = dir + "/" + CommitMark.fileName
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[3] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(mark.read() == nil)
        try Data(bytes.prefix(5)).write(to: URL(fileURLWithPath: path))
        #expect(mark.read() == nil)
    }
}
