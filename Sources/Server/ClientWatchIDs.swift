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
            let inDense = clientID >= 0 && clientID < Int64(dense.count) && dense[Int(clientID)] >= 0
            let inSparse = !inDense && !sparse.isEmpty && sparse[clientID] != nil
            count += (newValue != nil ? 1 : 0) - (inDense || inSparse ? 1 : 0)
            if count == 0 {
                dense = []
                sparse = [:]
            } else if inDense {
                dense[Int(clientID)] = newValue.map { Int32($0) } ?? -1
            } else if inSparse {
                sparse[clientID] = newValue
            } else if let id = newValue {
                // Dense while IDs stay near the count, so a few stray high
                // IDs cannot make the array large.
                if clientID >= 0 && clientID < Int64(max(dense.count, 2 * count + 64)) {
                    let i = Int(clientID)
                    if i >= dense.count { dense.append(contentsOf: repeatElement(-1, count: i + 1 - dense.count)) }
                    dense[i] = Int32(id)
                } else {
                    sparse[clientID] = id
                }
            }
        }
    }

    /// Every watcher's hub ID.
    var hubIDs: [WatchHub.ID] {
        dense.compactMap { $0 < 0 ? nil : WatchHub.ID($0) } + sparse.values
    }
}
