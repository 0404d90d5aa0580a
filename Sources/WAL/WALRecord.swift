import Checksum

/// What a WAL record holds. Raw values are on disk: never renumber.
public enum WALRecordType: UInt8, Sendable {
    /// A log entry of the member before Raft (kind, term, index, request):
    /// read back from older data dirs, no longer written.
    case entry = 1
    /// Raft's hard state (term, vote, commit).
    case hardState = 2
    /// A snapshot marker: everything up to (term, index) is in the backend.
    case snapshot = 3
    /// The CRC the next segment's chain starts from (first record of every
    /// segment but the first).
    case crcSeed = 4
    /// A Raft log entry (term, index, kind, data).
    case raftEntry = 5
}

/// One record as it lies in a segment:
///
///     length  UInt32 LE   bytes of data
///     type    UInt8       WALRecordType
///     crc     UInt32 LE   CRC-32C of type and data, seeded with the previous
///                         record's crc (a chain across the whole log)
///     check   UInt32 LE   ~length, so a damaged length is caught before it
///                         is believed (and cannot pass a middle record off
///                         as a torn end)
///     data    length bytes
///     padding zero bytes to a multiple of 8
///
/// A zero length-and-type header marks the end of the written part of a
/// preallocated (zero-filled) segment. A torn write leaves a record whose
/// crc or check does not match, with only zeros after it.
public struct WALRecord: Equatable, Sendable {
    public var type: WALRecordType
    public var data: [UInt8]

    public init(type: WALRecordType, data: [UInt8]) {
        self.type = type
        self.data = data
    }

    static let headerSize = 13

    static func paddedSize(_ dataCount: Int) -> Int {
        (headerSize + dataCount + 7) & ~7
    }

    /// Appends the encoded record to `out` and returns the chain's new crc.
    func encode(into out: inout [UInt8], previousCRC: UInt32) -> UInt32 {
        let crc = Self.crc(type: type, data: data, previous: previousCRC)
        let n = UInt32(data.count)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: n >> UInt32(shift))) }
        out.append(type.rawValue)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: ~n >> UInt32(shift))) }
        out.append(contentsOf: data)
        let pad = Self.paddedSize(data.count) - Self.headerSize - data.count
        out.append(contentsOf: repeatElement(0, count: pad))
        return crc
    }

    static func crc(type: WALRecordType, data: [UInt8], previous: UInt32) -> UInt32 {
        var c = CRC32C(seed: previous)
        c.update([type.rawValue])
        c.update(data)
        return c.value
    }
}

extension CRC32C {
    /// A CRC continuing from `seed` (the chain's previous value).
    init(seed: UInt32) {
        self.init()
        self.seed(seed)
    }
}
