import Foundation
import Testing

/// The real etcdctl 3.4 (Debian's etcd-client) against a fresh swetcd,
/// checking what it prints.
@Suite struct EtcdctlTests {
    /// A server with `keys` put in order (revisions 2, 3, ...).
    func withServer(keys: [(String, String)] = [], _ body: (Etcdctl, ServerProcess) throws -> Void) throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        for (k, v) in keys { #expect(try etcdctl.run("put", k, v).stdout == "OK\n") }
        try body(etcdctl, server)
    }

    static let fruit = [("fruit/apple", "red"), ("fruit/banana", "yellow"), ("fruit/cherry", "dark"), ("veg/leek", "green")]

    @Test func putThenGet() throws {
        try withServer { etcdctl, _ throws in
            #expect(try etcdctl.run("put", "foo", "bar").stdout == "OK\n")
            #expect(try etcdctl.run("get", "foo").lines == ["foo", "bar"])
            #expect(try etcdctl.run("get", "missing").stdout == "")
        }
    }

    @Test func getPrefixKeysOnlyLimitAndValueOnly() throws {
        try withServer(keys: Self.fruit) { etcdctl, _ throws in
            #expect(try etcdctl.run("get", "fruit/", "--prefix").lines
                    == ["fruit/apple", "red", "fruit/banana", "yellow", "fruit/cherry", "dark"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--keys-only").lines
                    == ["fruit/apple", "fruit/banana", "fruit/cherry"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--limit=2").lines
                    == ["fruit/apple", "red", "fruit/banana", "yellow"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--print-value-only").lines == ["red", "yellow", "dark"])
            #expect(try etcdctl.run("get", "fruit/banana", "--from-key", "--keys-only").lines
                    == ["fruit/banana", "fruit/cherry", "veg/leek"])
        }
    }

    @Test func revisionsAndSorting() throws {
        try withServer(keys: Self.fruit) { etcdctl, _ throws in
            try etcdctl.run("put", "fruit/apple", "green")  // revision 6
            #expect(try etcdctl.run("get", "fruit/apple", "--rev=2").lines == ["fruit/apple", "red"])
            #expect(try etcdctl.run("get", "fruit/apple").lines == ["fruit/apple", "green"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--keys-only", "--sort-by=MODIFY", "--order=DESCEND").lines
                    == ["fruit/apple", "fruit/cherry", "fruit/banana"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--keys-only", "--sort-by=VALUE", "--order=ASCEND").lines
                    == ["fruit/cherry", "fruit/apple", "fruit/banana"])
            #expect(try etcdctl.run("get", "fruit/", "--prefix", "--keys-only", "--order=DESCEND").lines
                    == ["fruit/cherry", "fruit/banana", "fruit/apple"])
        }
    }

    @Test func jsonOutputCarriesHeaderAndKeyValues() throws {
        try withServer(keys: [("foo", "bar")]) { etcdctl, _ throws in
            let r = try etcdctl.run("get", "foo", "-w", "json")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let header = try #require(json["header"] as? [String: Any])
            #expect(header["revision"] as? Int == 2)
            #expect(header["raft_term"] as? Int == 2)
            #expect((header["cluster_id"] as? NSNumber)?.uint64Value ?? 0 != 0)
            #expect((header["member_id"] as? NSNumber)?.uint64Value ?? 0 != 0)
            let kv = try #require((json["kvs"] as? [[String: Any]])?.first)
            #expect(kv["key"] as? String == Data("foo".utf8).base64EncodedString())
            #expect(kv["value"] as? String == Data("bar".utf8).base64EncodedString())
            #expect(kv["create_revision"] as? Int == 2 && kv["mod_revision"] as? Int == 2 && kv["version"] as? Int == 1)
            #expect(json["count"] as? Int == 1)
        }
    }

    @Test func deleteSinglePrefixAndPrevKV() throws {
        try withServer(keys: Self.fruit) { etcdctl, _ throws in
            #expect(try etcdctl.run("del", "veg/leek").stdout == "1\n")
            #expect(try etcdctl.run("del", "veg/leek").stdout == "0\n")
            #expect(try etcdctl.run("del", "fruit/c", "--prefix", "--prev-kv").lines == ["1", "fruit/cherry", "dark"])
            #expect(try etcdctl.run("del", "fruit/", "--prefix").stdout == "2\n")
            #expect(try etcdctl.run("get", "", "--from-key").stdout == "")
        }
    }

    /// txn -i's output without its prompts ("compares:", ...).
    static func answers(_ r: CommandResult) -> [String] { r.lines.filter { !$0.hasSuffix(":") } }

    @Test func interactiveTxnTakesEitherBranch() throws {
        try withServer(keys: [("k", "v1"), ("k", "v2")]) { etcdctl, _ throws in
            // k: create 2, mod 3, version 2, value v2.
            let holds = """
            version("k") = "2"
            create("k") = "2"
            mod("k") > "2"
            value("k") = "v2"

            put then yes
            get k

            put else yes


            """
            let first = try etcdctl.run("txn", "-i", input: holds)
            #expect(Self.answers(first) == ["SUCCESS", "OK", "k", "v2"], "\(first)")
            #expect(try etcdctl.run("get", "then", "--print-value-only").lines == ["yes"])
            let fails = """
            value("k") = "v1"

            put then again

            put else yes
            del k


            """
            #expect(try Self.answers(etcdctl.run("txn", "-i", input: fails)) == ["FAILURE", "OK", "1"])
            #expect(try etcdctl.run("get", "else", "--print-value-only").lines == ["yes"])
            #expect(try etcdctl.run("get", "k").stdout == "")
        }
    }

    @Test func readingACompactedRevisionFails() throws {
        try withServer(keys: [("k", "1"), ("k", "2"), ("k", "3")]) { etcdctl, _ throws in
            #expect(try etcdctl.run("compact", "3").stdout == "compacted revision 3\n")
            let r = try etcdctl.run("get", "k", "--rev=2")
            #expect(r.status != 0)
            #expect(r.stderr.contains("Error: etcdserver: mvcc: required revision has been compacted"))
            #expect(try etcdctl.run("get", "k", "--rev=3").lines == ["k", "2"])
            let physical = try etcdctl.run("compact", "4", "--physical")
            #expect(physical.stdout == "compacted revision 4\n")
            let future = try etcdctl.run("get", "k", "--rev=99")
            #expect(future.stderr.contains("etcdserver: mvcc: required revision is a future revision"))
        }
    }

    @Test func endpointHealthStatusAndMembers() throws {
        try withServer(keys: [("a", "1")]) { etcdctl, server throws in
            let health = try etcdctl.run("endpoint", "health")
            #expect(health.status == 0)
            #expect((health.stdout + health.stderr).contains("\(server.endpoint) is healthy"))

            let status = try etcdctl.run("endpoint", "status", "-w", "json")
            let list = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]])
            let s = try #require(list.first?["Status"] as? [String: Any])
            #expect(s["version"] as? String == "3.5.0")
            #expect((s["dbSize"] as? Int ?? 0) > 0)
            // The log: the membership, the leader's empty entry, the put.
            #expect(s["raftIndex"] as? Int == 3)
            let header = try #require(s["header"] as? [String: Any])
            #expect((s["leader"] as? NSNumber)?.uint64Value == (header["member_id"] as? NSNumber)?.uint64Value)

