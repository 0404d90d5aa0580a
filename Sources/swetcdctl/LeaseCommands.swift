import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

struct Lease: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lease related commands",
        subcommands: [LeaseGrant.self, LeaseRevoke.self, LeaseTimeToLive.self, LeaseList.self, LeaseKeepAlive.self])

    static let booleans: Set<String> = ["keys", "once"]
}

/// A lease ID argument, in hexadecimal as etcdctl takes it.
func leaseID(_ arg: String) throws -> Int64 {
    guard let id = Int64(arg, radix: 16) else {
        throw CtlError(.badArgs, "bad lease ID arg (strconv.ParseInt: parsing \(goQuote(arg)): invalid syntax), expecting ID in Hex")
    }
    return id
}

func hex16(_ id: Int64) -> String {
    let s = String(UInt64(bitPattern: id), radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}

/// clientv3's lease responses embed the header's fields at the top level
/// of their JSON (a Go embedded struct).
func headerFields(_ h: Etcdserverpb_ResponseHeader) -> [(String, GoJSON)] {
    guard case .object(let fields) = GoJSON(h) else { return [] }
    return fields
}

struct LeaseGrant: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "grant", abstract: "Creates leases")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "<ttl>") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        guard args.count == 1 else { throw CtlError(.badArgs, "lease grant command needs TTL argument") }
        guard let ttl = Int64(args[0]) else {
            throw CtlError(.badArgs, "bad TTL (strconv.ParseInt: parsing \(goQuote(args[0])): invalid syntax)")
        }
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttl
        let r: Etcdserverpb_LeaseGrantResponse
        do {
            r = try await withClient(global) { [request] in try await $0.unary("/etcdserverpb.Lease/LeaseGrant", request) }
        } catch let e as CtlError {
            throw CtlError(e.code, "failed to grant lease (\(e.message))")
        }
        switch out.format {
        case .json:
            out.json(.object(headerFields(r.header) + [("ID", .number(r.id)), ("TTL", .number(r.ttl)), ("Error", .string(r.error))]))
        case .fields:
            out.fieldsHeader(r.header)
            print("\"ID\" : \(r.id)")
            print("\"TTL\" : \(r.ttl)")
        default:
            print("lease \(hex16(r.id)) granted with TTL(\(r.ttl)s)")
        }
    }
}

struct LeaseRevoke: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revokes leases")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "<leaseID>") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        guard args.count == 1 else { throw CtlError(.badArgs, "lease revoke command needs 1 argument") }
        var request = Etcdserverpb_LeaseRevokeRequest()
        request.id = try leaseID(args[0])
        let r: Etcdserverpb_LeaseRevokeResponse
        do {
            r = try await withClient(global) { [request] in try await $0.unary("/etcdserverpb.Lease/LeaseRevoke", request) }
        } catch let e as CtlError {
            throw CtlError(e.code, "failed to revoke lease (\(e.message))")
        }
        switch out.format {
        case .json: out.json(r)
        case .fields: out.fieldsHeader(r.header)
        default: print("lease \(hex16(request.id)) revoked")
        }
    }
}

struct LeaseTimeToLive: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "timetolive", abstract: "Get lease information")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Get keys attached to this lease") var keys = false
    @Argument(help: "<leaseID>") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        guard args.count == 1 else { throw CtlError(.badArgs, "lease timetolive command needs lease ID as argument") }
        var request = Etcdserverpb_LeaseTimeToLiveRequest()
        request.id = try leaseID(args[0])
        request.keys = keys
        let r: Etcdserverpb_LeaseTimeToLiveResponse
        do {
            r = try await withClient(global) { [request] in try await $0.unary("/etcdserverpb.Lease/LeaseTimeToLive", request) }
        } catch {
            throw CtlError(error, code: .badConnection)
        }
        switch out.format {
        case .json:
            out.json(.object(headerFields(r.header) + [
                ("id", .number(r.id)), ("ttl", .number(r.ttl)), ("granted-ttl", .number(r.grantedTtl)),
                ("keys", r.keys.isEmpty ? .null : .array(r.keys.map { GoJSON.bytes($0) })),
            ]))
        case .fields:
            out.fieldsHeader(r.header)
            print("\"ID\" : \(r.id)")
            print("\"TTL\" : \(r.ttl)")
            print("\"GrantedTTL\" : \(r.grantedTtl)")
            for k in r.keys { print("\"Key\" : \(goQuote(k))") }
        default:
            if r.grantedTtl == 0 && r.ttl == -1 {
                print("lease \(hex16(r.id)) already expired")
                return
            }
            var text = "lease \(hex16(r.id)) granted with TTL(\(r.grantedTtl)s), remaining(\(r.ttl)s)"
            if keys { text += ", attached keys([\(r.keys.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " "))])" }
            print(text)
        }
    }
}

struct LeaseList: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List all active leases")
    @OptionGroup var global: GlobalOptions

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        let r: Etcdserverpb_LeaseLeasesResponse
        do {
            r = try await withClient(global) { try await $0.unary("/etcdserverpb.Lease/LeaseLeases", Etcdserverpb_LeaseLeasesRequest()) }
        } catch {
            throw CtlError(error, code: .badConnection)
        }
        switch out.format {
        case .json:
            out.json(.object(headerFields(r.header) + [("leases", .array(r.leases.map { .object([("id", .number($0.id))]) }))]))
        case .fields:
            out.fieldsHeader(r.header)
            for l in r.leases { print("\"ID\" : \(l.id)") }
        default:
            print("found \(r.leases.count) leases")
            for l in r.leases { print(hex16(l.id)) }
        }
    }
}

struct LeaseKeepAlive: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "keep-alive", abstract: "Keeps leases alive (renew)")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Resets the keep-alive time to its original value and exits immediately") var once = false
    @Argument(help: "<leaseID>") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        guard args.count == 1 else { throw CtlError(.badArgs, "lease keep-alive command needs lease ID as argument") }
        let id = try leaseID(args[0])
        try await withClient(global) { client in
            while true {
                var request = Etcdserverpb_LeaseKeepAliveRequest()
                request.id = id
                let r: Etcdserverpb_LeaseKeepAliveResponse
                do {
                    r = try await client.unary("/etcdserverpb.Lease/LeaseKeepAlive", request)
                } catch {
                    throw CtlError(error, code: .badConnection)
                }
                if r.ttl <= 0 {
                    // clientv3: a lease the server no longer has.
                    if once { throw CtlError(.badConnection, "etcdserver: requested lease not found") }
                    if out.format == .simple { print("lease \(hex16(id)) expired or revoked.") }
                    return
                }
                switch out.format {
                case .json:
                    out.json(.object(headerFields(r.header) + [("ID", .number(r.id)), ("TTL", .number(r.ttl))]))
                case .fields:
                    out.fieldsHeader(r.header)
                    print("\"ID\" : \(r.id)")
                    print("\"TTL\" : \(r.ttl)")
                default:
                    print("lease \(hex16(r.id)) keepalived with TTL(\(r.ttl))")
                }
                fflush(nil)  // each answer shows as it comes
                if once { return }
                // clientv3 renews a third of the TTL after each answer.
                try await Task.sleep(nanoseconds: UInt64(max(Double(r.ttl) / 3, 0.5) * 1e9))
            }
        }
    }
}
