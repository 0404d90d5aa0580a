import EtcdClient
import Foundation
import Testing

/// Certificates made with the openssl tool for one test: a CA, a server
/// certificate for 127.0.0.1 signed by it (also usable as a client's), and
/// a client certificate from another CA.
struct TestCertificates {
    let dir: String
    var ca: String { dir + "/ca.crt" }
    var cert: String { dir + "/server.crt" }
    var key: String { dir + "/server.key" }
    var otherCert: String { dir + "/other.crt" }
    var otherKey: String { dir + "/other.key" }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: dir + "/ext.cnf", atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=swetcd"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt",
             "-days", "1", "-extfile", "ext.cnf"],
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.crt", "-days", "1",
             "-subj", "/CN=other-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=intruder"],
            ["x509", "-req", "-in", "other.csr", "-CA", "other-ca.crt", "-CAkey", "other-ca.key", "-CAcreateserial",
             "-out", "other.crt", "-days", "1", "-extfile", "ext.cnf"],
        ]
        try run(steps)
    }

    /// A client certificate with `commonName` as its subject's CN, signed
    /// by the CA: its certificate and key files.
    func client(commonName: String) throws -> (cert: String, key: String) {
        let steps: [[String]] = [
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(commonName).key", "-out", "\(commonName).csr", "-subj", "/CN=\(commonName)"],
            ["x509", "-req", "-in", "\(commonName).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "\(commonName).crt", "-days", "1", "-extfile", "ext.cnf"],
        ]
        try run(steps)
        return (dir + "/\(commonName).crt", dir + "/\(commonName).key")
    }

    private func run(_ steps: [[String]]) throws {
        guard let openssl = which("openssl") else { throw E2EError("openssl not found") }
        for step in steps {
            let r = try runCommand("/bin/sh", ["-c", "cd \(dir) && \(openssl) " + step.map { "'\($0)'" }.joined(separator: " ")])
            guard r.status == 0 else { throw E2EError("openssl \(step): \(r.stderr)") }
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }

    /// swetcd on https with these certificates, requiring client
    /// certificates from the CA.
    func mutualTLSServer(_ extra: [String] = [], launcher: [String] = []) throws -> ServerProcess {
        let port = try ReferenceEtcd.freePort()
        return try ServerProcess(arguments: ["--listen-client-urls", "https://127.0.0.1:\(port)", "--cert-file", cert,
                                             "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"] + extra,
                                 launcher: launcher)
    }
}

/// Mutual TLS on the client port, through the real etcdctl, curl and Python
/// grpcio: the kubeadm-style call works, clients without a certificate from
/// the trusted CA (or speaking plaintext) are refused, and the server keeps
/// serving.
@Suite struct TLSTests {

    @Test func mutualTLSServesTrustedClientsOnly() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer()
        defer { server.stop() }
        #expect(server.log.contains("serving client traffic securely"))
        let e = Etcdctl(endpoint: server.endpoint)
        let trusted = ["--cacert", certs.ca, "--cert", certs.cert, "--key", certs.key]
        #expect(try e.run(arguments: ["put", "/registry/pods/a", "1"] + trusted).stdout == "OK\n")
        // The seed's command shape.
        let seed = try e.run(arguments: ["get", "/", "--prefix", "--keys-only", "--limit=10"] + trusted)
        #expect(seed.lines == ["/registry/pods/a"], "\(seed)")

        func refused(_ extra: [String], endpoint: String? = nil) throws -> Bool {
            let r = try runCommand("/usr/bin/etcdctl", ["--endpoints=\(endpoint ?? server.endpoint)", "--dial-timeout=2s",
                                                        "--command-timeout=3s", "get", "/", "--prefix"] + extra,
                                   environment: ["ETCDCTL_API": "3"])
            return r.status != 0 && r.stdout.isEmpty
        }
        #expect(try refused(["--cacert", certs.ca]), "no client certificate")
        #expect(try refused(["--cacert", certs.ca, "--cert", certs.otherCert, "--key", certs.otherKey]), "another CA's certificate")
        #expect(try refused([], endpoint: "http://\(server.endpoint)"), "plaintext")

        // HTTP/1.1 endpoints over the same port (ALPN http/1.1 for curl).
        if let curl = which("curl") {
            let health = try runCommand(curl, ["-s", "--cacert", certs.ca, "--cert", certs.cert, "--key", certs.key,
                                               "https://\(server.endpoint)/health"])
            #expect(health.stdout.contains("\"health\":\"true\""), "\(health)")
        }
        #expect(try e.run(arguments: ["get", "/registry/pods/a", "--print-value-only"] + trusted).lines == ["1"], "still serving")
    }

    /// --auto-tls: a self-signed certificate in the data dir, kept across a
    /// restart; etcdctl gets in with --insecure-skip-tls-verify, or with
    /// the certificate itself as its CA.
    @Test func autoTLSMakesAndKeepsASelfSignedCertificate() throws {
        let port = try ReferenceEtcd.freePort()
        let args = ["--listen-client-urls", "https://127.0.0.1:\(port)", "--auto-tls"]
        let server = try ServerProcess(arguments: args)
        let certPath = server.dataDir + "/fixtures/client/cert.pem", keyPath = server.dataDir + "/fixtures/client/key.pem"
        let e = Etcdctl(endpoint: server.endpoint)
        #expect(try e.run("--insecure-skip-tls-verify", "--insecure-transport=false", "put", "a", "1").stdout == "OK\n")
        #expect(try e.run("--cacert", certPath, "get", "a", "--print-value-only").lines == ["1"])
        let cert = try String(contentsOfFile: certPath, encoding: .utf8)
        let mode = (try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? NSNumber)?.intValue
        #expect(cert.hasPrefix("-----BEGIN CERTIFICATE-----") && mode == 0o600)
        server.stop()
        let again = try ServerProcess(arguments: args, dataDir: server.dataDir)
        defer { again.stop() }
        #expect(try String(contentsOfFile: certPath, encoding: .utf8) == cert)
        #expect(try Etcdctl(endpoint: again.endpoint).run("--cacert", certPath, "get", "a", "--print-value-only").lines == ["1"])
    }

    /// The Swift client over mutual TLS: served with the CA and a client
    /// certificate, refused without the certificate or with another CA.
    @Test func swiftClientOverMutualTLS() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: ["https://\(server.endpoint)"],
                                    tls: .init(caFile: certs.ca, certFile: certs.cert, keyFile: certs.key))
        defer { client.close() }
        _ = try await client.put("tls", "yes")
        #expect(try await client.get("tls").kvs.first?.valueString == "yes")

        for (name, tls) in [("no client certificate", EtcdClient.TLS(caFile: certs.ca)),
                            ("a server certificate from another CA", EtcdClient.TLS(caFile: certs.otherCert, certFile: certs.cert, keyFile: certs.key))] {
            let refused = try EtcdClient(endpoints: ["https://\(server.endpoint)"], timeout: 3, tls: tls)
            defer { refused.close() }
            await #expect(throws: EtcdError.self, "\(name)") { _ = try await refused.get("tls") }
        }
    }

    /// Plaintext HTTP/2, a handshake that stops half way, garbage records,
    /// an oversized header, one byte a second: each is refused or closed,
    /// and a trusted client is served throughout.
    @Test func misbehavingTLSClientsDoNotStopTheServer() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer(["--experimental-tls-handshake-timeout", "1s"])
        defer { server.stop() }
        let r = try runPython("tls_bad_clients.py", [server.endpoint, certs.ca, certs.cert, certs.key])
        #expect(r.status == 0 && r.stdout.contains("tls bad clients ok"), "\(r)")
        #expect(r.stdout.contains("plaintext h2 closed: True"), "\(r.stdout)")
        #expect(r.stdout.contains("garbage records closed: True"), "\(r.stdout)")
        #expect(r.stdout.contains("half handshake closed: True"), "\(r.stdout)")
        #expect(r.stdout.contains("oversized header answered: HTTP/1.1 431") || r.stdout.contains("oversized header answered: (closed)"),
                "\(r.stdout)")
    }
}
