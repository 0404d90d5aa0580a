/// A change to the v2 store as a log entry carries it: everything the
/// apply needs, including times, so replaying the log changes the store
/// the same way again (as etcd's `etcdserverpb.Request` carries its
/// `Expiration` and `Time`).
public struct V2Request: Equatable, Sendable {
    public enum Method: UInt8, Sendable {
        case put = 1
        /// A new value under a directory, named by the index.
        case post = 2
        case delete = 3
        /// Removes what expired by `now` (the member's expiry tick).
        case expire = 4
    }

    public var method: Method
    public var path: String
    public var value = ""
    public var dir = false
    /// prevExist: nil when not given.
    public var prevExist: Bool?
    /// prevValue / prevIndex: "" and 0 when not given (as etcd's request).
    public var prevValue = ""
    public var prevIndex: UInt64 = 0
    public var recursive = false
    /// refresh=true: a new TTL for an existing node, its value kept, no
    /// watcher told.
    public var refresh = false
    /// When the node expires (milliseconds since the Unix epoch), if ever.
    public var expiresAt: UInt64?
    /// The proposer's clock (milliseconds since the Unix epoch).
    public var now: UInt64 = 0

    public init(method: Method, path: String) {
        self.method = method
        self.path = path
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = [method.rawValue]
        var flags: UInt8 = 0
        if dir { flags |= 1 }
        if recursive { flags |= 2 }
        if prevExist != nil { flags |= 4 }
        if prevExist == true { flags |= 8 }
        if expiresAt != nil { flags |= 16 }
        if refresh { flags |= 32 }
        out.append(flags)
        V2Bytes.appendVarint(prevIndex, to: &out)
        V2Bytes.appendVarint(expiresAt ?? 0, to: &out)
        V2Bytes.appendVarint(now, to: &out)
        for s in [path, value, prevValue] { V2Bytes.appendString(s, to: &out) }
        return out
    }

    public init?(encoded b: [UInt8]) {
        guard b.count >= 2, let method = Method(rawValue: b[0]) else { return nil }
        let flags = b[1]
        var at = 2
        guard let prevIndex = V2Bytes.readVarint(b, at: &at), let expiresAt = V2Bytes.readVarint(b, at: &at),
              let now = V2Bytes.readVarint(b, at: &at), let path = V2Bytes.readString(b, at: &at),
              let value = V2Bytes.readString(b, at: &at), let prevValue = V2Bytes.readString(b, at: &at),
              at == b.count else { return nil }
        self.init(method: method, path: path)
        dir = flags & 1 != 0
        recursive = flags & 2 != 0
        prevExist = flags & 4 != 0 ? flags & 8 != 0 : nil
        self.expiresAt = flags & 16 != 0 ? expiresAt : nil
        refresh = flags & 32 != 0
        self.prevIndex = prevIndex
        self.now = now
        self.value = value
        self.prevValue = prevValue
    }
}

extension V2Store {
    /// Applies a logged change as etcd's v2 applier does: PUT is a set, or
    /// with prevExist an update or a create, or with prevValue / prevIndex
    /// a compare-and-swap; DELETE with prevValue / prevIndex is a
    /// compare-and-delete. Returns the change (for `.expire`, one per node
    /// removed).
    public mutating func apply(_ r: V2Request) throws(V2Error) -> [Event] {
        switch r.method {
        case .put:
            var value: String? = r.dir ? nil : r.value
            if r.refresh {
                // The value stays; only the expiry time changes.
                let n = try get(r.path)
                value = n.isDir ? nil : n.value
            }
            let condition: SetCondition
            switch r.prevExist {
            case true?:
                condition = r.prevIndex == 0 && r.prevValue.isEmpty ? .mustExist
                    : .compare(value: r.prevValue.isEmpty ? nil : r.prevValue, index: r.prevIndex == 0 ? nil : r.prevIndex)
            case false?:
                condition = .mustNotExist
            case nil:
                condition = r.prevIndex > 0 || !r.prevValue.isEmpty
                    ? .compare(value: r.prevValue.isEmpty ? nil : r.prevValue, index: r.prevIndex == 0 ? nil : r.prevIndex)
                    : .none
            }
            return [try set(r.path, value: value, dir: r.dir, expiresAt: r.expiresAt, condition: condition,
                            notify: !r.refresh)]
        case .post:
            return [try createInOrder(r.path, value: r.dir ? nil : r.value, dir: r.dir, expiresAt: r.expiresAt)]
        case .delete:
            let compared = r.prevIndex > 0 || !r.prevValue.isEmpty
            return [try delete(r.path, dir: r.dir, recursive: r.recursive,
                               prevValue: compared && !r.prevValue.isEmpty ? r.prevValue : nil,
                               prevIndex: compared && r.prevIndex > 0 ? r.prevIndex : nil)]
        case .expire:
            return expire(now: r.now)
        }
    }
}

extension V2Store.Node {
    /// The node as the backend keeps it: a version, flags, the indexes, the
    /// expiry time, the key, the value. (The key is in the value because
    /// the backend's key for a long path is not the path.)
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [1, (isDir ? 1 : 0) | (value != nil ? 2 : 0) | (expiresAt != nil ? 4 : 0)]
        V2Bytes.appendVarint(createdIndex, to: &out)
        V2Bytes.appendVarint(modifiedIndex, to: &out)
        V2Bytes.appendVarint(expiresAt ?? 0, to: &out)
        V2Bytes.appendString(key, to: &out)
        out.append(contentsOf: value?.utf8 ?? "".utf8)
        return out
    }

    public init?(encoded b: [UInt8]) {
        guard b.count >= 2, b[0] == 1 else { return nil }
        var at = 2
        guard let created = V2Bytes.readVarint(b, at: &at), let modified = V2Bytes.readVarint(b, at: &at),
              let expiry = V2Bytes.readVarint(b, at: &at), let key = V2Bytes.readString(b, at: &at),
              key.hasPrefix("/") else { return nil }
        let flags = b[1]
        self.init(key: key, value: flags & 2 != 0 ? String(decoding: b[at...], as: UTF8.self) : nil,
                  isDir: flags & 1 != 0, createdIndex: created, modifiedIndex: modified,
                  expiresAt: flags & 4 != 0 ? expiry : nil)
    }
}

/// Varints and length-led strings for the encodings above.
enum V2Bytes {
    static func appendVarint(_ v: UInt64, to out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func readVarint(_ b: [UInt8], at: inout Int) -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while at < b.count, shift < 64 {
            let byte = b[at]
            at += 1
            v |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { return v }
            shift += 7
        }
        return nil
    }

    static func appendString(_ s: String, to out: inout [UInt8]) {
        appendVarint(UInt64(s.utf8.count), to: &out)
        out.append(contentsOf: s.utf8)
    }

    static func readString(_ b: [UInt8], at: inout Int) -> String? {
        guard let n = readVarint(b, at: &at), n <= UInt64(b.count - at) else { return nil }
        defer { at += Int(n) }
        return String(decoding: b[at..<(at + Int(n))], as: UTF8.self)
    }
}
