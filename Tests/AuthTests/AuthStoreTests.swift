import EtcdStatus
import Testing
import TestSupport
@testable import Auth

@Suite struct AuthStoreTests {
    /// isPermitted against a model that checks points: [k, end) is covered
    /// by the union of half-open intervals exactly when k and every
    /// interval end inside [k, end) lie in some interval (the first
    /// uncovered point, if any, is one of those).
    @Test func permissionsCoverRangesAsTheirUnion() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let alphabet: [UInt8] = [0x61, 0x62, 0x63]
        func key() -> [UInt8] { (0..<Int(rng.next() % 3 + 1)).map { _ in alphabet[Int(rng.next() % 3)] } }
        func rangeEnd(after k: [UInt8]) -> [UInt8] {
            switch rng.next() % 4 {
            case 0: return []          // the key alone
            case 1: return [0]         // to the end
            default:
                var e = key()
                while !k.lexicographicallyPrecedes(e) { e = key() + [0x63] }
                return e
            }
        }
        for round in 0..<300 {
            var store = AuthStore()
            try store.addUser("u", password: nil)
            try store.addRole("r")
            try store.grantRole("r", to: "u")
            var perms: [AuthStore.Permission] = []
            for _ in 0..<Int(rng.next() % 5) {
                let k = key()
                let p = AuthStore.Permission([.read, .write, .readwrite][Int(rng.next() % 3)], key: k, rangeEnd: rangeEnd(after: k))
                try store.grantPermission(p, to: "r")
                perms.removeAll { $0.key == p.key && $0.rangeEnd == p.rangeEnd }
                perms.append(p)
            }
            for _ in 0..<20 {
                let k = key(), e = rangeEnd(after: k), write = rng.next() % 2 == 0
                let intervals = perms.filter { $0.access == .readwrite || $0.access == (write ? .write : .read) }
                    .map { (start: $0.key, end: AuthStore.end(of: $0.key, $0.rangeEnd)) }
                let wantEnd = AuthStore.end(of: k, e)
                func inRange(_ x: [UInt8]) -> Bool { !x.lexicographicallyPrecedes(k) && (wantEnd.map { x.lexicographicallyPrecedes($0) } ?? true) }
                func covered(_ x: [UInt8]) -> Bool {
                    intervals.contains { !x.lexicographicallyPrecedes($0.start) && ($0.end.map { x.lexicographicallyPrecedes($0) } ?? true) }
                }
                let points = [k] + intervals.compactMap(\.end).filter(inRange)
                let expected = points.allSatisfy(covered)
                #expect(store.isPermitted("u", key: k, rangeEnd: e, write: write) == expected,
                        "seed \(seed) round \(round): \(k) \(e) write \(write) perms \(perms)")
            }
        }
    }

    @Test func managementFollowsEtcdsRules() throws {
        var store = AuthStore()
        #expect(throws: AuthError.rootUserMissing) { try store.enable() }
        try store.addUser("root", password: nil)
        #expect(throws: AuthError.rootRoleMissing) { try store.enable() }
        try store.grantRole("root", to: "root")  // the root role needs no adding
        try store.enable()
        #expect(store.enabled)
        #expect(throws: AuthError.invalidAuthManagement) { try store.deleteUser("root") }
        #expect(throws: AuthError.invalidAuthManagement) { try store.revokeRole("root", from: "root") }
        #expect(throws: AuthError.userEmpty) { try store.addUser("", password: nil) }
        #expect(throws: AuthError.userAlreadyExists) { try store.addUser("root", password: nil) }
        #expect(throws: AuthError.roleNotFound) { try store.grantRole("nope", to: "root") }
        try store.addRole("pods")
        #expect(throws: AuthError.roleAlreadyExists) { try store.addRole("pods") }
        #expect(throws: AuthError.roleEmpty) { try store.addRole("") }
        try store.grantPermission(.init(.read, key: Array("/registry/pods/".utf8), rangeEnd: Array("/registry/pods0".utf8)), to: "pods")
        try store.addUser("kubelet", password: nil)
        try store.grantRole("pods", to: "kubelet")
        #expect(store.isPermitted("kubelet", key: Array("/registry/pods/a".utf8), write: false))
        #expect(!store.isPermitted("kubelet", key: Array("/registry/pods/a".utf8), write: true))
        #expect(!store.isPermitted("kubelet", key: Array("/registry/secrets/a".utf8), write: false))
        #expect(store.isPermitted("root", key: Array("/anything".utf8), rangeEnd: [0], write: true))
        // The request checks, with etcd's errors.
        try store.check("kubelet", key: Array("/registry/pods/a".utf8), write: false)
        #expect(throws: AuthError.permissionDenied) { try store.check("kubelet", key: Array("/registry/pods/a".utf8), write: true) }
        #expect(throws: AuthError.permissionDenied) { try store.check("nobody", key: Array("/registry/pods/a".utf8), write: false) }
        try store.checkAdmin("root")
        #expect(throws: AuthError.permissionDenied) { try store.checkAdmin("kubelet") }
        #expect(throws: AuthError.userNotFound) { try store.checkAdmin("nobody") }
        #expect(store.isAdmin("root") && !store.isAdmin("kubelet") && !store.isAdmin("nobody"))
        #expect(store.hasRole("kubelet", "pods") && !store.hasRole("kubelet", "root") && !store.hasRole("nobody", "pods"))
        #expect(throws: AuthError.permissionNotGranted) { try store.revokePermission(key: [1], rangeEnd: [], from: "pods") }
        #expect(throws: AuthError.roleNotGranted) { try store.revokeRole("other", from: "kubelet") }
        try store.deleteRole("pods")
        #expect(store.users["kubelet"]?.roles.isEmpty == true)
        #expect(!store.isPermitted("kubelet", key: Array("/registry/pods/a".utf8), write: false))
        for e in AuthError.allCases { #expect(e.grpcMessage.hasPrefix("etcdserver: ")) }
        #expect(AuthError.permissionDenied.grpcCode == .permissionDenied && AuthError.invalidAuthToken.grpcCode == .unauthenticated)
    }

    @Test func passwordsAreSaltedAndChecked() throws {
        let hasher = PasswordHasher(cost: PasswordHasher.minimumCost)
        let a = hasher.hash("s3cret"), b = hasher.hash("s3cret")
        #expect(a.bcrypt != nil && a.hash != b.hash, "bcrypt, with a fresh salt per hash")
        #expect(a.bcrypt.map { String(decoding: $0, as: UTF8.self).hasPrefix("$2b$04$") } == true)
        #expect(hasher.verify("s3cret", against: a) && !hasher.verify("s3cret!", against: a))
        var store = AuthStore()
        try store.addUser("alice", password: a)
        try store.authenticate("alice", password: "s3cret", hasher: hasher)
        #expect(throws: AuthError.authFailed) { try store.authenticate("alice", password: "wrong", hasher: hasher) }
        #expect(throws: AuthError.authFailed) { try store.authenticate("bob", password: "s3cret", hasher: hasher) }
        try store.addUser("cn-only", password: nil)
        #expect(throws: AuthError.authFailed) { try store.authenticate("cn-only", password: "", hasher: hasher) }
        // A published bcrypt vector ($2a$, as Go's bcrypt in etcd writes).
        let vector = PasswordHash(bcrypt: Array("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".utf8))
        #expect(hasher.verify("U*U", against: vector) && !hasher.verify("U*V", against: vector))
        #expect(!hasher.verify("x", against: PasswordHash(bcrypt: Array("$2a$05$short".utf8))), "a damaged hash checks nothing")
        // A PBKDF2 hash from a store written before bcrypt still checks;
        // PBKDF2-HMAC-SHA256's published vector (RFC 7914 section 11).
        let vector2 = PasswordHasher.pbkdf2("passwd", salt: Array("salt".utf8), iterations: 1)
        #expect(vector2.prefix(8) == [0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f])
        let old = PasswordHash(salt: [1, 2, 3], iterations: 1_000, hash: PasswordHasher.pbkdf2("old", salt: [1, 2, 3], iterations: 1_000))
        #expect(hasher.verify("old", against: old) && !hasher.verify("new", against: old))
    }
}

