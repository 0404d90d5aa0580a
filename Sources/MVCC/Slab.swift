/// Values keyed by small dense integers (watcher IDs, which the server
/// reuses), in one array of slots: a slot per ID, instead of a hash table's
/// buckets at a load between 0.375 and 0.75 plus the table it outgrew.
/// Reads and writes go through in place, without copying the value.
public struct Slab<Value> {
    private var slots: [Value?] = []
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

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
            count += (slots[id] != nil ? 1 : 0) - (had ? 1 : 0)
        }
    }

    /// Removes and returns the value at `id`.
    @discardableResult
    public mutating func removeValue(forKey id: Int) -> Value? {
        guard id >= 0 && id < slots.count, let v = slots[id] else { return nil }
        slots[id] = nil
        count -= 1
        return v
    }

    /// Every ID that holds a value, in order.
    public var ids: [Int] { slots.indices.filter { slots[$0] != nil } }
}
