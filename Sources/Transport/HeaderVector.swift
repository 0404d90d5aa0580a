import CNghttp2

/// Calls `body` with `headers` as nghttp2's name-value array. Every name and
/// value lives in one buffer for the duration of the call; nghttp2 copies
/// them during submit calls.
func withHeaderVector<R>(_ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    var flat: [UInt8] = []
    var spans: [(name: Int, nameCount: Int, value: Int, valueCount: Int)] = []
    for (n, v) in headers {
        let nameStart = flat.count
        flat.append(contentsOf: n.utf8)
        let valueStart = flat.count
        flat.append(contentsOf: v.utf8)
        spans.append((nameStart, n.utf8.count, valueStart, v.utf8.count))
    }
    return flat.withUnsafeMutableBufferPointer { buffer in
        let base = buffer.baseAddress!
        let nva = spans.map {
            nghttp2_nv(name: base + $0.name, value: base + $0.value, namelen: $0.nameCount,
                       valuelen: $0.valueCount, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}

/// A header list that never changes (a gRPC response's headers, an OK
/// trailer), laid out as nghttp2's name-value array once, so sending it
/// builds nothing. nghttp2 still copies it during submit calls.
final class StaticHeaderVector: @unchecked Sendable {
    // @unchecked: immutable after init; the buffers live as long as this.
    private let bytes: UnsafeMutableBufferPointer<UInt8>
    private let nva: UnsafeMutableBufferPointer<nghttp2_nv>

    init(_ headers: [(String, String)]) {
        let total = headers.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count }
        bytes = .allocate(capacity: max(total, 1))
        nva = .allocate(capacity: headers.count)
        var at = 0
        for (i, (name, value)) in headers.enumerated() {
            let n = bytes.baseAddress! + at
            at = bytes[at...].initialize(fromContentsOf: name.utf8)
            let v = bytes.baseAddress! + at
            at = bytes[at...].initialize(fromContentsOf: value.utf8)
            nva[i] = nghttp2_nv(name: n, value: v, namelen: name.utf8.count, valuelen: value.utf8.count,
                                flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
    }

    deinit {
        bytes.deallocate()
        nva.deallocate()
    }

    func withVector<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        body(UnsafePointer(nva.baseAddress!), nva.count)
    }

    static let grpcResponse = StaticHeaderVector([(":status", "200"), ("content-type", "application/grpc")])
    static let grpcOK = StaticHeaderVector([("grpc-status", "0")])
}
