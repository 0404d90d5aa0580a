import COpenSSL

/// A password as it is kept: PBKDF2-HMAC-SHA256 of it with a random salt.
public struct PasswordHash: Equatable, Sendable {
    public var salt: [UInt8]
    public var iterations: Int
    public var hash: [UInt8]

    public init(salt: [UInt8], iterations: Int, hash: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.hash = hash
    }
}

/// Hashes and checks passwords with OpenSSL's PBKDF2 (a slow KDF: 200,000
/// iterations by default, tens of milliseconds a check, as etcd's bcrypt
/// cost 10) and compares in constant time.
public struct PasswordHasher: Sendable {
    public let iterations: Int

    public init(iterations: Int = 200_000) {
        self.iterations = iterations
    }

    public func hash(_ password: String) -> PasswordHash {
        var salt = [UInt8](repeating: 0, count: 16)
        precondition(RAND_bytes(&salt, Int32(salt.count)) == 1, "RAND_bytes failed")
        return PasswordHash(salt: salt, iterations: iterations, hash: Self.derive(password, salt: salt, iterations: iterations))
    }

    public func verify(_ password: String, against stored: PasswordHash) -> Bool {
        let candidate = Self.derive(password, salt: stored.salt, iterations: stored.iterations)
        guard candidate.count == stored.hash.count else { return false }
        return CRYPTO_memcmp(candidate, stored.hash, candidate.count) == 0
    }

    static func derive(_ password: String, salt: [UInt8], iterations: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let bytes = Array(password.utf8)
        let ok = bytes.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { chars in
                PKCS5_PBKDF2_HMAC(chars.baseAddress, Int32(bytes.count), salt, Int32(salt.count), Int32(iterations),
                                  EVP_sha256(), Int32(out.count), &out)
            }
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed")
        return out
    }
}
