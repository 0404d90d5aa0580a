import CLibevent
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// The server side of TLS on a client port: OpenSSL's context with the
/// member's certificate and key, TLS 1.2 at least, ALPN choosing `h2` for
/// gRPC clients (they insist on it) and `http/1.1` for the rest, and, with
/// `clientCertAuth`,
/// a client certificate signed by the trusted CA required.
public final class TLSServerContext {
    let context: OpaquePointer

    public struct Settings: Equatable, Sendable {
        public var certFile: String
        public var keyFile: String
        /// CA bundle that client certificates must chain to.
        public var trustedCAFile: String?
        /// Refuse clients without a certificate signed by `trustedCAFile`.
        public var clientCertAuth: Bool

        public init(certFile: String, keyFile: String, trustedCAFile: String? = nil, clientCertAuth: Bool = false) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.trustedCAFile = trustedCAFile
            self.clientCertAuth = clientCertAuth
        }
    }

    public init(_ settings: Settings) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError.openssl("SSL_CTX_new") }
        context = ctx
        _ = swetcd_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        _ = swetcd_SSL_CTX_set_options(ctx, swetcd_SSL_OP_IGNORE_UNEXPECTED_EOF | swetcd_SSL_OP_NO_RENEGOTIATION)
        _ = swetcd_SSL_CTX_set_mode(ctx, swetcd_SSL_MODE_RELEASE_BUFFERS)
        guard SSL_CTX_use_certificate_chain_file(ctx, settings.certFile) == 1 else {
            throw TLSError.openssl("cannot load the certificate \(settings.certFile)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, settings.keyFile, SSL_FILETYPE_PEM) == 1,
              SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError.openssl("cannot load the key \(settings.keyFile) (or it does not match the certificate)")
        }
        if let ca = settings.trustedCAFile {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw TLSError.openssl("cannot load the trusted CA \(ca)")
            }
        }
        if settings.clientCertAuth {
            guard settings.trustedCAFile != nil else { throw TLSError.settings("--client-cert-auth needs --trusted-ca-file") }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        SSL_CTX_set_alpn_select_cb(ctx, { _, out, outlen, clientList, clientLength, _ in
            // The first of ours (http/1.1, then h2) the client offers.
            var chosen: UnsafeMutablePointer<UInt8>?
            var chosenLength: UInt8 = 0
            let rc = SSL_select_next_proto(&chosen, &chosenLength, TLSServerContext.alpn.baseAddress,
                                           UInt32(TLSServerContext.alpn.count), clientList, clientLength)
            guard rc == OPENSSL_NPN_NEGOTIATED, let chosen else { return SSL_TLSEXT_ERR_NOACK }
            out?.pointee = UnsafePointer(chosen)
            outlen?.pointee = chosenLength
            return SSL_TLSEXT_ERR_OK
        }, nil)
    }

    deinit { SSL_CTX_free(context) }

    /// Writes a self-signed certificate and key (--auto-tls) valid for
    /// `ips` and localhost, for a year; the key readable by its owner only.
    public static func writeSelfSigned(certFile: String, keyFile: String, ips: [String]) throws {
        let san = (ips.map { "IP:\($0)" } + ["DNS:localhost"]).joined(separator: ",")
        guard swetcd_write_self_signed(certFile, keyFile, san, 365) == 1 else {
            throw TLSError.openssl("cannot make a self-signed certificate in \(certFile)")
        }
        chmod(keyFile, 0o600)
    }

    /// ALPN protocols in wire form, in order of preference; lives for the
    /// process (OpenSSL points into it).
    nonisolated(unsafe) static let alpn: UnsafeMutableBufferPointer<UInt8> = {
        // http/1.1 first: gRPC clients offer only h2 (and get it), while
        // curl and browsers offer both and get the HTTP/1.1 endpoints
        // (/health, /metrics, the JSON gateway), which only HTTP/1.1 serves.
        let wire: [UInt8] = [8] + Array("http/1.1".utf8) + [2] + Array("h2".utf8)
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: wire.count)
        _ = buffer.initialize(from: wire)
        return buffer
    }()

    /// A bufferevent that runs the server side of a handshake on `fd`.
    func acceptingBufferevent(_ base: OpaquePointer, _ fd: Int32) -> OpaquePointer? {
        guard let ssl = SSL_new(context) else { return nil }
        // CLOSE_ON_FREE: freeing the bufferevent frees the SSL and the socket.
        guard let bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                       Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            SSL_free(ssl)
            return nil
        }
        return bev
    }
}

public enum TLSError: Error, CustomStringConvertible {
    case openssl(String)
    case settings(String)

    public var description: String {
        switch self {
        case .openssl(let what):
            let code = ERR_get_error()
            return code == 0 ? what : "\(what): \(Self.text(of: code))"
        case .settings(let why): return why
        }
    }

    /// OpenSSL's text for an error code.
    static func text(of code: UInt) -> String {
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The client side of TLS: the CA bundle that the server's certificate must
/// chain to (the system's when none is given), an optional client
/// certificate, ALPN `h2`, and the server's name or IP checked against its
/// certificate unless `insecureSkipVerify`.
public final class TLSClientContext: @unchecked Sendable {
    // @unchecked: the SSL_CTX is only read after init (OpenSSL allows
    // sharing a configured context between threads).
    let context: OpaquePointer
    let verifies: Bool

    public struct Settings: Equatable, Sendable {
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?
        public var insecureSkipVerify: Bool

        public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, insecureSkipVerify: Bool = false) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
            self.insecureSkipVerify = insecureSkipVerify
        }
    }

    public init(_ settings: Settings) throws {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError.openssl("SSL_CTX_new") }
        context = ctx
        verifies = !settings.insecureSkipVerify
        _ = swetcd_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        _ = swetcd_SSL_CTX_set_options(ctx, swetcd_SSL_OP_IGNORE_UNEXPECTED_EOF)
        if let ca = settings.caFile {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else { throw TLSError.openssl("cannot load the CA \(ca)") }
        } else {
            SSL_CTX_set_default_verify_paths(ctx)
        }
        if let cert = settings.certFile {
            guard let key = settings.keyFile else { throw TLSError.settings("a client certificate needs its key") }
            guard SSL_CTX_use_certificate_chain_file(ctx, cert) == 1,
                  SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1,
                  SSL_CTX_check_private_key(ctx) == 1 else {
                throw TLSError.openssl("cannot load the client certificate \(cert) and key \(key)")
            }
        }
        SSL_CTX_set_verify(ctx, verifies ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        let h2: [UInt8] = [2] + Array("h2".utf8)
        guard SSL_CTX_set_alpn_protos(ctx, h2, UInt32(h2.count)) == 0 else { throw TLSError.openssl("SSL_CTX_set_alpn_protos") }
    }

    deinit { SSL_CTX_free(context) }

    /// A bufferevent that connects and runs the client side of a handshake
    /// with `host` (a name or an IPv4 address, checked against the
    /// certificate).
    func connectingBufferevent(_ base: OpaquePointer, host: String) -> OpaquePointer? {
        guard let ssl = SSL_new(context) else { return nil }
        var probe = in_addr()
        if inet_pton(AF_INET, host, &probe) == 1 {
            if verifies { X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) }
        } else {
            _ = swetcd_SSL_set_tlsext_host_name(ssl, host)
            if verifies { SSL_set1_host(ssl, host) }
        }
        guard let bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                       Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            SSL_free(ssl)
            return nil
        }
        return bev
    }
}
