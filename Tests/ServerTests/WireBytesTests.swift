import EtcdProto
import MVCC
import Testing
@testable import Server

@Suite struct WireBytesTests {
    /// The hand-built WatchResponse decodes to what swift-protobuf builds.
    @Test func handEncodedWatchResponseMatchesSwiftProtobuf() throws {
        let store = try Store(backend: MemoryBackend())
        var rng = SystemRandomNumberGenerator()
        for watchID in [Int64(0), 1, 300, -1, Int64.max] {
            let events = (0..<Int(rng.next() % 5)).map { i in
                WatchEvent(kind: i % 2 == 0 ? .put : .delete,
                           kv: KeyValue(key: Array("k\(i)".utf8), createRevision: 2, modRevision: 3 + Int64(i),
                                        version: Int64(i), value: Array(repeating: 0x61, count: Int(rng.next() % 300))))
            }
            let cache = EncodedEvents()
            var header: [UInt8] = []
            var h = Etcdserverpb_ResponseHeader()
            h.revision = 7
            h.memberID = 9
            WireBytes.appendBytesField(1, try h.serializedBytes(), to: &header)
            var bytes = header
            WireBytes.appendVarintField(2, UInt64(bitPattern: watchID), to: &bytes)
            for e in events { WireBytes.appendBytesField(11, cache.bytes(of: e, prevKV: false, store: store), to: &bytes) }

            var want = Etcdserverpb_WatchResponse()
            want.header = h
            want.watchID = watchID
            want.events = events.map { Mvccpb_Event($0) }
            #expect(try Etcdserverpb_WatchResponse(serializedBytes: bytes) == want)
            #expect(bytes == (try want.serializedBytes() as [UInt8]), "byte for byte, field order included")
        }
    }
}