            let members = try etcdctl.run("member", "list")
            let fields = members.stdout.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(fields.count == 6)
            #expect(fields[1] == "started" && fields[2] == "default")
            #expect(fields[4] == "http://127.0.0.1:\(server.port)" || fields[4] == "http://127.0.0.1:0")
        }
    }

    @Test func snapshotSaveWritesTheBackendAndItsChecksum() throws {
        try withServer(keys: [("a", "1"), ("b", String(repeating: "x", count: 100_000))]) { etcdctl, server throws in
            let path = server.dataDir + "-snapshot.db"
            defer { try? FileManager.default.removeItem(atPath: path) }
            let r = try etcdctl.run("snapshot", "save", path)
            #expect(r.stdout.contains("Snapshot saved at \(path)"))
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            #expect(bytes.count > 100_032)
            let body = bytes.prefix(bytes.count - 32), digest = bytes.suffix(32)
            #expect(SHA256Hex(body) == digest.map { String(format: "%02x", $0) }.joined())
        }
    }

    @Test func defragAlarmListVersionAndHashKV() throws {
        try withServer(keys: [("a", "1")]) { etcdctl, server throws in
            #expect(try etcdctl.run("defrag").stdout == "Finished defragmenting etcd member[\(server.endpoint)]\n")
            #expect(try etcdctl.run("get", "a", "--print-value-only").lines == ["1"], "data survives defrag")
            let alarms = try etcdctl.run("alarm", "list")
            #expect(alarms.status == 0 && alarms.stdout == "")
            #expect(try etcdctl.run("version").stdout.contains("etcdctl version: 3.4"))
            let hash = try etcdctl.run("endpoint", "hashkv")
            #expect(hash.status == 0 && hash.stdout.hasPrefix("\(server.endpoint), "))
        }
    }

    /// The seed's command: a controller listing pods.
    @Test func listsRegistryKeysWithALimit() throws {
        let pods = (0..<15).map { ("/registry/pods/default/pod-\(String(format: "%02d", $0))", "{}") }
        try withServer(keys: pods) { etcdctl, _ throws in
            let r = try etcdctl.run("get", "/", "--prefix", "--keys-only", "--limit=10")
            #expect(r.lines == pods.prefix(10).map(\.0))
        }
    }

    @Test func badRequestsGetEtcdsErrors() throws {
        try withServer { etcdctl, _ throws in
            let empty = try etcdctl.run("put", "", "x")
            #expect(empty.status != 0 && empty.stderr.contains("Error: etcdserver: key is not provided"))
            let ignore = try etcdctl.run("put", "nokey", "--ignore-value")
            #expect(ignore.stderr.contains("etcdserver: key not found"))
            let lease = try etcdctl.run("put", "k", "v", "--lease=1234")
            #expect(lease.stderr.contains("etcdserver: requested lease not found"))
            // The member's own (default) peer URL.
            let add = try etcdctl.run("member", "add", "two", "--peer-urls=http://localhost:2380")
            #expect(add.status != 0 && add.stderr.contains("Error: etcdserver: Peer URLs already exists"), "\(add)")
            let remove = try etcdctl.run("member", "remove", "1234")
            #expect(remove.status != 0 && remove.stderr.contains("Error: etcdserver: member not found"), "\(remove)")
            let enable = try etcdctl.run("auth", "enable")
            #expect(enable.status != 0 && enable.stderr.contains("Error: etcdserver: root user does not exist"), "\(enable)")
            #expect(try etcdctl.run("put", "k", "v").stdout == "OK\n", "the server still serves")
        }
    }
}

