/// The keys a request names, with etcd's reading of `range_end`:
/// empty means the single key; `"\0"` means every key >= key; otherwise the
/// half-open interval [key, range_end) (empty when range_end <= key).
public enum KeyRange: Hashable, Sendable {
    case single([UInt8])
    /// Keys >= start and < end; `end == nil` is unbounded.
    case from([UInt8], to: [UInt8]?)

    public init(key: [UInt8], rangeEnd: [UInt8]) {
        if rangeEnd.isEmpty {
            self = .single(key)
        } else if rangeEnd == [0] {
            self = .from(key, to: nil)
        } else {
            self = .from(key, to: rangeEnd)
        }
    }

    public func contains(_ k: [UInt8]) -> Bool {
        switch self {
        case .single(let key): return k == key
        case .from(let start, let end):
            return compareBytes(k, start) >= 0 && (end.map { compareBytes(k, $0) < 0 } ?? true)
        }
    }

    /// True when the two ranges share at least one key.
    public func overlaps(_ other: KeyRange) -> Bool {
        switch (self, other) {
        case (.single(let a), _): return other.contains(a)
        case (_, .single(let b)): return contains(b)
        case (.from(let s1, let e1), .from(let s2, let e2)):
            // [s1, e1) and [s2, e2) meet iff s1 < e2 and s2 < e1 (nil = +inf),
            // and neither is empty.
            let firstEndsAfterSecondStarts = e1.map { compareBytes(s2, $0) < 0 } ?? true
            let secondEndsAfterFirstStarts = e2.map { compareBytes(s1, $0) < 0 } ?? true
            let firstNonEmpty = e1.map { compareBytes(s1, $0) < 0 } ?? true
            let secondNonEmpty = e2.map { compareBytes(s2, $0) < 0 } ?? true
            return firstEndsAfterSecondStarts && secondEndsAfterFirstStarts && firstNonEmpty && secondNonEmpty
        }
    }
}
