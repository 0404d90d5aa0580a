import ArgumentParser
import EtcdClient
import Foundation
import Histogram
import Synchronization

/// etcd as kube-apiserver uses it (from its storage layer's documented
/// behaviour): pods under `/registry/pods/<namespace>/<name>`; informers
/// that list the prefix in pages of 500 (each page after the first at the
/// first page's revision) and then watch it with prev_kv from the list's
/// revision + 1; updates as `Txn(mod_revision == X ? put : get)`; events
/// under `/registry/events/` created as `Txn(create_revision == 0 ? put)`
/// with a lease per minute of events; the periodic compaction (a `Txn` on
/// `compact_rev_key`, then `Compact` of the revision seen the time before).
/// Reports update and list latency, the delay from an update's
/// acknowledgement to its event at every informer, events lost or out of
/// order, and with --server-pid the server's CPU per update and event and
/// its RSS.
struct K8sBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "k8s", abstract: "A Kubernetes-shaped load: pods, informers (list + watch), updates, events, compaction.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Pods created before the run.") var objects = 10_000
    @Option(help: "Namespaces the pods are spread over.") var namespaces = 10
    @Option(help: "Informers: each lists the pods and watches them.") var informers = 100
    @Option(help: "Informers listing at once.") var listConcurrency = 10
    @Option(help: "Pod updates per second.") var updateRate = 500.0
    @Option(help: "Tasks sharing the updates (each owns a share of the pods, so none conflict).") var updaters = 32
    @Option(help: "Events created per second under /registry/events/.") var eventRate = 50.0
    @Option(help: "Pod value size in bytes (kube objects are ~2-4 KiB).") var valSize = 3_000
    @Option(help: "Seconds of updates.") var seconds = 20.0
    @Option(help: "Seconds between compactions (kube-apiserver: 300).") var compactInterval = 10.0
    @Option(help: "Seconds between each informer's RequestProgress (0: none).") var progressInterval = 2.0
    @Option(help: "PID of a local server: its CPU per update and event, and its RSS.") var serverPid: Int32?

    func run() async throws {
        let parameters = K8sLoad(objects: objects, namespaces: namespaces, informers: informers, listConcurrency: listConcurrency,
                                 updateRate: updateRate, updaters: updaters, eventRate: eventRate, valSize: valSize,
                                 seconds: seconds, compactInterval: compactInterval, progressInterval: progressInterval,
                                 serverPid: serverPid)
        let client = try global.settings.client(global.endpointList, connections: max(global.conns, 4))
        defer { client.close() }
        let report = try await parameters.run(client)
        if global.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}

struct K8sReport: Codable {
    var workload: String
    var pods: Int
    var informers: Int
    var seconds: Double
    var updates: Int
    var updatesPerSecond: Double
    var conflicts: Int
    var errors: [String: Int]
    var updateMs: [String: Double]
    var listMs: [String: Double]
    /// From an update's acknowledgement to its event, over every informer.
    var deliveryMs: [String: Double]
    var eventsDelivered: Int
    var eventsLost: Int
    var eventsOutOfOrder: Int
    /// Answers to RequestProgress, and those at a revision below an event
    /// already received (a broken promise; must be 0).
    var progressAnswers: Int
    var progressBehind: Int
    var serverCPUMicrosecondsPerUpdate: Double?
    var serverCPUMicrosecondsPerEvent: Double?
    var serverRSSBytes: Int?

    var text: String {
        func f(_ m: [String: Double]) -> String {
            ["p50", "p99", "max"].map { "\($0) \(String(format: "%.2f", m[$0] ?? 0))" }.joined(separator: "  ")
        }
        var out = """
        Summary (\(workload)):
          Updates:\t\(updates) in \(String(format: "%.1f", seconds)) s (\(String(format: "%.0f", updatesPerSecond))/s), \(conflicts) conflicts
          Update (ms):\t\(f(updateMs))
          List (ms):\t\(f(listMs))
          Delivery (ms):\t\(f(deliveryMs))
          Events:\t\(eventsDelivered) delivered, \(eventsLost) lost, \(eventsOutOfOrder) out of order
          Progress:\t\(progressAnswers) answers to RequestProgress, \(progressBehind) behind an event received
        """
        if let u = serverCPUMicrosecondsPerUpdate, let e = serverCPUMicrosecondsPerEvent, let rss = serverRSSBytes {
            out += "\n  Server:\t\(String(format: "%.1f", u)) µs CPU per update, \(String(format: "%.2f", e)) µs per delivered event, RSS \(rss / 1_048_576) MiB"
        }
        for (e, c) in errors.sorted(by: { $0.value > $1.value }) { out += "\n  Error:\t\(c)\t\(e)" }
        return out
    }
}

