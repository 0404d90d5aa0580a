import Auth
import EtcdProto
import MVCC
import Transport

/// Who a call speaks for, and whether they may do what it asks: etcd's
/// checks, made before a request is proposed or served. While auth is
/// disabled every check is one branch.
extension EtcdServer {
    /// The user a call speaks for: nil while auth is disabled; else its
    /// token's user, or (with --client-cert-auth) its certificate's CN.
    /// etcd's errors: a token that is not alive is an invalid token, no
    /// token and no certificate an empty user name.
    func caller(of call: GRPCCall) throws(AuthError) -> String? {
        guard authStore.enabled else { return nil }
        if let token = Self.token(of: call) {
            guard let user = tokens.user(of: token, now: monotonicNanoseconds()) else { throw .invalidAuthToken }
            return user
        }
        if config.clientCertAuth, let name = call.peerCommonName { return name }
        throw .userEmpty
    }

    /// Runs `check`; when it refuses, finishes the call with its error and
    /// returns false.
    func passes(_ call: GRPCCall, _ key: ServerMetrics.CallKey, _ check: () throws -> Void) -> Bool {
        do {
            try check()
            return true
        } catch let error as AuthError {
            finish(call, key, status: GRPCStatus(error))
        } catch {
            finish(call, key, status: GRPCStatus(.internal, "\(error)"))
        }
        return false
    }

    /// gRPC clients send `token`; the JSON gateway's clients send
    /// `authorization`, possibly as a bearer token.
    static func token(of call: GRPCCall) -> String? {
        if let t = call.metadata("token") { return t }
        guard let a = call.metadata("authorization") else { return nil }
        return a.hasPrefix("Bearer ") ? String(a.dropFirst(7)) : a
    }

    /// Any authenticated caller (etcd's requireAuthInfo).
    func authorizeCaller(_ call: GRPCCall) throws(AuthError) {
        _ = try caller(of: call)
    }

    /// A caller with the root role.
    func authorizeAdmin(_ call: GRPCCall) throws(AuthError) {
        guard let user = try caller(of: call) else { return }
        try authStore.checkAdmin(user)
    }

    func authorize(_ call: GRPCCall, range r: RangeRequest) throws(AuthError) {
        guard let user = try caller(of: call) else { return }
        try authStore.check(user, key: r.key, rangeEnd: r.rangeEnd, write: false)
    }

    func authorize(_ call: GRPCCall, txn t: TxnRequest) throws(AuthError) {
        guard let user = try caller(of: call) else { return }
        try authorize(user, txn: t)
    }

    /// A write that `proposing` registered: Put, DeleteRange, Compact,
    /// LeaseRevoke.
    func authorize(_ call: GRPCCall, _ write: DecodedWrite) throws(AuthError) {
        if case .compact = write {
            // etcd lets anyone compact, with no user at all; a token that
            // is sent must still be a live one.
            if authStore.enabled, let token = Self.token(of: call), tokens.user(of: token, now: monotonicNanoseconds()) == nil {
                throw .invalidAuthToken
            }
            return
        }
        guard let user = try caller(of: call) else { return }
        switch write {
        case .put(let p): try authorize(user, put: p)
        case .deleteRange(let d): try authorize(user, delete: Wire.delete(d))
        case .txn(let t): try authorize(user, txn: t)
        case .compact, .leaseGrant: break
        // Revoking deletes the lease's keys: the caller must be able to.
        case .leaseRevoke(let r): try authorizeLeaseKeys(user, r.id, write: true)
        // v2 changes come over HTTP, outside v3 auth (as in etcd); a
        // member's attributes come from the member itself.
        case .v2, .memberAttributes: break
        // Auth changes and alarms are checked by their RPCs (admin).
        case .auth, .alarm: break
        // Logged by the leader itself.
        case .leaseCheckpoint: break
        }
    }

    /// etcd's rules: a put writes its key, reads it too with prev_kv, and
    /// may join a lease only if it could write every key already on it.
    private func authorize(_ user: String, put p: PutRequest) throws(AuthError) {
        try authStore.check(user, key: p.key, write: true)
        if p.lease != 0 { try authorizeLeaseKeys(user, p.lease, write: true) }
        if p.prevKV { try authStore.check(user, key: p.key, write: false) }
    }

    private func authorize(_ user: String, delete d: DeleteRangeRequest) throws(AuthError) {
        if d.prevKV { try authStore.check(user, key: d.key, rangeEnd: d.rangeEnd, write: false) }
        try authStore.check(user, key: d.key, rangeEnd: d.rangeEnd, write: true)
    }

    /// Every key a transaction compares, reads or writes, in both branches.
    private func authorize(_ user: String, txn t: TxnRequest) throws(AuthError) {
        for c in t.compare { try authStore.check(user, key: c.key, rangeEnd: c.rangeEnd, write: false) }
        for op in t.success + t.failure {
            switch op {
            case .range(let r): try authStore.check(user, key: r.key, rangeEnd: r.rangeEnd, write: false)
            case .put(let p): try authorize(user, put: p)
            case .deleteRange(let d): try authorize(user, delete: d)
            case .txn(let nested): try authorize(user, txn: nested)
            }
        }
    }

    /// Whether `user` may write (or read) every key held by lease `id`;
    /// root may, and an unknown lease holds none.
    func authorizeLeaseKeys(_ user: String, _ id: Int64, write: Bool) throws(AuthError) {
        guard !authStore.isAdmin(user), let lease = lessor.lease(id) else { return }
        // The lessor may still list keys since deleted; checking those too
        // (if the backend cannot say) only errs on the side of refusing.
        let keys = (try? keysHolding(id, of: lease.keys)) ?? Array(lease.keys)
        for key in keys { try authStore.check(user, key: key, write: write) }
    }

    /// A lease operation's caller, checked against the lease's keys.
    func authorize(_ call: GRPCCall, lease id: Int64, write: Bool) throws(AuthError) {
        guard let user = try caller(of: call) else { return }
        try authorizeLeaseKeys(user, id, write: write)
    }
}
