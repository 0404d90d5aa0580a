import EtcdProto
import Foundation
import MVCC
import Testing

/// swetcd started exactly as kubeadm starts etcd in its static pod
/// (every flag in `--flag=value` form, TLS everywhere, a metrics URL),
/// driven by the seed's etcdctl command line.
@Suite(.serialized) struct KubeadmTests {
    /// kubeadm's flags for member `name` of `cluster` (name=peer-URL,...).
    static func flags(name: String, dataDir: String, client: UInt16, peer: UInt16, metrics: UInt16, cluster: String,
                      certs: TestCertificates) -> [String] {
        [
            "--advertise-client-urls=https://127.0.0.1:\(client)",
            "--cert-file=\(certs.cert)",
            "--client-cert-auth=true",
            "--data-dir=\(dataDir)",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--initial-advertise-peer-urls=https://127.0.0.1:\(peer)",
            "--initial-cluster=\(cluster)",
            "--key-file=\(certs.key)",
            "--listen-client-urls=https://127.0.0.1:\(client)",
            "--listen-metrics-urls=http://127.0.0.1:\(metrics)",
            "--listen-peer-urls=https://127.0.0.1:\(peer)",
            "--name=\(name)",
            "--peer-cert-file=\(certs.cert)",
            "--peer-client-cert-auth=true",
            "--peer-key-file=\(certs.key)",
            "--peer-trusted-ca-file=\(certs.ca)",
            "--snapshot-count=10000",
            "--trusted-ca-file=\(certs.ca)",
        ]
    }

    /// Members started with kubeadm's flags, one port set each.
    final class KubeadmCluster {
        let certs: TestCertificates
        let names: [String]
        let ports: [(client: UInt16, peer: UInt16, metrics: UInt16)]
        let dataDirs: [String]
        var members: [ServerProcess?]

        init(size: Int) throws {
            certs = try TestCertificates()
            names = (1...size).map { "node\($0)" }
            ports = try names.map { _ in (try ReferenceEtcd.freePort(), try ReferenceEtcd.freePort(), try ReferenceEtcd.freePort()) }
            let base = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-kubeadm-\(UUID().uuidString)").path
            dataDirs = names.map { "\(base)-\($0)" }
            members = Array(repeating: nil, count: size)
            for i in names.indices { try start(i) }
        }

        func start(_ i: Int) throws {
            let cluster = names.indices.map { "\(names[$0])=https://127.0.0.1:\(ports[$0].peer)" }.joined(separator: ",")
            members[i] = try ServerProcess(arguments: KubeadmTests.flags(name: names[i], dataDir: dataDirs[i], client: ports[i].client,
                                                                         peer: ports[i].peer, metrics: ports[i].metrics, cluster: cluster,
                                                                         certs: certs),
                                           dataDir: dataDirs[i], exactly: true)
        }

        /// The seed's etcdctl: v3, the cluster's CA, a client certificate.
        func etcdctl(_ i: Int, _ arguments: String..., certificate: Bool = true) throws -> CommandResult {
            let tls = certificate ? ["--cacert", certs.ca, "--cert", certs.cert, "--key", certs.key] : ["--cacert", certs.ca]
            return try runCommand(try #require(which("etcdctl")),
                                  ["--endpoints=https://127.0.0.1:\(ports[i].client)", "--command-timeout=5s"] + tls + arguments,
                                  environment: ["ETCDCTL_API": "3"])
        }

        func stop() {
            for m in members { m?.stop() }
            for d in dataDirs {
                try? FileManager.default.removeItem(atPath: d)
                try? FileManager.default.removeItem(atPath: d + ".log")
            }
            certs.remove()
        }
    }

    /// What the seed checks on a kubeadm node: the first ten /registry/
    /// keys, a client without a certificate refused, probes on the
    /// metrics URL.
    private func checkServesLikeKubeadmsEtcd(_ c: KubeadmCluster, _ i: Int) throws {
        for n in (0..<12).reversed() {
            let put = try c.etcdctl(i, "put", "/registry/pods/default/pod-\(String(format: "%02d", n))", "{}")
            #expect(put.stdout == "OK\n", "\(put)")
        }
        let keys = try c.etcdctl(i, "get", "/", "--prefix", "--keys-only", "--limit=10")
        #expect(keys.lines == (0..<10).map { "/registry/pods/default/pod-\(String(format: "%02d", $0))" }, "\(keys)")
        let anonymous = try c.etcdctl(i, "get", "/", "--prefix", "--keys-only", certificate: false)
        #expect(anonymous.status != 0 && anonymous.lines.isEmpty, "\(anonymous)")
        let health = try httpGet(endpoint: "127.0.0.1:\(c.ports[i].metrics)", path: "/health", timeoutSeconds: 5)
        #expect(health.hasPrefix("HTTP/1.1 200") && health.contains(#"{"health":"true""#), "\(health)")
        let metrics = try httpGet(endpoint: "127.0.0.1:\(c.ports[i].metrics)", path: "/metrics", timeoutSeconds: 5)
        #expect(metrics.contains("etcd_server_has_leader 1"), "\(metrics.prefix(500))")
    }

