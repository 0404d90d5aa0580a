import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// `swetcd snapshot restore FILE --data-dir DIR`: a new data dir from a file
/// that `etcdctl snapshot save` wrote from swetcd (the database followed by
/// its SHA-256). The member started on it has the same keys, revision and
/// HashKV; its WAL starts empty.
public enum SnapshotRestore {
    public enum Failure: Error, CustomStringConvertible {
        case unreadable(String)
        case integrity(String)
        case dataDirExists(String)
        case write(String)

        public var description: String {
            switch self {
            case .unreadable(let why): return "cannot read the snapshot: \(why)"
            case .integrity(let why): return "snapshot file integrity check failed: \(why)"
            case .dataDirExists(let d): return "data-dir \"\(d)\" exists"
            case .write(let why): return "cannot write the data dir: \(why)"
            }
        }
    }

    public static func restore(file: String, dataDir: String) throws {
        let bytes = try read(file)
        guard bytes.count > 32 else { throw Failure.integrity("\(bytes.count) bytes is too short") }
        let body = bytes.count - 32
        var digest = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, body, &digest) }
        guard Array(bytes[body...]) == digest else { throw Failure.integrity("SHA-256 mismatch") }
        var st = stat()
        guard stat(dataDir, &st) != 0 else { throw Failure.dataDirExists(dataDir) }
        for dir in [dataDir, dataDir + "/member", dataDir + "/member/snap", dataDir + "/member/wal"] {
            guard mkdir(dir, 0o700) == 0 else { throw Failure.write("mkdir \(dir): \(String(cString: strerror(errno)))") }
        }
        let db = dataDir + "/member/snap/db"
        let f = open(db, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard f >= 0 else { throw Failure.write("\(db): \(String(cString: strerror(errno)))") }
        defer { close(f) }
        let written = bytes.withUnsafeBytes { write(f, $0.baseAddress, body) }
        guard written == body, fsync(f) == 0 else { throw Failure.write("\(db): \(String(cString: strerror(errno)))") }
    }

    static func read(_ path: String) throws -> [UInt8] {
        let f = open(path, O_RDONLY)
        guard f >= 0 else { throw Failure.unreadable("\(path): \(String(cString: strerror(errno)))") }
        defer { close(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(f, $0.baseAddress, $0.count) }
            if n < 0 { throw Failure.unreadable("\(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }
}
