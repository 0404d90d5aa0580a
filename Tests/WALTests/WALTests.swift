import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import WAL
import TestSupport

/// A fresh directory, removed by `remove()`.
struct Scratch {
    let path: String
    init() {
        var template = Array("/tmp/swetcd-wal-XXXXXX".utf8CString)
        _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! }) + "/wal"
    }
    func remove() {
        for seq in (try? WAL.listSegments(path)) ?? [] { unlink(path + "/" + WAL.segmentName(seq)) }
        rmdir(path)
        rmdir(String(path.dropLast(4)))
    }
}

func records(_ n: Int, seed: UInt64, maxSize: Int = 3_000) -> [WALRecord] {
    var rng = SeededRandom(seed: seed)
    return (0..<n).map { _ in
        let type: WALRecordType = [.entry, .entry, .entry, .hardState, .snapshot][Int(rng.next() % 5)]
        return WALRecord(type: type, data: (0..<Int(rng.next() % UInt64(maxSize))).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }
}

func write(_ rs: [WALRecord], to dir: String, segmentBytes: Int) throws {
    let wal = try WAL(directory: dir, segmentBytes: segmentBytes)
    _ = try wal.recover()
    try wal.append(rs)
    try wal.sync()
    wal.close()
}

func recover(_ dir: String, segmentBytes: Int) throws -> (WAL, [WALRecord]) {
    let wal = try WAL(directory: dir, segmentBytes: segmentBytes)
    return (wal, try wal.recover())
}

/// Overwrites `count` bytes at `offset` of a file (or flips one).
func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) {
    let f = open(path, O_WRONLY)
    _ = bytes.withUnsafeBytes { pwrite(f, $0.baseAddress, $0.count, off_t(offset)) }
    close(f)
}