    @Test func oneMemberFromKubeadmsFlags() throws {
        let c = try KubeadmCluster(size: 1)
        defer { c.stop() }
        try checkServesLikeKubeadmsEtcd(c, 0)
        // A restart runs the initial corruption check: alone, it passes.
        c.members[0]!.stop()
        try c.start(0)
        #expect(c.members[0]!.log.contains("initial corruption checking passed"))
        #expect(try c.etcdctl(0, "get", "/registry/pods/default/pod-00", "--print-value-only").lines == ["{}"])
    }

    /// Three members from kubeadm's flags; one whose backend was altered
    /// while it was stopped (a value changed, nothing else) refuses to
    /// start after the initial corruption check, with etcd's message.
    @Test func threeMembersFromKubeadmsFlagsAndACorruptedOne() throws {
        let c = try KubeadmCluster(size: 3)
        defer { c.stop() }
        try checkServesLikeKubeadmsEtcd(c, 1)
        for i in 0..<3 {
            let deadline = Date().addingTimeInterval(10)
            while try c.etcdctl(i, "get", "/registry/pods/default/pod-11", "--consistency=s", "--print-value-only").lines != ["{}"]
                    && Date() < deadline { usleep(100_000) }
        }
        // A clean restart passes the check.
        c.members[2]!.stop()
        try c.start(2)
        #expect(c.members[2]!.log.contains("initial corruption checking passed"), "\(c.members[2]!.log.suffix(2000))")
        // Stopped, its backend altered on disk, started again: refused.
        c.members[2]!.stop()
        try Self.alterOneValue(inDataDir: c.dataDirs[2])
        let refused = try? ServerProcess(arguments: KubeadmTests.flags(
            name: c.names[2], dataDir: c.dataDirs[2], client: c.ports[2].client, peer: c.ports[2].peer, metrics: c.ports[2].metrics,
            cluster: c.names.indices.map { "\(c.names[$0])=https://127.0.0.1:\(c.ports[$0].peer)" }.joined(separator: ","),
            certs: c.certs), dataDir: c.dataDirs[2], exactly: true)
        #expect(refused == nil, "the altered member served")
        let log = (try? String(contentsOfFile: c.dataDirs[2] + ".log", encoding: .utf8)) ?? ""
        #expect(log.contains("found data inconsistency with peers") && log.contains("found different hash values from remote peer"),
                "\(log.suffix(2000))")
        c.members[2] = nil
        // The other two go on (after an election, if the stopped member led).
        var put = try c.etcdctl(0, "put", "/registry/after", "x")
        if put.stdout != "OK\n" { print("kubeadm test: the first put after the corrupted member left failed (retrying): \(put)") }
        let deadline = Date().addingTimeInterval(20)
        while put.stdout != "OK\n" && Date() < deadline {
            usleep(200_000)
            put = try c.etcdctl(0, "put", "/registry/after", "x")
        }
        #expect(put.stdout == "OK\n", "\(put)\n\(c.members[0]!.log.suffix(2000))")
    }

    /// Changes the last byte of one stored value (a valid mvccpb.KeyValue
    /// still, its revision unchanged).
    static func alterOneValue(inDataDir dir: String) throws {
        let backend = try LMDBBackend(path: dir + "/member/snap/db")
        defer { backend.close() }
        var target: (RevisionKey, [UInt8])?
        try backend.forEachRevision(from: Revision(main: 0)) { key, value in
            if !key.isTombstone, let kv = try? Mvccpb_KeyValue(serializedBytes: Array(value)), !kv.value.isEmpty { target = (key, Array(value)) }
            return true
        }
        var (key, bytes) = try #require(target)
        bytes[bytes.count - 1] ^= 0x01
        try backend.putRevision(key, value: bytes)
        try backend.commit()
    }

    /// --experimental-corrupt-check-time: the leader compares HashKVs at
    /// that interval; a member whose backend was altered gets the CORRUPT
    /// alarm, and writes are refused with etcd's error until it is cleared.
    @Test func thePeriodicCheckRaisesCorrupt() throws {
        let c = try ClusterTests.Cluster(extraFlags: ["--experimental-corrupt-check-time=500ms"])
        defer { c.stop() }
        _ = try c.leader()
        #expect(try c.etcdctl(0).run("put", "k", "v").stdout == "OK\n")
        for i in 0..<3 {
            let deadline = Date().addingTimeInterval(10)
            while try c.etcdctl(i).run("get", "k", "--consistency=s", "--print-value-only").lines != ["v"] && Date() < deadline {
                usleep(100_000)
            }
        }
        #expect(try c.etcdctl(0).run("alarm", "list").stdout == "")
        let victim = (try c.leader() + 1) % 3
        c.members[victim]!.stop()
        try Self.alterOneValue(inDataDir: c.dataDirs[victim])
        try c.start(victim)
        var alarms = ""
        let deadline = Date().addingTimeInterval(15)
        repeat {
            alarms = try c.etcdctl((victim + 1) % 3).run("alarm", "list").stdout
            if alarms.contains("alarm:CORRUPT") { break }
            usleep(200_000)
        } while Date() < deadline
        #expect(alarms.contains("alarm:CORRUPT"), "no CORRUPT alarm: \(alarms)")
        let put = try c.etcdctl((victim + 1) % 3).run("put", "k", "after")
        #expect(put.status != 0 && put.stderr.contains("etcdserver: corrupt cluster"), "\(put)")
    }
}
