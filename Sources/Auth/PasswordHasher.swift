import CCrypt
import COpenSSL

/// A password as it is kept. New hashes are bcrypt strings as etcd keeps
/// them (`$2b$10$...`, `iterations` 0, `salt` empty, `hash` the string's
/// bytes), so users move between etcd and swetcd with their snapshots.
/// Stores written before swetcd used bcrypt hold PBKDF2-HMAC-SHA256 hashes
/// (a random salt, `iterations` > 0); those still verify.
public struct PasswordHash: Equatable, Sendable {
    public var salt: [UInt8]
    public var iterations: Int
    public var hash: [UInt8]

    public init(salt: [UInt8], iterations: Int, hash: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.hash = hash
    }

    /// A bcrypt hash in crypt's modular format, as etcd's `authpb.User`
    /// holds it.
    public init(bcrypt: [UInt8]) {
        self.init(salt: [], iterations: 0, hash: bcrypt)
    }

    /// The bcrypt string, or nil for a PBKDF2 hash (etcd cannot check one).
    public var bcrypt: [UInt8]? { iterations == 0 ? hash : nil }
}

/// Hashes passwords with bcrypt (libxcrypt) at etcd's cost (10 by default,
/// `--bcrypt-cost`: tens of milliseconds a check, so callers run it off
/// the loop) and checks either kind of hash in constant time.
public struct PasswordHasher: Sendable {
    public static let minimumCost = 4
    public static let maximumCost = 31
    public let cost: Int

    public init(cost: Int = 10) {
        precondition((Self.minimumCost...Self.maximumCost).contains(cost), "bcrypt's cost is 4...31")
        self.cost = cost
    }

    public func hash(_ password: String) -> PasswordHash {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        // No random bytes given: libxcrypt takes them from the kernel.
        precondition(crypt_gensalt_rn("$2b$", UInt(cost), nil, 0, &setting, Int32(setting.count)) != nil,
                     "crypt_gensalt_rn failed")
        guard let hashed = Self.crypt(Array(password.utf8), setting: setting) else {
            preconditionFailure("bcrypt failed")
        }
        return PasswordHash(bcrypt: hashed)
    }

    public func verify(_ password: String, against stored: PasswordHash) -> Bool {
        let candidate: [UInt8]
        let expected: [UInt8]
        if let bcrypt = stored.bcrypt {
            guard let c = Self.crypt(Array(password.utf8), setting: bcrypt.map { CChar(bitPattern: $0) } + [0]) else { return false }
            candidate = c
            expected = bcrypt
        } else {
            candidate = Self.pbkdf2(password, salt: stored.salt, iterations: stored.iterations)
            expected = stored.hash
        }
        guard candidate.count == expected.count else { return false }
        return CRYPTO_memcmp(candidate, expected, candidate.count) == 0
    }

    /// crypt(3) of the password with the setting (a salt, or a whole hash
    /// to check against); nil when libxcrypt refuses the setting.
    static func crypt(_ password: [UInt8], setting: [CChar]) -> [UInt8]? {
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            // The area held the password: clear it before it is freed.
            UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
        let phrase = password.map { CChar(bitPattern: $0) } + [0]
        guard let out = crypt_r(phrase, setting, data), out.pointee != 0, out.pointee != CChar(UInt8(ascii: "*")) else {
            return nil
        }
        return Array(String(cString: out).utf8)
    }

    static func pbkdf2(_ password: String, salt: [UInt8], iterations: Int) -> [UInt8] {
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
