import EtcdProto
import EtcdStatus
import Testing
@testable import MVCC

@Suite struct RevisionKeyTests {
    @Test func encodesSeventeenBytesAndATombstoneMark() {
        let key = RevisionKey(Revision(main: 0x0102, sub: 3))
        #expect(key.bytes == [0, 0, 0, 0, 0, 0, 1, 2, 0x5f, 0, 0, 0, 0, 0, 0, 0, 3])
        let tomb = RevisionKey(Revision(main: 0x0102, sub: 3), isTombstone: true)
        #expect(tomb.bytes == key.bytes + [0x74])
        #expect(RevisionKey(bytes: tomb.bytes) == tomb)
        #expect(RevisionKey(bytes: key.bytes) == key)
        #expect(RevisionKey(bytes: [1, 2, 3]) == nil)
        #expect(RevisionKey(bytes: key.bytes + [0x75]) == nil)
    }

    @Test func byteOrderIsRevisionOrder() {
        var rng = SeededRandom(seed: testSeed())
        for _ in 0..<2_000 {
            let a = Revision(main: Int64(rng.next() % 50), sub: Int64(rng.next() % 50))
            let b = Revision(main: Int64(rng.next() % 50), sub: Int64(rng.next() % 50))
            let byBytes = compareBytes(RevisionKey(a).bytes, RevisionKey(b).bytes)
            #expect((byBytes < 0) == (a < b) && (byBytes == 0) == (a == b))
        }
    }
}

@Suite struct KeyValueCodecTests {
    /// Our hand-written encoding is swift-protobuf's, byte for byte, and
    /// each decodes the other's.
    @Test func matchesSwiftProtobuf() throws {
        var rng = SeededRandom(seed: testSeed())
        func int() -> Int64 {
            switch rng.next() % 4 {
            case 0: return 0
            case 1: return Int64(rng.next() % 300)
            case 2: return -Int64(rng.next() % 300)
            default: return Int64(bitPattern: rng.next())
            }
        }
        for _ in 0..<1_000 {
            let kv = KeyValue(key: (0..<Int(rng.next() % 20)).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                              createRevision: int(), modRevision: int(), version: int(),
                              value: (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                              lease: int())
            var pb = Mvccpb_KeyValue()
            pb.key = .init(kv.key)
            pb.createRevision = kv.createRevision
            pb.modRevision = kv.modRevision
            pb.version = kv.version
            pb.value = .init(kv.value)
            pb.lease = kv.lease
            let theirs: [UInt8] = try pb.serializedBytes()
            #expect(kv.encoded() == theirs)
            #expect(KeyValue(encoded: theirs) == kv)
            #expect(try Mvccpb_KeyValue(serializedBytes: kv.encoded()) == pb)
        }
    }

    @Test func skipsUnknownFieldsAndRejectsTruncation() {
        let kv = KeyValue(key: bytes("k"), createRevision: 2, modRevision: 3, version: 1, value: bytes("v"), lease: 0)
        // Field 9 (varint 5) and field 10 (length-delimited "xy") appended.
        let extended = kv.encoded() + [9 << 3, 5, 10 << 3 | 2, 2, 0x78, 0x79]
        #expect(KeyValue(encoded: extended) == kv)
        let encoded = kv.encoded()
        #expect(KeyValue(encoded: Array(encoded.dropLast())) == nil)
    }

    @Test func skipValueLeavesTheValueEmpty() {
        let kv = KeyValue(key: bytes("k"), createRevision: 2, modRevision: 3, version: 1, value: bytes("v"))
        let decoded = kv.encoded().withUnsafeBytes { KeyValue(encoded: $0, skipValue: true) }
        #expect(decoded?.value == [])
        #expect(decoded?.modRevision == 3)
    }
}

@Suite struct MVCCErrorTests {
    /// Every case, its gRPC code and etcd's exact message (from etcd's
    /// api/v3rpc/rpctypes/error.go, as listed in shared/etcd-errors.md).
    static let table: [(MVCCError, GRPCStatusCode, String)] = [
        (.keyNotProvided, .invalidArgument, "etcdserver: key is not provided"),
        (.keyNotFound, .invalidArgument, "etcdserver: key not found"),
        (.valueProvided, .invalidArgument, "etcdserver: value is provided"),
        (.leaseProvided, .invalidArgument, "etcdserver: lease is provided"),
        (.tooManyOperations, .invalidArgument, "etcdserver: too many operations in txn request"),
        (.duplicateKey, .invalidArgument, "etcdserver: duplicate key given in txn request"),
        (.invalidSortOption, .invalidArgument, "etcdserver: invalid sort option"),
        (.compacted, .outOfRange, "etcdserver: mvcc: required revision has been compacted"),
        (.futureRevision, .outOfRange, "etcdserver: mvcc: required revision is a future revision"),
        (.leaseNotFound, .notFound, "etcdserver: requested lease not found"),
    ]

    @Test func everyCaseMapsToEtcdsCodeAndMessage() {
        #expect(Self.table.count == MVCCError.allCases.count)
        for (error, code, message) in Self.table {
            #expect(error.grpcCode == code, "\(error)")
            #expect(error.grpcMessage == message, "\(error)")
        }
    }
}