@Suite struct WALTests {
    @Test func recordsRoundTripAcrossSegmentsAndReopens() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let first = records(60, seed: 1), second = records(40, seed: 2)
        try write(first, to: dir.path, segmentBytes: 16 << 10)
        try write(second, to: dir.path, segmentBytes: 16 << 10)
        let (wal, got) = try recover(dir.path, segmentBytes: 16 << 10)
        wal.close()
        #expect(got == first + second)
        #expect(try WAL.listSegments(dir.path).count > 5, "several segments")
    }

    /// The zero filler writes ahead of the appends, on its own thread, in
    /// the same segments: appends written one by one (the filler chasing
    /// them) across several segments, and a reopen in the middle, all read
    /// back, so no zeros landed on a record.
    @Test func zerosWrittenAheadNeverLandOnRecords() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let segmentBytes = 2 << 20
        let first = records(1_500, seed: 11, maxSize: 4_000), second = records(1_500, seed: 12, maxSize: 4_000)
        var chunks = 0
        for batch in [first, second] {
            let wal = try WAL(directory: dir.path, segmentBytes: segmentBytes)
            _ = try wal.recover()
            for (i, r) in batch.enumerated() {
                try wal.append(r)
                if i % 50 == 49 { try wal.sync() } else { try wal.write() }
            }
            try wal.sync()
            chunks += wal.zeroFiller.chunksWritten
            wal.close()
        }
        let (wal, got) = try recover(dir.path, segmentBytes: segmentBytes)
        wal.close()
        #expect(got == first + second)
        #expect(try WAL.listSegments(dir.path).count >= 3)
        #expect(chunks > 0, "the filler wrote nothing")
    }

    @Test func olderSegmentsMayBeRemoved() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let rs = records(80, seed: 3)
        try write(rs, to: dir.path, segmentBytes: 8 << 10)
        let segments = try WAL.listSegments(dir.path)
        for seq in segments.dropLast(2) { unlink(dir.path + "/" + WAL.segmentName(seq)) }
        let (wal, got) = try recover(dir.path, segmentBytes: 8 << 10)
        try wal.append(records(3, seed: 4))
        try wal.sync()
        wal.close()
        #expect(!got.isEmpty && rs.reversed().starts(with: got.reversed()), "a suffix of what was written")
        let (again, all) = try recover(dir.path, segmentBytes: 8 << 10)
        again.close()
        #expect(all == got + records(3, seed: 4))
    }

    /// A torn last record, cut at every byte: the log recovers to the
    /// records before it (or keeps it whole if only padding was lost) and
    /// takes new appends after.
    @Test func aTornLastRecordIsTruncatedAtEveryByte() throws {
        let rs = records(4, seed: 5, maxSize: 40).map { r -> WALRecord in var r = r; r.data = Array(r.data.prefix(37)) + [1]; return r }
        let lastOffset = rs.dropLast().map { WALRecord.paddedSize($0.data.count) }.reduce(0, +)
        let lastSize = WALRecord.paddedSize(rs.last!.data.count)
        let payloadEnd = WALRecord.headerSize + rs.last!.data.count
        for cut in 0..<lastSize {
            for realTruncate in [false, true] {
                let dir = Scratch()
                defer { dir.remove() }
                try write(rs, to: dir.path, segmentBytes: 1 << 16)
                let file = dir.path + "/" + WAL.segmentName(0)
                if realTruncate {
                    _ = truncate(file, off_t(lastOffset + cut))
                } else {
                    patch(file, at: lastOffset + cut, [UInt8](repeating: 0, count: lastSize - cut))
                }
                let (wal, got) = try recover(dir.path, segmentBytes: 1 << 16)
                let whole = cut >= payloadEnd
                #expect(got == (whole ? rs : Array(rs.dropLast())), "cut at \(cut), truncate \(realTruncate)")
                if whole { #expect(wal.truncatedTail == nil, "cut at \(cut): nothing torn") }
                try wal.append([WALRecord(type: .entry, data: [9, 9])])
                try wal.sync()
                wal.close()
                let (again, after) = try recover(dir.path, segmentBytes: 1 << 16)
                again.close()
                #expect(after == got + [WALRecord(type: .entry, data: [9, 9])], "append after recovery, cut \(cut)")
            }
        }
    }

    /// A flipped byte in a record that others follow is corruption: refused,
    /// naming the file and the record's offset.
    @Test func aFlippedByteInTheMiddleIsRefused() throws {
        let rs = records(5, seed: 6, maxSize: 200)
        let offsets = rs.indices.map { i in rs.prefix(i).map { WALRecord.paddedSize($0.data.count) }.reduce(0, +) }
        for victim in 0..<4 {
            for position in [0, 4, 5, 9, WALRecord.headerSize, WALRecord.headerSize + rs[victim].data.count - 1] {
                guard position < WALRecord.headerSize + rs[victim].data.count else { continue }
                let dir = Scratch()
                defer { dir.remove() }
                try write(rs, to: dir.path, segmentBytes: 1 << 16)
                let file = dir.path + "/" + WAL.segmentName(0)
                let bytes = try WAL.readFile(file)
                patch(file, at: offsets[victim] + position, [bytes[offsets[victim] + position] ^ 0x40])
                do {
                    _ = try recover(dir.path, segmentBytes: 1 << 16)
                    Issue.record("record \(victim), byte \(position): accepted")
                } catch let WALError.corrupt(f, offset, _) {
                    #expect(f == file && offset == offsets[victim], "record \(victim), byte \(position)")
                }
            }
        }
    }

    @Test func aFlippedByteInAnEarlierSegmentIsRefused() throws {
        let dir = Scratch()
        defer { dir.remove() }
        try write(records(50, seed: 7), to: dir.path, segmentBytes: 8 << 10)
        let file = dir.path + "/" + WAL.segmentName(0)
        let bytes = try WAL.readFile(file)
        patch(file, at: 40, [bytes[40] ^ 1])
        #expect(throws: WALError.self) { _ = try recover(dir.path, segmentBytes: 8 << 10) }
    }
}

@Suite struct GroupCommitTests {
    /// Concurrent submitters: every one is told, the records come back in
    /// the order they were accepted, and fsyncs are shared.
    @Test func concurrentSubmissionsShareFsyncs() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let wal = try WAL(directory: dir.path, segmentBytes: 1 << 16)
        _ = try wal.recover()
        let writer = GroupCommitWAL(wal)
        final class Log: @unchecked Sendable {
            var mutex = pthread_mutex_t()
            var order: [Int] = []
            init() { pthread_mutex_init(&mutex, nil) }
            func add(_ i: Int) { pthread_mutex_lock(&mutex); order.append(i); pthread_mutex_unlock(&mutex) }
        }
        let acknowledged = Log()
        let submitters = 8, each = 50
        var threads: [pthread_t] = []
        final class Job { let writer: GroupCommitWAL; let base: Int; let n: Int; let log: Log
            init(_ w: GroupCommitWAL, _ b: Int, _ n: Int, _ l: Log) { writer = w; base = b; self.n = n; log = l } }
        for t in 0..<submitters {
            var thread = pthread_t()
            let job = Unmanaged.passRetained(Job(writer, t * each, each, acknowledged)).toOpaque()
            pthread_create(&thread, nil, { arg in
                let job = Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue()
                for i in job.base..<(job.base + job.n) {
                    let log = job.log
                    job.writer.submit(WALRecord(type: .entry, data: Array(String(i).utf8))) { result in
                        if case .success = result { log.add(i) }
                    }
                }
                return nil
            }, job)
            threads.append(thread)
        }
        for t in threads { pthread_join(t, nil) }
        writer.stop()
        #expect(acknowledged.order.count == submitters * each)
        let stats = writer.stats
        #expect(stats.records == submitters * each)
        #expect(stats.syncs < stats.records, "group commit: \(stats.syncs) fsyncs for \(stats.records) records")
        let (again, got) = try recover(dir.path, segmentBytes: 1 << 16)
        again.close()
        #expect(Set(got.map { Int(String(decoding: $0.data, as: UTF8.self))! }) == Set(0..<(submitters * each)))
        // Each submitter's own records are in its order.
        for t in 0..<submitters {
            let mine = got.compactMap { Int(String(decoding: $0.data, as: UTF8.self)) }.filter { $0 / each == t }
            #expect(mine == Array((t * each)..<((t + 1) * each)))
        }
    }
}

