/// The controller's view of the pods: a cache of key → value at a
/// revision, fed by a list and then by watch events in revision order.
/// Pure state; the watcher does the I/O.
struct PodCache {
    private(set) var pods: [String: String] = [:]
    /// Every change up to this revision is in the cache.
    private(set) var revision: Int64 = 0

    enum Change: Equatable {
        case put(key: String, value: String)
        case delete(key: String)
    }

    /// Replaces everything with a list taken at `revision`.
    mutating func relist(_ items: [(key: String, value: String)], at revision: Int64) {
        pods = Dictionary(items, uniquingKeysWith: { $1 })
        self.revision = revision
    }

    /// Applies the changes of one revision; false (and nothing applied)
    /// when that revision is not after the cache's: a duplicate.
    mutating func apply(_ changes: [Change], at revision: Int64) -> Bool {
        guard revision > self.revision else { return false }
        for c in changes {
            switch c {
            case .put(let key, let value): pods[key] = value
            case .delete(let key): pods[key] = nil
            }
        }
        self.revision = revision
        return true
    }
}
