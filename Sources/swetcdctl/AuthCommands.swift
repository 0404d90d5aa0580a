import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation
import SwiftProtobuf

/// How an Auth response prints with -w fields: its header (etcdctl's
/// usual), its own lines, or not at all (etcdctl has no such printer).
enum AuthFields<Response> {
    case header(KeyPath<Response, Etcdserverpb_ResponseHeader>)
    case custom((Response) -> Void)
    case unsupported
}

/// One Auth RPC with the global flags' client, printed as JSON with -w
/// json, as `fields` says with -w fields, else by `simple`.
func authCall<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ global: GlobalOptions, _ method: String, _ request: Request, fields: AuthFields<Response>, simple: (Response) -> Void
) async throws {
    let out = try Output(global)
    try out.requireListing()
    if out.format == .fields, case .unsupported = fields { throw out.unsupported() }
    let r: Response = try await withClient(global) { try await $0.unary("/etcdserverpb.Auth/\(method)", request) }
    switch (out.format, fields) {
    case (.json, _): out.json(r)
    case (.fields, .header(let path)): out.fieldsHeader(r[keyPath: path])
    case (.fields, .custom(let print)): print(r)
    default: simple(r)
    }
}

func exactly(_ n: Int, _ args: [String], _ message: String) throws {
    guard args.count == n else { throw CtlError(.badArgs, message) }
}

/// A password as etcdctl reads one: prompted twice on the terminal, or
/// (with --interactive=false) the first word of standard input.
func readPassword(for user: String, interactive: Bool) throws -> String {
    if !interactive {
        let text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first.map(String.init) ?? ""
    }
    guard let first = getpass("Password of \(user): ").map({ String(cString: $0) }) else { throw CtlError(.error, "cannot read a password") }
    guard let again = getpass("Type password of \(user) again for confirmation: ").map({ String(cString: $0) }) else {
        throw CtlError(.error, "cannot read a password")
    }
    guard first == again else { throw CtlError(.badArgs, "given passwords are different") }
    return first
}

struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "User related commands",
        subcommands: [UserAdd.self, UserDelete.self, UserGet.self, UserList.self, UserPasswd.self, UserGrantRole.self,
                      UserRevokeRole.self])
    static let booleans: Set<String> = ["no-password", "detail", "interactive"]
}

struct UserAdd: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Adds a new user")
    @OptionGroup var global: GlobalOptions
    @Flag(inversion: .prefixedNo, help: "Read password from stdin instead of interactive terminal") var interactive = true
    @Option(name: .customLong("new-user-password"), help: "Supply password from the command line flag") var newUserPassword = ""
    @Flag(name: .customLong("no-password"), help: "Create a user without password (CN based auth only)") var noPassword = false
    @Argument(help: "<user name or user:password>") var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "user add command requires user name as its argument")
        var request = Etcdserverpb_AuthUserAddRequest()
        if noPassword {
            request.name = args[0]
            request.options.noPassword = true
        } else if !newUserPassword.isEmpty {
            (request.name, request.password) = (args[0], newUserPassword)
        } else if let colon = args[0].firstIndex(of: ":") {
            request.name = String(args[0][..<colon])
            request.password = String(args[0][args[0].index(after: colon)...])
            if request.name.isEmpty { throw CtlError(.badArgs, "empty user name is not allowed") }
        } else {
            request.name = args[0]
            request.password = try readPassword(for: args[0], interactive: interactive)
        }
        let name = request.name
        try await authCall(global, "UserAdd", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthUserAddResponse) in print("User \(name) created") }
    }
}

struct UserDelete: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Deletes a user")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "user delete command requires user name as its argument")
        var request = Etcdserverpb_AuthUserDeleteRequest()
        request.name = args[0]
        try await authCall(global, "UserDelete", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthUserDeleteResponse) in print("User \(args[0]) deleted") }
    }
}

struct UserGet: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Gets detailed information of a user")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Show permissions of roles granted to the user") var detail = false
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "user get command requires user name as its argument")
        var request = Etcdserverpb_AuthUserGetRequest()
        request.name = args[0]
        let out = try Output(global)
        try out.requireListing()
        if out.format == .fields { throw out.unsupported() }
        try await withClient(global) { client in
            let r: Etcdserverpb_AuthUserGetResponse = try await client.unary("/etcdserverpb.Auth/UserGet", request)
            if detail {
                print("User: \(args[0])")
                for role in r.roles {
                    print("")
                    var g = Etcdserverpb_AuthRoleGetRequest()
                    g.role = role
                    let rr: Etcdserverpb_AuthRoleGetResponse = try await client.unary("/etcdserverpb.Auth/RoleGet", g)
                    if out.format == .json { out.json(rr) } else { printRole(role, rr) }
                }
            } else if out.format == .json {
                out.json(r)
            } else {
                print("User: \(args[0])")
                print("Roles:" + r.roles.map { " " + $0 }.joined())
            }
        }
    }
}

struct UserList: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all users")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(0, args, "user list command requires no arguments")
        try await authCall(global, "UserList", Etcdserverpb_AuthUserListRequest(), fields: .unsupported) { (r: Etcdserverpb_AuthUserListResponse) in
            for u in r.users { print(u) }
        }
    }
}

