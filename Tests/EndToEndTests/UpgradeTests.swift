import EtcdProto
import Foundation
import Testing
import WAL

/// A data dir written by the member before Raft (WAL records of type
/// `entry`: kind, term 2, index, request) starts under Raft with every
/// write it held, and goes on from there.
@Suite struct UpgradeTests {
    /// The old entry encoding: kind, varint term, varint index, request.
    static func legacyEntry(kind: UInt8, index: UInt64, request: [UInt8]) -> WALRecord {
        func varint(_ v: UInt64) -> [UInt8] {
            var v = v, out: [UInt8] = []
            while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
            return out + [UInt8(v)]
        }
        return WALRecord(type: .entry, data: [kind] + varint(2) + varint(index) + request)
    }

    @Test func aDataDirFromBeforeRaftKeepsItsWrites() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-old-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        for dir in [dataDir, dataDir + "/member", dataDir + "/member/wal"] { mkdir(dir, 0o700) }
        let wal = try WAL(directory: dataDir + "/member/wal")
        _ = try wal.recover()
        for i in 1...30 {
            var put = Etcdserverpb_PutRequest()
            put.key = Data("old/\(i % 10)".utf8)
            put.value = Data("v\(i)".utf8)
            try wal.append(Self.legacyEntry(kind: 1, index: UInt64(i), request: try put.serializedBytes()))
        }
        try wal.sync()
        wal.close()

        let server = try ServerProcess(dataDir: dataDir)
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        #expect(try e.run("get", "old/", "--prefix", "--print-value-only").lines == ["v30"] + (21...29).map { "v\($0)" })
        #expect(try e.run("get", "old/3", "-w", "json").stdout.contains("\"mod_revision\":24"))
        try e.run("put", "new", "x")
        #expect(try e.run("get", "new", "-w", "json").stdout.contains("\"mod_revision\":32"))
        server.stop()
        // And once more, now from what Raft wrote on top.
        let again = try ServerProcess(dataDir: dataDir)
        defer { again.stop() }
        let e2 = Etcdctl(endpoint: again.endpoint)
        #expect(try e2.run("get", "", "--prefix", "--keys-only").lines.count == 11)
        #expect(try e2.run("get", "new", "-w", "json").stdout.contains("\"raft_term\":4"), "term 2 before Raft, then two elections")
    }
}
