import SwiftProtobuf
import Transport

/// Lets swift-protobuf serialize a response straight into the buffer the
/// transport sends, behind room for gRPC's prefix: one allocation, no copy.
extension GRPCMessageBuffer: SwiftProtobufContiguousBytes {
    public init(repeating: UInt8, count: Int) {
        self.init(count: count)
        if repeating != 0 { withUnsafeMutableMessageBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: repeating) } }
    }

    public init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        self.init(copying: sequence)
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeMessageBytes(body)
    }

    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeMutableMessageBytes(body)
    }
}
