import EtcdStatus

/// Why the store refused a request. Each case is one of etcd's errors, sent
/// to clients with etcd's gRPC code and exact message (see `grpcMessage`).
public enum MVCCError: Error, Equatable, CaseIterable {
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
}

extension MVCCError: EtcdStatusError {
    public var grpcCode: GRPCStatusCode {
        switch self {
        case .keyNotProvided, .keyNotFound, .valueProvided, .leaseProvided,
             .tooManyOperations, .duplicateKey, .invalidSortOption:
            return .invalidArgument
        case .compacted, .futureRevision:
            return .outOfRange
        case .leaseNotFound:
            return .notFound
        }
    }

    public var grpcMessage: String {
        switch self {
        case .keyNotProvided: return "etcdserver: key is not provided"
        case .keyNotFound: return "etcdserver: key not found"
        case .valueProvided: return "etcdserver: value is provided"
        case .leaseProvided: return "etcdserver: lease is provided"
        case .tooManyOperations: return "etcdserver: too many operations in txn request"
        case .duplicateKey: return "etcdserver: duplicate key given in txn request"
        case .invalidSortOption: return "etcdserver: invalid sort option"
        case .compacted: return "etcdserver: mvcc: required revision has been compacted"
        case .futureRevision: return "etcdserver: mvcc: required revision is a future revision"
        case .leaseNotFound: return "etcdserver: requested lease not found"
        }
    }
}
