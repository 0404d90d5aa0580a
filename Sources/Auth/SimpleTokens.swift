import COpenSSL

/// etcd's "simple" auth tokens: random strings a user gets from
/// Authenticate and sends back as `token` metadata. Each lives `ttl`
/// nanoseconds after its last use (etcd: 5 minutes) and dies with its
/// user's deletion, a password change, or auth being disabled. No clock of
/// its own: callers pass CLOCK_MONOTONIC nanoseconds.
public struct SimpleTokens: Sendable {
    public let ttl: UInt64
    private var tokens: [String: (user: String, expiry: UInt64)] = [:]

    public init(ttl: UInt64 = 300 * 1_000_000_000) {
        self.ttl = ttl
    }

    public var count: Int { tokens.count }

    /// A new token for `user`: 16 random letters, ".", and `index` (the
    /// log index of the authentication, as etcd's).
    public mutating func issue(for user: String, index: UInt64, now: UInt64) -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        var random = [UInt8](repeating: 0, count: 16)
        precondition(RAND_bytes(&random, Int32(random.count)) == 1, "RAND_bytes failed")
        let token = String(decoding: random.map { letters[Int($0) % letters.count] }, as: UTF8.self) + ".\(index)"
        tokens[token] = (user, now &+ ttl)
        return token
    }

    /// The user `token` belongs to, if it is alive; a use restarts its TTL.
    public mutating func user(of token: String, now: UInt64) -> String? {
        guard let entry = tokens[token] else { return nil }
        guard entry.expiry > now else {
            tokens[token] = nil
            return nil
        }
        tokens[token] = (entry.user, now &+ ttl)
        return entry.user
    }

    /// Ends every token of `user`.
    public mutating func invalidate(user: String) {
        tokens = tokens.filter { $0.value.user != user }
    }

    public mutating func invalidateAll() { tokens.removeAll() }

    /// Drops the tokens past their expiry (call now and then).
    public mutating func expire(now: UInt64) {
        tokens = tokens.filter { $0.value.expiry > now }
    }
}
