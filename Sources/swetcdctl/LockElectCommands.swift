import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

/// Returns once SIGINT or SIGTERM arrives (which then no longer kill).
func untilInterrupted() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = OnceFlag()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if once.set() { continuation.resume() }
            }
            source.resume()
            sources.append(source)
        }
        SignalSources.keep(sources)
    }
}

/// Keeps the signal sources alive for the process.
enum SignalSources {
    nonisolated(unsafe) private static var all: [DispatchSourceSignal] = []
    static func keep(_ sources: [DispatchSourceSignal]) { all += sources }
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    /// True the first time only.
    func set() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

/// `lock <lockname> [exec-command arg1 arg2 ...]`: holds the lock until
/// interrupted (printing its key), or while the command runs.
struct Lock: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Acquires a named lock")
    @OptionGroup var global: GlobalOptions
    @Option(help: "timeout for session") var ttl: Int64 = 10
    @Argument(help: "<lockname> [exec-command arg1 arg2 ...] (a command with flags after --)") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        let words = args.filter { $0 != "--" }
        guard let name = words.first else {
            throw CtlError(.badArgs, "lock takes a lock name argument and an optional command to execute")
        }
        let command = Array(words.dropFirst())
        let client = try global.client()
        defer { client.shutdown() }
        let interrupted = Task { await untilInterrupted() }
        do {
            let session = try await LeaseSession(client, ttl: ttl)
            let mutex = DistributedMutex(session, name: name)
            let (_, revision) = try await mutex.lock()
            if !command.isEmpty {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                p.arguments = command
                p.environment = ProcessInfo.processInfo.environment.merging(
                    ["ETCD_LOCK_KEY": mutex.key, "ETCD_LOCK_REV": "\(revision)"]) { $1 }
                try p.run()
                p.waitUntilExit()
                try? await mutex.unlock()
                await session.close()
                // etcdctl 3.4 reports the command's failure as its own.
                if p.terminationStatus != 0 { throw CtlError(.error, "exit status \(p.terminationStatus)") }
                return
            }
            var get = Etcdserverpb_RangeRequest()
            get.key = Data(mutex.key.utf8)
            let held: Etcdserverpb_RangeResponse = try await client.unary("/etcdserverpb.KV/Range", get)
            guard !held.kvs.isEmpty else { throw CtlError(.error, "lock lost on init") }
            try out.get(held)
            fflush(nil)
            await interrupted.value
            try await mutex.unlock()
            await session.close()
        } catch let e as ExitCode {
            throw e
        } catch {
            throw CtlError(error)
        }
    }
}

/// `elect <election-name> [proposal]`: campaigns and, once leader, prints
/// the leader key until interrupted; `-l` prints each leader in turn.
struct Elect: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Observes and participates in leader election")
    @OptionGroup var global: GlobalOptions
    @Flag(name: [.short, .customLong("listen")], help: "observation mode") var listen = false
    @Argument(help: "<election-name> [proposal]") var args: [String] = []

    static let booleans: Set<String> = ["listen"]

    func execute() async throws {
        let out = try Output(global)
        guard args.count == 1 || args.count == 2 else {
            throw CtlError(.badArgs, "elect takes one election name argument and an optional proposal argument")
        }
        if args.count == 1 && !listen { throw CtlError(.badArgs, "no proposal argument but -l not set") }
        if args.count == 2 && listen { throw CtlError(.badArgs, "proposal given but -l is set") }
        let client = try global.client()
        defer { client.shutdown() }
        do {
            if listen {
                // Until interrupted (exit 0), or the observation ends by
                // itself ("observer lost"), as etcdctl.
                let observing = Task {
                    for try await leader in Election(client, name: args[0]).observe() {
                        try out.get(leader)
                        fflush(nil)
                    }
                }
                let interrupted = Task {
                    await untilInterrupted()
                    observing.cancel()
                }
                _ = await observing.result
                if interrupted.isCancelled || !observing.isCancelled { throw CtlError(.error, "elect: observer lost") }
                return
            }
            let interrupted = Task { await untilInterrupted() }
            let session = try await LeaseSession(client)
            let election = Election(session, name: args[0])
            try await election.campaign(args[1])
            var get = Etcdserverpb_RangeRequest()
            get.key = Data((election.key ?? "").utf8)
            let leader: Etcdserverpb_RangeResponse = try await client.unary("/etcdserverpb.KV/Range", get)
            try out.get(leader)
            fflush(nil)
            await interrupted.value
            try await election.resign()
            await session.close()
        } catch let e as CtlError {
            throw e
        } catch {
            throw CtlError(error)
        }
    }
}
