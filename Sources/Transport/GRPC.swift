import EtcdStatus

/// A gRPC status as sent in trailers: code plus message.
public struct GRPCStatus: Error, Equatable, Sendable {
    public var code: GRPCStatusCode
    public var message: String

    public init(_ code: GRPCStatusCode, _ message: String = "") {
        self.code = code
        self.message = message
    }

    public static let ok = GRPCStatus(.ok)

    public init(_ error: any EtcdStatusError) {
        self.init(error.grpcCode, error.grpcMessage)
    }
}

/// How a method is called.
public enum GRPCMethodKind: Sendable {
    /// One request, one response: the handler gets the request message.
    case unary
    /// One request, a stream of responses.
    case serverStreaming
    /// Streams both ways: the handler is called when the stream opens (with
    /// no message) and later messages arrive through `GRPCCall.onMessage`.
    case bidirectionalStreaming
}

public struct GRPCMethod {
    public var kind: GRPCMethodKind
    public var handler: (GRPCCall, [UInt8]) -> Void

    public init(_ kind: GRPCMethodKind, _ handler: @escaping (GRPCCall, [UInt8]) -> Void) {
        self.kind = kind
        self.handler = handler
    }
}

/// Messages of the calls of one method, and their bytes (grpc-go's
/// `grpc_server_msg_*_total`, etcd's `client_grpc_*_bytes_total`),
/// counted on the service loop.
public final class GRPCMessageCounts {
    public private(set) var received = 0, receivedBytes = 0
    public private(set) var sent = 0, sentBytes = 0

    public init() {}

    public func received(bytes: Int) {
        received += 1
        receivedBytes += bytes
    }

    public func sent(_ messages: Int, bytes: Int) {
        sent += messages
        sentBytes += bytes
    }
}

/// Finds the method for a request path such as `/etcdserverpb.KV/Range`.
public protocol GRPCRouter: AnyObject {
    /// The method, or the status to refuse the call with (UNIMPLEMENTED).
    func method(for path: String) -> Result<GRPCMethod, GRPCStatus>
    /// Every method's path and kind, fixed once serving starts (I/O loops
    /// read it on their threads); nil: the router does not list them, and
    /// its connections are served on its own loop.
    var methodKinds: [String: GRPCMethodKind]? { get }
}

extension GRPCRouter {
    public var methodKinds: [String: GRPCMethodKind]? { nil }
}

/// gRPC's length-prefixed messages: a compressed flag, a 4-byte big-endian
/// length, the message.
enum GRPCFrame {
    static let headerSize = 5

    static func encode(_ message: [UInt8], into out: inout ByteQueue) {
        out.reserveIfEmpty(headerSize + message.count)
        out.appendFrameHeader(UInt32(message.count))
        out.append(message)
    }

    static func encode(_ message: [UInt8], into out: inout OutboundQueue) {
        out.reserveIfEmpty(headerSize + (message.count < OutboundQueue.sharedMinBytes ? message.count : 0))
        out.appendFrameHeader(UInt32(message.count))
        out.append(message)
    }

    /// Queues a message built with room for the prefix: when `out` is empty
    /// the buffer itself becomes the queue, with no copy.
    static func encode(_ message: GRPCMessageBuffer, into out: inout OutboundQueue) {
        var framed = message.storage
        let n = UInt32(framed.count - headerSize)
        framed[0] = 0
        framed[1] = UInt8(n >> 24)
        framed[2] = UInt8(truncatingIfNeeded: n >> 16)
        framed[3] = UInt8(truncatingIfNeeded: n >> 8)
        framed[4] = UInt8(truncatingIfNeeded: n)
        out.append(adopting: framed)
    }

    /// The tail is queued by reference when it is long (shared by every
    /// stream it goes to), else copied with the rest.
    static func encode(_ parts: MessageParts, into out: inout OutboundQueue) {
        let n = parts.count
        out.reserveIfEmpty(headerSize + (parts.tail.count < OutboundQueue.sharedMinBytes ? n : n - parts.tail.count))
        out.appendFrameHeader(UInt32(n))
        out.append(parts.head)
        if parts.field != 0 && parts.value != 0 {  // proto3 omits zero
            out.appendVarint(parts.field << 3)
            out.appendVarint(parts.value)
        }
        out.append(parts.tail)
    }

