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

@Suite struct PutRequestCodecTests {
    /// Random PutRequests as swift-protobuf encodes them, with unknown and
    /// repeated fields mixed in, decode to the same request; every
    /// truncation either fails in both decoders or agrees.
    @Test func decodesWhatSwiftProtobufDecodes() throws {
        var rng = SeededRandom(seed: testSeed())
        func randomBytes(_ max: UInt64) -> [UInt8] {
            (0..<Int(rng.next() % max)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        }
        func ours(_ b: [UInt8]) -> PutRequest? { b.withUnsafeBytes { PutRequest(encoded: $0) } }
        func theirs(_ b: [UInt8]) -> PutRequest? {
            guard let p = try? Etcdserverpb_PutRequest(serializedBytes: b) else { return nil }
            var r = PutRequest(key: [UInt8](p.key), value: [UInt8](p.value), lease: p.lease)
            r.prevKV = p.prevKv
            r.ignoreValue = p.ignoreValue
            r.ignoreLease = p.ignoreLease
            return r
        }
        for _ in 0..<1_000 {
            var pb = Etcdserverpb_PutRequest()
            pb.key = .init(randomBytes(20))
            pb.value = .init(randomBytes(300))
            pb.lease = rng.next() % 3 == 0 ? Int64(bitPattern: rng.next()) : 0
            pb.prevKv = rng.next() % 2 == 0
            pb.ignoreValue = rng.next() % 3 == 0
            pb.ignoreLease = rng.next() % 3 == 0
            var bytes: [UInt8] = try pb.serializedBytes()
            switch rng.next() % 4 {
            case 0: bytes += [9 << 3, 5, 10 << 3 | 2, 2, 0x78, 0x79, 11 << 3 | 5, 1, 2, 3, 4]  // unknown fields
            case 1: bytes += [1 << 3 | 2, 1, 0x7a, 3 << 3, 7]  // key and lease again: the last wins
            default: break
            }
            let expected = theirs(bytes)
            #expect(expected != nil)
            #expect(ours(bytes) == expected)
            let cut = Int(rng.next() % UInt64(bytes.count + 1))
            #expect(ours(Array(bytes[..<cut])) == theirs(Array(bytes[..<cut])), "cut at \(cut) of \(bytes)")
        }
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
