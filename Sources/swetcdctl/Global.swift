import ArgumentParser
import EtcdClient
import Foundation

/// etcdctl's global flags, each also read from its `ETCDCTL_*` environment
/// variable when not given (the flag wins), as etcdctl does.
struct GlobalOptions: ParsableArguments {
    @Option(help: "gRPC endpoints (comma-separated)") var endpoints: String?
    @Option(name: .customLong("dial-timeout"), help: "dial timeout for client connections") var dialTimeout: String?
    @Option(name: .customLong("command-timeout"), help: "timeout for short running command (excluding dial timeout)")
    var commandTimeout: String?
    @Option(help: "verify certificates of TLS-enabled secure servers using this CA bundle") var cacert: String?
    @Option(help: "identify secure client using this TLS certificate file") var cert: String?
    @Option(help: "identify secure client using this TLS key file") var key: String?
    @Option(help: "username[:password] for authentication") var user: String?
    @Option(help: "password for authentication (if given, --user should not include one)") var password: String?
    @Flag(name: .customLong("insecure-skip-tls-verify"), help: "skip server certificate verification (testing only)")
    var insecureSkipTLSVerify = false
    @Option(name: [.customShort("w"), .customLong("write-out")], help: "set the output format (simple, json, fields, table)")
    var writeOut: String?
    @Flag(help: "print byte strings as hex encoded strings") var hex = false
    // Accepted for etcdctl's scripts; they change nothing here.
    @Option(name: .customLong("keepalive-time"), help: .hidden) var keepaliveTime: String?
    @Option(name: .customLong("keepalive-timeout"), help: .hidden) var keepaliveTimeout: String?
    @Option(name: .customLong("insecure-transport"), help: .hidden) var insecureTransport: String?
    @Option(name: .customLong("insecure-discovery"), help: .hidden) var insecureDiscovery: String?
    @Flag(help: .hidden) var debug = false

    /// etcdctl's global flags that take a value (for `normalize`).
    static let valued: Set<String> = ["endpoints", "dial-timeout", "command-timeout", "cacert", "cert", "key", "user",
                                      "password", "write-out", "w", "keepalive-time", "keepalive-timeout",
                                      "insecure-transport", "insecure-discovery", "discovery-srv", "discovery-srv-name"]
    static let booleans: Set<String> = ["insecure-skip-tls-verify", "hex", "debug"]
    /// Boolean flags that default to true somewhere (`user add
    /// --interactive=false`): false is passed on as --no-<name>.
    static let invertible: Set<String> = ["interactive"]

    private func env(_ name: String) -> String? {
        let v = ProcessInfo.processInfo.environment["ETCDCTL_" + name]
        return v?.isEmpty == false ? v : nil
    }

