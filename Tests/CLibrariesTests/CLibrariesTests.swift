import CLibevent
import CLMDB
import CNghttp2
import COpenSSL
import Testing
#if canImport(Glibc)
import Glibc  // with every C module in one Swift module: their types must agree
#endif

/// Each system library target resolves, links and answers a call.
@Suite struct CLibrariesTests {
    @Test func libeventCreatesABase() throws {
        let base = try #require(event_base_new())
        defer { event_base_free(base) }
        #expect(String(cString: event_get_version()).hasPrefix("2."))
    }

    @Test func nghttp2ReportsItsVersion() throws {
        let info = try #require(nghttp2_version(0))
        #expect(info.pointee.version_num >= 0x012000)
    }

    @Test func opensslHashesWithSHA256() {
        var digest = [UInt8](repeating: 0, count: 32)
        let input = Array("abc".utf8)
        _ = SHA256(input, input.count, &digest)
        let hex = digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        #expect(hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func opensslShimMacrosWork() throws {
        let ctx = try #require(SSL_CTX_new(TLS_server_method()))
        defer { SSL_CTX_free(ctx) }
        #expect(swetcd_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1)
        let opts = swetcd_SSL_CTX_set_options(ctx, swetcd_SSL_OP_IGNORE_UNEXPECTED_EOF)
        #expect(opts & swetcd_SSL_OP_IGNORE_UNEXPECTED_EOF != 0)
    }

    @Test func fdSetIsOneTypeAcrossModules() {
        // fd_set comes from glibc through every shim; a layout disagreement
        // would stop this file from compiling at all.
        var set = fd_set()
        withUnsafeMutableBytes(of: &set) { $0[0] = 1 }
        #expect(MemoryLayout<fd_set>.size == 128)
    }

    @Test func lmdbReportsItsVersion() {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        _ = mdb_version(&major, &minor, &patch)
        #expect(major == 0 && minor >= 9)
    }
}
