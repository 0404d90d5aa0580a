import Auth
import EtcdProto
import MVCC
import Raft
import Snapshot
import SwiftProtobuf
import WAL
import Member

/// `swetcd migrate --from-etcd-data-dir DIR`: a new data dir from a stopped
/// etcd's. The backend file (`member/snap/db`) is converted as a snapshot
/// is; then the entries etcd's WAL holds after the backend's consistent
/// index (up to the last commit index it recorded; all of them when etcd
/// ran alone) become this member's own log entries (etcd's requests in swetcd's encoding), which the
/// member applies when it starts, as etcd itself replays its WAL. So the
/// writes etcd acknowledged after its last backend commit come along too.
/// Membership comes from the flags, as with a snapshot restore: etcd's
/// membership changes in the log become empty entries.
public enum EtcdMigration {
    public struct Report: Equatable {
        /// The backend's consistent index.
        public var backendIndex: UInt64 = 0
        /// The last entry replayed: the last committed index the WAL
        /// recorded, or its last entry when etcd ran alone.
        public var commitIndex: UInt64 = 0
        /// Entries after the backend's index that change the store.
        public var replayed = 0
        /// Entries with nothing for swetcd's store: membership, cluster
        /// version, reads, a new leader's empty entry.
        public var empty = 0
        /// etcd's v2 store writes, which swetcd does not carry (etcd 3.4
        /// keeps that store outside its backend).
        public var v2Writes = 0
    }

    public enum Failure: Error, CustomStringConvertible {
        case notAnEtcdDataDir(String)
        case gap(backendIndex: UInt64, firstEntry: UInt64)
        case unknownRequest(index: UInt64)

        public var description: String {
            switch self {
            case .notAnEtcdDataDir(let why): "not an etcd data dir: \(why)"
            case .gap(let b, let f):
                "etcd's WAL starts at entry \(f), after its backend's index \(b): the entries between are lost"
            case .unknownRequest(let i): "entry \(i) of etcd's WAL holds a request swetcd does not know"
            }
        }
    }

    public static func migrate(from etcdDataDir: String, config: ServerConfig) throws -> Report {
        let wal = try EtcdWAL(directory: etcdDataDir + "/member/wal")
        let voters = try SnapshotFile.restore(etcdBackend: etcdDataDir + "/member/snap/db", dataDir: config.dataDir)
        try EtcdServer.restoreIdentity(dataDir: config.dataDir, config: config)
        let backend = try LMDBBackend(path: config.dataDir + "/member/snap/db", mapSize: Int(max(config.quotaBackendBytes, 1 << 30)))
        let backendIndex = UInt64(bitPattern: try backend.metaInt64(.consistentIndex) ?? 0)
        backend.close()

        // A member alone commits every entry in its log when it starts
        // again (it is its own quorum), so all of them come along; a member
        // of several, only those it knew were committed (the others may
        // have been replaced by a new leader's).
        let last = voters <= 1 ? (wal.entries.last?.index ?? 0) : wal.hardState.commit
        var report = Report(backendIndex: backendIndex, commitIndex: last)
        let committed = wal.entries.filter { $0.index > backendIndex && $0.index <= last }
        guard let first = committed.first else { return report }
        guard first.index == backendIndex + 1 else { throw Failure.gap(backendIndex: backendIndex, firstEntry: first.index) }
        let hasher = PasswordHasher(cost: config.bcryptCost)
        var entries: [Entry] = []
        for e in committed {
            let request = try e.type == .entryNormal && !e.data.isEmpty ? proposed(e, hasher: hasher, report: &report) : nil
            if request == nil { report.empty += 1 } else { report.replayed += 1 }
            entries.append(Entry(term: e.term, index: e.index, kind: .normal, data: request?.encoded() ?? []))
        }
        // The log starts after the backend, at the term of its last entry
        // (the term of the first entry replayed when the WAL no longer
        // holds that one).
        let baseTerm = wal.entries.first { $0.index == backendIndex }?.term ?? first.term
        let lastEntry = entries[entries.count - 1]
        let ours = try WAL(directory: config.dataDir + "/member/wal", segmentBytes: config.walSegmentBytes)
        _ = try ours.recover()  // opens the first segment
        try ours.append([RaftRecords.snapshotMarker(index: backendIndex, term: baseTerm)] + entries.map(RaftRecords.entry)
                        + [RaftRecords.hardState(HardState(term: max(wal.hardState.term, lastEntry.term), commit: lastEntry.index))])
        try ours.sync()
        return report
    }

