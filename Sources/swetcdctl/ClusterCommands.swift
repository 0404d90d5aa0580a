import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

struct Member: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Membership related commands", subcommands: [MemberList.self])
}

struct MemberList: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all members in the cluster")
    @OptionGroup var global: GlobalOptions

    func execute() async throws {
        let out = try Output(global)
        if out.format == .protobuf { throw out.unsupported() }
        let r: Etcdserverpb_MemberListResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.Cluster/MemberList", Etcdserverpb_MemberListRequest())
        }
        let rows = r.members.map { m in
            [String(m.id, radix: 16), m.name.isEmpty ? "unstarted" : "started", m.name,
             m.peerUrls.joined(separator: ","), m.clientUrls.joined(separator: ","), m.isLearner ? "true" : "false"]
        }
        switch out.format {
        case .json: out.json(r)
        case .table: print(table(["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], rows), terminator: "")
        case .fields:
            out.fieldsHeader(r.header)
            for m in r.members {
                print("\"ID\" : \(m.id)")
                print("\"Name\" : \(goQuote(m.name))")
                for u in m.peerUrls { print("\"PeerURL\" : \(goQuote(u))") }
                for u in m.clientUrls { print("\"ClientURL\" : \(goQuote(u))") }
                print("\"IsLearner\" : \(m.isLearner)")
                print("")
            }
        default: for row in rows { print(row.joined(separator: ", ")) }
        }
    }
}

struct Endpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Endpoint related commands", subcommands: [EndpointHealth.self, EndpointStatus.self, EndpointHashKV.self])

    static let booleans: Set<String> = ["cluster"]
}

/// The endpoints a command talks to: the flag's, or with --cluster every
/// member's client URLs.
func endpoints(_ global: GlobalOptions, cluster: Bool) async throws -> [String] {
    guard cluster else { return global.endpointList }
    do {
        let r: Etcdserverpb_MemberListResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.Cluster/MemberList", Etcdserverpb_MemberListRequest())
        }
        return r.members.flatMap(\.clientUrls)
    } catch let e as CtlError {
        throw CtlError(.error, "failed to fetch endpoints from etcd cluster member list: \(e.message)")
    }
}

/// The same options aimed at one endpoint.
func at(_ global: GlobalOptions, _ endpoint: String) -> GlobalOptions {
    var g = global
    g.endpoints = endpoint
    return g
}

struct EndpointHealth: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "health", abstract: "Checks the healthiness of endpoints specified in `--endpoints` flag")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false

    func execute() async throws {
        let out = try Output(global)
        if out.format == .protobuf { throw out.unsupported() }
        var results: [(endpoint: String, healthy: Bool, took: String, error: String)] = []
        for ep in try await endpoints(global, cluster: cluster) {
            let started = DispatchTime.now().uptimeNanoseconds
            var error = ""
            do {
                var r = Etcdserverpb_RangeRequest()
                r.key = Data("health".utf8)
                let request = r
                let _: Etcdserverpb_RangeResponse = try await withClient(at(global, ep)) {
                    try await $0.unary("/etcdserverpb.KV/Range", request)
                }
            } catch let e as CtlError where e.message == "etcdserver: permission denied" {
                // Answered, just not to this user: healthy, as etcdctl says.
            } catch let e as CtlError {
                error = e.message
            }
            let took = goDuration(DispatchTime.now().uptimeNanoseconds - started)
            results.append((ep, error.isEmpty, took, error))
        }
        switch out.format {
        case .json:
            out.json(.array(results.map { h in
                .object([("endpoint", .string(h.endpoint)), ("health", .bool(h.healthy)), ("took", .string(h.took))]
                        + (h.error.isEmpty ? [] : [("error", .string(h.error))]))
            }))
        case .table:
            print(table(["endpoint", "health", "took", "error"], results.map { [$0.endpoint, "\($0.healthy)", $0.took, $0.error] }),
                  terminator: "")
        case .fields:
            for h in results {
                print("\"Endpoint\" : \(goQuote(h.endpoint))")
                print("\"Health\" : \(h.healthy)")
                print("\"Took\" : \(h.took)")
                print("\"Error\" : \(h.error)")
                print("")
            }
        default:
            for h in results {
                let line = h.error.isEmpty
                    ? "\(h.endpoint) is healthy: successfully committed proposal: took = \(h.took)\n"
                    : "\(h.endpoint) is unhealthy: failed to commit proposal: \(h.error)\n"
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        if results.contains(where: { !$0.healthy }) { throw CtlError(.error, "unhealthy cluster") }
    }
}

struct EndpointStatus: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Prints out the status of endpoints specified in `--endpoints` flag")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false

    func execute() async throws {
        let out = try Output(global)
        if out.format == .protobuf { throw out.unsupported() }
        var statuses: [(String, Etcdserverpb_StatusResponse)] = []
        var failed = false
        for ep in try await endpoints(global, cluster: cluster) {
            do {
                let r: Etcdserverpb_StatusResponse = try await withClient(at(global, ep)) {
                    try await $0.unary("/etcdserverpb.Maintenance/Status", Etcdserverpb_StatusRequest())
                }
                statuses.append((ep, r))
            } catch let e as CtlError {
                failed = true
                FileHandle.standardError.write(Data("Failed to get the status of endpoint \(ep) (\(e.message))\n".utf8))
            }
        }
        let rows = statuses.map { ep, r in
            [ep, String(r.header.memberID, radix: 16), r.version, humanBytes(UInt64(max(r.dbSize, 0))),
             "\(r.leader == r.header.memberID)", "\(r.isLearner)", "\(r.raftTerm)", "\(r.raftIndex)", "\(r.raftAppliedIndex)",
             r.errors.joined(separator: ", ")]
        }
        switch out.format {
        case .json: out.json(.array(statuses.map { .object([("Endpoint", .string($0.0)), ("Status", GoJSON($0.1))]) }))
        case .table:
            print(table(["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term", "raft index",
                         "raft applied index", "errors"], rows), terminator: "")
        case .fields:
            for (ep, r) in statuses {
                out.fieldsHeader(r.header)
                print("\"Version\" : \(goQuote(r.version))")
                print("\"DBSize\" : \(r.dbSize)")
                print("\"Leader\" : \(r.leader)")
                print("\"IsLearner\" : \(r.isLearner)")
                print("\"RaftIndex\" : \(r.raftIndex)")
                print("\"RaftTerm\" : \(r.raftTerm)")
                print("\"RaftAppliedIndex\" : \(r.raftAppliedIndex)")
                print("\"Errors\" : [\(r.errors.joined(separator: " "))]")
                print("\"Endpoint\" : \(goQuote(ep))")
                print("")
            }
        default: for row in rows { print(row.joined(separator: ", ")) }
        }
        if failed { throw ExitCode(CtlExit.error.rawValue) }
    }
}

