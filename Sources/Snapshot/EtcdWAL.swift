import Checksum
import EtcdProto
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

/// What an etcd data dir's WAL (`member/wal/*.wal`) holds, read as etcd
/// reads it at start: every record in file order, each framed by an 8-byte
/// little-endian length (the low 56 bits; a set top bit puts the padding
/// to 8 bytes in bits 56-58) around a `walpb.Record`, whose CRC-32C chains
/// over the data of every record before it; a `crc` record (each file's
/// first) carries the chain into the file. A file ends at a zero length
/// (etcd preallocates its files) or at its end. A torn last record of the
/// last file (the write a crash interrupted) ends the log, as etcd's repair
/// does; damage anywhere else is refused.
public struct EtcdWAL: Sendable {
    /// etcd's record types.
    enum RecordType: Int64 {
        case metadata = 1
        case entry = 2
        case state = 3
        case crc = 4
        case snapshot = 5
    }

    public enum Failure: Error, CustomStringConvertible {
        case unreadable(String)
        case damaged(file: String, offset: Int, why: String)

        public var description: String {
            switch self {
            case .unreadable(let why): "cannot read etcd's WAL: \(why)"
            case .damaged(let file, let offset, let why): "etcd's WAL is damaged: \(file) at offset \(offset): \(why)"
            }
        }
    }

    /// The log's entries as they stand: an entry written at an index the
    /// log held already replaces it and every entry after it (a follower
    /// overwritten by its leader).
    public private(set) var entries: [Raftpb_Entry] = []
    /// The last hard state written (term, vote, commit index).
    public private(set) var hardState = Raftpb_HardState()
    /// The last snapshot's place in the log.
    public private(set) var snapshot: (index: UInt64, term: UInt64)?
    public private(set) var memberID: UInt64 = 0
    public private(set) var clusterID: UInt64 = 0
    private var sawMetadata = false

    /// Reads every `.wal` file of `directory` in name order.
    public init(directory: String) throws {
        guard let dir = opendir(directory) else {
            throw Failure.unreadable("\(directory): \(String(cString: strerror(errno)))")
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasSuffix(".wal") { names.append(name) }
        }
        closedir(dir)
        guard !names.isEmpty else { throw Failure.unreadable("\(directory) holds no .wal file") }
        let files = try names.sorted().map { (name: $0, bytes: try SnapshotFile.read(directory + "/" + $0)) }
        try self.init(files: files)
    }

    /// Reads the files' bytes, in order.
    public init(files: [(name: String, bytes: [UInt8])]) throws {
        var crc = CRC32C()
        for (number, file) in files.enumerated() {
            let isLast = number == files.count - 1
            let bytes = file.bytes
            var offset = 0
            while offset + 8 <= bytes.count {
                var lengthField: UInt64 = 0
                for i in 0..<8 { lengthField |= UInt64(bytes[offset + i]) << UInt64(8 * i) }
                if lengthField == 0 { break }
                let recordBytes = Int(lengthField & ((1 << 56) - 1))
                let padding = lengthField >> 63 == 1 ? Int((lengthField >> 56) & 0x7) : 0
                func damaged(_ why: String) -> Failure { .damaged(file: file.name, offset: offset, why: why) }
                guard recordBytes <= bytes.count - offset - 8 - padding else {
                    if isLast { break }
                    throw damaged("a record of \(recordBytes) bytes runs past the file's end")
                }
                let body = Array(bytes[(offset + 8)..<(offset + 8 + recordBytes)])
                // A torn write leaves a sector of the record all zeros.
                let torn = isLast && Self.hasZeroSector(bytes, from: offset + 8, count: recordBytes + padding)
                let record: Walpb_Record
                do {
                    record = try Walpb_Record(serializedBytes: body)
                } catch {
                    if torn { break }
                    throw damaged("not a walpb.Record")
                }
                if record.type == RecordType.crc.rawValue {
                    // The chain so far must be the one the file carries on.
                    guard crc.value == 0 || record.crc == crc.value else { throw damaged("CRC chain mismatch") }
                    crc.seed(record.crc)
                } else {
                    crc.update([UInt8](record.data))
                    guard record.crc == crc.value else {
                        if torn { break }
                        throw damaged("CRC mismatch")
                    }
                    do {
                        try apply(record)
                    } catch {
                        throw damaged("\(error)")
                    }
                }
                offset += 8 + recordBytes + padding
            }
        }
    }

    private mutating func apply(_ record: Walpb_Record) throws {
        switch RecordType(rawValue: record.type) {
        case .metadata:
            let m = try Etcdserverpb_Metadata(serializedBytes: record.data)
            // etcd refuses a WAL whose metadata records differ.
            if sawMetadata && (m.nodeID, m.clusterID) != (memberID, clusterID) {
                throw Failure.unreadable("metadata conflicts with the first")
            }
            (memberID, clusterID) = (m.nodeID, m.clusterID)
            sawMetadata = true
        case .entry:
            let e = try Raftpb_Entry(serializedBytes: record.data)
            // What etcd never writes (a record's type is outside its CRC,
            // so another record read as an entry looks like this).
            guard e.index > 0 else { throw Failure.unreadable("an entry at index 0") }
            switch e.type {
            case .entryNormal: break
            case .entryConfChange, .entryConfChangeV2:
                guard !e.data.isEmpty else { throw Failure.unreadable("a membership entry without a change") }
            }
            if let first = entries.first, e.index >= first.index {
                let next = first.index + UInt64(entries.count)
                guard e.index <= next else { throw Failure.unreadable("entry \(e.index) follows \(next - 1)") }
                entries.removeSubrange(Int(e.index - first.index)...)
            } else {
                entries.removeAll()
            }
            entries.append(e)
        case .state:
            let h = try Raftpb_HardState(serializedBytes: record.data)
            // Raft's term and commit index never go back, and nothing is
            // committed before a term.
            guard h.term >= hardState.term, h.commit >= hardState.commit, h.term > 0 || h.commit == 0 else {
                throw Failure.unreadable("a hard state (term \(h.term), commit \(h.commit)) that goes back or commits without a term, after term \(hardState.term), commit \(hardState.commit)")
            }
            hardState = h
        case .snapshot:
            let s = try Walpb_Snapshot(serializedBytes: record.data)
            snapshot = (s.index, s.term)
        case .crc, nil:
            throw Failure.unreadable("a record of type \(record.type)")
        }
    }

    private static func hasZeroSector(_ bytes: [UInt8], from start: Int, count: Int) -> Bool {
        let end = min(start + count, bytes.count)
        var chunkStart = start
        while chunkStart < end {
            let chunkEnd = min((chunkStart / 512 + 1) * 512, end)
            if bytes[chunkStart..<chunkEnd].allSatisfy({ $0 == 0 }) { return true }
            chunkStart = chunkEnd
        }
        return start >= end
    }
}
