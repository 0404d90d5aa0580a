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

/// Finds the method for a request path such as `/etcdserverpb.KV/Range`.
public protocol GRPCRouter: AnyObject {
    /// The method, or the status to refuse the call with (UNIMPLEMENTED).
    func method(for path: String) -> Result<GRPCMethod, GRPCStatus>
}

/// gRPC's length-prefixed messages: a compressed flag, a 4-byte big-endian
/// length, the message.
enum GRPCFrame {
    static let headerSize = 5

    static func encode(_ message: [UInt8], into out: inout ByteQueue) {
        out.appendFrameHeader(UInt32(message.count))
        out.append(message)
    }

    enum Parsed {
        case message([UInt8])
        case needMore
        case compressed
        case tooLarge(Int)
    }

    /// Takes the next complete message off the front of `buffer`.
    static func next(from buffer: inout ByteQueue, maxMessageBytes: Int) -> Parsed {
        guard buffer.count >= headerSize else { return .needMore }
        let h = buffer.peek(headerSize)
        let length = Int(h[1]) << 24 | Int(h[2]) << 16 | Int(h[3]) << 8 | Int(h[4])
        if length > maxMessageBytes { return .tooLarge(length) }
        if h[0] != 0 { return .compressed }
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

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ bytes: [UInt8]) { storage.append(contentsOf: bytes) }

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

    func peek(_ n: Int) -> [UInt8] { Array(storage[head..<head + n]) }

    mutating func drop(_ n: Int) {
        head += n
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= 1 << 20)
            head = 0
        } else if head > 1 << 16 && head > storage.count / 2 {
            storage.removeSubrange(0..<head)
            head = 0
        }
    }

    mutating func take(_ n: Int) -> [UInt8] {
        let out = Array(storage[head..<head + n])
        drop(n)
        return out
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
