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
    /// The user may not do this (auth enabled).
    case permissionDenied
    /// Auth is enabled and the call named no user (no credentials given).
    case userEmpty
    /// Wrong user name or password.
    case authFailed
    /// The token died and authenticating again did not help.
    case invalidAuthToken
    /// The server could not be reached, or went away mid-call.
    case unavailable(String)
    case deadlineExceeded
    /// The server does not offer the method.
    case unimplemented(String)
    /// Any other status.
    case other(code: GRPCStatusCode, message: String)

    static let byMessage: [String: EtcdError] = [
        EtcdMessage.keyNotProvided: .keyNotProvided,
        EtcdMessage.keyNotFound: .keyNotFound,
        EtcdMessage.valueProvided: .valueProvided,
        EtcdMessage.leaseProvided: .leaseProvided,
        EtcdMessage.tooManyOperations: .tooManyOperations,
        EtcdMessage.duplicateKey: .duplicateKey,
        EtcdMessage.invalidSortOption: .invalidSortOption,
        EtcdMessage.compacted: .compacted,
        EtcdMessage.futureRevision: .futureRevision,
        EtcdMessage.leaseNotFound: .leaseNotFound,
        EtcdMessage.requestTooLarge: .requestTooLarge,
        EtcdMessage.databaseSpaceExceeded: .databaseSpaceExceeded,
        EtcdMessage.noLeader: .noLeader,
        EtcdMessage.permissionDenied: .permissionDenied,
        EtcdMessage.userEmpty: .userEmpty,
        EtcdMessage.authFailed: .authFailed,
        EtcdMessage.invalidAuthToken: .invalidAuthToken,
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
