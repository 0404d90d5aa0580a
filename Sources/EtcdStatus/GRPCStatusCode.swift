/// gRPC status codes (grpc/grpc `doc/statuscodes.md`). Every module's error
/// type maps each of its cases to one of these plus etcd's exact message.
public enum GRPCStatusCode: Int, Sendable, CaseIterable {
    case ok = 0
    case canceled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16
}

/// An error a client sees as a gRPC status: the code and the message text that
/// etcd clients match on byte for byte.
public protocol EtcdStatusError: Error {
    var grpcCode: GRPCStatusCode { get }
    var grpcMessage: String { get }
}