/// SHA-256 in hex, from the sha256sum tool (the tests need no crypto of
/// their own).
func SHA256Hex(_ data: Data) -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-sha-\(UUID().uuidString)").path
    _ = FileManager.default.createFile(atPath: path, contents: data)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let r = try? runCommand("/usr/bin/sha256sum", [path])
    return String(r?.stdout.prefix(64) ?? "")
}

/// etcdctl snapshot save from swetcd, `swetcd snapshot restore`, and a
/// member started on the result: same keys, revision and HashKV.
@Suite struct SnapshotRestoreTests {
    @Test func aRestoredMemberHasTheSameKeysRevisionAndHash() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        for i in 0..<30 { try etcdctl.run("put", "k\(i % 10)", "v\(i)") }
        try etcdctl.run("del", "k9")
        try etcdctl.run("compact", "20")
        let snapshot = server.dataDir + "-snapshot.db"
        let restored = server.dataDir + "-restored"
        defer {
            try? FileManager.default.removeItem(atPath: snapshot)
            try? FileManager.default.removeItem(atPath: restored)
        }
        #expect(try etcdctl.run("snapshot", "save", snapshot).status == 0)
        let before = try etcdctl.run("get", "", "--from-key", "-w", "json").stdout
        let hashBefore = try etcdctl.run("endpoint", "hashkv", "-w", "json").stdout

        let restore = try runCommand(ServerProcess.executable, ["snapshot", "restore", snapshot, "--data-dir", restored])
        #expect(restore.status == 0, "\(restore)")
        let again = try runCommand(ServerProcess.executable, ["snapshot", "restore", snapshot, "--data-dir", restored])
        #expect(again.status != 0 && again.stderr.contains("exists"), "restoring over a data dir is refused")

        let copy = try ServerProcess(dataDir: restored)
        defer { copy.stop() }
        let after = try Etcdctl(endpoint: copy.endpoint).run("get", "", "--from-key", "-w", "json").stdout
        let hashAfter = try Etcdctl(endpoint: copy.endpoint).run("endpoint", "hashkv", "-w", "json").stdout
        func content(_ json: String) throws -> (revision: Int, kvs: [String]) {
            let o = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
            let h = o["header"] as! [String: Any]
            let kvs = (o["kvs"] as? [[String: Any]] ?? []).map { "\($0["key"]!) \($0["value"]!) \($0["mod_revision"]!) \($0["version"]!)" }
            return (h["revision"] as! Int, kvs)
        }
        func hash(_ json: String) throws -> Int {
            let list = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [[String: Any]]
            return (list[0]["HashKV"] as! [String: Any])["hash"] as! Int
        }
        #expect(try content(before).revision == content(after).revision)
        #expect(try content(before).kvs == content(after).kvs && content(after).kvs.count == 9)
        #expect(try hash(hashBefore) == hash(hashAfter))
        // It takes writes after the restored revision.
        #expect(try Etcdctl(endpoint: copy.endpoint).run("put", "new", "1", "-w", "json").stdout.contains("\"revision\":\(try content(before).revision + 1)"))
    }

    @Test func aDamagedSnapshotIsRefused() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        try etcdctl.run("put", "k", "v")
        let snapshot = server.dataDir + "-snapshot.db"
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        try etcdctl.run("snapshot", "save", snapshot)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: snapshot))
        bytes[100] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: snapshot))
        let r = try runCommand(ServerProcess.executable, ["snapshot", "restore", snapshot, "--data-dir", server.dataDir + "-bad"])
        #expect(r.status != 0 && r.stderr.contains("snapshot file integrity check failed"), "\(r)")
    }
}