    var endpointList: [String] {
        (endpoints ?? env("ENDPOINTS") ?? "127.0.0.1:2379").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    var format: String { writeOut ?? env("WRITE_OUT") ?? "simple" }
    var isHex: Bool { hex || env("HEX") == "true" }

    func seconds(_ flag: String?, _ variable: String, default value: Double) throws -> Double {
        guard let text = flag ?? env(variable) else { return value }
        guard let s = parseGoDuration(text) else {
            throw CtlError(.badArgs, "invalid argument \"\(text)\" for \"--\(variable.lowercased().replacingOccurrences(of: "_", with: "-"))\" flag: time: invalid duration \"\(text)\"")
        }
        return s
    }

    var commandSeconds: Double { (try? seconds(commandTimeout, "COMMAND_TIMEOUT", default: 5)) ?? 5 }

    /// The client etcdctl's flags describe: TLS when a certificate flag is
    /// given or an endpoint is https, a user to authenticate as.
    func client() throws -> EtcdClient {
        let dial = try seconds(dialTimeout, "DIAL_TIMEOUT", default: 2)
        let command = try seconds(commandTimeout, "COMMAND_TIMEOUT", default: 5)
        for (flag, value) in [("cacert", cacert), ("cert", cert), ("key", key)] where value == "" {
            throw CtlError(.badArgs, "empty string is passed to --\(flag) option")
        }
        let ca = cacert ?? env("CACERT"), certFile = cert ?? env("CERT"), keyFile = key ?? env("KEY")
        let skipVerify = insecureSkipTLSVerify || env("INSECURE_SKIP_TLS_VERIFY") == "true"
        var tls: EtcdClient.TLS?
        if ca != nil || certFile != nil || keyFile != nil || skipVerify {
            tls = EtcdClient.TLS(caFile: ca, certFile: certFile, keyFile: keyFile, insecureSkipVerify: skipVerify)
        }
        var name: String?, secret: String?
        if let u = user ?? env("USER") {
            if let p = password ?? env("PASSWORD") {
                (name, secret) = (u, p)
            } else if let colon = u.firstIndex(of: ":") {
                (name, secret) = (String(u[..<colon]), String(u[u.index(after: colon)...]))
            } else {
                (name, secret) = (u, try Self.askPassword())
            }
        }
        do {
            return try EtcdClient(endpoints: endpointList, timeout: max(command, dial), tls: tls, user: name, password: secret)
        } catch {
            throw CtlError(.badArgs, "\(error)")
        }
    }

    static func askPassword() throws -> String {
        guard let p = getpass("Password: ") else { throw CtlError(.error, "cannot read a password") }
        return String(cString: p)
    }

    /// Moves global flags (which etcdctl takes anywhere) after the command
    /// words, where the argument parser looks for them, and turns pflag's
    /// `--flag=true|false` for boolean flags into the flag or nothing.
    static func normalize(_ arguments: [String], booleans: Set<String>) -> [String] {
        var command: [String] = [], globals: [String] = [], rest: [String] = []
        var i = 0
        var afterTerminator = false
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            if afterTerminator {
                rest.append(a)
                continue
            }
            if a == "--" {
                afterTerminator = true
                rest.append(a)
                continue
            }
            guard a.hasPrefix("-"), a.count > 1 else {
                command.append(a)
                continue
            }
            let body = a.drop { $0 == "-" }
            let name = String(body.prefix { $0 != "=" })
            let inlineValue = body.contains("=") ? String(body.drop { $0 != "=" }.dropFirst()) : nil
            if booleans.contains(name) || Self.booleans.contains(name) {
                let on = inlineValue.map { $0 == "true" || $0 == "1" } ?? true
                if on && Self.booleans.contains(name) {
                    globals.append("--" + name)
                } else if on {
                    command.append(name.count == 1 ? "-" + name : "--" + name)
                } else if Self.invertible.contains(name) {
                    command.append("--no-" + name)
                }
                continue
            }
            if valued.contains(name) {
                globals.append(name == "w" ? "-w" : "--" + name)
                if let inlineValue {
                    globals.append(inlineValue)
                } else if i < arguments.count {
                    globals.append(arguments[i])
                    i += 1
                }
                continue
            }
            command.append(a)
        }
        return command + globals + rest
    }
}

/// etcdctl's exit codes.
enum CtlExit: Int32 {
    case success = 0, error = 1, badConnection = 2, invalidInput = 3, badFeature = 4, interrupted = 5, io = 6
    case badArgs = 128
}

/// An error the CLI reports as etcdctl does: `Error: <message>` on standard
/// error and its exit code.
struct CtlError: Error {
    let code: CtlExit
    let message: String

    init(_ code: CtlExit, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A call's error as etcdctl prints it: etcd's own errors by their
    /// message, others as Go's gRPC prints a status.
    init(_ error: any Error, code: CtlExit = .error) {
        if let e = error as? CtlError {
            self = e
            return
        }
        self.code = code
        switch error {
        case let e as EtcdError:
            switch e {
            case .deadlineExceeded, .unavailable: message = "context deadline exceeded"
            case .unimplemented(let m): message = "rpc error: code = Unimplemented desc = \(m)"
            case .other(let c, let m):
                message = m.hasPrefix("etcdserver: ") ? m : "rpc error: code = \(c.goName) desc = \(m)"
            default: message = e.description
            }
        default:
            message = "\(error)"
        }
    }
}

/// Go's time.ParseDuration for what etcdctl's flags take ("5s", "1m30s",
/// "500ms"); nil when it does not parse.
func parseGoDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    var rest = Substring(text)
    var total = 0.0
    guard !rest.isEmpty else { return nil }
    if rest == "0" { return 0 }
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        guard let unit = units.first(where: { rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms")) }) else { return nil }
        total += value * unit.1
        rest = rest.dropFirst(unit.0.count)
    }
    return total
}
