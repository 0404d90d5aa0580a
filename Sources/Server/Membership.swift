import EtcdProto
import EtcdStatus
import Foundation  // raftpb bytes fields are Data (membership entries are rare)
import Raft
import SwiftProtobuf
import Transport

/// The cluster's members as the applied log says they are (etcd's
/// RaftCluster): each member's ID, peer URLs and whether it is a learner
/// (changed only by membership entries), its name and client URLs (which
/// it publishes once started), and every ID ever removed (never to come
/// back). A pure value: the same entries applied in the same order give
/// the same membership on every member, so each decides alike whether a
/// change is valid.
struct Membership: Equatable {
    struct Member: Equatable {
        var id: UInt64
        var name = ""
        var peerURLs: [String] = []
        var clientURLs: [String] = []
        var isLearner = false
    }

    private(set) var members: [UInt64: Member] = [:]
    private(set) var removed: Set<UInt64> = []

    /// etcd's default limit.
    static let maxLearners = 1

    /// Members by ID, as etcd lists them.
    var sorted: [Member] { members.keys.sorted().map { members[$0]! } }
    var voters: [UInt64] { members.values.filter { !$0.isLearner }.map(\.id).sorted() }
    var learners: [UInt64] { members.values.filter(\.isLearner).map(\.id).sorted() }
    var isEmpty: Bool { members.isEmpty }

    subscript(id: UInt64) -> Member? { members[id] }

    /// A change to the membership, as a membership entry carries it.
    enum Change: Equatable {
        case add(Member)
        case promote(UInt64)
        case remove(UInt64)
        case update(UInt64, peerURLs: [String])

        /// What it changes in Raft's membership (an update, nothing).
        var raft: ConfChange? {
            switch self {
            case .add(let m): m.isLearner ? .addLearner(m.id) : .addVoter(m.id)
            case .promote(let id): .addVoter(id)
            case .remove(let id): .remove(id)
            case .update: nil
            }
        }

        var node: UInt64 {
            switch self {
            case .add(let m): m.id
            case .promote(let id), .remove(let id), .update(let id, _): id
            }
        }
    }

    /// Why a change is refused: etcd's errors, each with its status.
    enum Refusal: Error, Equatable {
        case idRemoved, idExists, peerURLExists, tooManyLearners, notFound, notLearner

        var status: GRPCStatus {
            switch self {
            case .idRemoved, .notFound: GRPCStatus(.notFound, EtcdMessage.memberNotFound)
            case .idExists: GRPCStatus(.failedPrecondition, EtcdMessage.memberExists)
            case .peerURLExists: GRPCStatus(.failedPrecondition, EtcdMessage.peerURLExists)
            case .tooManyLearners: GRPCStatus(.failedPrecondition, EtcdMessage.tooManyLearners)
            case .notLearner: GRPCStatus(.failedPrecondition, EtcdMessage.memberNotLearner)
            }
        }
    }

    /// etcd's ValidateConfigurationChange.
    func validate(_ change: Change) -> Refusal? {
        if removed.contains(change.node) { return .idRemoved }
        switch change {
        case .add(let m):
            if members[m.id] != nil { return .idExists }
            let taken = Set(members.values.flatMap(\.peerURLs))
            if m.peerURLs.contains(where: taken.contains) { return .peerURLExists }
            if m.isLearner && learners.count + 1 > Self.maxLearners { return .tooManyLearners }
        case .promote(let id):
            guard let m = members[id] else { return .notFound }
            if !m.isLearner { return .notLearner }
        case .remove(let id):
            if members[id] == nil { return .notFound }
        case .update(let id, let urls):
            if members[id] == nil { return .notFound }
            let taken = Set(members.values.filter { $0.id != id }.flatMap(\.peerURLs))
            if urls.contains(where: taken.contains) { return .peerURLExists }
        }
        return nil
    }

    /// Applies a change `validate` let through.
    mutating func apply(_ change: Change) {
        switch change {
        case .add(let m): members[m.id] = m
        case .promote(let id): members[id]?.isLearner = false
        case .remove(let id):
            members[id] = nil
            removed.insert(id)
        case .update(let id, let urls): members[id]?.peerURLs = urls
        }
    }

