/// A change to one key, as watchers receive it (etcd's `mvccpb.Event`).
public struct WatchEvent: Equatable, Sendable {
    public enum Kind: Int, Sendable { case put = 0, delete = 1 }
    public var kind: Kind
    /// The key's new version; for a delete only `key` and `modRevision`.
    public var kv: KeyValue
    /// The version before the change, when asked for and still retained.
    public var prevKV: KeyValue?

    public init(kind: Kind, kv: KeyValue, prevKV: KeyValue? = nil) {
        self.kind = kind
        self.kv = kv
        self.prevKV = prevKV
    }

    public var revision: Int64 { kv.modRevision }

    /// A put that created the key (etcd never attaches a prev_kv to one).
    public var isCreate: Bool { kind == .put && kv.createRevision == kv.modRevision }
}
