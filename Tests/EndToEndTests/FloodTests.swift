import Testing

/// Floods (python/floods.py): while each runs, a well-behaved gRPC client's
/// puts and reads (and reads on new connections) are each answered within
/// a second; after it, the server's memory comes back to within 8 MiB of
/// where it was. Each prints what it saw. Serialized: each floods the
/// machine's loopback and CPU on its own; the floods run off the
/// cooperative threads (a minute of waiting on one starved other tests).
///
/// The servers run with mimalloc's decommit delay at 0, so that what the
/// server frees goes back to the kernel at once and the test sees whether
/// everything the flood took was freed. With swetcd's default (1 s) mimalloc
/// keeps freed pages until the thread that owns them allocates again
/// (docs/hardening.md has both sets of numbers).
@Suite(.serialized) struct FloodTests {
    static let freedAtOnce = ["/usr/bin/env", "MIMALLOC_DECOMMIT_DELAY=0"]

    private func flood(_ name: String, on server: ServerProcess, _ extra: [String] = [],
                       sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let arguments = [name, server.endpoint, "\(server.pid)"] + extra
        let r = try await offThePool { try runPython("floods.py", arguments) }
        for line in r.lines { print("flood \(name): \(line)") }
        #expect(r.status == 0 && r.lines.last == "flood ok", "\(r)", sourceLocation: sourceLocation)
    }

    /// A plaintext server flooded, then still serving etcdctl.
    private func flood(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let server = try ServerProcess(launcher: Self.freedAtOnce)
        defer { server.stop() }
        try await flood(name, on: server, sourceLocation: sourceLocation)
        try stillServes(server, sourceLocation: sourceLocation)
    }

    @Test func tenThousandIdleConnections() async throws { try await flood("idle") }

    @Test func aThousandHalfDoneTLSHandshakes() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer(launcher: Self.freedAtOnce)
        defer { server.stop() }
        try await flood("tls-handshake", on: server, [certs.ca, certs.cert, certs.key])
    }

    /// Streams opened and reset at once (CVE-2023-44487): nghttp2's limit
    /// on resets (1,000, then 33 a second) ends such a connection with a
    /// GOAWAY.
    @Test func rapidReset() async throws { try await flood("rapid-reset") }

    /// Range answers of 1 MiB asked for on four connections that never read
    /// (and watches whose events they never read): each connection gets at
    /// most 4 MiB of answers made for it, its later requests wait, and the
    /// server grows by less than 96 MiB meanwhile (~270 without the bound).
    @Test func streamsNeverRead() async throws { try await flood("unread") }

    /// Started with a soft descriptor limit below its hard one, the server
    /// takes the hard one, as Go's runtime does for etcd.
    @Test func theServerTakesItsHardDescriptorLimit() throws {
        let server = try ServerProcess(launcher: ["/usr/bin/prlimit", "--nofile=300:600"])
        defer { server.stop() }
        let limits = try String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }
            .map { $0.split(separator: " ").dropFirst(3).prefix(2).map(String.init) }
        #expect(openFiles == ["600", "600"], "\(limits)")
    }

    /// Started with 256 descriptors, the server keeps 128 connections at
    /// most; with its limit then cut under it, accept() fails. Either way
    /// it pauses accepting, says so, serves the connections it has, and
    /// accepts again once they close.
    @Test func descriptorsRunOut() async throws {
        let server = try ServerProcess(launcher: ["/usr/bin/prlimit", "--nofile=256:256"] + Self.freedAtOnce)
        defer { server.stop() }
        let arguments = ["descriptors", server.endpoint, "\(server.pid)", server.logPath]
        let r = try await offThePool { try runPython("floods.py", arguments) }
        for line in r.lines { print("flood descriptors: \(line)") }
        #expect(r.status == 0 && r.lines.last == "descriptors ok", "\(r)")
        try stillServes(server)
    }
}
