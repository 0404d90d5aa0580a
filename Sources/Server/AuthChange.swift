import Auth
import EtcdProto

/// A change to users, roles or permissions as a log entry carries it, so
/// every member applies it in log order (as etcd's AuthXxx requests go
/// through Raft). Passwords travel as the hash the proposing member
/// computed (etcd's hashedPassword), never in clear.
///
///     op u8, then its fields: strings and bytes as a varint length and
///     the bytes; a password hash as a flag byte (0 none, 1 present), the
///     iteration count as a varint, salt and hash as bytes.
enum AuthChange: Equatable {
    case enable
    case disable
    case addUser(String, PasswordHash?)
    case deleteUser(String)
    case changePassword(String, PasswordHash?)
    case grantRole(role: String, user: String)
    case revokeRole(role: String, user: String)
    case addRole(String)
    case deleteRole(String)
    case grantPermission(role: String, AuthStore.Permission)
    case revokePermission(role: String, key: [UInt8], rangeEnd: [UInt8])

    /// etcd's RoleGrantPermission request as a change (a client's, or one
    /// in an etcd WAL being migrated).
    static func grantPermission(_ r: Etcdserverpb_AuthRoleGrantPermissionRequest) -> AuthChange {
        let access = AuthStore.Access(rawValue: r.perm.permType.rawValue) ?? .read
        return .grantPermission(role: r.name, .init(access, key: [UInt8](r.perm.key), rangeEnd: [UInt8](r.perm.rangeEnd)))
    }

    func apply(to store: inout AuthStore) throws(AuthError) {
        switch self {
        case .enable: try store.enable()
        case .disable: store.disable()
        case .addUser(let name, let hash): try store.addUser(name, password: hash)
        case .deleteUser(let name): try store.deleteUser(name)
        case .changePassword(let name, let hash): try store.changePassword(name, to: hash)
        case .grantRole(let role, let user): try store.grantRole(role, to: user)
        case .revokeRole(let role, let user): try store.revokeRole(role, from: user)
        case .addRole(let name): try store.addRole(name)
        case .deleteRole(let name): try store.deleteRole(name)
        case .grantPermission(let role, let p): try store.grantPermission(p, to: role)
        case .revokePermission(let role, let key, let rangeEnd): try store.revokePermission(key: key, rangeEnd: rangeEnd, from: role)
        }
    }

    /// The user whose tokens stop working once this is applied (all
    /// users': disable).
    var invalidatesTokens: (all: Bool, user: String?) {
        switch self {
        case .disable: (true, nil)
        case .deleteUser(let name), .changePassword(let name, _): (false, name)
        default: (false, nil)
        }
    }

    // MARK: Encoding

    private var op: UInt8 {
        switch self {
        case .enable: 1
        case .disable: 2
        case .addUser: 3
        case .deleteUser: 4
        case .changePassword: 5
        case .grantRole: 6
        case .revokeRole: 7
        case .addRole: 8
        case .deleteRole: 9
        case .grantPermission: 10
        case .revokePermission: 11
        }
    }

    var encoded: [UInt8] {
        var out: [UInt8] = [op]
        func bytes(_ b: [UInt8]) {
            WireBytes.appendVarint(UInt64(b.count), to: &out)
            out += b
        }
        func string(_ s: String) { bytes(Array(s.utf8)) }
        func hash(_ h: PasswordHash?) {
            guard let h else { return out.append(0) }
            out.append(1)
            WireBytes.appendVarint(UInt64(h.iterations), to: &out)
            bytes(h.salt)
            bytes(h.hash)
        }
        switch self {
        case .enable, .disable: break
        case .addUser(let name, let h), .changePassword(let name, let h):
            string(name)
            hash(h)
        case .deleteUser(let name), .addRole(let name), .deleteRole(let name): string(name)
        case .grantRole(let role, let user), .revokeRole(let role, let user):
            string(role)
            string(user)
        case .grantPermission(let role, let p):
            string(role)
            out.append(UInt8(p.access.rawValue))
            bytes(p.key)
            bytes(p.rangeEnd)
        case .revokePermission(let role, let key, let rangeEnd):
            string(role)
            bytes(key)
            bytes(rangeEnd)
        }
        return out
    }

    init?(encoded d: [UInt8]) {
        guard let op = d.first else { return nil }
        var at = 1
        func bytes() -> [UInt8]? {
            guard let n = WireBytes.readVarint(d, at: &at), n <= UInt64(d.count - at) else { return nil }
            defer { at += Int(n) }
            return Array(d[at..<at + Int(n)])
        }
        func string() -> String? { bytes().map { String(decoding: $0, as: UTF8.self) } }
        func hash() -> PasswordHash?? {
            guard at < d.count else { return nil }
            at += 1
            if d[at - 1] == 0 { return .some(nil) }
            guard let iterations = WireBytes.readVarint(d, at: &at).flatMap({ Int(exactly: $0) }), let salt = bytes(),
                  let h = bytes() else { return nil }
            return .some(PasswordHash(salt: salt, iterations: iterations, hash: h))
        }
        switch op {
        case 1: self = .enable
        case 2: self = .disable
        case 3, 5:
            guard let name = string(), let h = hash() else { return nil }
            self = op == 3 ? .addUser(name, h) : .changePassword(name, h)
        case 4, 8, 9:
            guard let name = string() else { return nil }
            self = op == 4 ? .deleteUser(name) : op == 8 ? .addRole(name) : .deleteRole(name)
        case 6, 7:
            guard let role = string(), let user = string() else { return nil }
            self = op == 6 ? .grantRole(role: role, user: user) : .revokeRole(role: role, user: user)
        case 10:
            guard let role = string(), at < d.count, let access = AuthStore.Access(rawValue: Int(d[at])) else { return nil }
            at += 1
            guard let key = bytes(), let rangeEnd = bytes() else { return nil }
            self = .grantPermission(role: role, AuthStore.Permission(access, key: key, rangeEnd: rangeEnd))
        case 11:
            guard let role = string(), let key = bytes(), let rangeEnd = bytes() else { return nil }
            self = .revokePermission(role: role, key: key, rangeEnd: rangeEnd)
        default: return nil
        }
        guard at == d.count else { return nil }
    }
}