struct UserPasswd: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Changes password of user")
    @OptionGroup var global: GlobalOptions
    @Flag(inversion: .prefixedNo, help: "If true, read password from stdin instead of interactive terminal") var interactive = true
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "user passwd command requires user name as its argument")
        var request = Etcdserverpb_AuthUserChangePasswordRequest()
        request.name = args[0]
        request.password = try readPassword(for: args[0], interactive: interactive)
        try await authCall(global, "UserChangePassword", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthUserChangePasswordResponse) in
            print("Password updated")
        }
    }
}

struct UserGrantRole: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "grant-role", abstract: "Grants a role to a user")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(2, args, "user grant command requires user name and role name as its argument")
        var request = Etcdserverpb_AuthUserGrantRoleRequest()
        (request.user, request.role) = (args[0], args[1])
        try await authCall(global, "UserGrantRole", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthUserGrantRoleResponse) in
            print("Role \(args[1]) is granted to user \(args[0])")
        }
    }
}

struct UserRevokeRole: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "revoke-role", abstract: "Revokes a role from a user")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(2, args, "user revoke-role requires user name and role name as its argument")
        var request = Etcdserverpb_AuthUserRevokeRoleRequest()
        (request.name, request.role) = (args[0], args[1])
        try await authCall(global, "UserRevokeRole", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthUserRevokeRoleResponse) in
            print("Role \(args[1]) is revoked from user \(args[0])")
        }
    }
}

/// etcdctl's role listing: read then write permissions, each a key, a
/// range, an open-ended range, or a prefix.
func printRole(_ role: String, _ r: Etcdserverpb_AuthRoleGetResponse) {
    print("Role \(role)")
    func show(_ p: Authpb_Permission) {
        let key = String(decoding: p.key, as: UTF8.self), end = String(decoding: p.rangeEnd, as: UTF8.self)
        if p.rangeEnd.isEmpty {
            print("\t\(key)")
            return
        }
        var line = end != "\0" ? "\t[\(key), \(end))" : "\t[\(key), <open ended>"
        if prefixEnd(Array(p.key)) == Array(p.rangeEnd) { line += " (prefix \(key))" }
        print(line)
    }
    print("KV Read:")
    for p in r.perm where p.permType == .read || p.permType == .readwrite { show(p) }
    print("KV Write:")
    for p in r.perm where p.permType == .write || p.permType == .readwrite { show(p) }
}

func printRoleFields(_ r: Etcdserverpb_AuthRoleGetResponse) {
    fieldsHeader(r.header)
    let names = [0: "READ", 1: "WRITE", 2: "READWRITE"]
    for p in r.perm {
        print("\"PermType\" :  \(names[p.permType.rawValue] ?? "\(p.permType.rawValue)")")
        print("\"Key\" : \(goQuote(p.key))")
        print("\"RangeEnd\" : \(goQuote(p.rangeEnd))")
    }
}

func printRoleListFields(_ r: Etcdserverpb_AuthRoleListResponse) {
    fieldsHeader(r.header)
    print("\"Roles\" :" + r.roles.map { " " + goQuote($0) }.joined())
}

struct Role: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Role related commands",
        subcommands: [RoleAdd.self, RoleDelete.self, RoleGet.self, RoleList.self, RoleGrantPermission.self,
                      RoleRevokePermission.self])
    static let booleans: Set<String> = ["prefix", "from-key"]
}

struct RoleAdd: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Adds a new role")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "role add command requires role name as its argument")
        var request = Etcdserverpb_AuthRoleAddRequest()
        request.name = args[0]
        try await authCall(global, "RoleAdd", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthRoleAddResponse) in print("Role \(args[0]) created") }
    }
}

struct RoleDelete: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Deletes a role")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "role delete command requires role name as its argument")
        var request = Etcdserverpb_AuthRoleDeleteRequest()
        request.role = args[0]
        try await authCall(global, "RoleDelete", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthRoleDeleteResponse) in print("Role \(args[0]) deleted") }
    }
}

struct RoleGet: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Gets detailed information of a role")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(1, args, "role get command requires role name as its argument")
        var request = Etcdserverpb_AuthRoleGetRequest()
        request.role = args[0]
        try await authCall(global, "RoleGet", request, fields: .custom(printRoleFields)) { (r: Etcdserverpb_AuthRoleGetResponse) in printRole(args[0], r) }
    }
}

struct RoleList: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all roles")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(0, args, "role list command requires no arguments")
        try await authCall(global, "RoleList", Etcdserverpb_AuthRoleListRequest(), fields: .custom(printRoleListFields)) { (r: Etcdserverpb_AuthRoleListResponse) in
            for role in r.roles { print(role) }
        }
    }
}

