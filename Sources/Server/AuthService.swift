import Auth
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import Transport

/// etcdserverpb.Auth, first part: users, roles and permissions are managed
/// and kept in the backend, with etcd's rules and errors. Enforcement
/// (tokens, the certificate's CN, a check on every request) is not built
/// yet, so AuthEnable is refused rather than accepted and not enforced.
extension EtcdServer {
    func loadAuth() throws {
        guard let bytes = try backend.meta(.auth) else { return }
        guard let stored = AuthStore(encoded: bytes) else {
            throw ServerError.dataDir(config.dataDir, "the backend's auth store does not decode")
        }
        authStore = stored
    }

    /// Keeps the store in the backend and commits at once.
    private func saveAuth() throws {
        try backend.setMeta(.auth, authStore.encoded)
        try store.commit()
    }

    /// Applies a change to the auth store and saves it.
    private func changeAuth(_ change: (inout AuthStore) throws -> Void) throws {
        var next = authStore
        try change(&next)
        authStore = next
        try saveAuth()
    }

    func registerAuth() {
        let a = "etcdserverpb.Auth"
        unary(a, "AuthEnable") { (_: Etcdserverpb_AuthEnableRequest, _) -> Reply<Etcdserverpb_AuthEnableResponse> in
            throw GRPCStatus(.unimplemented, "swetcd: enforcing authentication is not built yet (users and roles can be managed)")
        }
        unary(a, "AuthDisable") { [unowned self] (_: Etcdserverpb_AuthDisableRequest, _) -> Reply<Etcdserverpb_AuthDisableResponse> in
            var r = Etcdserverpb_AuthDisableResponse()
            r.header = header()
            return .now(r)
        }
        unary(a, "AuthStatus") { [unowned self] (_: Etcdserverpb_AuthStatusRequest, _) -> Reply<Etcdserverpb_AuthStatusResponse> in
            var r = Etcdserverpb_AuthStatusResponse()
            r.header = header()
            r.enabled = authStore.enabled
            return .now(r)
        }
        unary(a, "Authenticate") { (_: Etcdserverpb_AuthenticateRequest, _) -> Reply<Etcdserverpb_AuthenticateResponse> in
            throw AuthError.authNotEnabled
        }

        // Passwords are hashed on another thread (PBKDF2 takes tens of
        // milliseconds), then the change is applied on the loop.
        answeringLater(a, "UserAdd") { [unowned self] (r: Etcdserverpb_AuthUserAddRequest, call, key) in
            let password = r.hasOptions && r.options.noPassword ? nil : r.password
            withPasswordHash(password) { [unowned self] hash in
                do {
                    try changeAuth { try $0.addUser(r.name, password: hash) }
                    var out = Etcdserverpb_AuthUserAddResponse()
                    out.header = header()
                    respond(call, key, out)
                } catch {
                    finish(call, key, status: Self.status(error))
                }
            }
        }
        answeringLater(a, "UserChangePassword") { [unowned self] (r: Etcdserverpb_AuthUserChangePasswordRequest, call, key) in
            withPasswordHash(r.password) { [unowned self] hash in
                do {
                    try changeAuth { try $0.changePassword(r.name, to: hash) }
                    var out = Etcdserverpb_AuthUserChangePasswordResponse()
                    out.header = header()
                    respond(call, key, out)
                } catch {
                    finish(call, key, status: Self.status(error))
                }
            }
        }
        unary(a, "UserGet") { [unowned self] (r: Etcdserverpb_AuthUserGetRequest, _) -> Reply<Etcdserverpb_AuthUserGetResponse> in
            guard let user = authStore.users[r.name] else { throw AuthError.userNotFound }
            var out = Etcdserverpb_AuthUserGetResponse()
            out.header = header()
            out.roles = user.roles.sorted()
            return .now(out)
        }
        unary(a, "UserList") { [unowned self] (_: Etcdserverpb_AuthUserListRequest, _) -> Reply<Etcdserverpb_AuthUserListResponse> in
            var out = Etcdserverpb_AuthUserListResponse()
            out.header = header()
            out.users = authStore.users.keys.sorted()
            return .now(out)
        }
        unary(a, "UserDelete") { [unowned self] (r: Etcdserverpb_AuthUserDeleteRequest, _) -> Reply<Etcdserverpb_AuthUserDeleteResponse> in
            try changeAuth { try $0.deleteUser(r.name) }
            var out = Etcdserverpb_AuthUserDeleteResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "UserGrantRole") { [unowned self] (r: Etcdserverpb_AuthUserGrantRoleRequest, _) -> Reply<Etcdserverpb_AuthUserGrantRoleResponse> in
            try changeAuth { try $0.grantRole(r.role, to: r.user) }
            var out = Etcdserverpb_AuthUserGrantRoleResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "UserRevokeRole") { [unowned self] (r: Etcdserverpb_AuthUserRevokeRoleRequest, _) -> Reply<Etcdserverpb_AuthUserRevokeRoleResponse> in
            try changeAuth { try $0.revokeRole(r.role, from: r.name) }
            var out = Etcdserverpb_AuthUserRevokeRoleResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "RoleAdd") { [unowned self] (r: Etcdserverpb_AuthRoleAddRequest, _) -> Reply<Etcdserverpb_AuthRoleAddResponse> in
            try changeAuth { try $0.addRole(r.name) }
            var out = Etcdserverpb_AuthRoleAddResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "RoleGet") { [unowned self] (r: Etcdserverpb_AuthRoleGetRequest, _) -> Reply<Etcdserverpb_AuthRoleGetResponse> in
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
        unary(a, "RoleList") { [unowned self] (_: Etcdserverpb_AuthRoleListRequest, _) -> Reply<Etcdserverpb_AuthRoleListResponse> in
            var out = Etcdserverpb_AuthRoleListResponse()
            out.header = header()
            out.roles = authStore.roles.keys.sorted()
            return .now(out)
        }
        unary(a, "RoleDelete") { [unowned self] (r: Etcdserverpb_AuthRoleDeleteRequest, _) -> Reply<Etcdserverpb_AuthRoleDeleteResponse> in
            try changeAuth { try $0.deleteRole(r.role) }
            var out = Etcdserverpb_AuthRoleDeleteResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "RoleGrantPermission") { [unowned self] (r: Etcdserverpb_AuthRoleGrantPermissionRequest, _) -> Reply<Etcdserverpb_AuthRoleGrantPermissionResponse> in
            guard r.hasPerm else { throw GRPCStatus(.invalidArgument, "etcdserver: permission not given") }
            let access = AuthStore.Access(rawValue: r.perm.permType.rawValue) ?? .read
            try changeAuth { try $0.grantPermission(.init(access, key: [UInt8](r.perm.key), rangeEnd: [UInt8](r.perm.rangeEnd)), to: r.name) }
            var out = Etcdserverpb_AuthRoleGrantPermissionResponse()
            out.header = header()
            return .now(out)
        }
        unary(a, "RoleRevokePermission") { [unowned self] (r: Etcdserverpb_AuthRoleRevokePermissionRequest, _) -> Reply<Etcdserverpb_AuthRoleRevokePermissionResponse> in
            try changeAuth { try $0.revokePermission(key: [UInt8](r.key), rangeEnd: [UInt8](r.rangeEnd), from: r.role) }
            var out = Etcdserverpb_AuthRoleRevokePermissionResponse()
            out.header = header()
            return .now(out)
        }
    }

    /// Hashes `password` on another thread (nil: no password) and hands
    /// the result to `body` on the loop.
    private func withPasswordHash(_ password: String?, _ body: @escaping (PasswordHash?) -> Void) {
        guard let password else { body(nil); return }
        let hasher = passwordHasher
        let loop = self.loop
        let done = LoopBound(body)
        runOnNewThread {
            let hash = hasher.hash(password)
            loop.execute { done.value(hash) }
        }
    }

    private static func status(_ error: any Error) -> GRPCStatus {
        if let e = error as? any EtcdStatusError { return GRPCStatus(e) }
        return GRPCStatus(.internal, "\(error)")
    }
}