/// What the updaters acknowledged: each pod revision and when its reply came.
final class AckedRevisions: Sendable {
    private let acked = Mutex<[Int64: ContinuousClock.Instant]>([:])
    func add(_ revision: Int64, _ at: ContinuousClock.Instant) { acked.withLock { $0[revision] = at } }
    var all: [Int64: ContinuousClock.Instant] { acked.withLock { $0 } }
}

/// One informer's watch: each event's revision and arrival, in order.
struct InformerLog: Sendable {
    var listRevision: Int64 = 0
    var listMicroseconds: Int64 = 0
    var arrivals: [(revision: Int64, at: ContinuousClock.Instant)] = []
    var outOfOrder = 0
    var progressAnswers = 0
    var progressBehind = 0
}

/// The run's parameters (K8sBench's options), and the run.
struct K8sLoad: Sendable {
    var objects: Int, namespaces: Int, informers: Int, listConcurrency: Int
    var updateRate: Double, updaters: Int, eventRate: Double, valSize: Int
    var seconds: Double, compactInterval: Double, progressInterval: Double, serverPid: Int32?
    var prefix: String { "/registry/pods/" }

    func podKey(_ i: Int) -> [UInt8] { Array("\(prefix)ns-\(i % namespaces)/pod-\(i)".utf8) }

    func value(_ i: Int, _ generation: Int) -> [UInt8] {
        // A JSON-ish object of the configured size; its generation changes with each update.
        let head = Array("{\"kind\":\"Pod\",\"name\":\"pod-\(i)\",\"generation\":\(generation),\"spec\":\"".utf8)
        return head + [UInt8](repeating: UInt8(ascii: "x"), count: max(valSize - head.count - 2, 0)) + Array("\"}".utf8)
    }

