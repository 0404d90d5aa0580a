import EtcdStatus

/// etcd's users, roles and key permissions, as a state machine with no I/O:
/// the server persists it and checks requests against it. Passwords are
/// kept only as salted hashes (`PasswordHasher`).
public struct AuthStore: Equatable, Sendable {
    public enum Access: Int, Sendable { case read = 0, write = 1, readwrite = 2 }

    /// Access to the keys [key, rangeEnd): an empty rangeEnd means the key
    /// alone, "\0" every key from key on (etcd's conventions).
    public struct Permission: Equatable, Hashable, Sendable {
        public var access: Access
        public var key: [UInt8]
        public var rangeEnd: [UInt8]

        public init(_ access: Access, key: [UInt8], rangeEnd: [UInt8] = []) {
            self.access = access
            self.key = key
            self.rangeEnd = rangeEnd
        }

        func grants(write: Bool) -> Bool { access == .readwrite || access == (write ? .write : .read) }
    }

    public struct User: Equatable, Sendable {
        public var name: String
        public var password: PasswordHash?
        public var roles: Set<String> = []

        init(name: String, password: PasswordHash? = nil) {
            self.name = name
            self.password = password
        }
    }

    public struct Role: Equatable, Sendable {
        public var name: String
        public var permissions: [Permission] = []
    }

    public static let root = "root"

    public internal(set) var enabled = false
    public internal(set) var users: [String: User] = [:]
    public internal(set) var roles: [String: Role] = [:]

    public init() {}

    // MARK: Users

    /// `password` nil: a user that cannot authenticate with a password
    /// (etcd's --no-password; a certificate's CN can still name it).
    public mutating func addUser(_ name: String, password: PasswordHash?) throws(AuthError) {
        guard !name.isEmpty else { throw .userEmpty }
        guard users[name] == nil else { throw .userAlreadyExists }
        users[name] = User(name: name, password: password)
    }

    public mutating func deleteUser(_ name: String) throws(AuthError) {
        if enabled && name == Self.root { throw .invalidAuthManagement }
        guard users.removeValue(forKey: name) != nil else { throw .userNotFound }
    }

    public mutating func changePassword(_ name: String, to password: PasswordHash?) throws(AuthError) {
        guard users[name] != nil else { throw .userNotFound }
        users[name]!.password = password
    }

    public mutating func grantRole(_ role: String, to user: String) throws(AuthError) {
        guard users[user] != nil else { throw .userNotFound }
        guard role == Self.root || roles[role] != nil else { throw .roleNotFound }
        users[user]!.roles.insert(role)
    }

    public mutating func revokeRole(_ role: String, from user: String) throws(AuthError) {
        guard users[user] != nil else { throw .userNotFound }
        if enabled && user == Self.root && role == Self.root { throw .invalidAuthManagement }
        guard users[user]!.roles.remove(role) != nil else { throw .roleNotGranted }
    }

    // MARK: Roles

    public mutating func addRole(_ name: String) throws(AuthError) {
        guard !name.isEmpty else { throw .roleEmpty }
        guard roles[name] == nil else { throw .roleAlreadyExists }
        roles[name] = Role(name: name)
    }

    public mutating func deleteRole(_ name: String) throws(AuthError) {
        if enabled && name == Self.root { throw .invalidAuthManagement }
        guard roles.removeValue(forKey: name) != nil else { throw .roleNotFound }
        for u in users.keys { users[u]!.roles.remove(name) }
    }

    /// Grants `permission`; one on the same range replaces it (etcd's).
    public mutating func grantPermission(_ permission: Permission, to role: String) throws(AuthError) {
        guard roles[role] != nil else { throw .roleNotFound }
        roles[role]!.permissions.removeAll { $0.key == permission.key && $0.rangeEnd == permission.rangeEnd }
        roles[role]!.permissions.append(permission)
        roles[role]!.permissions.sort {
            $0.key == $1.key ? $0.rangeEnd.lexicographicallyPrecedes($1.rangeEnd) : $0.key.lexicographicallyPrecedes($1.key)
        }
    }

    public mutating func revokePermission(key: [UInt8], rangeEnd: [UInt8], from role: String) throws(AuthError) {
        guard roles[role] != nil else { throw .roleNotFound }
        let before = roles[role]!.permissions.count
        roles[role]!.permissions.removeAll { $0.key == key && $0.rangeEnd == rangeEnd }
        guard roles[role]!.permissions.count < before else { throw .permissionNotGranted }
    }

    // MARK: Enabling, authenticating, checking

    /// Needs a root user holding the root role.
    public mutating func enable() throws(AuthError) {
        guard let root = users[Self.root] else { throw .rootUserMissing }
        guard root.roles.contains(Self.root) else { throw .rootRoleMissing }
        enabled = true
    }

