import Auth
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import Transport

/// etcdserverpb.Auth: users, roles and permissions managed and kept in the
/// backend with etcd's rules and errors; enabling, disabling, and
/// Authenticate issuing simple tokens. The checks on each request are in
/// Authorization.swift.
extension EtcdServer {
    func loadAuth() throws {
        guard let bytes = try backend.meta(.auth) else { return }
        guard let stored = AuthStore(encoded: bytes) else {
            throw ServerError.dataDir(config.dataDir, "the backend's auth store does not decode")
        }
        authStore = stored
    }

    /// Applies a committed change to the auth store (on every member, in
    /// log order) and keeps it in the backend, in the apply's batch.
    func applyAuthChange(_ change: AuthChange) throws {
        // Enabling or disabling twice changes nothing (etcd's answer too).
        if change == .enable && authStore.enabled || change == .disable && !authStore.enabled { return }
        var next = authStore
        try change.apply(to: &next)
        authStore = next
        try backend.setMeta(.auth, authStore.encoded)
        let invalidated = change.invalidatesTokens
        if invalidated.all { tokens.invalidateAll() }
        if let user = invalidated.user { tokens.invalidate(user: user) }
        if change == .enable { logger.info("authentication enabled") }
        if change == .disable { logger.info("authentication disabled") }
    }

    /// Proposes `change`; the call is answered once it is applied here.
    private func proposeAuth(_ change: AuthChange, _ call: GRPCCall, _ key: ServerMetrics.CallKey) {
        propose(.auth, change.encoded, .auth(change)) { [unowned self] outcome in reply(call, key, outcome) }
    }

    func registerAuth() {
        let a = "etcdserverpb.Auth"
        answeringLater(a, "AuthEnable", access: .admin) { [unowned self] (_: Etcdserverpb_AuthEnableRequest, call, key) in
            // Refused here as etcd refuses it (no root user...), not only
            // when applied.
            var trial = authStore
            if !trial.enabled {
                do { try trial.enable() } catch { return finish(call, key, status: Self.status(error)) }
            }
            proposeAuth(.enable, call, key)
        }
        answeringLater(a, "AuthDisable", access: .admin) { [unowned self] (_: Etcdserverpb_AuthDisableRequest, call, key) in
            proposeAuth(.disable, call, key)
        }
        unary(a, "AuthStatus", access: .anyone) { [unowned self] (_: Etcdserverpb_AuthStatusRequest, _) -> Reply<Etcdserverpb_AuthStatusResponse> in
            var r = Etcdserverpb_AuthStatusResponse()
            r.header = header()
            r.enabled = authStore.enabled
            return .now(r)
        }
        // The password is checked on another thread; the token is issued
        // on the loop if the user still has that password.
        answeringLater(a, "Authenticate", access: .anyone) { [unowned self] (r: Etcdserverpb_AuthenticateRequest, call, key) in
            guard authStore.enabled else { return finish(call, key, status: GRPCStatus(AuthError.authNotEnabled)) }
            guard let stored = authStore.users[r.name]?.password else {
                return finish(call, key, status: GRPCStatus(AuthError.authFailed))
            }
            let hasher = passwordHasher
            let password = r.password
            offLoop(call, key, { hasher.verify(password, against: stored) }) { [unowned self] matches in
                guard authStore.enabled else { return finish(call, key, status: GRPCStatus(AuthError.authNotEnabled)) }
                guard matches, authStore.users[r.name]?.password == stored else {
                    return finish(call, key, status: GRPCStatus(AuthError.authFailed))
                }
                var out = Etcdserverpb_AuthenticateResponse()
                out.header = header()
                out.token = tokens.issue(for: r.name, index: appliedIndex, now: monotonicNanoseconds())
                respond(call, key, out)
            }
        }

        // Passwords are hashed on another thread (PBKDF2 takes tens of
        // milliseconds), then the change is applied on the loop.
        answeringLater(a, "UserAdd", access: .admin) { [unowned self] (r: Etcdserverpb_AuthUserAddRequest, call, key) in
            let password = r.hasOptions && r.options.noPassword ? nil : r.password
            withPasswordHash(password, call, key) { [unowned self] hash in proposeAuth(.addUser(r.name, hash), call, key) }
        }
        answeringLater(a, "UserChangePassword", access: .admin) { [unowned self] (r: Etcdserverpb_AuthUserChangePasswordRequest, call, key) in
            withPasswordHash(r.password, call, key) { [unowned self] hash in proposeAuth(.changePassword(r.name, hash), call, key) }
        }
        unary(a, "UserGet", access: .authenticated) { [unowned self] (r: Etcdserverpb_AuthUserGetRequest, call) -> Reply<Etcdserverpb_AuthUserGetResponse> in
            // A user may look itself up; anyone else needs root.
            if let caller = try caller(of: call), caller != r.name { try authStore.checkAdmin(caller) }
            guard let user = authStore.users[r.name] else { throw AuthError.userNotFound }
            var out = Etcdserverpb_AuthUserGetResponse()
            out.header = header()
            out.roles = user.roles.sorted()
            return .now(out)
        }
        unary(a, "UserList", access: .admin) { [unowned self] (_: Etcdserverpb_AuthUserListRequest, _) -> Reply<Etcdserverpb_AuthUserListResponse> in
            var out = Etcdserverpb_AuthUserListResponse()
            out.header = header()
            out.users = authStore.users.keys.sorted()
            return .now(out)
        }
        answeringLater(a, "UserDelete", access: .admin) { [unowned self] (r: Etcdserverpb_AuthUserDeleteRequest, call, key) in
            proposeAuth(.deleteUser(r.name), call, key)
        }
        answeringLater(a, "UserGrantRole", access: .admin) { [unowned self] (r: Etcdserverpb_AuthUserGrantRoleRequest, call, key) in
            proposeAuth(.grantRole(role: r.role, user: r.user), call, key)
        }
        answeringLater(a, "UserRevokeRole", access: .admin) { [unowned self] (r: Etcdserverpb_AuthUserRevokeRoleRequest, call, key) in
            proposeAuth(.revokeRole(role: r.role, user: r.name), call, key)
        }
        answeringLater(a, "RoleAdd", access: .admin) { [unowned self] (r: Etcdserverpb_AuthRoleAddRequest, call, key) in
            proposeAuth(.addRole(r.name), call, key)
        }
        unary(a, "RoleGet", access: .authenticated) { [unowned self] (r: Etcdserverpb_AuthRoleGetRequest, call) -> Reply<Etcdserverpb_AuthRoleGetResponse> in
            // A user may look up its own roles; anything else needs root.
            if let caller = try caller(of: call), !authStore.hasRole(caller, r.role) { try authStore.checkAdmin(caller) }
            guard let role = authStore.roles[r.role] else { throw AuthError.roleNotFound }
            var out = Etcdserverpb_AuthRoleGetResponse()
            out.header = header()
            out.perm = role.permissions.map { p in
                var w = Authpb_Permission()
                w.permType = Authpb_Permission.TypeEnum(rawValue: p.access.rawValue) ?? .read
                w.key = Data(p.key)
                w.rangeEnd = Data(p.rangeEnd)
                return w
            }
            return .now(out)
        }
        unary(a, "RoleList", access: .admin) { [unowned self] (_: Etcdserverpb_AuthRoleListRequest, _) -> Reply<Etcdserverpb_AuthRoleListResponse> in
            var out = Etcdserverpb_AuthRoleListResponse()
            out.header = header()
            out.roles = authStore.roles.keys.sorted()
            return .now(out)
        }
        answeringLater(a, "RoleDelete", access: .admin) { [unowned self] (r: Etcdserverpb_AuthRoleDeleteRequest, call, key) in
            proposeAuth(.deleteRole(r.role), call, key)
        }
        answeringLater(a, "RoleGrantPermission", access: .admin) { [unowned self] (r: Etcdserverpb_AuthRoleGrantPermissionRequest, call, key) in
            guard r.hasPerm else { return finish(call, key, status: GRPCStatus(.invalidArgument, "etcdserver: permission not given")) }
            proposeAuth(.grantPermission(r), call, key)
        }
        answeringLater(a, "RoleRevokePermission", access: .admin) { [unowned self] (r: Etcdserverpb_AuthRoleRevokePermissionRequest, call, key) in
            proposeAuth(.revokePermission(role: r.role, key: [UInt8](r.key), rangeEnd: [UInt8](r.rangeEnd)), call, key)
        }
    }

