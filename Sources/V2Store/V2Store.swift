/// etcd's v2 keys store as a state machine with no I/O: a tree of
/// directories and values, an index raised by each change, expiry times on
/// a clock the caller keeps (milliseconds), and the last 1,000 changes kept
/// for watchers that ask from an index. Separate from the v3 keyspace, as
/// in etcd. Errors carry etcd's v2 codes and messages.
///
/// Every path a change touched is remembered (`takeTouched`) so the caller
/// can write just those nodes to its storage; `init(restoring:index:)`
/// rebuilds the store from them.
public struct V2Store: Sendable {
    public struct Node: Equatable, Sendable {
        public var key: String
        public var value: String?
        public var isDir: Bool
        public var createdIndex: UInt64
        public var modifiedIndex: UInt64
        /// When it expires (milliseconds, the caller's clock), if ever.
        public var expiresAt: UInt64?
        /// Children's names (directories).
        var children: Set<String> = []
    }

    /// What a change (or a read) did, as the v2 API reports it.
    public struct Event: Equatable, Sendable {
        public var action: String
        public var node: Node
        public var prevNode: Node?
        /// The store's index after it.
        public var index: UInt64
    }

    public private(set) var index: UInt64 = 0
    private var nodes: [String: Node] = ["/": Node(key: "/", value: nil, isDir: true, createdIndex: 0, modifiedIndex: 0)]
    /// Changes, oldest first, at most `historyLimit`.
    public private(set) var history: [Event] = []
    public static let historyLimit = 1000
    /// The oldest index a watcher may still ask for: the first change in
    /// `history`, or (restored, with no history yet) the next index.
    private var historyStart: UInt64 = 1
    /// Paths with an expiry time (so expiry need not scan every node).
    private var expiring = Set<String>()
    /// Paths changed (set or removed) since `takeTouched`.
    private var touched = Set<String>()

    public init() {}

    /// The store as its nodes were stored (any order; the root need not be
    /// among them) at `index`. The change history is not kept across a
    /// restore: a watcher asking for an index at or below `index` hears
    /// that it was cleared (etcd's 401), as after 1,000 later changes.
    public init(restoring stored: [Node], index: UInt64) {
        self.index = index
        historyStart = index + 1
        for var n in stored where n.key != "/" {
            n.children = []
            nodes[n.key] = n
            if n.expiresAt != nil { expiring.insert(n.key) }
        }
        for key in nodes.keys where key != "/" {
            nodes[Self.parent(key)]?.children.insert(Self.name(key))
        }
    }

    /// Every node but the root, for storing the whole store.
    public var allNodes: [Node] { nodes.values.filter { $0.key != "/" } }

    /// The paths changed since the last call, each with its node now (nil:
    /// removed), and forgets them.
    public mutating func takeTouched() -> [(path: String, node: Node?)] {
        defer { touched.removeAll(keepingCapacity: true) }
        return touched.sorted().map { ($0, nodes[$0]) }
    }

    /// The earliest expiry time of any node, if one expires.
    public var nextExpiry: UInt64? { expiring.compactMap { nodes[$0]?.expiresAt }.min() }

    /// Writes `n` at its key, keeping the expiry set and touched paths.
    private mutating func store(_ n: Node) {
        nodes[n.key] = n
        touched.insert(n.key)
        if n.expiresAt != nil { expiring.insert(n.key) } else { expiring.remove(n.key) }
    }

    // MARK: Paths

