import Auth
import Bolt
import EtcdProto
import Foundation
import MVCC
import SwiftProtobuf

/// etcd's encodings of what its backend buckets hold besides the key
/// bucket (whose revision keys and `mvccpb.KeyValue` values are ours too):
/// `meta`, `lease`, `auth`, `authUsers`, `authRoles`, `members`,
/// `members_removed`, `cluster`. Both directions: a snapshot etcd saved is
/// read with these, and the snapshots swetcd serves are written with them.
enum EtcdBuckets {
    static let names = (key: "key", meta: "meta", lease: "lease", alarm: "alarm", auth: "auth", users: "authUsers",
                        roles: "authRoles", members: "members", removed: "members_removed", cluster: "cluster",
                        v2: "swetcd_v2")
    /// The v2 store's index, beside its nodes in the `swetcd_v2` bucket
    /// (node keys are paths, which start with "/").
    static let v2IndexKey = Array("v2_index".utf8)

    // MARK: meta

    /// etcd keeps the compaction revisions as revision keys (main, '_',
    /// sub) and the consistent index and term as 8 big-endian bytes.
    static func revisionBytes(_ main: Int64) -> [UInt8] { RevisionKey(Revision(main: main)).bytes }
    static func int64Bytes(_ v: Int64) -> [UInt8] { bigEndianBytes(UInt64(bitPattern: v)) }

    // MARK: lease

    /// etcd's `leasepb.Lease`: ID (1), TTL (2), RemainingTTL (3), varints,
    /// zeros left out.
    static func lease(_ b: [UInt8]) -> StoredLease? {
        var fields: [UInt64: Int64] = [:]
        var i = 0
        func varint() -> UInt64? {
            var v: UInt64 = 0
            for shift in stride(from: 0, to: 64, by: 7) {
                guard i < b.count else { return nil }
                let byte = b[i]
                i += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return v }
            }
            return nil
        }
        while i < b.count {
            guard let tag = varint(), tag & 7 == 0, let value = varint() else { return nil }
            fields[tag >> 3] = Int64(bitPattern: value)
        }
        guard let id = fields[1] else { return nil }
        return StoredLease(id: id, ttl: fields[2] ?? 0, remainingTTL: fields[3] ?? 0)
    }

    static func encoded(_ lease: StoredLease) -> [UInt8] {
        var out: [UInt8] = []
        for (field, value) in [(UInt64(1), lease.id), (2, lease.ttl), (3, lease.remainingTTL)] where value != 0 {
            KeyValue.appendVarint(field << 3, &out)
            KeyValue.appendVarint(UInt64(bitPattern: value), &out)
        }
        return out
    }

    // MARK: auth, authUsers, authRoles

    /// The users, roles and enabled state etcd's buckets hold, as an
    /// `AuthStore` (etcd's bcrypt hashes are ours too).
    static func authStore(enabled: Bool, users: [[UInt8]], roles: [[UInt8]]) throws -> AuthStore {
        var store = AuthStore()
        do {
            for bytes in roles {
                let role = try Authpb_Role(serializedBytes: bytes)
                let name = String(decoding: role.name, as: UTF8.self)
                try store.addRole(name)
                for p in role.keyPermission {
                    let access: AuthStore.Access = switch p.permType {
                    case .read: .read
                    case .write: .write
                    default: .readwrite
                    }
                    try store.grantPermission(.init(access, key: Array(p.key), rangeEnd: Array(p.rangeEnd)), to: name)
                }
            }
            for bytes in users {
                let user = try Authpb_User(serializedBytes: bytes)
                let name = String(decoding: user.name, as: UTF8.self)
                let noPassword = user.options.noPassword || user.password.isEmpty
                try store.addUser(name, password: noPassword ? nil : PasswordHash(bcrypt: Array(user.password)))
                for role in user.roles { try store.grantRole(role, to: name) }
            }
            if enabled { try store.enable() }
        } catch let error as AuthError {
            throw SnapshotFile.Failure.unreadable("the auth buckets: \(error.grpcMessage)")
        } catch {
            throw SnapshotFile.Failure.unreadable("the auth buckets: \(error)")
        }
        return store
    }

    /// The `auth`, `authRoles` and `authUsers` buckets of a store. A
    /// password hashed before swetcd used bcrypt (PBKDF2) is left empty:
    /// etcd could not check it, so that user cannot log in there until an
    /// administrator sets a new password.
    static func buckets(of store: AuthStore) throws -> (auth: BoltWriter.Bucket, roles: BoltWriter.Bucket, users: BoltWriter.Bucket) {
        let auth = BoltWriter.Bucket([
            (Array("authEnabled".utf8), .value([store.enabled ? 1 : 0])),
            (Array("authRevision".utf8), .value(int64Bytes(1))),
        ])
        var roles = BoltWriter.Bucket()
        for role in store.roles.values.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            var r = Authpb_Role()
            r.name = Data(role.name.utf8)
            r.keyPermission = role.permissions.map { p in
                var perm = Authpb_Permission()
                perm.permType = switch p.access {
                case .read: .read
                case .write: .write
                case .readwrite: .readwrite
                }
                perm.key = Data(p.key)
                perm.rangeEnd = Data(p.rangeEnd)
                return perm
            }
            roles.entries.append((Array(role.name.utf8), .value(try r.serializedBytes())))
        }
        var users = BoltWriter.Bucket()
        for user in store.users.values.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            var u = Authpb_User()
            u.name = Data(user.name.utf8)
            u.roles = user.roles.sorted()
            if let password = user.password {
                u.password = Data(password.bcrypt ?? [])
            } else {
                u.options.noPassword = true
            }
            users.entries.append((Array(user.name.utf8), .value(try u.serializedBytes())))
        }
        return (auth, roles, users)
    }

    // MARK: members, members_removed, cluster

    /// A member as etcd's `members` bucket keeps it: its ID in hex as the
    /// key, `{"id":..,"peerURLs":[..],"name":..,"clientURLs":[..]}` as the
    /// value (Go's JSON of etcd's membership.Member).
    static func memberEntry(_ m: EtcdSnapshot.Member) -> (key: [UInt8], entry: BoltWriter.Bucket.Entry) {
        func strings(_ list: [String]) -> String { "[" + list.map { "\"\(jsonEscaped($0))\"" }.joined(separator: ",") + "]" }
        var json = "{\"id\":\(m.id),\"peerURLs\":\(strings(m.peerURLs))"
        if m.isLearner { json += ",\"isLearner\":true" }
        if !m.name.isEmpty { json += ",\"name\":\"\(jsonEscaped(m.name))\"" }
        if !m.clientURLs.isEmpty { json += ",\"clientURLs\":\(strings(m.clientURLs))" }
        json += "}"
        return (Array(String(m.id, radix: 16).utf8), .value(Array(json.utf8)))
    }

    private static func jsonEscaped(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
