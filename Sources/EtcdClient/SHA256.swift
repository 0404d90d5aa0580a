import COpenSSL

/// Incremental SHA-256 (OpenSSL's EVP).
struct SHA256Accumulator: ~Copyable {
    private let context: OpaquePointer

    init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    mutating func update(_ bytes: [UInt8]) {
        EVP_DigestUpdate(context, bytes, bytes.count)
    }

    mutating func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &n)
        return out
    }

    deinit { EVP_MD_CTX_free(context) }
}