struct EndpointHashKV: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "hashkv", abstract: "Prints the KV history hash for each endpoint in --endpoints")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false
    @Option(help: "maximum revision to hash (default: all revisions)") var rev: Int64 = 0

    func execute() async throws {
        let out = try Output(global)
        if out.format == .protobuf { throw out.unsupported() }
        var hashes: [(String, Etcdserverpb_HashKVResponse)] = []
        var failure: CtlError?
        for ep in try await endpoints(global, cluster: cluster) {
            do {
                var request = Etcdserverpb_HashKVRequest()
                request.revision = rev
                let r: Etcdserverpb_HashKVResponse = try await withClient(at(global, ep)) { [request] in
                    try await $0.unary("/etcdserverpb.Maintenance/HashKV", request)
                }
                hashes.append((ep, r))
            } catch let e as CtlError {
                failure = e
                FileHandle.standardError.write(Data("Failed to get the hash of endpoint \(ep) (\(e.message))\n".utf8))
            }
        }
        switch out.format {
        case .json: out.json(.array(hashes.map { .object([("Endpoint", .string($0.0)), ("HashKV", GoJSON($0.1))]) }))
        case .table: print(table(["endpoint", "hash"], hashes.map { [$0.0, "\($0.1.hash)"] }), terminator: "")
        case .fields:
            for (ep, r) in hashes {
                out.fieldsHeader(r.header)
                print("\"Endpoint\" : \(goQuote(ep))")
                print("\"Hash\" : \(r.hash)")
                print("")
            }
        default: for (ep, r) in hashes { print("\(ep), \(r.hash)") }
        }
        if let failure { throw failure }
    }
}

struct Alarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Alarm related commands", subcommands: [AlarmList.self, AlarmDisarm.self])
}

/// An alarm as Go's %+v prints the proto struct: its compact text form.
func alarmText(_ a: Etcdserverpb_AlarmMember) -> String {
    let names = [0: "NONE", 1: "NOSPACE", 2: "CORRUPT"]
    return "memberID:\(a.memberID) alarm:\(names[a.alarm.rawValue] ?? "\(a.alarm.rawValue)") "
}

struct AlarmList: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all alarms")
    @OptionGroup var global: GlobalOptions

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        var request = Etcdserverpb_AlarmRequest()
        request.action = .get
        let r: Etcdserverpb_AlarmResponse = try await withClient(global) { [request] in
            try await $0.unary("/etcdserverpb.Maintenance/Alarm", request)
        }
        switch out.format {
        case .json: out.json(r)
        case .fields:
            out.fieldsHeader(r.header)
            for a in r.alarms {
                print("\"MemberID\" : \(a.memberID)")
                print("\"AlarmType\" : \(["NONE", "NOSPACE", "CORRUPT"][safe: a.alarm.rawValue] ?? "\(a.alarm.rawValue)")")
                print("")
            }
        default: for a in r.alarms { print(alarmText(a)) }
        }
    }
}