    /// Hashes `password` off the loop (nil: no password) and hands the
    /// result to `body` on the loop.
    private func withPasswordHash(_ password: String?, _ call: GRPCCall, _ key: ServerMetrics.CallKey,
                                  _ body: @escaping (PasswordHash?) -> Void) {
        guard let password else { body(nil); return }
        let hasher = passwordHasher
        offLoop(call, key, { hasher.hash(password) }, body)
    }

    /// Runs password work (PBKDF2: tens of milliseconds of CPU) on threads
    /// of its own, at most `passwordThreads` at once, the rest waiting
    /// their turn; `done` gets the result on the loop. Past
    /// `passwordQueueLimit` waiting, the call is refused as etcd refuses
    /// when overloaded.
    private func offLoop<T: Sendable>(_ call: GRPCCall, _ key: ServerMetrics.CallKey,
                                      _ work: @escaping @Sendable () -> T, _ done: @escaping (T) -> Void) {
        guard passwordWork.waiting.count < Self.passwordQueueLimit else {
            finish(call, key, status: GRPCStatus(.resourceExhausted, "etcdserver: too many requests"))
            return
        }
        let loop = self.loop
        let me = LoopBound(self)
        let finished = LoopBound(done)
        passwordWork.waiting.append {
            runOnNewThread {
                let result = work()
                loop.execute {
                    finished.value(result)
                    me.value.passwordWork.running -= 1
                    me.value.startPasswordWork()
                }
            }
        }
        startPasswordWork()
    }

    private func startPasswordWork() {
        while passwordWork.running < Self.passwordThreads, !passwordWork.waiting.isEmpty {
            passwordWork.running += 1
            passwordWork.waiting.removeFirst()()
        }
    }

    static let passwordThreads = 4
    static let passwordQueueLimit = 10_000

    private static func status(_ error: any Error) -> GRPCStatus {
        if let e = error as? any EtcdStatusError { return GRPCStatus(e) }
        return GRPCStatus(.internal, "\(error)")
    }
}