    /// etcd's path.Clean(path.Join("/", p)).
    public static func clean(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), path != "/" else { return "/" }
        let p = String(path[..<slash])
        return p.isEmpty ? "/" : p
    }

    static func name(_ path: String) -> String { String(path[path.index(after: path.lastIndex(of: "/")!)...]) }

    // MARK: Reads

    /// The node at `path` (with its children when a directory).
    public func get(_ path: String) throws(V2Error) -> Node {
        let p = Self.clean(path)
        guard let n = nodes[p] else { throw V2Error(.keyNotFound, p, index) }
        return n
    }

    /// The children of a directory, sorted by key when `sorted`.
    public func children(of path: String, sorted: Bool) -> [Node] {
        let p = Self.clean(path)
        guard let n = nodes[p], n.isDir else { return [] }
        // Names starting with "_" are hidden from listings (etcd's rule).
        let kids = n.children.filter { !$0.hasPrefix("_") }.compactMap { nodes[p == "/" ? "/" + $0 : p + "/" + $0] }
        return sorted ? kids.sorted { $0.key < $1.key } : kids.sorted { $0.createdIndex < $1.createdIndex }
    }

    // MARK: Changes

    public enum SetCondition: Sendable {
        /// PUT: create or replace a value.
        case none
        /// prevExist=false: only if absent.
        case mustNotExist
        /// prevExist=true: only if present.
        case mustExist
        /// prevValue / prevIndex: only if the value (and index) match.
        case compare(value: String?, index: UInt64?)
    }

    /// PUT /v2/keys/path: set a value (or make a directory), as the
    /// condition allows, expiring at `expiresAt` (milliseconds) if given.
    /// `notify: false` (a refresh) keeps the change from watchers.
    public mutating func set(_ path: String, value: String?, dir: Bool, expiresAt: UInt64?,
                             condition: SetCondition, notify: Bool = true) throws(V2Error) -> Event {
        let p = Self.clean(path)
        if p == "/" { throw V2Error(.rootReadOnly, "/", index) }
        let existing = nodes[p]
        switch condition {
        case .mustNotExist:
            if existing != nil { throw V2Error(.nodeExist, p, index) }
            return try create(p, value: value, dir: dir, expiresAt: expiresAt, action: "create")
        case .mustExist:
            guard var n = existing else { throw V2Error(.keyNotFound, p, index) }
            if n.isDir && value != nil && !(value ?? "").isEmpty { throw V2Error(.notFile, p, index) }
            let previous = n
            index += 1
            if !n.isDir { n.value = value ?? "" }
            n.modifiedIndex = index
            n.expiresAt = expiresAt
            store(n)
            return record(Event(action: "update", node: n, prevNode: previous, index: index), notify: notify)
        case .compare(let prevValue, let prevIndex):
            guard var n = existing else { throw V2Error(.keyNotFound, p, index) }
            if n.isDir { throw V2Error(.notFile, p, index) }
            if let cause = Self.compareFailure(n, prevValue, prevIndex) { throw V2Error(.testFailed, cause, index) }
            let previous = n
            index += 1
            n.value = value ?? ""
            n.modifiedIndex = index
            n.expiresAt = expiresAt
            store(n)
            return record(Event(action: "compareAndSwap", node: n, prevNode: previous, index: index), notify: notify)
        case .none:
            if let n = existing {
                // A value is replaced by a new node (a value, or a directory).
                if n.isDir { throw V2Error(.notFile, p, index) }
                index += 1
                let replaced = Node(key: p, value: dir ? nil : (value ?? ""), isDir: dir, createdIndex: index,
                                    modifiedIndex: index, expiresAt: expiresAt)
                store(replaced)
                return record(Event(action: "set", node: replaced, prevNode: n, index: index), notify: notify)
            }
            return try create(p, value: value, dir: dir, expiresAt: expiresAt, action: "set")
        }
    }

    /// POST /v2/keys/dir: a new value under `dir` named by the new index
    /// (zero-padded, so keys sort in creation order).
    public mutating func createInOrder(_ dir: String, value: String?, dir isDir: Bool = false,
                                       expiresAt: UInt64?) throws(V2Error) -> Event {
        let d = Self.clean(dir)
        if let n = nodes[d], !n.isDir { throw V2Error(.notDir, d, index) }
        let name = String(repeating: "0", count: max(0, 20 - String(index + 1).count)) + String(index + 1)
        let p = d == "/" ? "/" + name : d + "/" + name
        return try create(p, value: value, dir: isDir, expiresAt: expiresAt, action: "create")
    }

    private mutating func create(_ p: String, value: String?, dir: Bool, expiresAt: UInt64?, action: String) throws(V2Error) -> Event {
        // Every ancestor must be a directory (made if missing).
        var ancestors: [String] = []
        var a = Self.parent(p)
        while a != "/" {
            ancestors.append(a)
            a = Self.parent(a)
        }
        for dirPath in ancestors where nodes[dirPath].map({ !$0.isDir }) ?? false {
            throw V2Error(.notDir, dirPath, index)
        }
        index += 1
        for dirPath in ancestors.reversed() where nodes[dirPath] == nil {
            store(Node(key: dirPath, value: nil, isDir: true, createdIndex: index, modifiedIndex: index))
            nodes[Self.parent(dirPath)]!.children.insert(Self.name(dirPath))
        }
        let n = Node(key: p, value: dir ? nil : (value ?? ""), isDir: dir, createdIndex: index, modifiedIndex: index,
                     expiresAt: expiresAt)
        store(n)
        nodes[Self.parent(p)]!.children.insert(Self.name(p))
        return record(Event(action: action, node: n, prevNode: nil, index: index))
    }

    /// DELETE /v2/keys/path (dir=true for an empty directory, recursive
    /// for a tree; prevValue / prevIndex to compare first).
    public mutating func delete(_ path: String, dir: Bool, recursive: Bool, prevValue: String?, prevIndex: UInt64?) throws(V2Error) -> Event {
        let p = Self.clean(path)
        if p == "/" { throw V2Error(.rootReadOnly, "/", index) }
        guard let n = nodes[p] else { throw V2Error(.keyNotFound, p, index) }
        let compared = prevValue != nil || prevIndex != nil
        if compared {
            if n.isDir { throw V2Error(.notFile, p, index) }
            if let cause = Self.compareFailure(n, prevValue, prevIndex) { throw V2Error(.testFailed, cause, index) }
        }
        if n.isDir {
            if !dir && !recursive { throw V2Error(.notFile, p, index) }
            if !n.children.isEmpty && !recursive { throw V2Error(.dirNotEmpty, p, index) }
        }
        return remove(n, action: compared ? "compareAndDelete" : "delete")
    }

    /// Removes a node (and what is under it) as one change.
    private mutating func remove(_ n: Node, action: String) -> Event {
        index += 1
        removeTree(n.key)
        nodes[Self.parent(n.key)]?.children.remove(Self.name(n.key))
        var gone = n
        gone.value = nil
        gone.modifiedIndex = index
        gone.children = []
        return record(Event(action: action, node: gone, prevNode: n, index: index))
    }

    private mutating func removeTree(_ p: String) {
        guard let n = nodes.removeValue(forKey: p) else { return }
        touched.insert(p)
        expiring.remove(p)
        for c in n.children { removeTree(p == "/" ? "/" + c : p + "/" + c) }
    }

    /// Removes what expired by `now`: an "expire" event each.
    public mutating func expire(now: UInt64) -> [Event] {
        let due = expiring.filter { (nodes[$0]?.expiresAt ?? .max) <= now }.sorted()
        var events: [Event] = []
        for p in due {
            guard let n = nodes[p] else { continue }  // went with an expired parent
            events.append(remove(n, action: "expire"))
        }
        return events
    }

    // MARK: Watching

    /// The first recorded change at or after `sinceIndex` that a watcher of
    /// `path` (and, when `recursive`, below it) sees; nil when there is
    /// none yet (wait for `matches`). etcd's 401 when `sinceIndex` is older
    /// than the history kept.
    public func firstChange(_ path: String, recursive: Bool, sinceIndex: UInt64) throws(V2Error) -> Event? {
        let p = Self.clean(path)
        if sinceIndex > 0 && sinceIndex < historyStart {
            throw V2Error(.eventIndexCleared, "the requested history has been cleared [\(historyStart)/\(sinceIndex)]", index)
        }
        return history.first { $0.index >= sinceIndex && Self.matches($0, p, recursive: recursive) }
    }

    /// Whether a watcher of `path` sees `event`: its key, or below it when
    /// recursive, or a deleted or expired directory above it.
    public static func matches(_ event: Event, _ path: String, recursive: Bool) -> Bool {
        let key = event.node.key
        if key == path { return true }
        if recursive && (path == "/" || key.hasPrefix(path + "/")) { return true }
        let removal = event.action == "delete" || event.action == "expire" || event.action == "compareAndDelete"
        return removal && (key == "/" || path.hasPrefix(key + "/"))
    }

    private mutating func record(_ e: Event, notify: Bool = true) -> Event {
        guard notify else { return e }
        history.append(e)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        historyStart = history[0].index
        return e
    }

    /// etcd's compare failure cause: "[prevValue != value] [prevIndex != idx]".
    static func compareFailure(_ n: Node, _ prevValue: String?, _ prevIndex: UInt64?) -> String? {
        let valueOK = prevValue.map { $0 == n.value } ?? true
        let indexOK = prevIndex.map { $0 == n.modifiedIndex } ?? true
        if valueOK && indexOK { return nil }
        var parts: [String] = []
        if !valueOK { parts.append("[\(prevValue!) != \(n.value ?? "")]") }
        if !indexOK { parts.append("[\(prevIndex!) != \(n.modifiedIndex)]") }
        return parts.joined(separator: " ")
    }
}