struct AlarmDisarm: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "disarm", abstract: "Disarms all alarms")
    @OptionGroup var global: GlobalOptions

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        // As clientv3's AlarmDisarm with an empty member: list, then
        // deactivate each, answering with what was deactivated.
        let disarmed: Etcdserverpb_AlarmResponse = try await withClient(global) { client in
            var list = Etcdserverpb_AlarmRequest()
            list.action = .get
            let current: Etcdserverpb_AlarmResponse = try await client.unary("/etcdserverpb.Maintenance/Alarm", list)
            var result = Etcdserverpb_AlarmResponse()
            result.header = current.header
            for a in current.alarms {
                var d = Etcdserverpb_AlarmRequest()
                d.action = .deactivate
                d.memberID = a.memberID
                d.alarm = a.alarm
                let r: Etcdserverpb_AlarmResponse = try await client.unary("/etcdserverpb.Maintenance/Alarm", d)
                result.header = r.header
                result.alarms += r.alarms
            }
            return result
        }
        switch out.format {
        case .json: out.json(disarmed)
        case .fields: out.fieldsHeader(disarmed.header)
        default: for a in disarmed.alarms { print(alarmText(a)) }
        }
    }
}

struct Defrag: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Defragments the storage of the etcd members with given endpoints")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false
    @Option(name: .customLong("data-dir"), help: "Optional. If present, defragments a data directory not in use by etcd.") var dataDir: String?

    static let booleans: Set<String> = ["cluster"]

    func execute() async throws {
        if dataDir != nil { throw CtlError(.error, "swetcdctl defragments running members only; swetcd defragments online") }
        var failed = false
        for ep in try await endpoints(global, cluster: cluster) {
            // On a terminal, the time spent so far (etcdctl shows nothing).
            let ticker = isatty(2) == 1 ? Task {
                let started = DispatchTime.now().uptimeNanoseconds
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: 200_000_000)
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                    FileHandle.standardError.write(Data(String(format: "\rdefragmenting %@: %.1fs ", ep, seconds).utf8))
                }
                FileHandle.standardError.write(Data("\r\u{1b}[K".utf8))
            } : nil
            defer { ticker?.cancel() }
            do {
                let _: Etcdserverpb_DefragmentResponse = try await withClient(at(global, ep)) {
                    try await $0.unary("/etcdserverpb.Maintenance/Defragment", Etcdserverpb_DefragmentRequest(), timeout: 3600)
                }
                ticker?.cancel()
                _ = await ticker?.value
                print("Finished defragmenting etcd member[\(ep)]")
            } catch let e as CtlError {
                failed = true
                FileHandle.standardError.write(Data("Failed to defragment etcd member[\(ep)] (\(e.message))\n".utf8))
            }
        }
        if failed { throw ExitCode(CtlExit.error.rawValue) }
    }
}

struct Version: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Prints the version of etcdctl")
    @OptionGroup var global: GlobalOptions

    static let version = "3.5.0"
    static let apiVersion = "3.5"

    func execute() async throws {
        print("etcdctl version: \(Self.version)")
        print("API version: \(Self.apiVersion)")
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// go-humanize's Bytes: SI units, one decimal below 10.
func humanBytes(_ n: UInt64) -> String {
    if n < 10 { return "\(n) B" }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    let e = Int(floor(log(Double(n)) / log(1000)))
    let value = floor(Double(n) / pow(1000, Double(e)) * 10 + 0.5) / 10
    return String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[e])
}

/// Go's time.Duration String for a duration in nanoseconds.
func goDuration(_ ns: UInt64) -> String {
    func trimmed(_ v: Double, _ digits: Int) -> String {
        var s = String(format: "%.\(digits)f", v)
        while s.contains(".") && (s.hasSuffix("0") || s.hasSuffix(".")) { s.removeLast() }
        return s
    }
    if ns < 1_000 { return "\(ns)ns" }
    if ns < 1_000_000 { return trimmed(Double(ns) / 1e3, 3) + "µs" }
    if ns < 1_000_000_000 { return trimmed(Double(ns) / 1e6, 6) + "ms" }
    return trimmed(Double(ns) / 1e9, 9) + "s"
}

/// etcdctl's tables (olekukonko/tablewriter as etcdctl sets it up):
/// upper-case centred headers, right-aligned cells, +---+ borders.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let head = header.map { $0.uppercased() }
    let widths = head.indices.map { c in ([head[c]] + rows.map { $0[c] }).map(\.count).max() ?? 0 }
    let border = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined() + "\n"
    func center(_ s: String, _ w: Int) -> String {
        let gap = w - s.count
        let left = gap / 2
        return String(repeating: " ", count: left) + s + String(repeating: " ", count: gap - left)
    }
    func right(_ s: String, _ w: Int) -> String { String(repeating: " ", count: w - s.count) + s }
    var out = border
    out += "|" + head.indices.map { " " + center(head[$0], widths[$0]) + " |" }.joined() + "\n"
    out += border
    for row in rows { out += "|" + row.indices.map { " " + right(row[$0], widths[$0]) + " |" }.joined() + "\n" }
    out += border
    return out
}
