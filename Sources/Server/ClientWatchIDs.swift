import MVCC

/// One watch stream's watchers by the ID its client knows them by. Clients
/// almost always let the server number them 0, 1, 2, ... (etcd's clients,
/// Kubernetes' included, send watch_id 0): those sit in an array indexed by
/// ID, 4 bytes a watcher instead of a hash table's 16 at a load under 0.75.
/// An ID the client chose far from the others goes in a small dictionary.
struct ClientWatchIDs {
    /// Hub IDs by client ID for IDs below `dense.count`; -1: none.
    private var dense: [Int32] = []
    private var sparse: [Int64: WatchHub.ID] = [:]
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    subscript(clientID: Int64) -> WatchHub.ID? {
        get {
            if clientID >= 0 && clientID < Int64(dense.count), dense[Int(clientID)] >= 0 {
                return WatchHub.ID(dense[Int(clientID)])
            }
            return sparse.isEmpty ? nil : sparse[clientID]
        }
        set {
            let had = self[clientID] != nil
            count += (newValue != nil ? 1 : 0) - (had ? 1 : 0)
            if count == 0 {
                dense = []
                sparse = [:]
                return
            }
            guard let id = newValue else {
                if clientID >= 0 && clientID < Int64(dense.count) { dense[Int(clientID)] = -1 }
                if !sparse.isEmpty { sparse[clientID] = nil }
                return
            }
            // Dense while IDs stay near the count, so a few stray high IDs
            // cannot make the array large. (An ID kept in `sparse` stays
            // there: the getter looks in both.)
            if clientID >= 0 && !had && (clientID < Int64(dense.count) || clientID < Int64(2 * count + 64)) {
                let i = Int(clientID)
                if i >= dense.count { dense.append(contentsOf: repeatElement(-1, count: i + 1 - dense.count)) }
                dense[i] = Int32(id)
            } else if had && clientID >= 0 && clientID < Int64(dense.count) && dense[Int(clientID)] >= 0 {
                dense[Int(clientID)] = Int32(id)
            } else {
                sparse[clientID] = id
            }
        }
    }

    /// Every watcher's hub ID.
    var hubIDs: [WatchHub.ID] {
        dense.compactMap { $0 < 0 ? nil : WatchHub.ID($0) } + sparse.values
    }
}
