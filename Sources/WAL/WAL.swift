import Checksum
import Metrics
#if canImport(Glibc)
import Glibc
#endif

public enum WALError: Error, Equatable, CustomStringConvertible {
    /// A record in the middle of the log does not check out: refuse to start.
    case corrupt(file: String, offset: Int, reason: String)
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .corrupt(let file, let offset, let reason):
            return "WAL corrupt in \(file) at offset \(offset): \(reason); refusing to start"
        case .io(let op, let path, let e):
            return "WAL \(op) \(path): \(String(cString: strerror(e)))"
        }
    }
}

/// The write-ahead log: numbered segment files in one directory, each
/// preallocated to `segmentBytes` and filled with `WALRecord`s whose CRCs
/// chain across the whole log.
///
/// `open` reads every record back, truncates a torn tail (a last record
/// that does not check out, followed only by zeros, in the last segment),
/// and refuses any other damage with the file and offset. Appends go to the
/// end; `sync` makes them durable (fdatasync). One writer at a time.
public final class WAL {
    public let directory: String
    public let segmentBytes: Int
    private var fd: Int32 = -1
    private var sequence: UInt64 = 0
    private var offset = 0
    private var crc: UInt32 = 0
    private var pending: [UInt8] = []
    /// What `open` did about a torn tail, for the log.
    public private(set) var truncatedTail: (file: String, offset: Int)?
    /// The highest tag (the caller's entry index) in each segment.
    private(set) var lastTags: [UInt64: UInt64] = [:]
    /// Reads a record's tag (e.g. its log index), for segment removal.
    public var tagOf: (WALRecord) -> UInt64? = { _ in nil }
    /// etcd's `etcd_disk_wal_fsync_duration_seconds`: each fdatasync after
    /// appends, alone (not the write before it).
    public let fsyncDurations = Histogram(bounds: Histogram.exponentialBuckets(start: 0.001, factor: 2, count: 14))
    /// Called (on the writing thread) with the seconds an fdatasync took
    /// when that was over `slowSyncSeconds` (etcd's "slow fdatasync").
    public var onSlowSync: (@Sendable (Double) -> Void)?
    public static let slowSyncSeconds = 1.0
    /// etcd's `etcd_disk_wal_write_bytes_total`: record bytes written.
    public let bytesWritten = Counter()
    /// Zeros the segment being appended to ahead of the appends.
    let zeroFiller = ZeroFiller()

    public static func segmentName(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + ".wal"
    }