    /// A member's published name and client URLs (ignored for one not a
    /// member, as etcd ignores a removed member's).
    mutating func publish(_ id: UInt64, name: String, clientURLs: [String]) {
        members[id]?.name = name
        members[id]?.clientURLs = clientURLs
    }

    // MARK: In the backend

    /// The members as an etcdserverpb.MemberListResponse's members field,
    /// then each removed ID (field 15, fixed64): what the backend keeps.
    func encoded() throws -> [UInt8] {
        var list = Etcdserverpb_MemberListResponse()
        list.members = sorted.map(\.proto)
        var bytes: [UInt8] = try list.serializedBytes()
        for id in removed.sorted() {
            bytes.append(15 << 3 | 1)
            for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        }
        return bytes
    }

    init() {}

    init(encoded bytes: [UInt8]) throws {
        let list = try Etcdserverpb_MemberListResponse(serializedBytes: bytes)
        for m in list.members {
            members[m.id] = Member(id: m.id, name: m.name, peerURLs: m.peerUrls, clientURLs: m.clientUrls, isLearner: m.isLearner)
        }
        // Unknown to the message, the removed IDs are kept as unknown fields.
        var at = 0
        let unknown = Array(list.unknownFields.data)
        while at + 9 <= unknown.count, unknown[at] == 15 << 3 | 1 {
            var id: UInt64 = 0
            for i in 0..<8 { id |= UInt64(unknown[at + 1 + i]) << UInt64(8 * i) }
            removed.insert(id)
            at += 9
        }
    }
}

extension Membership.Member {
    var proto: Etcdserverpb_Member {
        var m = Etcdserverpb_Member()
        m.id = id
        m.name = name
        m.peerUrls = peerURLs
        m.clientUrls = clientURLs
        m.isLearner = isLearner
        return m
    }
}

/// A membership entry's data: etcd's `raftpb.ConfChange`, whose context is
/// the member as etcd's JSON (`{"id":…,"peerURLs":[…],"isLearner":true}`;
/// a promotion's adds `"isPromote":true`), so a log of ours reads as
/// etcd's would.
struct MembershipEntry: Equatable {
    /// The proposer's request ID (0 for a bootstrap entry).
    var requestID: UInt64
    var change: Membership.Change

    func encoded() throws -> [UInt8] {
        var cc = Raftpb_ConfChange()
        cc.id = requestID
        cc.nodeID = change.node
        var context: String
        switch change {
        case .add(let m):
            cc.type = m.isLearner ? .confChangeAddLearnerNode : .confChangeAddNode
            context = Self.json(id: m.id, peerURLs: m.peerURLs, name: m.name, clientURLs: m.clientURLs, isLearner: m.isLearner)
        case .promote(let id):
            cc.type = .confChangeAddNode
            context = Self.json(id: id, peerURLs: nil, name: "", clientURLs: [], isLearner: false)
            context.removeLast()
            context += ",\"isPromote\":true}"
        case .remove:
            cc.type = .confChangeRemoveNode
            context = ""
        case .update(let id, let urls):
            cc.type = .confChangeUpdateNode
            context = Self.json(id: id, peerURLs: urls, name: "", clientURLs: [], isLearner: false)
        }
        cc.context = Data(context.utf8)
        return try cc.serializedBytes()
    }

    init(requestID: UInt64, change: Membership.Change) {
        self.requestID = requestID
        self.change = change
    }

    /// Nil for bytes that are no membership entry of ours.
    init?(encoded bytes: [UInt8]) {
        guard let cc = try? Raftpb_ConfChange(serializedBytes: bytes) else { return nil }
        requestID = cc.id
        let context = cc.context.isEmpty ? [:] : MiniJSON.object(Array(cc.context))
        guard let context else { return nil }
        let id = cc.nodeID
        let urls = context["peerURLs"]?.strings ?? []
        switch cc.type {
        case .confChangeAddNode where context["isPromote"]?.bool == true:
            change = .promote(id)
        case .confChangeAddNode, .confChangeAddLearnerNode:
            change = .add(Membership.Member(id: id, name: context["name"]?.string ?? "", peerURLs: urls,
                                            clientURLs: context["clientURLs"]?.strings ?? [],
                                            isLearner: cc.type == .confChangeAddLearnerNode))
        case .confChangeRemoveNode:
            change = .remove(id)
        case .confChangeUpdateNode:
            change = .update(id, peerURLs: urls)
        }
    }

