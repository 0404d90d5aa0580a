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
        case .keyNotProvided: return EtcdMessage.keyNotProvided
        case .keyNotFound: return EtcdMessage.keyNotFound
        case .valueProvided: return EtcdMessage.valueProvided
        case .leaseProvided: return EtcdMessage.leaseProvided
        case .tooManyOperations: return EtcdMessage.tooManyOperations
        case .duplicateKey: return EtcdMessage.duplicateKey
        case .invalidSortOption: return EtcdMessage.invalidSortOption
        case .compacted: return EtcdMessage.compacted
        case .futureRevision: return EtcdMessage.futureRevision
        case .leaseNotFound: return EtcdMessage.leaseNotFound
        }
    }
}
