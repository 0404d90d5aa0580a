/// Who waits on which keys: the Lock and Election calls that wait on the
/// server for a change (a lock waiter on the key just before its own and
/// on its own; an Observe call on its election's whole prefix). Pure
/// bookkeeping: the server asks it which waiters an applied change
/// concerns, and hands them the change.
struct KeyWaits {
    typealias ID = Int

    /// Waiters on exact keys, in the order they began waiting.
    private var byKey: [[UInt8]: [ID]] = [:]
    /// The keys each exact-key waiter waits on.
    private var keysOf: [ID: [[UInt8]]] = [:]
    /// Waiters on every key under a prefix (few: one per Observe call).
    private var byPrefix: [(prefix: [UInt8], id: ID)] = []
    private var nextID: ID = 0

    var isEmpty: Bool { keysOf.isEmpty && byPrefix.isEmpty }
    var count: Int { keysOf.count + byPrefix.count }

    /// A new waiter's ID (waiting on nothing yet).
    mutating func newID() -> ID {
        defer { nextID += 1 }
        return nextID
    }

    /// `id` waits on exactly these keys from now on (none: on nothing).
    mutating func wait(_ id: ID, onKeys keys: [[UInt8]]) {
        removeKeys(of: id)
        guard !keys.isEmpty else { return }
        keysOf[id] = keys
        for key in keys { byKey[key, default: []].append(id) }
    }

    /// `id` waits on every key that starts with `prefix`.
    mutating func wait(_ id: ID, onPrefix prefix: [UInt8]) {
        byPrefix.removeAll { $0.id == id }
        byPrefix.append((prefix, id))
    }

    /// `id` waits on nothing any more.
    mutating func remove(_ id: ID) {
        removeKeys(of: id)
        byPrefix.removeAll { $0.id == id }
    }

    /// The waiters a change of `key` concerns: those on the key, then
    /// those on a prefix of it, each in the order it began waiting.
    func waiters(of key: [UInt8]) -> [ID] {
        var ids = byKey[key] ?? []
        for p in byPrefix where key.starts(with: p.prefix) { ids.append(p.id) }
        return ids
    }

    private mutating func removeKeys(of id: ID) {
        guard let keys = keysOf.removeValue(forKey: id) else { return }
        for key in keys {
            byKey[key]?.removeAll { $0 == id }
            if byKey[key]?.isEmpty == true { byKey[key] = nil }
        }
    }
}