/// etcdctl's permission range: `key [endkey]`, --prefix, --from-key.
func permissionRange(_ args: [String], prefix: Bool, fromKey: Bool) throws -> (key: [UInt8], end: [UInt8]) {
    let key = Array(args[0].utf8)
    if key.isEmpty {
        if prefix && fromKey { throw CtlError(.badArgs, "--from-key and --prefix flags are mutually exclusive") }
        return ([0], prefix || fromKey ? [0] : [])
    }
    if args.count == 1 {
        if prefix {
            if fromKey { throw CtlError(.badArgs, "--from-key and --prefix flags are mutually exclusive") }
            return (key, prefixEnd(key))
        }
        return (key, fromKey ? [0] : [])
    }
    if prefix { throw CtlError(.badArgs, "unexpected endkey argument with --prefix flag") }
    if fromKey { throw CtlError(.badArgs, "unexpected endkey argument with --from-key flag") }
    return (key, Array(args[1].utf8))
}

struct RoleGrantPermission: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "grant-permission", abstract: "Grants a key to a role")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "grant a prefix permission") var prefix = false
    @Flag(name: .customLong("from-key"), help: "grant a permission of keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Argument var args: [String] = []

    func execute() async throws {
        guard args.count >= 3 else {
            throw CtlError(.badArgs, "role grant command requires role name, permission type, and key [endkey] as its argument")
        }
        let types: [String: Authpb_Permission.TypeEnum] = ["READ": .read, "WRITE": .write, "READWRITE": .readwrite]
        guard let type = types[args[1].uppercased()] else { throw CtlError(.badArgs, "invalid permission type: \(args[1])") }
        let (key, end) = try permissionRange(Array(args[2...]), prefix: prefix, fromKey: fromKey)
        var request = Etcdserverpb_AuthRoleGrantPermissionRequest()
        request.name = args[0]
        request.perm.permType = type
        request.perm.key = Data(key)
        request.perm.rangeEnd = Data(end)
        try await authCall(global, "RoleGrantPermission", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthRoleGrantPermissionResponse) in
            print("Role \(args[0]) updated")
        }
    }
}

struct RoleRevokePermission: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "revoke-permission", abstract: "Revokes a key from a role")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "revoke a prefix permission") var prefix = false
    @Flag(name: .customLong("from-key"), help: "revoke a permission of keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Argument var args: [String] = []

    func execute() async throws {
        guard args.count >= 2 else {
            throw CtlError(.badArgs, "role revoke-permission command requires role name and key [endkey] as its argument")
        }
        let (key, end) = try permissionRange(Array(args[1...]), prefix: prefix, fromKey: fromKey)
        var request = Etcdserverpb_AuthRoleRevokePermissionRequest()
        request.role = args[0]
        request.key = Data(key)
        request.rangeEnd = Data(end)
        let shownKey = args[1], shownEnd = String(decoding: end, as: UTF8.self)
        try await authCall(global, "RoleRevokePermission", request, fields: .header(\.header)) { (_: Etcdserverpb_AuthRoleRevokePermissionResponse) in
            if end.isEmpty {
                print("Permission of key \(shownKey) is revoked from role \(args[0])")
            } else if end != [0] {
                print("Permission of range [\(shownKey), \(shownEnd)) is revoked from role \(args[0])")
            } else {
                print("Permission of range [\(shownKey), <open ended> is revoked from role \(args[0])")
            }
        }
    }
}

struct Auth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enable or disable authentication", subcommands: [AuthEnable.self, AuthDisable.self, AuthStatus.self])
}

struct AuthEnable: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Enables authentication")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(0, args, "auth enable command does not accept any arguments")
        try await withClient(global) { client in
            // As etcdctl: a root user without the root role gets it first.
            while true {
                do {
                    let _: Etcdserverpb_AuthEnableResponse = try await client.unary("/etcdserverpb.Auth/AuthEnable", Etcdserverpb_AuthEnableRequest())
                    return
                } catch EtcdError.other(_, "etcdserver: root user does not have root role") {
                    var add = Etcdserverpb_AuthRoleAddRequest()
                    add.name = "root"
                    let _: Etcdserverpb_AuthRoleAddResponse = try await client.unary("/etcdserverpb.Auth/RoleAdd", add)
                    var grant = Etcdserverpb_AuthUserGrantRoleRequest()
                    (grant.user, grant.role) = ("root", "root")
                    let _: Etcdserverpb_AuthUserGrantRoleResponse = try await client.unary("/etcdserverpb.Auth/UserGrantRole", grant)
                }
            }
        }
        print("Authentication Enabled")
    }
}

struct AuthDisable: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disables authentication")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func execute() async throws {
        try exactly(0, args, "auth disable command does not accept any arguments")
        let _: Etcdserverpb_AuthDisableResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.Auth/AuthDisable", Etcdserverpb_AuthDisableRequest())
        }
        print("Authentication Disabled")
    }
}

/// etcdctl 3.5's `auth status` (3.4 has none).
struct AuthStatus: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Returns authentication status")
    @OptionGroup var global: GlobalOptions

    func execute() async throws {
        let out = try Output(global)
        let r: Etcdserverpb_AuthStatusResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.Auth/AuthStatus", Etcdserverpb_AuthStatusRequest())
        }
        if out.format == .json { return out.json(r) }
        print("Authentication Status: \(r.enabled)")
        print("AuthRevision: \(r.authRevision)")
    }
}
