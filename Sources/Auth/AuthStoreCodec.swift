/// The auth store's bytes in the backend: a version byte, then users and
/// roles in name order, each field length-prefixed (our own format: only
/// swetcd reads it). `init?(encoded:)` refuses anything malformed.
extension AuthStore {
    static let formatVersion: UInt8 = 1

    public var encoded: [UInt8] {
        var w = Writer()
        w.byte(Self.formatVersion)
        w.byte(enabled ? 1 : 0)
        w.count(users.count)
        for user in users.values.sorted(by: { $0.name < $1.name }) {
            w.string(user.name)
            if let p = user.password {
                w.byte(1)
                w.bytes(p.salt)
                w.count(p.iterations)
                w.bytes(p.hash)
            } else {
                w.byte(0)
            }
            w.count(user.roles.count)
            for r in user.roles.sorted() { w.string(r) }
        }
        w.count(roles.count)
        for role in roles.values.sorted(by: { $0.name < $1.name }) {
            w.string(role.name)
            w.count(role.permissions.count)
            for p in role.permissions {
                w.byte(UInt8(p.access.rawValue))
                w.bytes(p.key)
                w.bytes(p.rangeEnd)
            }
        }
        return w.out
    }

    public init?(encoded bytes: [UInt8]) {
        var r = Reader(bytes)
        guard r.byte() == Self.formatVersion, let enabled = r.byte(), enabled <= 1, let userCount = r.count() else { return nil }
        self.init()
        self.enabled = enabled == 1
        for _ in 0..<userCount {
            guard let name = r.string(), let hasPassword = r.byte() else { return nil }
            var user = User(name: name)
            if hasPassword == 1 {
                guard let salt = r.bytes(), let iterations = r.count(), let hash = r.bytes() else { return nil }
                user.password = PasswordHash(salt: salt, iterations: iterations, hash: hash)
            } else if hasPassword != 0 {
                return nil
            }
            guard let roleCount = r.count() else { return nil }
            for _ in 0..<roleCount {
                guard let role = r.string() else { return nil }
                user.roles.insert(role)
            }
            users[name] = user
        }
        guard let roleCount = r.count() else { return nil }
        for _ in 0..<roleCount {
            guard let name = r.string(), let permissionCount = r.count() else { return nil }
            var role = Role(name: name)
            for _ in 0..<permissionCount {
                guard let access = r.byte().flatMap({ Access(rawValue: Int($0)) }), let key = r.bytes(),
                      let rangeEnd = r.bytes() else { return nil }
                role.permissions.append(Permission(access, key: key, rangeEnd: rangeEnd))
            }
            roles[name] = role
        }
        guard r.isAtEnd else { return nil }
    }

    private struct Writer {
        var out: [UInt8] = []
        mutating func byte(_ b: UInt8) { out.append(b) }
        mutating func count(_ n: Int) {
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: n >> shift)) }
        }
        mutating func bytes(_ b: [UInt8]) {
            count(b.count)
            out += b
        }
        mutating func string(_ s: String) { bytes(Array(s.utf8)) }
    }

    private struct Reader {
        let data: [UInt8]
        var at = 0
        init(_ data: [UInt8]) { self.data = data }
        var isAtEnd: Bool { at == data.count }
        mutating func byte() -> UInt8? {
            guard at < data.count else { return nil }
            defer { at += 1 }
            return data[at]
        }
        mutating func count() -> Int? {
            guard data.count - at >= 4 else { return nil }
            defer { at += 4 }
            return data[at..<at + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        mutating func bytes() -> [UInt8]? {
            guard let n = count(), data.count - at >= n else { return nil }
            defer { at += n }
            return Array(data[at..<at + n])
        }
        mutating func string() -> String? { bytes().map { String(decoding: $0, as: UTF8.self) } }
    }
}
