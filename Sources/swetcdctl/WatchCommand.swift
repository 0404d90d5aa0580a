import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

/// `watch [key or prefix] [range_end] [--] [exec-command arg1 ...]`, as
/// etcdctl 3.4: events as they come; with a command after `--`, the
/// command runs once per event with ETCD_WATCH_* set; `-i` reads `watch
/// ...` lines from standard input. Ends (exit 5) when the server cancels.
struct Watch: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Watches events stream on keys or prefixes")
    @OptionGroup var global: GlobalOptions
    @Flag(name: [.short, .customLong("interactive")], help: "Interactive mode") var interactive = false
    @Flag(help: "Watch on a prefix if prefix is set") var prefix = false
    @Option(help: "Revision to start watching") var rev: Int64 = 0
    @Flag(name: .customLong("prev-kv"), help: "get the previous key-value pair before the event happens") var prevKV = false
    @Argument(help: "[key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]") var args: [String] = []

    static let booleans: Set<String> = ["interactive", "prefix", "prev-kv"]

    func execute() async throws {
        let out = try Output(global)
        try out.requireListing()
        let environment = ProcessInfo.processInfo.environment
        let envKey = environment["ETCDCTL_WATCH_KEY"] ?? "", envRange = environment["ETCDCTL_WATCH_RANGE_END"] ?? ""
        if envKey.isEmpty && !envRange.isEmpty {
            throw CtlError(.badArgs, "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=\(goQuote(envRange))")
        }
        let client = try global.client()
        defer { client.shutdown() }
        if interactive { return try await interactiveWatch(client, out, envKey: envKey, envRange: envRange) }
        let (watchArgs, command) = try Self.split(CommandLine.arguments, args, envKey: envKey, envRange: envRange)
        try await watchAndPrint(client, out, watchArgs, prefix: prefix, rev: rev, prevKV: prevKV, command: command)
        throw CtlError(.interrupted, "watch is canceled by the server")
    }

    /// The key arguments and the exec command: the command is what follows
    /// `--` on the command line; ETCDCTL_WATCH_KEY (and _RANGE_END) stand
    /// in for key arguments, and may not come with them.
    static func split(_ commandLine: [String], _ args: [String], envKey: String, envRange: String) throws
        -> (keys: [String], command: [String]) {
        let raw = Array(commandLine.drop { $0 != "watch" }.dropFirst())
        var keys = args, command: [String] = []
        if let separator = raw.firstIndex(of: "--") {
            command = Array(raw[raw.index(after: separator)...])
            if command.isEmpty { throw CtlError(.badArgs, "bad number of arguments (found separator --, but no commands)") }
            keys = Array(args.prefix(max(0, args.count - command.count)))
        }
        if !envKey.isEmpty {
            if !keys.isEmpty { throw CtlError(.badArgs, "bad number of arguments (found conflicting environment key)") }
            keys = [envKey] + (envRange.isEmpty ? [] : [envRange])
        }
        guard !keys.isEmpty else { throw CtlError(.badArgs, "bad number of arguments") }
        return (keys, command)
    }

    /// Reads `watch [options] key ...` lines and runs each watch alongside.
    private func interactiveWatch(_ client: EtcdClient, _ out: Output, envKey: String, envRange: String) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Read with read(2), not readLine: readLine holds stdin's FILE
            // lock while it waits, and fflush(NULL) after each event would
            // wait for that lock.
            var input = RawLineReader()
            while let line = input.next() {
                let words = Txn.argify(line)
                guard let first = words.first else {
                    FileHandle.standardError.write(Data("Invalid command: \(line) (watch and progress supported)\n".utf8))
                    continue
                }
                guard first == "watch" else {
                    FileHandle.standardError.write(Data("Invalid command \(line) (only support watch)\n".utf8))
                    continue
                }
                if words.count < 2 && envKey.isEmpty {
                    FileHandle.standardError.write(Data("Invalid command \(line) (command type or key is not provided)\n".utf8))
                    continue
                }
                let parsed = try Watch.parse(GlobalOptions.normalize(Array(words.dropFirst()), booleans: Watch.booleans))
                var keys = parsed.args, command: [String] = []
                if let separator = words.firstIndex(of: "--") {
                    command = Array(words[words.index(after: separator)...])
                    keys = Array(keys.prefix(max(0, keys.count - command.count)))
                }
                if !envKey.isEmpty { keys = [envKey] + (envRange.isEmpty ? [] : [envRange]) + keys }
                group.addTask {
                    try await watchAndPrint(client, out, keys, prefix: parsed.prefix, rev: parsed.rev, prevKV: parsed.prevKV,
                                            command: command)
                }
            }
            throw CtlError(.invalidInput, "Error reading watch request line: EOF")
        }
    }
}