    func run(_ client: EtcdClient) async throws -> K8sReport {
        let o = self
        let errors = ErrorCounts()
        @Sendable func failed(_ e: Error) { errors.add(e) }

        // The pods, created as kube-apiserver creates objects; their mod
        // revisions, for the first updates.
        var modRevisions = [Int64](repeating: 0, count: o.objects)
        try await withThrowingTaskGroup(of: [(Int, Int64)].self) { group in
            let share = max(o.updaters, 1)
            for t in 0..<share {
                group.addTask {
                    var out: [(Int, Int64)] = []
                    for i in stride(from: t, to: o.objects, by: share) {
                        let key = podKey(i)
                        let r = try await client.txn(compare: [Compare(.key(key), .createRevision(0), .equal)],
                                                     success: [.put(key, value(i, 0))])
                        out.append((i, r.header.revision))
                    }
                    return out
                }
            }
            for try await part in group { for (i, rev) in part { modRevisions[i] = rev } }
        }

        // Informers: list in pages, then watch from the list's revision + 1.
        let watching = Counter()
        // Written once every update is acknowledged: an informer that sees
        // it has seen everything before it (events come in order).
        let endOfRun = Array("\(prefix)~end-of-run".utf8)
        let listSlots = AsyncSemaphore(o.listConcurrency)
        let informerTasks = (0..<o.informers).map { _ in
            Task { () -> InformerLog in
                var log = InformerLog()
                await listSlots.wait()
                let start = ContinuousClock.now
                do {
                    var from = Array(prefix.utf8)
                    let end = KeyRange.prefixEnd(from)
                    var options = GetOptions()
                    options.limit = 500
                    while true {
                        let page = try await client.get(.range(from, end: end), options)
                        if log.listRevision == 0 {
                            log.listRevision = page.header.revision
                            options.revision = page.header.revision
                        }
                        guard page.more, let last = page.kvs.last else { break }
                        from = last.key + [0]
                    }
                } catch {
                    failed(error)
                }
                log.listMicroseconds = microseconds(ContinuousClock.now - start)
                await listSlots.signal()
                var w = WatchOptions()
                w.startRevision = log.listRevision + 1
                w.prevKV = true
                let (responses, requestProgress) = client.watchStream([(.prefix(prefix), w)])
                // kube-apiserver asks for progress to serve consistent reads from its cache.
                let asker = Task {
                    while o.progressInterval > 0 && !Task.isCancelled {
                        try? await Task.sleep(nanoseconds: UInt64(o.progressInterval * 1e9))
                        requestProgress()
                    }
                }
                defer { asker.cancel() }
                do {
                    for try await r in responses {
                        if r.created { watching.add(); continue }
                        if r.watchID == -1 && r.isProgressNotification {
                            log.progressAnswers += 1
                            if let last = log.arrivals.last?.revision, r.header.revision < last { log.progressBehind += 1 }
                            continue
                        }
                        let now = ContinuousClock.now
                        var ended = false
                        for e in r.events {
                            if e.kv.key == endOfRun {
                                ended = true
                                break
                            }
                            if let last = log.arrivals.last?.revision, e.kv.modRevision <= last { log.outOfOrder += 1 }
                            log.arrivals.append((e.kv.modRevision, now))
                        }
                        if ended { break }
                    }
                } catch {
                    failed(error)
                }
                return log
            }
        }
        let readyBy = ContinuousClock.now.advanced(by: .seconds(600))
        while watching.value < o.informers && ContinuousClock.now < readyBy { try await Task.sleep(nanoseconds: 20_000_000) }

        // The run: updates, events, compactions.
        let acked = AckedRevisions()
        let conflicts = Counter()
        let cpuBefore = o.serverPid.map(processCPUSeconds)
        let start = ContinuousClock.now
        let deadline = start.advanced(by: .milliseconds(Int64(o.seconds * 1000)))
        let startingRevisions = modRevisions
        let updaterTasks = (0..<max(o.updaters, 1)).map { t in
            Task { () -> Histogram<UInt64> in
                var h = latencyHistogram()
                let share = max(o.updaters, 1)
                let mine = Array(stride(from: t, to: o.objects, by: share))
                guard !mine.isEmpty else { return h }
                var revisions = mine.map { startingRevisions[$0] }
                let rate = o.updateRate / Double(share)
                var n = 0
                while true {
                    let due = start.advanced(by: .microseconds(Int64((Double(n) + Double(t) / Double(share)) / rate * 1e6)))
                    guard due < deadline else { break }
                    if due > ContinuousClock.now { try? await Task.sleep(until: due, clock: .continuous) }
                    let slot = Int.random(in: 0..<mine.count)
                    let key = podKey(mine[slot])
                    let sent = ContinuousClock.now
                    do {
                        let r = try await client.txn(compare: [Compare(.key(key), .modRevision(revisions[slot]), .equal)],
                                                     success: [.put(key, value(mine[slot], n + 1))], failure: [.get(.key(key))])
                        let now = ContinuousClock.now
                        _ = h.record(UInt64(max(microseconds(now - sent), 1)))
                        if r.succeeded {
                            revisions[slot] = r.header.revision
                            acked.add(r.header.revision, now)
                        } else {
                            conflicts.add()
                            if case .get(let g)? = r.responses.first, let kv = g.kvs.first { revisions[slot] = kv.modRevision }
                        }
                    } catch {
                        failed(error)
                    }
                    n += 1
                }
                return h
            }
        }
        let eventTask = Task {
            var lease: (minute: Int, id: Int64)?
            var n = 0
            while o.eventRate > 0 {
                let due = start.advanced(by: .microseconds(Int64(Double(n) / o.eventRate * 1e6)))
                guard due < deadline else { break }
                if due > ContinuousClock.now { try? await Task.sleep(until: due, clock: .continuous) }
                let minute = Int(Date().timeIntervalSince1970 / 60)
                do {
                    if lease?.minute != minute { lease = (minute, try await client.grantLease(ttl: 3600).id) }
                    let key = Array("/registry/events/ns-\(n % o.namespaces)/pod-\(n % max(o.objects, 1)).\(n)".utf8)
                    var put = PutOptions()
                    put.lease = lease!.id
                    _ = try await client.txn(compare: [Compare(.key(key), .createRevision(0), .equal)],
                                             success: [.put(key, Array(repeating: UInt8(ascii: "e"), count: 500), put)])
                } catch {
                    failed(error)
                }
                n += 1
            }
        }
        let compactor = Task {
            var seen: Int64?
            var version: Int64 = 0
            let key = Array("compact_rev_key".utf8)
            while ContinuousClock.now.advanced(by: .milliseconds(Int64(o.compactInterval * 1000))) < deadline {
                try? await Task.sleep(nanoseconds: UInt64(o.compactInterval * 1e9))
                do {
                    let current = try await client.status().header.revision
                    if let target = seen {
                        let r = try await client.txn(compare: [Compare(.key(key), .version(version), .equal)],
                                                     success: [.put(key, Array(String(target).utf8))], failure: [.get(.key(key))])
                        if r.succeeded {
                            version += 1
                            _ = try await client.compact(target)
                        } else if case .get(let g)? = r.responses.first, let kv = g.kvs.first {
                            version = kv.version
                        }
                    }
                    seen = current
                } catch {
                    failed(error)
                }
            }
        }
        var updates = latencyHistogram()
        for t in updaterTasks { updates.add(await t.value) }
        await eventTask.value
        compactor.cancel()
        let elapsed = Double(microseconds(ContinuousClock.now - start)) / 1e6
        let ackedRevisions = acked.all
        do { _ = try await client.put(endOfRun, []) } catch { failed(error) }

        // Every informer stops at the end-of-run event, or is stopped 30 s
        // after the run (what it had not received by then is lost).
        let giveUp = Task {
            try? await Task.sleep(nanoseconds: 30_000_000_000)
            for t in informerTasks { t.cancel() }
        }
        var logs: [InformerLog] = []
        for task in informerTasks { logs.append(await task.value) }
        giveUp.cancel()
        let cpu = o.serverPid.map(processCPUSeconds).flatMap { after in cpuBefore.map { after - $0 } }
        await compactor.value

        var delivery = latencyHistogram()
        var lists = latencyHistogram(maxMicroseconds: 600_000_000)
        var lost = 0, outOfOrder = 0, delivered = 0, progressAnswers = 0, progressBehind = 0
        for log in logs {
            progressAnswers += log.progressAnswers
            progressBehind += log.progressBehind
            _ = lists.record(UInt64(max(log.listMicroseconds, 1)))
            outOfOrder += log.outOfOrder
            delivered += log.arrivals.count
            var seen = Set<Int64>()
            for a in log.arrivals {
                seen.insert(a.revision)
                // An event may arrive before its writer has the reply.
                if let ack = ackedRevisions[a.revision] { _ = delivery.record(UInt64(max(microseconds(a.at - ack), 1))) }
            }
            lost += ackedRevisions.keys.filter { $0 > log.listRevision && !seen.contains($0) }.count
        }
        func ms(_ h: Histogram<UInt64>) -> [String: Double] {
            ["p50": Double(h.valueAtPercentile(50)) / 1000, "p99": Double(h.valueAtPercentile(99)) / 1000,
             "max": Double(h.max) / 1000]
        }
        let updateCount = ackedRevisions.count + conflicts.value
        return K8sReport(
            workload: "k8s: \(o.objects) pods of \(o.valSize) B, \(o.informers) informers, \(Int(o.updateRate)) updates/s, "
                + "\(Int(o.eventRate)) events/s",
            pods: o.objects, informers: o.informers, seconds: elapsed, updates: updateCount,
            updatesPerSecond: Double(updateCount) / elapsed, conflicts: conflicts.value, errors: errors.counts,
            updateMs: ms(updates), listMs: ms(lists), deliveryMs: ms(delivery), eventsDelivered: delivered,
            eventsLost: lost, eventsOutOfOrder: outOfOrder, progressAnswers: progressAnswers, progressBehind: progressBehind,
            serverCPUMicrosecondsPerUpdate: cpu.map { $0 * 1e6 / Double(max(updateCount, 1)) },
            serverCPUMicrosecondsPerEvent: cpu.map { $0 * 1e6 / Double(max(delivered, 1)) },
            serverRSSBytes: o.serverPid.map(residentBytes))
    }
}

final class ErrorCounts: Sendable {
    private let byMessage = Mutex<[String: Int]>([:])
    func add(_ e: Error) { byMessage.withLock { $0["\(e)", default: 0] += 1 } }
    var counts: [String: Int] { byMessage.withLock { $0 } }
}

/// A counting semaphore for tasks.
actor AsyncSemaphore {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []
    init(_ count: Int) { free = max(count, 1) }

    func wait() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func signal() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
}

/// User plus system CPU seconds of a local process, from /proc.
func processCPUSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