    /// Opens (creating) the log in `directory` and returns every record in it.
    public init(directory: String, segmentBytes: Int = 64 << 20) throws {
        self.directory = directory
        self.segmentBytes = segmentBytes
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw WALError.io(operation: "mkdir", path: directory, errno: errno) }
    }

    /// Reads the log and leaves it ready for appends after its last good
    /// record.
    public func recover() throws -> [WALRecord] {
        let segments = try Self.listSegments(directory)
        var records: [WALRecord] = []
        var chain: UInt32 = 0
        for (i, seq) in segments.enumerated() {
            let path = directory + "/" + Self.segmentName(seq)
            let file = try MappedFile(path)
            let bytes = file.bytes
            let isLast = i == segments.count - 1
            var at = 0
            // Every segment after the first starts with the crc it continues
            // from; the oldest one kept takes its chain from there.
            if seq > 0, bytes.count >= WALRecord.headerSize + 4, Self.load32(bytes, 0) == 4,
               bytes[4] == WALRecordType.crcSeed.rawValue, i == 0 {
                chain = Self.load32(bytes, WALRecord.headerSize)
            }
            var sawSeed = seq == 0
            scan: while at + WALRecord.headerSize <= bytes.count {
                let length = Int(Self.load32(bytes, at))
                let typeByte = bytes[at + 4]
                if length == 0 && typeByte == 0 {
                    // End of the written part: the rest must be zeros. In the
                    // last segment non-zero bytes after a zero header are a
                    // write torn out of order (a later page reached the disk,
                    // an earlier one did not): truncated; elsewhere, damage.
                    if !Self.isAllZero(UnsafeRawBufferPointer(rebasing: bytes[at...])) {
                        guard isLast else {
                            throw WALError.corrupt(file: path, offset: at, reason: "data after the end marker")
                        }
                        try truncate(path: path, from: at, to: bytes.count)
                        truncatedTail = (path, at)
                    }
                    break scan
                }
                let stored = Self.load32(bytes, at + 5)
                let headerOK = Self.load32(bytes, at + 9) == ~UInt32(length) && WALRecordType(rawValue: typeByte) != nil
                let end = at + WALRecord.paddedSize(length)
                let fits = headerOK && at + WALRecord.headerSize + length <= bytes.count
                let type = WALRecordType(rawValue: typeByte)
                var ok = fits
                var data: [UInt8] = []
                if ok {
                    data = Array(bytes[(at + WALRecord.headerSize)..<(at + WALRecord.headerSize + length)])
                    ok = WALRecord.crc(type: type!, data: data, previous: chain) == stored
                }
                if !ok {
                    // Torn tail: the last segment, nothing but zeros after the
                    // record (after its header, when the header itself is bad:
                    // its length cannot be trusted then).
                    let after = min(headerOK ? end : at + WALRecord.headerSize, bytes.count)
                    if isLast && Self.isAllZero(UnsafeRawBufferPointer(rebasing: bytes[after...])) {
                        try truncate(path: path, from: at, to: after)
                        truncatedTail = (path, at)
                        break scan
                    }
                    throw WALError.corrupt(file: path, offset: at,
                                           reason: !headerOK ? "damaged record header" : (fits ? "checksum mismatch" : "record runs past the end of the segment"))
                }
                if type == .crcSeed {
                    guard !sawSeed, data.count == 4, Self.load32(data, 0) == chain else {
                        throw WALError.corrupt(file: path, offset: at, reason: "segment does not continue the previous one")
                    }
                    sawSeed = true
                } else {
                    guard sawSeed else { throw WALError.corrupt(file: path, offset: at, reason: "segment lacks its crc seed") }
                    let record = WALRecord(type: type!, data: data)
                    if let tag = tagOf(record) { lastTags[seq] = max(lastTags[seq] ?? 0, tag) }
                    records.append(record)
                }
                chain = stored
                at = end
            }
            withExtendedLifetime(file) {}  // the mapping outlives every use of `bytes`
            if isLast {
                sequence = seq
                offset = at
                if seq > 0 && at == 0 {
                    // Created but never written: its seed is still owed.
                    var bytes: [UInt8] = []
                    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: chain >> UInt32(shift))) }
                    chain = WALRecord(type: .crcSeed, data: bytes).encode(into: &pending, previousCRC: chain)
                }
            }
        }
        crc = chain
        if segments.isEmpty {
            try openSegment(0, seed: nil)
        } else {
            let path = directory + "/" + Self.segmentName(sequence)
            fd = open(path, O_WRONLY)
            guard fd >= 0 else { throw WALError.io(operation: "open", path: Self.segmentName(sequence), errno: errno) }
            zeroFiller.follow(path, segmentBytes: segmentBytes, offset: offset)
        }
        return records
    }

    /// Queues records; `sync()` writes and makes them durable.
    public func append(_ records: [WALRecord]) throws {
        for r in records { try append(r) }
    }

    public func append(_ r: WALRecord) throws {
        defer { if let tag = tagOf(r) { lastTags[sequence] = max(lastTags[sequence] ?? 0, tag) } }
        if offset + pending.count + WALRecord.paddedSize(r.data.count) > segmentBytes && offset + pending.count > 0 {
            try flushPending()
            try openSegment(sequence + 1, seed: crc)
        }
        crc = r.encode(into: &pending, previousCRC: crc)
    }

    /// Writes what was appended without waiting for the disk: after this
    /// returns, the records survive a crash of the process (not of the
    /// machine until the next `sync()`, which covers them).
    public func write() throws {
        try flushPending()
    }

    /// Writes what was appended and fdatasyncs it: after this returns, the
    /// records survive a crash of the process or the machine.
    public func sync() throws {
        try flushPending()
        let started = Histogram.monotonicSeconds()
        guard fdatasync(fd) == 0 else { throw WALError.io(operation: "fdatasync", path: Self.segmentName(sequence), errno: errno) }
        let took = Histogram.monotonicSeconds() - started
        fsyncDurations.observe(seconds: took)
        if took > Self.slowSyncSeconds { onSlowSync?(took) }
    }

    /// Deletes closed segments whose every tag is at most `tag` (their
    /// entries are durable elsewhere, e.g. in an fsynced backend), keeping
    /// the newest `keep` of them. Returns how many were deleted.
    @discardableResult
    public func removeSegments(coveredBy tag: UInt64, keep: Int = 2) throws -> Int {
        let closed = try Self.listSegments(directory).filter { $0 < sequence }
        let covered = closed.filter { (lastTags[$0] ?? 0) <= tag }
        // Only a prefix may go: a segment after a kept one must stay.
        var removable: [UInt64] = []
        for seq in closed {
            guard covered.contains(seq) else { break }
            removable.append(seq)
        }
        let doomed = removable.dropLast(keep)
        for seq in doomed {
            let path = directory + "/" + Self.segmentName(seq)
            guard unlink(path) == 0 else { throw WALError.io(operation: "remove", path: path, errno: errno) }
            lastTags[seq] = nil
        }
        if !doomed.isEmpty { try Self.syncDirectory(directory) }
        return doomed.count
    }

    public func close() {
        zeroFiller.stop()
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }

    // MARK: Files

    private func flushPending() throws {
        guard !pending.isEmpty else { return }
        zeroFiller.willWrite(upTo: offset + pending.count)
        let n = pending.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == pending.count else { throw WALError.io(operation: "write", path: Self.segmentName(sequence), errno: errno) }
        offset += n
        bytesWritten.add(n)
        pending.removeAll(keepingCapacity: true)
    }

    private func openSegment(_ seq: UInt64, seed: UInt32?) throws {
        if fd >= 0 {
            guard fdatasync(fd) == 0 else { throw WALError.io(operation: "fdatasync", path: Self.segmentName(sequence), errno: errno) }
            Glibc.close(fd)
        }
        let path = directory + "/" + Self.segmentName(seq)
        let temporary = path + ".tmp"
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw WALError.io(operation: "create", path: temporary, errno: errno) }
        // Preallocated, reading as zeros (zeros mark the end): a full disk
        // fails here, not later mid-record. (glibc writes the zeros itself
        // where the filesystem cannot allocate; where it can, the blocks
        // stay unwritten until `zeroFiller` writes them ahead of appends.)
        let rc = posix_fallocate(fd, 0, off_t(segmentBytes))
        if rc != 0 {
            Glibc.close(fd)
            fd = -1
            unlink(temporary)
            throw WALError.io(operation: "preallocate", path: temporary, errno: rc)
        }
        guard fsync(fd) == 0, rename(temporary, path) == 0 else { throw WALError.io(operation: "rename", path: path, errno: errno) }
        try Self.syncDirectory(directory)
        sequence = seq
        offset = 0
        zeroFiller.follow(path, segmentBytes: segmentBytes, offset: 0)
        if let seed {
            var bytes: [UInt8] = []
            for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: seed >> UInt32(shift))) }
            crc = WALRecord(type: .crcSeed, data: bytes).encode(into: &pending, previousCRC: seed)
        }
    }

    private func truncate(path: String, from start: Int, to end: Int) throws {
        let f = open(path, O_WRONLY)
        guard f >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        defer { Glibc.close(f) }
        let zeros = [UInt8](repeating: 0, count: end - start)
        let n = zeros.withUnsafeBytes { pwrite(f, $0.baseAddress, $0.count, off_t(start)) }
        guard n == zeros.count, fdatasync(f) == 0 else { throw WALError.io(operation: "truncate", path: path, errno: errno) }
    }

    static func listSegments(_ directory: String) throws -> [UInt64] {
        guard let dir = opendir(directory) else { throw WALError.io(operation: "opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var out: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".wal"), name.count == 20, let seq = UInt64(name.prefix(16), radix: 16) { out.append(seq) }
        }
        return out.sorted()
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        let f = open(path, O_RDONLY)
        guard f >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        defer { Glibc.close(f) }
        var st = stat()
        guard fstat(f, &st) == 0 else { throw WALError.io(operation: "stat", path: path, errno: errno) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(f, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            guard n > 0 else { throw WALError.io(operation: "read", path: path, errno: errno) }
            done += n
        }
        return bytes
    }

    static func syncDirectory(_ path: String) throws {
        let d = open(path, O_RDONLY)
        guard d >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        defer { Glibc.close(d) }
        guard fsync(d) == 0 else { throw WALError.io(operation: "fsync", path: path, errno: errno) }
    }

    static func load32<C: RandomAccessCollection>(_ b: C, _ at: Int) -> UInt32 where C.Element == UInt8, C.Index == Int {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}

extension WAL {
    /// True when every byte is zero; compares in blocks (segments are
    /// mostly preallocated zeros, scanned at every start).
    static func isAllZero(_ b: UnsafeRawBufferPointer) -> Bool {
        guard var p = b.baseAddress else { return true }
        var left = b.count
        return zeroBlock.withUnsafeBytes { zero in
            while left > 0 {
                let n = min(left, zero.count)
                if memcmp(p, zero.baseAddress!, n) != 0 { return false }
                p += n
                left -= n
            }
            return true
        }
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: 64 << 10)
}

/// A file mapped read-only for the length of a recovery scan.
final class MappedFile {
    let bytes: UnsafeRawBufferPointer
    private let length: Int

    init(_ path: String) throws {
        let f = open(path, O_RDONLY)
        guard f >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        defer { close(f) }
        var st = stat()
        guard fstat(f, &st) == 0 else { throw WALError.io(operation: "stat", path: path, errno: errno) }
        length = Int(st.st_size)
        if length == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, f, 0), p != MAP_FAILED else {
            throw WALError.io(operation: "mmap", path: path, errno: errno)
        }
        bytes = UnsafeRawBufferPointer(start: p, count: length)
    }

    deinit {
        if let p = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: p), length) }
    }
}