@Suite struct WriterSpinTests {
    /// One submitter at a time, with a writer that polls after each lone
    /// record: every record is acknowledged and on disk, in order, and a
    /// submission that lands just after a poll gave up still wakes it
    /// (pauses longer than the poll between some submissions).
    @Test func aPollingWriterMissesNoSubmission() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let wal = try WAL(directory: dir.path, segmentBytes: 1 << 16)
        _ = try wal.recover()
        let writer = GroupCommitWAL(wal, spinAfterSingleRecord: 0.000_2)
        var rng = SeededRandom(seed: 11)
        for i in 0..<300 {
            if Int.random(in: 0..<10, using: &rng) == 0 { usleep(UInt32.random(in: 100...600, using: &rng)) }
            let sem = Semaphore()
            writer.submit(WALRecord(type: .entry, data: Array(String(i).utf8))) { result in
                if case .failure = result { Issue.record("record \(i) failed") }
                sem.signal()
            }
            sem.wait()
        }
        let stats = writer.stats
        writer.stop()
        #expect(stats.records == 300 && stats.syncs == 300)
        let (again, got) = try recover(dir.path, segmentBytes: 1 << 16)
        again.close()
        #expect(got.map { String(decoding: $0.data, as: UTF8.self) } == (0..<300).map(String.init))
    }
}

@Suite struct UnsyncedBatchTests {
    /// Submissions with and without `sync`, one at a time, across segment
    /// rotations: each is in a segment file (readable by another process)
    /// when it is acknowledged, only synced ones cost an fdatasync, and
    /// everything recovers in order.
    @Test func unsyncedRecordsAreWrittenBeforeTheyAreAcknowledged() throws {
        let dir = Scratch()
        defer { dir.remove() }
        let wal = try WAL(directory: dir.path, segmentBytes: 1 << 12)
        _ = try wal.recover()
        let writer = GroupCommitWAL(wal)
        var rng = SeededRandom(seed: 5)
        var synced = 0
        func onDisk(_ marker: [UInt8]) -> Bool {
            ((try? WAL.listSegments(dir.path)) ?? []).contains { seq in
                guard let bytes = try? WAL.readFile(dir.path + "/" + WAL.segmentName(seq)) else { return false }
                return bytes.firstRange(of: marker) != nil
            }
        }
        for i in 0..<200 {
            let sync = Bool.random(using: &rng)
            if sync { synced += 1 }
            let data = Array("record-\(i)-".utf8) + [UInt8](repeating: UInt8(i % 251), count: Int.random(in: 0..<300, using: &rng))
            let sem = Semaphore()
            writer.submit([WALRecord(type: .entry, data: data)], sync: sync) { result in
                if case .failure = result { Issue.record("record \(i) failed") }
                sem.signal()
            }
            sem.wait()
            #expect(onDisk(data), "record \(i) (sync: \(sync)) is written when acknowledged")
        }
        let stats = writer.stats
        writer.stop()
        #expect(stats.records == 200 && stats.syncs == synced, "\(stats.syncs) fdatasyncs for \(synced) synced batches")
        let (again, got) = try recover(dir.path, segmentBytes: 1 << 12)
        again.close()
        #expect(got.map { String(decoding: $0.data, as: UTF8.self).split(separator: "-")[1] } == (0..<200).map { Substring(String($0)) })
    }
}

