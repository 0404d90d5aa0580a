import CSpawn
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A program the tests run, started with `posix_spawn` and reaped with
/// `waitpid`: the one way every test starts a process.
///
/// Why not Foundation's `Process`: on Linux it learns of a child's exit from
/// one end of a socket pair that the child inherits, and that end is not
/// close-on-exec. A child spawned at the same moment from another thread
/// (another test: a swetcd server, a watch) can inherit it too, and then the
/// first child "runs" until the second exits, though it is long a zombie
/// (`ChildProcessTests` shows it; it made an etcdctl call of a fraction of a
/// second "run longer than 60 s"). Here the parent's exit check is
/// `waitpid`, and each child closes every inherited descriptor above
/// standard error, so no test's child holds another's files, sockets or
/// pipes.
public final class ChildProcess: @unchecked Sendable {
    /// How it ended.
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        /// The exit code, or the signal's number (as Foundation's
        /// `terminationStatus`).
        public var status: Int32 {
            switch self {
            case .exited(let code): code
            case .signaled(let signal): signal
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Where a standard stream goes.
    public enum Stream: Sendable {
        /// /dev/null.
        case null
        /// A file, created or truncated.
        case file(String)
        /// A file, appended to.
        case appending(String)
        /// A pipe whose other end is this object's (`write`, `closeInput`);
        /// standard input only.
        case pipe
        /// Where standard output goes; standard error only.
        case standardOutput
    }

    public let pid: pid_t
    public let command: [String]
    private let lock = NSLock()
    private var ended: Termination?
    /// The parent's end of the standard input pipe, or -1.
    private var inputWriter: Int32

    /// - Parameter environment: set over (not instead of) this process's.
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                stdin: Stream = .null, stdout: Stream = .null, stderr: Stream = .null) throws {
        command = [executable] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }

        var pipeEnds: [Int32] = [-1, -1]
        if case .pipe = stdin {
            guard cspawn_pipe_cloexec(&pipeEnds) == 0 else { throw ChildProcessError("pipe2: \(String(cString: strerror(errno)))") }
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[0], 0)  // dup2 clears close-on-exec
        }
        func route(_ stream: Stream, to fd: Int32, writing: Bool) {
            switch stream {
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", writing ? O_WRONLY : O_RDONLY, 0)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, writing ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0o644)
            case .appending(let path): posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            case .pipe: break
            case .standardOutput: posix_spawn_file_actions_adddup2(&actions, 1, fd)
            }
        }
        route(stdin, to: 0, writing: false)
        route(stdout, to: 1, writing: true)
        route(stderr, to: 2, writing: true)
        cspawn_add_close_from(&actions, 3)

        // Signals as a fresh program expects them (the test process
        // ignores SIGPIPE), in a process group of its own.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), defaults = sigset_t()
        sigemptyset(&noSignals)
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let argv = command.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        if pipeEnds[0] >= 0 { close(pipeEnds[0]) }
        guard result == 0 else {
            if pipeEnds[1] >= 0 { close(pipeEnds[1]) }
            throw ChildProcessError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
        inputWriter = pipeEnds[1]
    }

    /// Reaps the child if it has ended (never blocks).
    private func poll() -> Termination? {
        lock.lock()
        defer { lock.unlock() }
        if let ended { return ended }
        var status: Int32 = 0
        var r: pid_t
        repeat { r = waitpid(pid, &status, WNOHANG) } while r < 0 && errno == EINTR
        guard r == pid else { return nil }
        // WIFEXITED / WIFSIGNALED, which do not import into Swift.
        ended = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        return ended
    }

    public var isRunning: Bool { poll() == nil }

    /// How it ended, or nil while it runs.
    public var termination: Termination? { poll() }

    /// Sends `signal` unless it has been reaped (its pid may be another's by then).
    public func signal(_ signal: Int32) {
        lock.lock()
        defer { lock.unlock() }
        if ended == nil { kill(pid, signal) }
    }

    /// Waits up to `seconds` for it to end; nil if it still runs.
    public func wait(seconds: Double) -> Termination? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let t = poll() { return t }
            if Date() >= deadline { return nil }
            usleep(2_000)
        }
    }

    /// Waits as long as it takes.
    @discardableResult
    public func waitUntilExit() -> Termination {
        while true {
            if let t = poll() { return t }
            usleep(2_000)
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within `graceSeconds`.
    @discardableResult
    public func terminate(graceSeconds: Double = 10) -> Termination {
        signal(SIGTERM)
        if let t = wait(seconds: graceSeconds) { return t }
        signal(SIGKILL)
        return waitUntilExit()
    }

    /// Writes to its standard input (a `.pipe`).
    public func write(_ text: String) {
        lock.lock()
        let fd = inputWriter
        lock.unlock()
        precondition(fd >= 0, "standard input is not an open pipe")
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }  // it has gone: what it did not read is lost, as with a pipe
            bytes = bytes.dropFirst(n)
        }
    }

    /// Closes its standard input (a `.pipe`): it reads end of file.
    public func closeInput() {
        lock.lock()
        defer { lock.unlock() }
        if inputWriter >= 0 { close(inputWriter) }
        inputWriter = -1
    }

    /// What the kernel says of it now, for a failure's message: its state
    /// (R running, S sleeping, Z exited but not reaped, ...) and what it
    /// waits in.
    public var kernelState: String {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.range(of: ") ") else { return "pid \(pid): no /proc entry" }
        let state = stat[afterName.upperBound...].prefix(1)
        let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? "?"
        return "pid \(pid): state \(state), waiting in \(wchan.isEmpty || wchan == "0" ? "-" : wchan)"
    }

    deinit {
        if inputWriter >= 0 { close(inputWriter) }
        // Never leave a child behind, nor a zombie.
        if poll() == nil {
            kill(pid, SIGKILL)
            waitUntilExit()
        }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
