import Foundation
import Testing
import TestSupport

/// Python's etcd3 client, and clients that misbehave: after each, the
/// server must still serve a put and a get from another client.
func stillServes(_ server: ServerProcess, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let etcdctl = Etcdctl(endpoint: server.endpoint)
    #expect(try etcdctl.run("put", "after", "ok").stdout == "OK\n", sourceLocation: sourceLocation)
    #expect(try etcdctl.run("get", "after", "--print-value-only").lines == ["ok"], sourceLocation: sourceLocation)
}

@Suite struct ClientTests {
    @Test func pythonEtcd3Client() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("etcd3_client.py", [server.endpoint])
        #expect(r.status == 0 && r.stdout.contains("etcd3 ok"), "\(r)")
    }

    @Test func pythonEtcd3Leases() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("etcd3_leases.py", [server.endpoint])
        #expect(r.status == 0 && r.stdout.contains("etcd3 leases ok"), "\(r)")
    }

    @Test func unknownMethodsAreUnimplemented() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("bad_clients.py", ["unknown-method", server.endpoint])
        #expect(r.lines == ["UNIMPLEMENTED: unknown method NoSuchMethod for service etcdserverpb.KV",
                            "UNIMPLEMENTED: unknown service etcdserverpb.NoSuchService"], "\(r)")
        try stillServes(server)
    }

    @Test func undecodableMessageIsAnError() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("bad_clients.py", ["undecodable", server.endpoint])
        #expect(r.stdout.hasPrefix("INTERNAL: grpc: error unmarshalling request"), "\(r)")
        try stillServes(server)
    }

    @Test func requestsOverTheLimitAreRefused() throws {
        let server = try ServerProcess(arguments: ["--max-request-bytes", "2048"])
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        let big = try etcdctl.run("put", "k", String(repeating: "v", count: 4096))
        #expect(big.stderr.contains("Error: etcdserver: request is too large"), "\(big)")
        let huge = try runPython("bad_clients.py", ["oversized", server.endpoint, "2048"])
        #expect(huge.stdout.hasPrefix("RESOURCE_EXHAUSTED: grpc: received message larger than max"), "\(huge)")
        #expect(try etcdctl.run("put", "k", String(repeating: "v", count: 1000)).stdout == "OK\n")
        try stillServes(server)
    }

    @Test func garbageInsteadOfAPrefaceIsDropped() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("bad_clients.py", ["garbage", server.endpoint])
        #expect(r.stdout == "closed\n", "\(r)")
        try stillServes(server)
    }

    @Test func aClientVanishingMidStreamHurtsNoOne() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        // Enough data for the snapshot to take many messages.
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        for i in 0..<20 { try etcdctl.run("put", "big\(i)", String(repeating: "x", count: 60_000)) }
        let r = try runPython("bad_clients.py", ["vanish-mid-stream", server.endpoint])
        #expect(r.stdout.contains("then vanished"), "\(r)")
        try stillServes(server)
    }

    @Test func manyConnectionsOpenedAndDropped() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("bad_clients.py", ["many-connections", server.endpoint])
        #expect(r.stdout == "opened and dropped 300\n", "\(r)")
        try stillServes(server)
    }

    @Test func http1HealthVersionAndMetricsWithKeepAliveAndHTTP10() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        try Etcdctl(endpoint: server.endpoint).run("put", "k", "v")
        guard let curl = which("curl") else { throw E2EError("curl not found") }
        let base = "http://\(server.endpoint)"
        // Two requests on one keep-alive connection.
        let both = try runCommand(curl, ["-s", "\(base)/health", "\(base)/version", "-w", "\\n"])
        #expect(both.lines == ["{\"health\":\"true\",\"reason\":\"\"}", "{\"etcdserver\":\"3.5.0\",\"etcdcluster\":\"3.5.0\"}"], "\(both)")
        let old = try runCommand(curl, ["-s", "-0", "-i", "\(base)/health"])
        #expect(old.stdout.hasPrefix("HTTP/1.0 200 OK"), "\(old)")
        #expect(old.stdout.hasSuffix("{\"health\":\"true\",\"reason\":\"\"}"))
        let metrics = try runCommand(curl, ["-s", "\(base)/metrics"])
        #expect(metrics.stdout.contains("etcd_server_has_leader 1"))
        #expect(metrics.stdout.contains("etcd_debugging_mvcc_keys_total 1"))
        #expect(metrics.stdout.contains("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1"))
        let missing = try runCommand(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/nope"])
        #expect(missing.stdout == "404")
        try stillServes(server)
    }

    /// --listen-metrics-urls (kubeadm's probes use one): /metrics and
    /// /health on their own plain-HTTP listener, nothing else there, and
    /// the client port still serves them too.
    @Test func metricsListenerServesMetricsAndHealthOnly() throws {
        let port = try ReferenceEtcd.freePort()
        let server = try ServerProcess(arguments: ["--listen-metrics-urls=http://127.0.0.1:\(port)"])
        defer { server.stop() }
        try Etcdctl(endpoint: server.endpoint).run("put", "k", "v")
        guard let curl = which("curl") else { throw E2EError("curl not found") }
        let base = "http://127.0.0.1:\(port)"
        #expect(try runCommand(curl, ["-s", "\(base)/health"]).stdout == "{\"health\":\"true\",\"reason\":\"\"}")
        let metrics = try runCommand(curl, ["-s", "\(base)/metrics"]).stdout
        #expect(metrics.contains("etcd_server_has_leader 1") && metrics.contains("etcd_debugging_mvcc_keys_total 1"))
        for path in ["/version", "/v3/kv/range", "/v2/keys/k"] {
            let status = try runCommand(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", path.hasPrefix("/v3") ? "POST" : "GET",
                                               "\(base)\(path)"]).stdout
            #expect(status == "404", "\(path) on the metrics listener: \(status)")
        }
        let grpc = try Etcdctl(endpoint: "127.0.0.1:\(port)").run("--command-timeout=2s", "get", "k")
        #expect(grpc.status != 0, "no gRPC on the metrics listener: \(grpc)")
        #expect(try runCommand(curl, ["-s", "http://\(server.endpoint)/health"]).stdout == "{\"health\":\"true\",\"reason\":\"\"}")
    }

    @Test func sigtermShutsDownCleanly() throws {
        let server = try ServerProcess()
        try Etcdctl(endpoint: server.endpoint).run("put", "k", "v")
        server.stop()
        #expect(server.termination == .exited(0))
        #expect(server.log.contains("\"msg\":\"stopped\""), "\(server.log)")
        let again = try ServerProcess(dataDir: server.dataDir)
        defer { again.stop() }
        #expect(try Etcdctl(endpoint: again.endpoint).run("get", "k", "--print-value-only").lines == ["v"])
    }

    /// Durability: a write acknowledged before kill -9 is there after restart.
    @Test func acknowledgedWritesSurviveKill9() throws {
        let first = try ServerProcess()
        let etcdctl = Etcdctl(endpoint: first.endpoint)
        for i in 0..<50 { #expect(try etcdctl.run("put", "durable/\(i)", "v\(i)").stdout == "OK\n") }
        first.kill()
        let second = try ServerProcess(dataDir: first.dataDir)
        defer {
            second.stop()
            first.removeDataDir()
        }
        let after = Etcdctl(endpoint: second.endpoint)
        #expect(try after.run("get", "durable/", "--prefix", "--keys-only").lines.count == 50)
        #expect(try after.run("get", "durable/49", "--print-value-only").lines == ["v49"])
    }
}
