import COpenSSL

/// etcd's member and cluster IDs, derived as etcd derives them, so a
/// member started with the same flags has the ID a real etcd would show:
/// a member's ID is the first 8 bytes (big-endian) of the SHA-1 of its
/// sorted peer URLs, concatenated, followed by the cluster token; the
/// cluster's, of the SHA-1 of its members' IDs, sorted, as 8-byte
/// big-endian numbers.
enum ClusterIdentity {
    static func memberID(peerURLs: [String], token: String) -> UInt64 {
        firstEightBytes(of: Array((peerURLs.sorted().joined() + token).utf8))
    }

    static func clusterID(memberIDs: [UInt64]) -> UInt64 {
        var bytes: [UInt8] = []
        for id in memberIDs.sorted() {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        }
        return firstEightBytes(of: bytes)
    }

    private static func firstEightBytes(of bytes: [UInt8]) -> UInt64 {
        var digest = [UInt8](repeating: 0, count: 20)
        bytes.withUnsafeBufferPointer { _ = SHA1($0.baseAddress, $0.count, &digest) }
        return digest[..<8].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// The members `--initial-cluster` names: each name with its peer URLs.
struct InitialCluster: Equatable, Sendable {
    var members: [(name: String, peerURLs: [String])]

    static func == (a: InitialCluster, b: InitialCluster) -> Bool {
        a.members.map(\.name) == b.members.map(\.name) && a.members.map(\.peerURLs) == b.members.map(\.peerURLs)
    }

    /// Parses `name=url,name=url,...` (a name may come more than once, one
    /// URL each time), keeping the names' first-seen order.
    init?(_ s: String) {
        var members: [(name: String, peerURLs: [String])] = []
        for part in s.split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = part.firstIndex(of: "="), eq != part.startIndex else { return nil }
            let name = String(part[..<eq]), url = String(part[part.index(after: eq)...])
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else { return nil }
            if let i = members.firstIndex(where: { $0.name == name }) {
                members[i].peerURLs.append(url)
            } else {
                members.append((name, [url]))
            }
        }
        guard !members.isEmpty else { return nil }
        self.members = members
    }

    func memberIDs(token: String) -> [(name: String, id: UInt64)] {
        members.map { ($0.name, ClusterIdentity.memberID(peerURLs: $0.peerURLs, token: token)) }
    }

    func clusterID(token: String) -> UInt64 {
        ClusterIdentity.clusterID(memberIDs: memberIDs(token: token).map(\.id))
    }
}
