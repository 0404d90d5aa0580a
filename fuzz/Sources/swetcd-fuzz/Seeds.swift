@testable import Auth
@testable import Bolt
import EtcdProto
import Foundation
@testable import Member
@testable import MVCC
import Raft
@testable import Server
@testable import V2Store
@testable import WAL
#if canImport(Glibc)
import Glibc
#endif

/// Each target's seed corpus, made with the encoders the decoders pair
/// with, so fuzzing starts from inputs that get deep. Written to
/// fuzz/corpus/TARGET/ by `FUZZ_WRITE_SEEDS=DIR swetcd-fuzz` (committed).
func seeds() throws -> [String: [[UInt8]]] {
    var put = Etcdserverpb_PutRequest()
    put.key = Data("/registry/pods/default/a".utf8)
    put.value = Data(repeating: 0x61, count: 40)
    put.lease = 7
    put.prevKv = true
    let putBytes: [UInt8] = try put.serializedBytes()
    var txn = Etcdserverpb_TxnRequest()
    var compare = Etcdserverpb_Compare()
    compare.key = put.key
    compare.target = .mod
    compare.modRevision = 5
    txn.compare = [compare]
    var op = Etcdserverpb_RequestOp()
    op.requestPut = put
    txn.success = [op]
    let txnBytes: [UInt8] = try txn.serializedBytes()

    let kv = KeyValue(key: Array("k".utf8), createRevision: 2, modRevision: 5, version: 3, value: Array("value".utf8), lease: 9)
    let entry = Entry(term: 2, index: 7, data: putBytes)
    var append = Message(type: .append, from: 1, to: 2, term: 2)
    append.logTerm = 2
    append.index = 6
    append.entries = [entry]
    append.commit = 6
    let heartbeat = Message(type: .heartbeat, from: 1, to: 2, term: 2)

    var wal: [UInt8] = [0]
    for (type, data) in [(UInt8(4), RaftRecords.entry(entry).data), (1, RaftRecords.hardState(HardState(term: 2, vote: 1, commit: 7)).data)] {
        wal += [type, UInt8(min(data.count, 255))] + data.prefix(255)
    }

    var auth = AuthStore()
    try? auth.addUser("root", password: nil)
    try? auth.addRole("root")
    let bolt = try BoltWriter(pageSize: 1024).write(BoltWriter.Bucket([
        (key: Array("key".utf8), entry: .bucket(BoltWriter.Bucket([(key: [0, 0, 0, 0, 0, 0, 0, 2], entry: .value(kv.encoded()))]))),
        (key: Array("meta".utf8), entry: .bucket(BoltWriter.Bucket([(key: Array("consistent_index".utf8), entry: .value([0, 0, 0, 0, 0, 0, 0, 7]))]))),
    ]))
    var membership = Membership()
    membership.apply(.add(Membership.Member(id: 0x8e9e05c52164694d, name: "m1", peerURLs: ["http://127.0.0.1:2380"])))

    var v2Set = V2Request(method: .put, path: "/dir/a")
    v2Set.value = "b c"
    v2Set.expiresAt = 1_700_000_000
    v2Set.prevExist = false
    let v2Node = V2Store.Node(key: "/dir/a", value: "v", isDir: false, createdIndex: 4, modifiedIndex: 9, expiresAt: nil)

    var metadata = Etcdserverpb_Metadata()
    metadata.nodeID = 0x8e9e05c52164694d
    metadata.clusterID = 0xcdf818194e3a8c32
    var etcdEntry = Raftpb_Entry()
    etcdEntry.term = 2
    etcdEntry.index = 1
    etcdEntry.data = Data(putBytes)
    var etcdState = Raftpb_HardState()
    etcdState.term = 2
    etcdState.commit = 1
    var etcdWAL: [UInt8] = [0, 3, 0]  // mode 0, a CRC record with no data
    for (type, record) in [(UInt8(0), try metadata.serializedBytes() as [UInt8]), (1, try etcdEntry.serializedBytes()),
                           (2, try etcdState.serializedBytes())] {
        etcdWAL += [type, UInt8(record.count)] + record
    }

    return [
        "gateway": [
            Array(#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","serializable":true}"#.utf8),
            Array(#"{"compare":[{"key":"Zm9v","target":"MOD","mod_revision":"5"}],"success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}]}"#.utf8),
            Array(#"{"create_request":{"key":"Zm9v","range_end":"AA==","start_revision":"1"}} {"cancel_request":{"watch_id":"3"}}"#.utf8),
            Array(#"{"key":"Zm9v\nYmFy","value":"eA=="}"#.utf8),
        ],
        "v2-request": [v2Set.encoded(), V2Request(method: .delete, path: "/dir").encoded(), v2Node.encoded(),
                       V2Answer(status: 201, etcdIndex: 9, raftIndex: 12, body: Array("{}".utf8)).encoded()],
        "etcd-wal": [etcdWAL],
        "snapshot": [bolt],
        "http1": [
            Array("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8),
            Array("PUT /v2/keys/dir/a?ttl=5&prevExist=false HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nvalue=b%20c+d".utf8),
            Array("POST /v3/kv/range HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"key\":\"Zm9v\"}GET /version HTTP/1.0\r\n\r\n".utf8),
        ],
        "grpc-frame": [[0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0], [0, 0, 0, 0, UInt8(putBytes.count)] + putBytes, [1, 0, 0, 0, 1, 9]],
        "put-request": [putBytes],
        "key-value": [kv.encoded(), KeyValue(key: [0xff], createRevision: 1, modRevision: 1, version: 1).encoded()],
        "raft-message": [try RaftWire.encode(append), try RaftWire.encode(heartbeat)],
        "raft-records": [RaftRecords.entry(entry).data, RaftRecords.hardState(HardState(term: 2, vote: 1, commit: 7)).data],
        "log-entry": [ProposedRequest(kind: .put, id: 1, request: putBytes).encoded(),
                      ProposedRequest(kind: .txn, id: 2, request: txnBytes).encoded()],
        "wal": [wal],
        "bolt": [bolt],
        "membership": [try membership.encoded(), try MembershipEntry(requestID: 3, change: .remove(0x8e9e05c52164694d)).encoded()],
        "auth-store": [auth.encoded],
        "lease": [StoredLease(id: 1, ttl: 60, remainingTTL: 30).encoded],
    ]
}

/// Writes every target's seeds under `dir` (DIR/TARGET/seed-N).
func writeSeeds(to dir: String) throws {
    mkdir(dir, 0o755)
    for (target, inputs) in try seeds() {
        precondition(targets[target] != nil, "seeds for an unknown target \(target)")
        mkdir(dir + "/" + target, 0o755)
        for (i, input) in inputs.enumerated() {
            let path = "\(dir)/\(target)/seed-\(i)"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            precondition(fd >= 0, "cannot write \(path)")
            _ = input.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }
}
