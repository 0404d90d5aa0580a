/// Values keyed by small dense integers (watcher IDs, which the server
/// reuses), in one array of slots: a slot per ID, instead of a hash table's
/// buckets at a load between 0.375 and 0.75 plus the table it outgrew.
/// Reads and writes go through in place, without copying the value.
/// Inlinable, so a slab used from another module (the server's served
/// watches) is specialized there: unspecialized, every access looked up
/// generic metadata and allocated its coroutine frame.
@frozen
public struct Slab<Value> {
    @usableFromInline var slots: [Value?] = []
    @usableFromInline var _count = 0

    @inlinable public init() {}

    @inlinable public var count: Int { _count }
    @inlinable public var isEmpty: Bool { _count == 0 }

    @inlinable
    public subscript(id: Int) -> Value? {
        _read {
            if id >= 0 && id < slots.count { yield slots[id] } else { yield nil }
        }
        _modify {
            precondition(id >= 0, "a negative slab index")
            if id >= slots.count {
                // Grow by half, not double: IDs are reused, so the slab
                // grows only with the number held at once.
                slots.reserveCapacity(max(id + 1, slots.count + slots.count / 2))
                slots.append(contentsOf: repeatElement(nil, count: id + 1 - slots.count))
            }
            let had = slots[id] != nil
            yield &slots[id]
            _count += (slots[id] != nil ? 1 : 0) - (had ? 1 : 0)
        }
    }

    /// Removes and returns the value at `id`.
    @inlinable @discardableResult
    public mutating func removeValue(forKey id: Int) -> Value? {
        guard id >= 0 && id < slots.count, let v = slots[id] else { return nil }
        slots[id] = nil
        _count -= 1
        return v
    }

    /// Every ID that holds a value, in order.
    @inlinable public var ids: [Int] { slots.indices.filter { slots[$0] != nil } }
}