    /// An etcd log entry's request as this member's log carries it; nil
    /// when it changes nothing swetcd keeps.
    static func proposed(_ e: Raftpb_Entry, hasher: PasswordHasher, report: inout Report) throws -> ProposedRequest? {
        // etcd 3.4 proposes its v2 requests (its members' attributes, the
        // cluster version, v2 clients' writes) bare, not in an
        // InternalRaftRequest; etcd's apply tells them apart the same way.
        if let v2 = try? Etcdserverpb_Request(serializedBytes: e.data), v2.path.hasPrefix("/"),
           ["GET", "QGET", "PUT", "POST", "DELETE", "SYNC"].contains(v2.method) {
            if isV2Write(v2) { report.v2Writes += 1 }
            return nil
        }
        let r: Etcdserverpb_InternalRaftRequest
        do {
            r = try Etcdserverpb_InternalRaftRequest(serializedBytes: e.data)
        } catch {
            throw Failure.unknownRequest(index: e.index)
        }
        func request(_ kind: LogEntryKind, _ message: some SwiftProtobuf.Message) throws -> ProposedRequest {
            ProposedRequest(kind: kind, id: 0, request: try message.serializedBytes())
        }
        func auth(_ change: AuthChange) -> ProposedRequest {
            ProposedRequest(kind: .auth, id: 0, request: change.encoded)
        }
        func password(_ plain: String, hashed: String) -> PasswordHash {
            hashed.isEmpty ? hasher.hash(plain) : PasswordHash(bcrypt: Array(hashed.utf8))
        }
        if r.hasPut { return try request(.put, r.put) }
        if r.hasDeleteRange { return try request(.deleteRange, r.deleteRange) }
        if r.hasTxn { return try request(.txn, r.txn) }
        if r.hasCompaction { return try request(.compact, r.compaction) }
        if r.hasLeaseGrant { return try request(.leaseGrant, r.leaseGrant) }
        if r.hasLeaseRevoke { return try request(.leaseRevoke, r.leaseRevoke) }
        if r.hasLeaseCheckpoint { return try request(.leaseCheckpoint, r.leaseCheckpoint) }
        if r.hasAlarm { return try request(.alarm, r.alarm) }
        if r.hasAuthEnable { return auth(.enable) }
        if r.hasAuthDisable { return auth(.disable) }
        if r.hasAuthUserAdd {
            let u = r.authUserAdd
            let noPassword = u.hasOptions && u.options.noPassword
            return auth(.addUser(u.name, noPassword ? nil : password(u.password, hashed: u.hashedPassword)))
        }
        if r.hasAuthUserDelete { return auth(.deleteUser(r.authUserDelete.name)) }
        if r.hasAuthUserChangePassword {
            let c = r.authUserChangePassword
            return auth(.changePassword(c.name, password(c.password, hashed: c.hashedPassword)))
        }
        if r.hasAuthUserGrantRole { return auth(.grantRole(role: r.authUserGrantRole.role, user: r.authUserGrantRole.user)) }
        if r.hasAuthUserRevokeRole { return auth(.revokeRole(role: r.authUserRevokeRole.role, user: r.authUserRevokeRole.name)) }
        if r.hasAuthRoleAdd { return auth(.addRole(r.authRoleAdd.name)) }
        if r.hasAuthRoleDelete { return auth(.deleteRole(r.authRoleDelete.role)) }
        if r.hasAuthRoleGrantPermission { return auth(.grantPermission(r.authRoleGrantPermission)) }
        if r.hasAuthRoleRevokePermission {
            let p = r.authRoleRevokePermission
            return auth(.revokePermission(role: p.role, key: [UInt8](p.key), rangeEnd: [UInt8](p.rangeEnd)))
        }
        if r.hasV2 {
            if isV2Write(r.v2) { report.v2Writes += 1 }
            return nil
        }
        // Reads, simple-token authentication, cluster version and member
        // attributes: nothing for the store.
        let readsOrClusterInfo = r.hasRange || r.hasAuthStatus || r.hasAuthUserGet || r.hasAuthUserList || r.hasAuthRoleGet
            || r.hasAuthRoleList || !r.authenticate.isEmpty || !r.clusterVersionSet.isEmpty || !r.clusterMemberAttrSet.isEmpty
            || !r.downgradeInfoSet.isEmpty
        guard readsOrClusterInfo else { throw Failure.unknownRequest(index: e.index) }
        return nil
    }

    /// A v2 request that changes a v2 client's keys (etcd's own records,
    /// members and the cluster version, live under /0).
    private static func isV2Write(_ r: Etcdserverpb_Request) -> Bool {
        !["GET", "QGET", "SYNC"].contains(r.method) && !r.path.hasPrefix("/0/")
    }
}