/// etcd's v2 errors: a code, its message, the cause, and the index then.
public struct V2Error: Error, Equatable, Sendable {
    public enum Code: Int, Sendable {
        case keyNotFound = 100, testFailed = 101, notFile = 102, notDir = 104, nodeExist = 105
        case rootReadOnly = 107, dirNotEmpty = 108, unauthorized = 110
        case valueRequired = 200, prevValueRequired = 201, ttlNaN = 202, indexNaN = 203, invalidField = 209
        case invalidForm = 210, refreshValue = 211, refreshTTLRequired = 212
        case raftInternal = 300
        case eventIndexCleared = 401
    }

    public var code: Code
    public var cause: String
    public var index: UInt64

    public init(_ code: Code, _ cause: String, _ index: UInt64) {
        self.code = code
        self.cause = cause
        self.index = index
    }

    /// The HTTP status etcd answers it with.
    public var httpStatus: Int {
        switch code {
        case .keyNotFound: return 404
        case .notFile, .dirNotEmpty: return 403
        case .unauthorized: return 401
        case .testFailed, .nodeExist: return 412
        case .raftInternal: return 500
        default: return 400
        }
    }

    public var message: String {
        switch code {
        case .keyNotFound: return "Key not found"
        case .testFailed: return "Compare failed"
        case .notFile: return "Not a file"
        case .notDir: return "Not a directory"
        case .nodeExist: return "Key already exists"
        case .rootReadOnly: return "Root is read only"
        case .dirNotEmpty: return "Directory not empty"
        case .unauthorized: return "The request requires user authentication"
        case .valueRequired: return "Value is Required in POST form"
        case .prevValueRequired: return "PrevValue is Required in POST form"
        case .ttlNaN: return "The given TTL in POST form is not a number"
        case .indexNaN: return "The given index in POST form is not a number"
        case .invalidField: return "Invalid field"
        case .invalidForm: return "Invalid POST form"
        case .refreshValue: return "Value provided on refresh"
        case .refreshTTLRequired: return "A TTL must be provided on refresh"
        case .raftInternal: return "Raft Internal Error"
        case .eventIndexCleared: return "The event in requested index is outdated and cleared"
        }
    }
}
