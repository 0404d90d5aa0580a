#if canImport(Glibc)
import Glibc
#endif
import Checksum

/// The commit index a member has applied entries up to, in a small file
/// beside the WAL: written (not synced) on the loop before the entries are
/// applied, when only the commit index moved. Raft needs no record of its
/// commit index at all (a member learns it again from its leader), so that
/// move costs no WAL batch; but a restarted process (kill -9) must not
/// serve an older revision than it did before, and this says how far it
/// had got. A machine crash may lose the latest mark, as it may lose an
/// unsynced WAL tail: the member then starts from the WAL's commit index.
///
/// The file: the index (8 bytes, little-endian) and its CRC32C (4 bytes).
public final class CommitMark {
    public static let fileName = "commit.mark"
    private let path: String
    private let fd: Int32
    private var bytes = [UInt8](repeating: 0, count: 12)

    /// Opens (or creates) the mark in `directory`.
    public init(directory: String) throws(WALError) {
        path = directory + "/" + Self.fileName
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
    }

    deinit { close(fd) }

    /// The last mark written, or nil (none yet, or not intact).
    public func read() -> UInt64? {
        var stored = [UInt8](repeating: 0, count: 12)
        let n = stored.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 12, 0) }
        guard n == 12 else { return nil }
        var index: UInt64 = 0
        for i in 0..<8 { index |= UInt64(stored[i]) << (8 * UInt64(i)) }
        var crc: UInt32 = 0
        for i in 0..<4 { crc |= UInt32(stored[8 + i]) << (8 * UInt32(i)) }
        return CRC32C.checksum(Array(stored[0..<8])) == crc ? index : nil
    }

    /// Writes `index` as the mark (survives the process, not a machine
    /// crash).
    public func write(_ index: UInt64) throws(WALError) {
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: index >> (8 * UInt64(i))) }
        var c = CRC32C()
        bytes.withUnsafeBytes { c.update(UnsafeRawBufferPointer(rebasing: $0[0..<8])) }
        for i in 0..<4 { bytes[8 + i] = UInt8(truncatingIfNeeded: c.value >> (8 * UInt32(i))) }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, 12, 0) }
        guard n == 12 else { throw .io(operation: "write", path: path, errno: n < 0 ? errno : EIO) }
    }
}
