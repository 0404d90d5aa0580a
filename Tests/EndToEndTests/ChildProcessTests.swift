import Foundation
import Synchronization
import Testing
import TestSupport

/// The tests' process runner: a child's end is seen when it ends, whatever
/// else the test process starts meanwhile, and no child holds another's
/// descriptors.
@Suite struct ChildProcessTests {
    /// Foundation's Process failed this (1 or 2 in 100 short children were
    /// still "running", a zombie, until a long-lived child spawned at the
    /// same moment exited): an etcdctl call "ran longer than 60 s".
    @Test func aShortChildEndsWhileLongOnesStartBesideIt() throws {
        let threads = 8, perThread = 100
        let long = Locked([ChildProcess]())
        let late = Locked([String]())
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            // Threads of their own: concurrentPerform would use one per core.
            Thread.detachNewThread {
                defer { done.leave() }
                for i in 0..<perThread {
                    if i % 6 == 0 {
                        // Outlives the test's bound below by far.
                        if let p = try? ChildProcess("/bin/sleep", ["30"]) { long.withLock { $0.append(p) } }
                        continue
                    }
                    guard let p = try? ChildProcess("/bin/true", []) else {
                        late.withLock { $0.append("thread \(t) child \(i) did not start") }
                        continue
                    }
                    if p.wait(seconds: 10) != .exited(0) {
                        let what = p.termination.map { "\($0)" } ?? "still running"
                        late.withLock { $0.append("thread \(t) child \(i): \(what), \(p.kernelState)") }
                    }
                }
            }
        }
        done.wait()
        for p in long.withLock({ $0 }) { p.signal(SIGKILL); p.waitUntilExit() }
        #expect(late.withLock { $0 }.isEmpty, "\(late.withLock { $0 })")
    }

    /// A child sees end of file on standard input when the test closes it,
    /// though another child started meanwhile; and it has no descriptor of
    /// the test process's beyond the three standard ones.
    @Test func aChildHoldsNoDescriptorOfTheTestProcess() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let open = Glibc.open(dir + "/held", O_WRONLY | O_CREAT, 0o644)  // not close-on-exec
        defer { close(open) }
        let cat = try ChildProcess("/bin/cat", [], stdin: .pipe, stdout: .file(dir + "/out"))
        let sleeper = try ChildProcess("/bin/sleep", ["30"])
        defer { sleeper.signal(SIGKILL) }
        cat.write("hello\n")
        cat.closeInput()
        #expect(cat.wait(seconds: 10) == .exited(0), "\(cat.kernelState)")
        #expect(try String(contentsOfFile: dir + "/out", encoding: .utf8) == "hello\n")
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(sleeper.pid)/fd").sorted()
        #expect(fds == ["0", "1", "2"])
    }

    /// Exit codes and signals are told apart; a signal to a reaped child
    /// goes nowhere.
    @Test func exitCodesAndSignals() throws {
        let failing = try ChildProcess("/bin/sh", ["-c", "exit 3"])
        #expect(failing.wait(seconds: 10) == .exited(3))
        let sleeper = try ChildProcess("/bin/sleep", ["30"])
        #expect(sleeper.isRunning)
        #expect(sleeper.terminate(graceSeconds: 10) == .signaled(SIGTERM))
        sleeper.signal(SIGKILL)
        #expect(sleeper.termination == .signaled(SIGTERM))
        let both = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: both) }
        let p = try ChildProcess("/bin/sh", ["-c", "echo out; echo err >&2"], environment: ["X": "1"],
                                 stdout: .file(both), stderr: .standardOutput)
        #expect(p.wait(seconds: 10) == .exited(0))
        #expect(try String(contentsOfFile: both, encoding: .utf8) == "out\nerr\n")
    }
}