@Suite struct AuthStoreCodecTests {
    /// Random stores survive encoding; every truncation and a changed
    /// version byte are refused.
    @Test func roundTripsAndRefusesDamage() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        func bytes(_ max: UInt64) -> [UInt8] { (0..<Int(rng.next() % max)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        for round in 0..<200 {
            var store = AuthStore()
            let roleNames = (0..<Int(rng.next() % 4)).map { "role\($0)" }
            for r in roleNames {
                try store.addRole(r)
                for _ in 0..<Int(rng.next() % 3) {
                    try store.grantPermission(.init([.read, .write, .readwrite][Int(rng.next() % 3)], key: bytes(6) + [1],
                                                    rangeEnd: bytes(4)), to: r)
                }
            }
            for u in 0..<Int(rng.next() % 4) {
                let password = rng.next() % 2 == 0 ? nil : PasswordHash(salt: bytes(17), iterations: Int(rng.next() % 300_000), hash: bytes(33))
                try store.addUser("user\(u)-é", password: password)
                for r in roleNames where rng.next() % 2 == 0 { try store.grantRole(r, to: "user\(u)-é") }
            }
            if rng.next() % 2 == 0 {
                try store.addUser("root", password: nil)
                try store.grantRole("root", to: "root")
                try store.enable()
            }
            let encoded = store.encoded
            #expect(AuthStore(encoded: encoded) == store, "seed \(seed) round \(round)")
            let cut = Int(rng.next() % UInt64(encoded.count))
            #expect(AuthStore(encoded: Array(encoded[..<cut])) == nil, "seed \(seed) round \(round) cut \(cut)")
            var versioned = encoded
            versioned[0] = 2
            #expect(AuthStore(encoded: versioned) == nil)
        }
    }
}

@Suite struct SimpleTokenTests {
    @Test func tokensLiveTheirTTLFromTheLastUse() {
        let s: UInt64 = 1_000_000_000
        var tokens = SimpleTokens(ttl: 300 * s)
        let a = tokens.issue(for: "alice", index: 7, now: 0)
        let b = tokens.issue(for: "bob", index: 8, now: 0)
        #expect(a != b && a.hasSuffix(".7") && a.count == 18)
        #expect(tokens.user(of: a, now: 299 * s) == "alice")      // and restarts its TTL
        #expect(tokens.user(of: a, now: 598 * s) == "alice")
        #expect(tokens.user(of: b, now: 300 * s) == nil)          // unused for a whole TTL
        #expect(tokens.user(of: "forged.1", now: 0) == nil)
        let c = tokens.issue(for: "alice", index: 9, now: 600 * s)
        tokens.invalidate(user: "alice")
        #expect(tokens.user(of: a, now: 600 * s) == nil && tokens.user(of: c, now: 600 * s) == nil)
        _ = tokens.issue(for: "carol", index: 10, now: 0)
        _ = tokens.issue(for: "dave", index: 11, now: 1_000 * s)
        tokens.expire(now: 1_000 * s)
        #expect(tokens.count == 1)
        tokens.invalidateAll()
        #expect(tokens.count == 0)
    }
}
