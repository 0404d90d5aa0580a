import EtcdStatus
import Transport

/// An error from an etcd server (or from reaching it), recognised by etcd's
/// gRPC code and exact message as etcd's own clients do.
public enum EtcdError: Error, Equatable, Sendable, CustomStringConvertible {
    case keyNotProvided
    case keyNotFound
    case valueProvided
    case leaseProvided
    case tooManyOperations
    case duplicateKey
    case invalidSortOption
    case compacted
    case futureRevision
    case leaseNotFound
    case requestTooLarge
    case databaseSpaceExceeded
    case noLeader
    /// The server could not be reached, or went away mid-call.
    case unavailable(String)
    case deadlineExceeded
    /// The server does not offer the method.
    case unimplemented(String)
    /// Any other status.
    case other(code: GRPCStatusCode, message: String)

    static let byMessage: [String: EtcdError] = [
        "etcdserver: key is not provided": .keyNotProvided,
        "etcdserver: key not found": .keyNotFound,
        "etcdserver: value is provided": .valueProvided,
        "etcdserver: lease is provided": .leaseProvided,
        "etcdserver: too many operations in txn request": .tooManyOperations,
        "etcdserver: duplicate key given in txn request": .duplicateKey,
        "etcdserver: invalid sort option": .invalidSortOption,
        "etcdserver: mvcc: required revision has been compacted": .compacted,
        "etcdserver: mvcc: required revision is a future revision": .futureRevision,
        "etcdserver: requested lease not found": .leaseNotFound,
        "etcdserver: request is too large": .requestTooLarge,
        "etcdserver: mvcc: database space exceeded": .databaseSpaceExceeded,
        "etcdserver: no leader": .noLeader,
    ]

    init(_ status: GRPCStatus) {
        if let known = Self.byMessage[status.message] {
            self = known
            return
        }
        switch status.code {
        case .unavailable: self = .unavailable(status.message)
        case .deadlineExceeded: self = .deadlineExceeded
        case .unimplemented: self = .unimplemented(status.message)
        default: self = .other(code: status.code, message: status.message)
        }
    }

    public var description: String {
        switch self {
        case .unavailable(let m): return "unavailable: \(m)"
        case .deadlineExceeded: return "context deadline exceeded"
        case .unimplemented(let m): return "unimplemented: \(m)"
        case .other(let code, let m): return "\(code): \(m)"
        default: return Self.byMessage.first { $0.value == self }?.key ?? "\(self)"
        }
    }
}
