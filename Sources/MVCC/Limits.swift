/// Every bound the store enforces or works in, in one place.
public struct Limits: Sendable {
    /// Most operations in one txn's compare, success or failure list (etcd's
    /// `--max-txn-ops`).
    public var maxTxnOps = 128
    /// Writes after which the store commits its backend batch by itself
    /// (etcd's backend batch limit). The server also commits on a timer.
    public var backendBatchLimit = 10_000
    /// Revisions a compaction step deletes from the backend before it yields.
    public var compactionBatchLimit = 1_000

    public init() {}
}
