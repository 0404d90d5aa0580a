/// What clients saw of a cluster during a round, checked against what the
/// cluster committed. etcd's revisions order every write, so checking
/// linearizability needs no search: each committed write has a revision,
/// and each read names the revision it saw (its header's).
///
/// - Every acknowledged write was committed, at the revision it was told,
///   with its value (nothing acknowledged is lost).
/// - A write that ended before another began has the smaller revision.
/// - Every read returned its key as it stood at the read's revision.
/// - A linearizable read's revision covers every write acknowledged before
///   the read began, and no write that began after it ended.
/// - One client's reads never go back in revision (serializable ones
///   included: a member never serves an older state than it served).
struct ClusterHistory {
    struct Write {
        var client: Int
        var key: String
        /// Unique in the history.
        var value: String
        var start: Double
        var end: Double
        /// nil: the outcome is unknown (an error or timeout; it may still
        /// have been committed).
        var revision: Int64?
    }

    struct Read {
        var client: Int
        var linearizable: Bool
        var key: String
        var start: Double
        var end: Double
        /// The response header's revision.
        var revision: Int64
        /// nil: the key was absent.
        var value: String?
        var modRevision: Int64
    }

    /// A committed write, as the cluster's history shows it.
    struct Committed: Equatable {
        var revision: Int64
        var key: String
        var value: String
    }

    var writes: [Write] = []
    var reads: [Read] = []

    /// The violations found (empty: the history is linearizable).
    /// - Parameters:
    ///   - committed: every write after `base`, in revision order.
    ///   - base: the revision before the round; `baseState` the keys then.
    func violations(committed: [Committed], base: Int64, baseState: [String: (value: String, modRevision: Int64)]) -> [String] {
        var out: [String] = []
        var revisionOf: [String: Int64] = [:]
        for (i, c) in committed.enumerated() {
            if c.revision != base + 1 + Int64(i) { out.append("the history skips from \(i == 0 ? base : committed[i - 1].revision) to \(c.revision)") }
            if revisionOf[c.value] != nil { out.append("value \(c.value) committed twice") }
            revisionOf[c.value] = c.revision
        }
        let last = committed.last?.revision ?? base

        // Writes: acknowledged ones committed as told; real-time order.
        var placed: [(write: Write, revision: Int64)] = []
        for w in writes {
            let committedAt = revisionOf[w.value]
            if let told = w.revision {
                if committedAt != told {
                    out.append("write \(w.key)=\(w.value) acknowledged at revision \(told) but committed at \(committedAt.map { "\($0)" } ?? "none")")
                }
            }
            if let r = committedAt {
                if let c = committed.first(where: { $0.revision == r }), c.key != w.key {
                    out.append("write \(w.value) was to \(w.key) but committed to \(c.key)")
                }
                placed.append((w, r))
            }
        }
        for a in placed where a.write.revision != nil {
            for b in placed where a.write.end < b.write.start && a.revision >= b.revision {
                out.append("write \(a.write.value) (revision \(a.revision)) ended before \(b.write.value) began, which has revision \(b.revision)")
            }
        }

        // Reads.
        func state(_ key: String, at revision: Int64) -> (value: String, modRevision: Int64)? {
            var s = baseState[key]
            for c in committed {
                if c.revision > revision { break }
                if c.key == key { s = (c.value, c.revision) }
            }
            return s
        }
        var lastRevisionOfClient: [Int: Int64] = [:]
        for r in reads.sorted(by: { $0.start < $1.start }) {
            let what = "\(r.linearizable ? "linearizable" : "serializable") read of \(r.key) by client \(r.client) at revision \(r.revision)"
            if r.revision > last { out.append("\(what): beyond the last committed revision \(last)") }
            if r.revision >= base {
                let expected = state(r.key, at: r.revision)
                if expected?.value != r.value || (expected?.modRevision ?? 0) != (r.value == nil ? 0 : r.modRevision) {
                    out.append("\(what) returned \(r.value ?? "nothing")@\(r.modRevision), but the key held \(expected.map { "\($0.value)@\($0.modRevision)" } ?? "nothing") then")
                }
            }
            if let previous = lastRevisionOfClient[r.client], r.revision < previous {
                out.append("\(what): went back from revision \(previous)")
            }
            lastRevisionOfClient[r.client] = max(r.revision, lastRevisionOfClient[r.client] ?? 0)
            guard r.linearizable else { continue }
            for p in placed {
                if p.write.revision != nil && p.write.end < r.start && p.revision > r.revision {
                    out.append("\(what) began after write \(p.write.value) (revision \(p.revision)) was acknowledged, and missed it")
                }
                if p.write.start > r.end && p.revision <= r.revision {
                    out.append("\(what) ended before write \(p.write.value) (revision \(p.revision)) began, and saw it")
                }
            }
        }
        return out
    }
}
