import Bolt
import Checksum
import COpenSSL
import EtcdProto
import Foundation
@testable import Server
@testable import Snapshot

func fuzzGateway(_ body: [UInt8]) {
    _ = GoBase64.corruptionOffset(String(decoding: body, as: UTF8.self))
    if GoBase64.problem(inJSON: body) != nil { return }
    let fixed = GoBase64.withoutLineBreaks(inBytesFields: body)
    for object in EtcdServer.jsonObjects(fixed) {
        precondition(object.count <= fixed.count)
        _ = try? EtcdServer.gatewayStreams["watch"]!.decode(object)
    }
    if let bytes = try? EtcdServer.gatewayRoutes["kv/txn"]!.decode(fixed) {
        precondition((try? Etcdserverpb_TxnRequest(serializedBytes: bytes)) != nil, "a decoded TxnRequest does not read back")
    }
    for path in ["kv/range", "kv/put", "auth/user/add", "election/proclaim"] {
        _ = try? EtcdServer.gatewayRoutes[path]!.decode(fixed)
    }
}

/// The etcd-wal target's input: a mode byte, then records as (type,
/// length, data) triples written as etcd writes them (a length field with
/// its padding bits, a walpb.Record carrying the running CRC-32C); the
/// mode may flip a byte or cut the file.
func fuzzEtcdWAL(_ input: UnsafeRawBufferPointer) {
    guard let mode = input.first else { return }
    var file: [UInt8] = []
    var crc = CRC32C()
    var at = 1
    while at + 2 <= input.count {
        var record = Walpb_Record()
        record.type = Int64(input[at] % 5) + 1
        let length = min(Int(input[at + 1]), input.count - at - 2)
        let data = Array(input[(at + 2)..<(at + 2 + length)])
        at += 2 + length
        if record.type == EtcdWAL.RecordType.crc.rawValue {
            record.crc = crc.value
        } else {
            crc.update(data)
            record.crc = crc.value
            record.data = Data(data)
        }
        guard let body: [UInt8] = try? record.serializedBytes() else { return }
        let padding = (8 - body.count % 8) % 8
        var lengthField = UInt64(body.count)
        if padding != 0 { lengthField |= (0x80 | UInt64(padding)) << 56 }
        for i in 0..<8 { file.append(UInt8(truncatingIfNeeded: lengthField >> UInt64(8 * i))) }
        file += body + [UInt8](repeating: 0, count: padding)
    }
    if mode & 1 != 0, !file.isEmpty { file[Int(mode >> 1) * 7919 % file.count] ^= 0x5A }
    if mode & 0x80 != 0, !file.isEmpty { file.removeLast(Int(mode) % file.count) }
    _ = try? EtcdWAL(files: [(name: "0000000000000000-0000000000000000.wal", bytes: file)])
}

func fuzzSnapshot(_ input: [UInt8]) {
    _ = try? SnapshotFile.verified(input)
    var body = input
    guard !body.isEmpty else { return }
    _ = fixBoltMetaChecksums(&body)
    body += [UInt8](repeating: 0, count: (512 - body.count % 512) % 512)
    var digest = [UInt8](repeating: 0, count: 32)
    body.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, $0.count, &digest) }
    guard let (bytes, length) = try? SnapshotFile.verified(body + digest) else {
        preconditionFailure("a file with a valid SHA-256 is refused")
    }
    precondition(length == body.count)
    if let bolt = try? BoltReader(bytes: Array(bytes[..<length])) { _ = try? SnapshotFile.boltStatus(bolt) }
}
