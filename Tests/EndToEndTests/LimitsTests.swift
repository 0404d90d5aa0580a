import Foundation
import Testing

/// etcd's limits as its clients meet them, on one server with small ones:
/// each refusal is etcd's (status and message), and the server serves on.
@Suite struct LimitsTests {
    @Test func requestLimitsRefuseAsEtcdAndTheServerServesOn() throws {
        let server = try ServerProcess(arguments: ["--max-txn-ops", "3", "--max-request-bytes", "4096", "--enable-v2"])
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        // --max-txn-ops: three puts pass, four do not.
        let three = try etcdctl.run("txn", input: "\nput a 1\nput b 2\nput c 3\n\n\n")
        #expect(three.status == 0 && three.lines == ["SUCCESS", "OK", "OK", "OK"], "\(three)")
        let four = try etcdctl.run("txn", input: "\nput a 1\nput b 2\nput c 3\nput d 4\n\n\n")
        #expect(four.status != 0 && four.stderr.contains("Error: etcdserver: too many operations in txn request"), "\(four)")
        // --max-request-bytes over gRPC.
        let big = try etcdctl.run("put", "k", String(repeating: "v", count: 5000))
        #expect(big.stderr.contains("Error: etcdserver: request is too large"), "\(big)")

        let curl = try #require(which("curl"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-limits-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func post(_ path: String, _ body: String, method: String = "POST", header: [String] = []) throws -> String {
            try body.write(toFile: dir + "/body", atomically: false, encoding: .utf8)
            return try runCommand(curl, ["-s", "-w", " %{http_code}", "-X", method, "--data-binary", "@\(dir)/body"]
                                  + header + ["http://\(server.endpoint)\(path)"]).stdout
        }
        let base64 = { (n: Int) in String(repeating: "eA", count: n) }
        // The gateway: past --max-request-bytes the request is etcd's error
        // as JSON; past it plus gRPC's 512 KiB allowance the body is refused.
        #expect(try post("/v3/kv/put", #"{"key":"YQ==","value":"\#(base64(3000))"}"#) ==
                #"{"error":"etcdserver: request is too large","message":"etcdserver: request is too large","code":3} 400"#)
        #expect(try post("/v3/kv/put", #"{"key":"YQ==","value":"\#(base64(400_000))"}"#).hasSuffix(" 413"))
        // An HTTP/1.1 head past 64 KiB; a v2 form past the body limit.
        #expect(try post("/health", "", method: "GET", header: ["-H", "X-Big: " + String(repeating: "a", count: 70_000)])
                    .hasSuffix(" 431"))
        #expect(try post("/v2/keys/big", "value=" + String(repeating: "a", count: 700_000), method: "PUT").hasSuffix(" 413"))
        #expect(try post("/v2/keys/small", "value=x", method: "PUT").hasSuffix(" 201"))
        try stillServes(server)
    }
}