/// One watch, printed as etcdctl prints each response, until the server
/// ends it.
func watchAndPrint(_ client: EtcdClient, _ out: Output, _ keys: [String], prefix: Bool, rev: Int64, prevKV: Bool,
                   command: [String]) async throws {
    let key = Array(keys[0].utf8)
    var range = KeyRange.key(key)
    if keys.count == 2 {
        if prefix { throw CtlError(.badArgs, "`range_end` and `--prefix` are mutually exclusive") }
        range = .range(key, end: Array(keys[1].utf8))
    }
    if prefix { range = key.isEmpty ? .from([0]) : .prefix(key) }
    var options = WatchOptions()
    options.startRevision = rev
    options.prevKV = prevKV
    do {
        for try await r in client.watch(range, options) {
            if r.created && !r.canceled { continue }
            if r.canceled {
                let why = r.compactRevision != 0 ? "etcdserver: mvcc: required revision has been compacted"
                    : r.cancelReason.isEmpty ? "etcdserver: mvcc: required revision is a future revision" : r.cancelReason
                FileHandle.standardError.write(Data("watch was canceled (\(why))\n".utf8))
            }
            if r.isProgressNotification { print("progress notify: \(r.header.revision)") }
            printWatch(r, out)
            fflush(nil)
            if !command.isEmpty { try run(command, for: r) }
        }
    } catch let e as EtcdError {
        throw CtlError(e)
    }
}

func printWatch(_ r: WatchResponse, _ out: Output) {
    switch out.format {
    case .json:
        // clientv3.WatchResponse: exported fields without JSON tags.
        out.json(.object([
            ("Header", header(r.header)),
            ("Events", .array(r.events.map { e in
                .object((e.kind == .delete ? [("type", GoJSON.number(1))] : []) + [("kv", keyValue(e.kv))]
                        + (e.prevKV.map { [("prev_kv", keyValue($0))] } ?? []))
            })),
            ("CompactRevision", .number(r.compactRevision)), ("Canceled", .bool(r.canceled)), ("Created", .bool(r.created)),
        ]))
    case .fields:
        out.fieldsHeader(wireHeader(r.header))
        for e in r.events {
            print("\"Type\" : \(e.kind == .delete ? "DELETE" : "PUT")")
            if let p = e.prevKV { out.fieldsKV("Prev", wireKeyValue(p)) }
            out.fieldsKV("", wireKeyValue(e.kv))
        }
    default:
        for e in r.events {
            print(e.kind == .delete ? "DELETE" : "PUT")
            if let p = e.prevKV { out.kv(wireKeyValue(p)) }
            out.kv(wireKeyValue(e.kv))
        }
    }
}

/// Runs the exec command for each event, as etcdctl: ETCD_WATCH_REVISION,
/// _EVENT_TYPE, _KEY and _VALUE in its environment (Go-quoted).
private func run(_ command: [String], for r: WatchResponse) throws {
    for e in r.events {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        var env = ProcessInfo.processInfo.environment
        env["ETCD_WATCH_REVISION"] = "\(r.header.revision)"
        env["ETCD_WATCH_EVENT_TYPE"] = goQuote(e.kind == .delete ? "DELETE" : "PUT")
        env["ETCD_WATCH_KEY"] = goQuote(Data(e.kv.key))
        env["ETCD_WATCH_VALUE"] = goQuote(Data(e.kv.value))
        p.environment = env
        do {
            try p.run()
            p.waitUntilExit()
        } catch {
            throw CtlError(.error, "command \(command) error (\(error))")
        }
        if p.terminationStatus != 0 {
            FileHandle.standardError.write(Data("command \(command) error (exit status \(p.terminationStatus))\n".utf8))
            exit(1)
        }
    }
}

func wireHeader(_ h: ResponseHeader) -> Etcdserverpb_ResponseHeader {
    var w = Etcdserverpb_ResponseHeader()
    (w.clusterID, w.memberID, w.revision, w.raftTerm) = (h.clusterID, h.memberID, h.revision, h.raftTerm)
    return w
}

func wireKeyValue(_ kv: KeyValue) -> Mvccpb_KeyValue {
    var w = Mvccpb_KeyValue()
    w.key = Data(kv.key)
    w.value = Data(kv.value)
    (w.createRevision, w.modRevision, w.version, w.lease) = (kv.createRevision, kv.modRevision, kv.version, kv.lease)
    return w
}

private func header(_ h: ResponseHeader) -> GoJSON { GoJSON(wireHeader(h)) }
private func keyValue(_ kv: KeyValue) -> GoJSON { GoJSON(wireKeyValue(kv)) }

/// Lines from standard input read with read(2), newline removed.
struct RawLineReader {
    private var buffer: [UInt8] = []
    private var ended = false

    mutating func next() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0a) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            if ended { return nil }  // a last line without a newline is not a request (Go's ReadString)
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(0, &chunk, chunk.count)
            if n <= 0 { ended = true } else { buffer += chunk[..<n] }
        }
    }
}