    /// Frames `parts` once per value of its varint field, in order. With a
    /// short tail all of them are written in one pass into one new block
    /// (no append per piece); a long tail stays shared, by reference.
    /// Returns the bytes framed.
    @discardableResult
    static func encode(_ parts: MessageParts, withEachValue values: [UInt64], into out: inout OutboundQueue) -> Int {
        var one = parts
        guard parts.tail.count < OutboundQueue.sharedMinBytes else {
            var framed = 0
            for value in values {
                one.value = value
                framed += headerSize + one.count
                encode(one, into: &out)
            }
            return framed
        }
        let framed = parts.framedBytes(withEachValue: values)
        out.append(count: framed) { block in
            var at = block.baseAddress!
            parts.head.withUnsafeBytes { head in
                parts.tail.withUnsafeBytes { tail in
                    for value in values {
                        one.value = value
                        let n = UInt32(one.count)
                        at.storeBytes(of: 0, as: UInt8.self)
                        at.storeBytes(of: n.bigEndian, toByteOffset: 1, as: UInt32.self)
                        at += headerSize
                        if !head.isEmpty { at.copyMemory(from: head.baseAddress!, byteCount: head.count) }
                        at += head.count
                        if parts.field != 0 && value != 0 {  // proto3 omits zero
                            at = writeVarint(parts.field << 3, at)
                            at = writeVarint(value, at)
                        }
                        if !tail.isEmpty { at.copyMemory(from: tail.baseAddress!, byteCount: tail.count) }
                        at += tail.count
                    }
                }
            }
        }
        return framed
    }

    private static func writeVarint(_ value: UInt64, _ at: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        var v = value, p = at
        while v >= 0x80 {
            p.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, as: UInt8.self)
            p += 1
            v >>= 7
        }
        p.storeBytes(of: UInt8(v), as: UInt8.self)
        return p + 1
    }

    enum Parsed {
        case message([UInt8])
        case needMore
        case compressed
        case tooLarge(Int)
    }

    /// The length the message at the front of `buffer` declares, once its
    /// prefix is there.
    static func declaredLength(of buffer: ByteQueue) -> Int? {
        guard buffer.count >= headerSize else { return nil }
        return Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
    }

    /// Takes the next complete message off the front of `buffer`.
    static func next(from buffer: inout ByteQueue, maxMessageBytes: Int) -> Parsed {
        guard let length = declaredLength(of: buffer) else { return .needMore }
        if length > maxMessageBytes { return .tooLarge(length) }
        if buffer[0] != 0 { return .compressed }
        guard buffer.count >= headerSize + length else { return .needMore }
        buffer.drop(headerSize)
        return .message(buffer.take(length))
    }
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and
/// '%', become %XX.
func percentEncodeGRPCMessage(_ s: String) -> String {
    var out = ""
    for b in s.utf8 {
        if b >= 0x20 && b <= 0x7e && b != 0x25 {
            out.unicodeScalars.append(Unicode.Scalar(b))
        } else {
            let hex = Array("0123456789ABCDEF".utf8)
            out += "%" + String(decoding: [hex[Int(b >> 4)], hex[Int(b & 15)]], as: UTF8.self)
        }
    }
    return out
}

/// Parses a `grpc-timeout` value ("100m", "5S", ...) into seconds.
func parseGRPCTimeout(_ value: String) -> Double? {
    guard let unit = value.last, let amount = Double(value.dropLast()) else { return nil }
    switch unit {
    case "H": return amount * 3600
    case "M": return amount * 60
    case "S": return amount
    case "m": return amount / 1e3
    case "u": return amount / 1e6
    case "n": return amount / 1e9
    default: return nil
    }
}