    public mutating func disable() { enabled = false }

    /// Whether `password` is `user`'s (constant-time comparison of hashes).
    public func authenticate(_ user: String, password: String, hasher: PasswordHasher) throws(AuthError) {
        guard let stored = users[user]?.password, hasher.verify(password, against: stored) else { throw .authFailed }
    }

    /// etcd's check of a request's keys: permission denied unless `user`
    /// may read (or write) every key of [key, rangeEnd); an unknown user is
    /// denied too.
    public func check(_ user: String, key: [UInt8], rangeEnd: [UInt8] = [], write: Bool) throws(AuthError) {
        guard isPermitted(user, key: key, rangeEnd: rangeEnd, write: write) else { throw .permissionDenied }
    }

    /// etcd's admin check (maintenance, managing users and roles): the user
    /// must exist and hold the root role.
    public func checkAdmin(_ user: String) throws(AuthError) {
        guard let u = users[user] else { throw .userNotFound }
        guard u.roles.contains(Self.root) else { throw .permissionDenied }
    }

    public func isAdmin(_ user: String) -> Bool { users[user]?.roles.contains(Self.root) ?? false }

    public func hasRole(_ user: String, _ role: String) -> Bool { users[user]?.roles.contains(role) ?? false }

    /// Whether `user` may read (or write) every key of [key, rangeEnd).
    /// Root may do anything; otherwise the union of the user's permissions
    /// of that access must cover the whole range.
    public func isPermitted(_ user: String, key: [UInt8], rangeEnd: [UInt8] = [], write: Bool) -> Bool {
        guard let u = users[user] else { return false }
        if u.roles.contains(Self.root) { return true }
        var intervals: [(start: [UInt8], end: [UInt8]?)] = []  // end nil: to the end of the keyspace
        for name in u.roles {
            for p in roles[name]?.permissions ?? [] where p.grants(write: write) {
                intervals.append((p.key, Self.end(of: p.key, p.rangeEnd)))
            }
        }
        let wantEnd = Self.end(of: key, rangeEnd)
        // Walk the merged intervals from the one holding `key`.
        intervals.sort { $0.start.lexicographicallyPrecedes($1.start) }
        var covered: [UInt8]? = key  // everything below this is covered (nil: all)
        for i in intervals {
            guard let c = covered else { break }
            if Self.less(c, i.start) { break }
            if let e = i.end {
                if Self.less(c, e) { covered = e }
            } else {
                covered = nil
            }
        }
        guard let reached = covered else { return true }
        guard let end = wantEnd else { return false }
        return !Self.less(reached, end)
    }

    /// The exclusive end of a permission or request: a single key ends at
    /// its successor (key + 0x00), "\0" means no end.
    static func end(of key: [UInt8], _ rangeEnd: [UInt8]) -> [UInt8]? {
        if rangeEnd.isEmpty { return key + [0] }
        if rangeEnd == [0] { return nil }
        return rangeEnd
    }

    static func less(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }
}

/// etcd's auth errors, with their gRPC codes and exact messages.
public enum AuthError: Error, Equatable, CaseIterable, EtcdStatusError {
    case rootUserMissing, rootRoleMissing, userAlreadyExists, userEmpty, userNotFound
    case roleAlreadyExists, roleNotFound, roleEmpty, authFailed, permissionDenied
    case roleNotGranted, permissionNotGranted, authNotEnabled, invalidAuthToken, invalidAuthManagement

    public var grpcMessage: String {
        switch self {
        case .rootUserMissing: return "etcdserver: root user does not exist"
        case .rootRoleMissing: return "etcdserver: root user does not have root role"
        case .userAlreadyExists: return "etcdserver: user name already exists"
        case .userEmpty: return EtcdMessage.userEmpty
        case .userNotFound: return "etcdserver: user name not found"
        case .roleAlreadyExists: return "etcdserver: role name already exists"
        case .roleNotFound: return "etcdserver: role name not found"
        case .roleEmpty: return "etcdserver: role name is empty"
        case .authFailed: return EtcdMessage.authFailed
        case .permissionDenied: return EtcdMessage.permissionDenied
        case .roleNotGranted: return "etcdserver: role is not granted to the user"
        case .permissionNotGranted: return "etcdserver: permission is not granted to the role"
        case .authNotEnabled: return EtcdMessage.authNotEnabled
        case .invalidAuthToken: return EtcdMessage.invalidAuthToken
        case .invalidAuthManagement: return "etcdserver: invalid auth management"
        }
    }

    public var grpcCode: GRPCStatusCode {
        switch self {
        case .userEmpty, .roleEmpty, .authFailed, .invalidAuthManagement: return .invalidArgument
        case .permissionDenied: return .permissionDenied
        case .invalidAuthToken: return .unauthenticated
        default: return .failedPrecondition
        }
    }
}
