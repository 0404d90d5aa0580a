import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

/// clientv3's GetPrefixRangeEnd.
func prefixEnd(_ prefix: [UInt8]) -> [UInt8] { KeyRange.prefixEnd(prefix) }

/// etcdctl's key and range options: `key [range_end]`, --prefix, --from-key.
func keyRange(_ args: [String], prefix: Bool, fromKey: Bool, command: String) throws -> (key: [UInt8], end: [UInt8]) {
    guard !args.isEmpty else {
        throw CtlError(.badArgs, "\(command) command needs one argument as key and an optional argument as range_end")
    }
    if prefix && fromKey {
        throw CtlError(.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    }
    var key = Array(args[0].utf8)
    var end: [UInt8] = []
    if args.count > 1 {
        if prefix || fromKey {
            throw CtlError(.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        }
        end = Array(args[1].utf8)
    }
    if prefix {
        if key.isEmpty {
            (key, end) = ([0], [0])
        } else {
            end = prefixEnd(key)
        }
    }
    if fromKey {
        if key.isEmpty { key = [0] }
        end = [0]
    }
    return (key, end)
}

/// Runs `body` with the client the global flags describe, closing it after.
func withClient<T>(_ global: GlobalOptions, _ body: (EtcdClient) async throws -> T) async throws -> T {
    let client = try global.client()
    defer { client.shutdown() }
    do {
        return try await body(client)
    } catch EtcdError.authFailed {
        // etcdctl authenticates while it connects: a failure there is a
        // bad connection.
        throw CtlError(EtcdError.authFailed, code: .badConnection)
    } catch let e as CtlError {
        throw e
    } catch {
        throw CtlError(error)
    }
}

struct Get: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Gets the key or a range of keys")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Linearizable(l) or Serializable(s)") var consistency = "l"
    @Option(help: "Order of results; ASCEND or DESCEND (ASCEND by default)") var order = ""
    @Option(name: .customLong("sort-by"), help: "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION") var sortBy = ""
    @Option(help: "Maximum number of results") var limit: Int64 = 0
    @Flag(help: "Get keys with matching prefix") var prefix = false
    @Flag(name: .customLong("from-key"), help: "Get keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Option(help: "Specify the kv revision") var rev: Int64 = 0
    @Flag(name: .customLong("keys-only"), help: "Get only the keys") var keysOnly = false
    @Flag(name: .customLong("count-only"), help: "Get only the count") var countOnly = false
    @Flag(name: .customLong("print-value-only"), help: "Only write values when using the \"simple\" output format")
    var printValueOnly = false
    @Argument(help: "<key> [range_end]") var args: [String] = []

    static let booleans: Set<String> = ["prefix", "from-key", "keys-only", "count-only", "print-value-only"]

    func execute() async throws {
        var out = try Output(global)
        let request = try self.request()
        let response: Etcdserverpb_RangeResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.KV/Range", request)
        }
        if printValueOnly {
            guard out.format == .simple else { throw CtlError(.badArgs, "print-value-only is only for `--write-out=simple`") }
            out.valueOnly = true
        }
        try out.get(response)
    }

    func request() throws -> Etcdserverpb_RangeRequest {
        let (key, end) = try keyRange(args, prefix: prefix, fromKey: fromKey, command: "get")
        var r = Etcdserverpb_RangeRequest()
        r.key = Data(key)
        r.rangeEnd = Data(end)
        switch consistency {
        case "s": r.serializable = true
        case "l": break
        default: throw CtlError(.badFeature, "unknown consistency flag \"\(consistency)\"")
        }
        r.limit = limit
        if rev > 0 { r.revision = rev }
        switch order.uppercased() {
        case "ASCEND": r.sortOrder = .ascend
        case "DESCEND": r.sortOrder = .descend
        case "": break
        default: throw CtlError(.badFeature, "bad sort order \(order)")
        }
        switch sortBy.uppercased() {
        case "CREATE": r.sortTarget = .create
        case "KEY", "": r.sortTarget = .key
        case "MODIFY": r.sortTarget = .mod
        case "VALUE": r.sortTarget = .value
        case "VERSION": r.sortTarget = .version
        default: throw CtlError(.badFeature, "bad sort target \(sortBy)")
        }
        // clientv3: sorting by key ascending is the server's own order.
        if r.sortTarget == .key && r.sortOrder == .ascend { r.sortOrder = .none }
        r.keysOnly = keysOnly
        r.countOnly = countOnly
        return r
    }
}

