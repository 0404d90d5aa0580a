#ifndef SWETCD_COPENSSL_SHIM_H
#define SWETCD_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

// Macros that do not import into Swift, as small functions.
static inline long swetcd_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long swetcd_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline uint64_t swetcd_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options) {
    return SSL_CTX_set_options(ctx, options);
}
static inline long swetcd_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
// Without this OpenSSL 3 reports every client that closes without close_notify.
static const uint64_t swetcd_SSL_OP_IGNORE_UNEXPECTED_EOF = SSL_OP_IGNORE_UNEXPECTED_EOF;
static const uint64_t swetcd_SSL_OP_NO_RENEGOTIATION = SSL_OP_NO_RENEGOTIATION;
static const long swetcd_SSL_MODE_RELEASE_BUFFERS = SSL_MODE_RELEASE_BUFFERS;
// --auto-tls: a self-signed ECDSA P-256 certificate for `san` (OpenSSL's
// alt-name syntax, "IP:127.0.0.1,DNS:localhost"), valid for `days`, written
// as PEM to certPath and keyPath (0600). Returns 1 on success.
static inline int swetcd_write_self_signed(const char *certPath, const char *keyPath, const char *san, int days) {
    int ok = 0;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_EXTENSION *ext = NULL;
    FILE *f = NULL;
    if (!key || !x) goto done;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"swetcd", -1, -1, 0);
    X509_set_issuer_name(x, name);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(x, ext, -1)) goto done;
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!ext || !X509_add_ext(x, ext, -1)) goto done;
    if (!X509_sign(x, key, EVP_sha256())) goto done;
    f = fopen(keyPath, "w");
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) goto done;
    fclose(f);
    f = fopen(certPath, "w");
    if (!f || !PEM_write_X509(f, x)) goto done;
    ok = 1;
done:
    if (f) fclose(f);
    if (ext) X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok;
}
// The subject CN of the client's certificate when the handshake verified
// it, as UTF-8 into out (NUL-terminated). Returns its length, or -1 when
// there is none (no certificate, not verified, no CN, or too long).
static inline int swetcd_verified_peer_common_name(const SSL *ssl, char *out, int capacity) {
    if (SSL_get_verify_result(ssl) != X509_V_OK) return -1;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert) return -1;
    int length = -1;
    X509_NAME *subject = X509_get_subject_name(cert);
    int at = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (at >= 0) {
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
        if (n >= 0 && n < capacity && memchr(utf8, 0, (size_t)n) == NULL) {
            memcpy(out, utf8, (size_t)n);
            out[n] = 0;
            length = n;
        }
        OPENSSL_free(utf8);
    }
    X509_free(cert);
    return length;
}
#endif
