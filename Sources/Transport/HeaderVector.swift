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