@Suite struct SegmentRemovalTests {
    /// Segments whose entries are all covered go, oldest first, keeping the
    /// newest two closed ones and the one being written; what is left still
    /// recovers, and the tags come back from a reopen.
    @Test func coveredSegmentsAreRemovedAndTheRestRecovers() throws {
        let dir = Scratch()
        defer { dir.remove() }
        func tagged(_ range: Range<Int>) -> [WALRecord] {
            range.map { WALRecord(type: .entry, data: Array(String($0).utf8) + [UInt8](repeating: 7, count: 500)) }
        }
        let tagOf: (WALRecord) -> UInt64? = { UInt64(String(decoding: $0.data.prefix { $0 != 7 }, as: UTF8.self)) }
        let wal = try WAL(directory: dir.path, segmentBytes: 4096)
        wal.tagOf = tagOf
        _ = try wal.recover()
        try wal.append(tagged(0..<100))
        try wal.sync()
        let before = try WAL.listSegments(dir.path)
        #expect(before.count > 10)
        let removed = try wal.removeSegments(coveredBy: 60)
        let after = try WAL.listSegments(dir.path)
        #expect(removed > 0 && after.count == before.count - removed)
        wal.close()
        let reopened = try WAL(directory: dir.path, segmentBytes: 4096)
        reopened.tagOf = tagOf
        let got = try reopened.recover()
        let tags = got.compactMap(tagOf)
        #expect(tags == Array(UInt64(tags.first ?? 0)..<100), "a contiguous suffix")
        #expect(tags.first! <= 61, "nothing past the covered tag was removed")
        #expect(try reopened.removeSegments(coveredBy: 99) >= 0)
        reopened.close()
    }
}

/// A WAL on a 1 MiB tmpfs: a full disk fails the write that hits it and
/// every write after it, and what was acknowledged before is still there.
@Suite struct FullDiskTests {
    static let mountPoint = "/tmp/swetcd-wal-full-\(getpid())"

    /// Mounting needs root; the suite says so instead of passing quietly.
    static var canMount: Bool {
        mkdir(mountPoint, 0o700)
        guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=1m") == 0 else { rmdir(mountPoint); return false }
        umount(mountPoint)
        rmdir(mountPoint)
        return true
    }

    @Test(.enabled(if: canMount, "needs root to mount a tmpfs"))
    func aFullDiskRefusesThatWriteAndEveryLaterOne() throws {
        mkdir(Self.mountPoint, 0o700)
        #expect(mount("tmpfs", Self.mountPoint, "tmpfs", 0, "size=1m") == 0)
        defer {
            umount(Self.mountPoint)
            rmdir(Self.mountPoint)
        }
        let dir = Self.mountPoint + "/wal"
        let wal = try WAL(directory: dir, segmentBytes: 128 << 10)
        _ = try wal.recover()
        let writer = GroupCommitWAL(wal)
        final class Outcomes: @unchecked Sendable {
            var mutex = pthread_mutex_t()
            var results: [Bool] = []
            init() { pthread_mutex_init(&mutex, nil) }
            func add(_ ok: Bool) { pthread_mutex_lock(&mutex); results.append(ok); pthread_mutex_unlock(&mutex) }
        }
        let outcomes = Outcomes()
        let record = WALRecord(type: .entry, data: [UInt8](repeating: 0x55, count: 16 << 10))
        for _ in 0..<200 {  // 3.2 MB: more than the disk holds
            let sem = Semaphore()
            writer.submit(record) { result in
                if case .success = result { outcomes.add(true) } else { outcomes.add(false) }
                sem.signal()
            }
            sem.wait()
        }
        writer.stop()
        let results = outcomes.results
        let acknowledged = results.prefix { $0 }.count
        #expect(acknowledged > 0 && acknowledged < results.count, "the disk filled up: \(acknowledged) of \(results.count)")
        #expect(results.dropFirst(acknowledged).allSatisfy { !$0 }, "nothing succeeds after the first failure")
        let reopened = try WAL(directory: dir, segmentBytes: 128 << 10)
        let got = try reopened.recover()
        reopened.close()
        #expect(got.count >= acknowledged, "every acknowledged record is on disk")
    }
}

final class Semaphore: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var count = 0
    init() { pthread_mutex_init(&mutex, nil); pthread_cond_init(&cond, nil) }
    func signal() { pthread_mutex_lock(&mutex); count += 1; pthread_cond_signal(&cond); pthread_mutex_unlock(&mutex) }
    func wait() {
        pthread_mutex_lock(&mutex)
        while count == 0 { pthread_cond_wait(&cond, &mutex) }
        count -= 1
        pthread_mutex_unlock(&mutex)
    }
}
