#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Lexicographic comparison of byte strings, the order etcd keys sort in.
@inline(__always)
func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = min(a.count, b.count)
    if n > 0, let pa = a.baseAddress, let pb = b.baseAddress {
        let c = memcmp(pa, pb, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}

@inline(__always)
func compareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
    a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in compareBytes(pa, pb) } }
}

/// The smallest key greater than every key that starts with `prefix`, as
/// etcd's `GetPrefixRangeEnd`: the last byte below 0xff incremented and the
/// rest dropped; `[0]` (every key) when the prefix is all 0xff or empty.
public func prefixRangeEnd(_ prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xff {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0]
}

/// `v` as 8 big-endian bytes, the byte order of every integer this
/// project stores in the backend.
public func bigEndianBytes(_ v: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) }
}

/// The big-endian integer in 8 bytes (nil for any other length).
public func bigEndianUInt64<C: Collection>(_ b: C) -> UInt64? where C.Element == UInt8 {
    guard b.count == 8 else { return nil }
    return b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
}