struct Put: CtlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Puts the given key into the store",
        discussion: "When <value> is not given (and --ignore-value is not set), it is read from standard input.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "lease ID (in hexadecimal) to attach to the key") var lease = "0"
    @Flag(name: .customLong("prev-kv"), help: "return the previous key-value pair before modification") var prevKV = false
    @Flag(name: .customLong("ignore-value"), help: "updates the key using its current value") var ignoreValue = false
    @Flag(name: .customLong("ignore-lease"), help: "updates the key using its current lease") var ignoreLease = false
    @Argument(help: "<key> <value>") var args: [String] = []

    static let booleans: Set<String> = ["prev-kv", "ignore-value", "ignore-lease"]

    func execute() async throws {
        let out = try Output(global)
        let request = try self.request()
        let response: Etcdserverpb_PutResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.KV/Put", request)
        }
        try out.put(response)
    }

    func request() throws -> Etcdserverpb_PutRequest {
        let positional = args.filter { $0 != "--" }
        guard let key = positional.first else {
            throw CtlError(.badArgs, "put command needs 1 argument and input from stdin or 2 arguments")
        }
        if ignoreValue && positional.count > 1 {
            throw CtlError(.badArgs, "put command needs only 1 argument when 'ignore-value' is set")
        }
        var value = Data()
        if !ignoreValue {
            if positional.count > 1 {
                value = Data(positional[1].utf8)
            } else {
                value = FileHandle.standardInput.readDataToEndOfFile()
                if value.isEmpty { throw CtlError(.badArgs, "put command needs 1 argument and input from stdin or 2 arguments") }
            }
        }
        guard let id = Int64(lease, radix: 16) else {
            throw CtlError(.badArgs, "bad lease ID (strconv.ParseInt: parsing \"\(lease)\": invalid syntax), expecting ID in Hex")
        }
        var r = Etcdserverpb_PutRequest()
        r.key = Data(key.utf8)
        r.value = value
        r.lease = id
        r.prevKv = prevKV
        r.ignoreValue = ignoreValue
        r.ignoreLease = ignoreLease
        return r
    }
}

struct Del: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Removes the specified key or range of keys [key, range_end)")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "delete keys with matching prefix") var prefix = false
    @Flag(name: .customLong("prev-kv"), help: "return deleted key-value pairs") var prevKV = false
    @Flag(name: .customLong("from-key"), help: "delete keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Argument(help: "<key> [range_end]") var args: [String] = []

    static let booleans: Set<String> = ["prefix", "prev-kv", "from-key"]

    func execute() async throws {
        let out = try Output(global)
        let request = try self.request()
        let response: Etcdserverpb_DeleteRangeResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.KV/DeleteRange", request)
        }
        try out.delete(response)
    }

    func request() throws -> Etcdserverpb_DeleteRangeRequest {
        guard args.count <= 2 else {
            throw CtlError(.badArgs, "del command needs one argument as key and an optional argument as range_end")
        }
        let (key, end) = try keyRange(args, prefix: prefix, fromKey: fromKey, command: "del")
        var r = Etcdserverpb_DeleteRangeRequest()
        r.key = Data(key)
        r.rangeEnd = Data(end)
        r.prevKv = prevKV
        return r
    }
}

struct Compaction: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Compacts the event history in etcd")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "'true' to wait for compaction to physically remove all old revisions") var physical = false
    @Argument(help: "<revision>") var args: [String] = []

    static let booleans: Set<String> = ["physical"]

    func execute() async throws {
        _ = try Output(global)
        guard args.count == 1 else { throw CtlError(.badArgs, "compaction command needs 1 argument") }
        guard let rev = Int64(args[0]) else {
            throw CtlError(.error, "strconv.ParseInt: parsing \"\(args[0])\": invalid syntax")
        }
        var r = Etcdserverpb_CompactionRequest()
        r.revision = rev
        r.physical = physical
        let request = r
        let _: Etcdserverpb_CompactionResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.KV/Compact", request, timeout: physical ? 3600 : nil)
        }
        print("compacted revision \(rev)")
    }
}
