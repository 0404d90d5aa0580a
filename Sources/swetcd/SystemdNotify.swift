#if canImport(Glibc)
import Glibc
#endif

/// systemd's readiness protocol (sd_notify), as etcd speaks it for its
/// `Type=notify` unit: `state` ("READY=1") as one datagram to the Unix
/// socket `NOTIFY_SOCKET` names (a path, or `@` and an abstract name).
/// Without the variable there is no systemd to tell: returns false.
func notifySystemd(_ state: String, environment: [String: String]) -> Bool {
    guard let name = environment["NOTIFY_SOCKET"], !name.isEmpty else { return false }
    var path = Array(name.utf8)
    if path[0] == UInt8(ascii: "@") { path[0] = 0 }
    var address = sockaddr_un()
    guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
    let message = Array(state.utf8)
    let sent = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), $0, length) }
    }
    return sent == message.count
}