/// A FIFO of bytes with cheap appends at the back and drops at the front.
struct ByteQueue {
    private var storage: [UInt8] = []
    private var head = 0
    /// How much the queue held in all before it last drained, so the next
    /// burst reserves that at once instead of growing by copies.
    private var lastBurst = 0
    /// A drained queue keeps at most this much room. A long-lived stream
    /// (a watch, a lease keep-alive) is mostly idle: 100 watchers' created
    /// responses, or one revision's events for them, would otherwise stay
    /// allocated per stream for its lifetime.
    static let keptCapacity = 1024

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }
    /// Bytes of room it holds now.
    var capacity: Int { storage.capacity }

    mutating func append(_ bytes: [UInt8]) { storage.append(contentsOf: bytes) }

    /// Appends `bytes`, taking the array itself as the storage when the
    /// queue is empty.
    mutating func append(adopting bytes: [UInt8]) {
        if storage.isEmpty {
            storage = bytes
            head = 0
        } else {
            storage.append(contentsOf: bytes)
        }
    }

    /// Room for `n` bytes in an empty queue, so the appends that follow
    /// allocate once. (Not when it holds bytes: reserving exact sizes over
    /// and over would defeat the array's geometric growth.)
    mutating func reserveIfEmpty(_ n: Int) {
        if storage.isEmpty { storage.reserveCapacity(Swift.max(n, lastBurst)) }
    }

    /// gRPC's 5-byte message prefix (uncompressed, big-endian length),
    /// without building an array for it.
    mutating func appendFrameHeader(_ n: UInt32) {
        storage.append(0)
        storage.append(UInt8(n >> 24))
        storage.append(UInt8(truncatingIfNeeded: n >> 16))
        storage.append(UInt8(truncatingIfNeeded: n >> 8))
        storage.append(UInt8(truncatingIfNeeded: n))
    }
    mutating func append(_ bytes: UnsafeRawBufferPointer) { storage.append(contentsOf: bytes) }

    mutating func appendVarint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            storage.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        storage.append(UInt8(v))
    }

    /// The byte `i` places from the front.
    subscript(i: Int) -> UInt8 { storage[head + i] }

    mutating func drop(_ n: Int) {
        head += n
        if head == storage.count {
            lastBurst = storage.count > Self.keptCapacity ? Swift.min(storage.count, 1 << 20) : 0
            if storage.capacity <= Self.keptCapacity {
                storage.removeAll(keepingCapacity: true)
            } else {
                storage = []
            }
            head = 0
        } else if head > 1 << 16 && head > storage.count / 2 {
            storage.removeSubrange(0..<head)
            head = 0
        }
    }

    mutating func take(_ n: Int) -> [UInt8] {
        if head + n == storage.count && head <= 64 {
            // All that is left (a whole message, typically): slide it to the
            // front of the storage and hand the storage over, no allocation.
            var out = storage
            storage = []
            out.removeSubrange(0..<head)
            head = 0
            return out
        }
        let out = Array(storage[head..<head + n])
        drop(n)
        return out
    }

    /// The first `n` bytes (at most `count`), without dropping them.
    func withFront<R>(_ n: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[head..<head + Swift.min(n, count)])) }
    }

    /// Copies up to `max` bytes into `dest` and drops them.
    mutating func copyOut(into dest: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        let n = min(max, count)
        guard n > 0 else { return 0 }
        storage.withUnsafeBufferPointer { src in
            dest.update(from: src.baseAddress! + head, count: n)
        }
        drop(n)
        return n
    }
}

/// A response message made of shared parts: `head`, then one varint field,
/// then `tail`. Many calls' messages can share the head and tail arrays (a
/// watch event's bytes, sent to every watcher of it, differ only in the
/// watch ID): the message is put together where it is queued, with no
/// array of its own.
public struct MessageParts {
    public var head: [UInt8]
    /// The field number of the varint between head and tail (0: none).
    public var field: UInt64
    public var value: UInt64
    public var tail: [UInt8]

    public init(head: [UInt8], field: UInt64, value: UInt64, tail: [UInt8]) {
        self.head = head
        self.field = field
        self.value = value
        self.tail = tail
    }

    /// The message in one array.
    public var bytes: [UInt8] {
        var out = ByteQueue()
        out.reserveIfEmpty(count)
        out.append(head)
        if field != 0 && value != 0 {
            out.appendVarint(field << 3)
            out.appendVarint(value)
        }
        out.append(tail)
        return out.take(out.count)
    }

    /// The gRPC frames' length of the message once per value of its
    /// varint field.
    func framedBytes(withEachValue values: [UInt64]) -> Int {
        var one = self, total = 0
        for value in values {
            one.value = value
            total += GRPCFrame.headerSize + one.count
        }
        return total
    }

    /// The message's length.
    public var count: Int {
        head.count + tail.count + (field == 0 || value == 0 ? 0 : Self.varintSize(field << 3) + Self.varintSize(value))
    }

    static func varintSize(_ v: UInt64) -> Int { v == 0 ? 1 : (64 - v.leadingZeroBitCount + 6) / 7 }
}

/// A response message with room in front for gRPC's 5-byte prefix, so it
/// is serialized once into the array that goes out.
public struct GRPCMessageBuffer {
    var storage: [UInt8]

    /// Zeroed room for a message of `count` bytes.
    public init(count: Int) {
        storage = [UInt8](repeating: 0, count: GRPCFrame.headerSize + count)
    }

    /// A copy of `message`.
    public init(copying message: some Sequence<UInt8>) {
        storage = [0, 0, 0, 0, 0]
        storage.append(contentsOf: message)
    }

    /// The message's length.
    public var count: Int { storage.count - GRPCFrame.headerSize }

    /// The message, without the prefix.
    public var message: [UInt8] { Array(storage[GRPCFrame.headerSize...]) }

    public func withUnsafeMessageBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[GRPCFrame.headerSize...])) }
    }

    public mutating func withUnsafeMutableMessageBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeMutableBytes {
            try body(UnsafeMutableRawBufferPointer(rebasing: $0[GRPCFrame.headerSize...]))
        }
    }
}
