import EtcdProto
import EtcdStatus
import MVCC
import Transport

/// Alarms (etcd's alarm store) and the backend quota. NOSPACE is raised
/// when a write would take the backend past `--quota-backend-bytes`; while
/// it is raised, writes that could grow the backend (puts, txns with a put,
/// lease grants) are refused with etcd's error, and reads, deletes,
/// compaction and defragmentation go on. Alarms are kept in the backend's
/// meta table and survive a restart; `Alarm` DEACTIVATE clears one (a
/// write still over the quota raises it again).
extension EtcdServer {
    struct RaisedAlarm: Hashable, Comparable {
        var memberID: UInt64
        var type: Int
        static func < (a: RaisedAlarm, b: RaisedAlarm) -> Bool { (a.memberID, a.type) < (b.memberID, b.type) }
    }

    static let noSpace = GRPCStatus(.resourceExhausted, EtcdMessage.databaseSpaceExceeded)

    func loadAlarms() throws {
        guard let bytes = try backend.meta(.alarms) else { return }
        var at = 0
        while at + 9 <= bytes.count {
            alarms.insert(RaisedAlarm(memberID: bigEndianUInt64(bytes[at..<at + 8])!, type: Int(bytes[at + 8])))
            at += 9
        }
    }

    /// Records the alarms in the backend (in the apply's batch).
    private func saveAlarms() throws {
        var bytes: [UInt8] = []
        for a in alarms.sorted() {
            bytes += bigEndianBytes(a.memberID)
            bytes.append(UInt8(truncatingIfNeeded: a.type))
        }
        try backend.setMeta(.alarms, bytes)
    }

    /// Raises an alarm (applying a log entry); false if it was raised already.
    private func raiseAlarm(_ alarm: RaisedAlarm) throws -> Bool {
        guard alarms.insert(alarm).inserted else { return false }
        logger.warning("alarm raised", metadata: ["alarm": "\(Self.alarmName(alarm.type))", "member-id": "\(hex(alarm.memberID))"])
        try saveAlarms()
        return true
    }

    private func clearAlarm(_ alarm: RaisedAlarm) throws -> Bool {
        guard alarms.remove(alarm) != nil else { return false }
        logger.info("alarm cleared", metadata: ["alarm": "\(Self.alarmName(alarm.type))", "member-id": "\(hex(alarm.memberID))"])
        try saveAlarms()
        return true
    }

    /// Proposes raising this member's NOSPACE alarm (once while one is in
    /// flight), so every member learns it through the log, and runs `then`
    /// once it is applied (or failed): etcd's quota check, too, answers
    /// only after its alarm went through Raft.
    private func proposeNoSpace(then: @escaping () -> Void) {
        if noSpaceWaiters != nil { return noSpaceWaiters!.append(then) }
        noSpaceWaiters = [then]
        var r = Etcdserverpb_AlarmRequest()
        r.action = .activate
        r.memberID = memberID
        r.alarm = .nospace
        let bytes = (try? r.serializedBytes() as [UInt8]) ?? []
        propose(.alarm, bytes, .alarm(r)) { [unowned self] _ in
            let waiters = noSpaceWaiters ?? []
            noSpaceWaiters = nil
            for w in waiters { w() }
        }
    }

    /// Refuses (through `reply`) a write that may not be proposed for lack
    /// of space; false: go on.
    func refusedForSpace(_ write: DecodedWrite, requestBytes: Int,
                         _ reply: @escaping (Result<GRPCMessageBuffer, GRPCStatus>) -> Void) -> Bool {
        switch quotaRefusal(for: write, requestBytes: requestBytes) {
        case nil: return false
        case .raised: reply(.failure(Self.noSpace))
        case .exceeded: proposeNoSpace { reply(.failure(Self.noSpace)) }
        }
        return true
    }

    enum QuotaRefusal { case raised, exceeded }

    static func alarmName(_ type: Int) -> String {
        switch type {
        case Etcdserverpb_AlarmType.nospace.rawValue: return "NOSPACE"
        case Etcdserverpb_AlarmType.corrupt.rawValue: return "CORRUPT"
        default: return "\(type)"
        }
    }

    /// What etcd's Status lists in `errors` for an alarm (the proto's text form).
    static func alarmDescription(_ a: RaisedAlarm) -> String {
        "memberID:\(a.memberID) alarm:\(alarmName(a.type)) "
    }

    var noSpaceRaised: Bool { alarms.contains { $0.type == Etcdserverpb_AlarmType.nospace.rawValue } }

    /// Why a write may not be proposed for lack of space: NOSPACE is raised,
    /// or this write would take the backend past the quota (which raises it).
    private func quotaRefusal(for write: DecodedWrite, requestBytes: Int) -> QuotaRefusal? {
        let grows: Bool
        switch write {
        case .put, .leaseGrant: grows = true
        case .txn(let t): grows = t.containsOp { if case .put = $0 { true } else { false } }
        case .deleteRange, .compact, .leaseRevoke, .v2, .memberAttributes, .auth, .alarm, .leaseCheckpoint: grows = false  // etcd's quota does not cover v2
        }
        guard grows else { return nil }
        if noSpaceRaised { return .raised }
        // etcd's estimate: what is in the backend plus the request's size
        // and some overhead per key.
        if Int64(backend.highWaterMark + requestBytes + 256) >= config.quotaBackendBytes { return .exceeded }
        return nil
    }

    /// The Alarm RPC: GET lists (all, or one type) on this member; ACTIVATE
    /// (raises) and DEACTIVATE (clears) go through the log, and the answer
    /// lists the alarms it found or changed.
    func applyAlarm(_ request: Etcdserverpb_AlarmRequest) throws -> Etcdserverpb_AlarmResponse {
        // No header: etcd's applier answers Alarm without one.
        var r = Etcdserverpb_AlarmResponse()
        func member(_ a: RaisedAlarm) -> Etcdserverpb_AlarmMember {
            var m = Etcdserverpb_AlarmMember()
            m.memberID = a.memberID
            m.alarm = Etcdserverpb_AlarmType(rawValue: a.type) ?? .UNRECOGNIZED(a.type)
            return m
        }
        let asked = RaisedAlarm(memberID: request.memberID, type: request.alarm.rawValue)
        switch request.action {
        case .get:
            r.alarms = alarms.filter { request.alarm == .none || $0.type == request.alarm.rawValue }
                .sorted().map(member)
        case .activate:
            if request.alarm != .none, try raiseAlarm(asked) { r.alarms = [member(asked)] }
        case .deactivate:
            if try clearAlarm(asked) { r.alarms = [member(asked)] }
        case .UNRECOGNIZED:
            break
        }
        return r
    }
}
