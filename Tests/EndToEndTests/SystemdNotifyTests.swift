import Foundation
import Testing
import TestSupport

/// swetcd tells systemd it is ready, as etcd does for its unit of
/// Type=notify (the Debian package's swetcd.service).
@Suite struct SystemdNotifyTests {
    @Test func readyGoesToTheNotifySocketOnceClientsAreServed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-notify-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // systemd's side: a datagram socket at a path.
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array((dir + "/notify").utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        var wait = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))

        let port = try ReferenceEtcd.freePort()
        let server = try ChildProcess(ServerProcess.executable, ["--data-dir", dir + "/data",
                                                                 "--listen-client-urls", "http://127.0.0.1:\(port)",
                                                                 "--advertise-client-urls", "http://127.0.0.1:\(port)"],
                                      environment: ["NOTIFY_SOCKET": dir + "/notify"], stderr: .file(dir + "/log"))
        defer { _ = server.terminate() }
        var message = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &message, message.count, 0)
        #expect(n > 0 && String(decoding: message[..<max(n, 0)], as: UTF8.self) == "READY=1")
        // Ready means serving.
        let health = try Etcdctl(endpoint: "127.0.0.1:\(port)").run("endpoint", "health")
        #expect(health.status == 0, "\(health)")
    }
}
