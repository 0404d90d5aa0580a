/// etcd's error messages, byte for byte (etcd's api/v3rpc/rpctypes): the
/// server sends them and the client recognises them from this one list.
public enum EtcdMessage {
    public static let keyNotProvided = "etcdserver: key is not provided"
    public static let keyNotFound = "etcdserver: key not found"
    public static let valueProvided = "etcdserver: value is provided"
    public static let leaseProvided = "etcdserver: lease is provided"
    public static let tooManyOperations = "etcdserver: too many operations in txn request"
    public static let duplicateKey = "etcdserver: duplicate key given in txn request"
    public static let invalidSortOption = "etcdserver: invalid sort option"
    public static let compacted = "etcdserver: mvcc: required revision has been compacted"
    public static let futureRevision = "etcdserver: mvcc: required revision is a future revision"
    public static let leaseNotFound = "etcdserver: requested lease not found"
    public static let leaseExists = "etcdserver: lease already exists"
    public static let leaseTTLTooLarge = "etcdserver: too large lease TTL"
    public static let requestTooLarge = "etcdserver: request is too large"
    public static let databaseSpaceExceeded = "etcdserver: mvcc: database space exceeded"
    public static let noLeader = "etcdserver: no leader"
    public static let notLeader = "etcdserver: not leader"
    public static let badLeaderTransferee = "etcdserver: bad leader transferee"
    /// etcd's ErrTimeoutLeaderTransfer, which its gRPC layer does not map
    /// (so it reaches a client as code Unknown).
    public static let leaderTransferTimedOut = "etcdserver: request timed out, leader transfer took too long"
    public static let requestTimedOut = "etcdserver: request timed out"
    public static let permissionDenied = "etcdserver: permission denied"
    public static let userEmpty = "etcdserver: user name is empty"
    public static let authFailed = "etcdserver: authentication failed, invalid user ID or password"
    public static let invalidAuthToken = "etcdserver: invalid auth token"
    public static let authNotEnabled = "etcdserver: authentication is not enabled"
}