    /// etcd's Member as encoding/json writes it (omitempty on the name,
    /// client URLs and learner flag).
    private static func json(id: UInt64, peerURLs: [String]?, name: String, clientURLs: [String], isLearner: Bool) -> String {
        func list(_ l: [String]) -> String { "[" + l.map { GoJSONText.quoted($0) }.joined(separator: ",") + "]" }
        var out = "{\"id\":\(id),\"peerURLs\":" + (peerURLs.map(list) ?? "null")
        if !name.isEmpty { out += ",\"name\":" + GoJSONText.quoted(name) }
        if !clientURLs.isEmpty { out += ",\"clientURLs\":" + list(clientURLs) }
        if isLearner { out += ",\"isLearner\":true" }
        return out + "}"
    }
}

/// Just enough JSON for a membership entry's context: one object of
/// numbers, strings, booleans, nulls and arrays of strings.
enum MiniJSON {
    enum Value: Equatable {
        case number(UInt64), string(String), bool(Bool), null, strings([String])

        var string: String? { if case .string(let s) = self { s } else { nil } }
        var strings: [String]? { if case .strings(let s) = self { s } else { nil } }
        var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    }

    /// The object's members, or nil if `bytes` is not such an object.
    static func object(_ bytes: [UInt8]) -> [String: Value]? {
        var p = Parser(bytes: bytes)
        guard let o = p.object(), p.atEnd else { return nil }
        return o
    }

    private struct Parser {
        let bytes: [UInt8]
        var at = 0

        var atEnd: Bool {
            mutating get {
                skipSpace()
                return at == bytes.count
            }
        }

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[at]) { at += 1 }
        }

        mutating func take(_ c: UInt8) -> Bool {
            skipSpace()
            guard at < bytes.count, bytes[at] == c else { return false }
            at += 1
            return true
        }

        mutating func object() -> [String: Value]? {
            guard take(UInt8(ascii: "{")) else { return nil }
            var out: [String: Value] = [:]
            if take(UInt8(ascii: "}")) { return out }
            repeat {
                guard let key = string(), take(UInt8(ascii: ":")), let v = value() else { return nil }
                out[key] = v
            } while take(UInt8(ascii: ","))
            return take(UInt8(ascii: "}")) ? out : nil
        }

        mutating func value() -> Value? {
            skipSpace()
            guard at < bytes.count else { return nil }
            switch bytes[at] {
            case UInt8(ascii: "\""): return string().map(Value.string)
            case UInt8(ascii: "["):
                at += 1
                var list: [String] = []
                if take(UInt8(ascii: "]")) { return .strings(list) }
                repeat {
                    guard let s = string() else { return nil }
                    list.append(s)
                } while take(UInt8(ascii: ","))
                return take(UInt8(ascii: "]")) ? .strings(list) : nil
            case UInt8(ascii: "t"): return literal("true", .bool(true))
            case UInt8(ascii: "f"): return literal("false", .bool(false))
            case UInt8(ascii: "n"): return literal("null", .null)
            default:
                var n: UInt64 = 0, digits = 0
                while at < bytes.count, bytes[at] >= UInt8(ascii: "0"), bytes[at] <= UInt8(ascii: "9") {
                    let (times, o1) = n.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(UInt64(bytes[at] - UInt8(ascii: "0")))
                    guard !o1, !o2 else { return nil }
                    n = sum
                    at += 1
                    digits += 1
                }
                return digits > 0 ? .number(n) : nil
            }
        }

        mutating func literal(_ word: String, _ v: Value) -> Value? {
            let w = Array(word.utf8)
            guard at + w.count <= bytes.count, Array(bytes[at..<at + w.count]) == w else { return nil }
            at += w.count
            return v
        }

        mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            var out: [UInt8] = []
            while at < bytes.count {
                let c = bytes[at]
                at += 1
                switch c {
                case UInt8(ascii: "\""): return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard at < bytes.count else { return nil }
                    let e = bytes[at]
                    at += 1
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "u"):
                        guard at + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[at..<at + 4], as: UTF8.self), radix: 16),
                              let scalar = Unicode.Scalar(v) else { return nil }
                        at += 4
                        out += Array(String(Character(scalar)).utf8)
                    default: out.append(e)  // \" \\ \/
                    }
                default: out.append(c)
                }
            }
            return nil
        }
    }
}
