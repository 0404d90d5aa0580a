import EtcdClient
import EtcdProto
import Foundation

/// A Kubernetes-style controller on the client library: it lists
/// `/registry/pods/` page by page at one revision, then watches from the
/// revision after it, keeping a cache. A lost connection (a server
/// restart) resumes the watch after the last revision seen, so no event is
/// missed or seen twice; a resume point that was compacted away means a
/// relist.
///
/// Prints `list <revision> <pods>` after each (re)list, `event <revision>
/// PUT|DELETE <key>` for each change, and, on SIGINT or SIGTERM, `cache
/// <key> <value>` for every pod, then exits. Standard input is not read: it
/// runs as a controller runs, under a service manager or `nohup ...
/// </dev/null`.
///
///     PodWatcher --endpoints 127.0.0.1:2379 [--prefix /registry/pods/] [--page-size 100]
@main
struct PodWatcher {
    static func main() async {
        var endpoints = "127.0.0.1:2379", prefix = "/registry/pods/", pageSize: Int64 = 100
        var args = CommandLine.arguments.dropFirst()
        while let flag = args.popFirst() {
            guard let value = args.popFirst() else { fail("\(flag) needs a value") }
            switch flag {
            case "--endpoints": endpoints = value
            case "--prefix": prefix = value
            case "--page-size": pageSize = Int64(value) ?? 100
            default: fail("unknown flag \(flag)")
            }
        }
        let client: EtcdClient
        do {
            client = try EtcdClient(endpoints: endpoints.split(separator: ",").map(String.init), timeout: 5)
        } catch {
            fail("\(error)")
        }
        let controller = Controller(client: client, prefix: Array(prefix.utf8), pageSize: pageSize)
        let run = Task { await controller.run() }
        await stopSignal()
        run.cancel()
        await controller.dumpCache()
        client.shutdown()
        exit(0)
    }

    /// Returns once SIGINT or SIGTERM arrives.
    static func stopSignal() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let queue = DispatchQueue(label: "signals")
            var sources: [DispatchSourceSignal] = []
            let once = OnceFlag()
            for s in [SIGINT, SIGTERM] {
                signal(s, SIG_IGN)  // handled by the source below instead
                let source = DispatchSource.makeSignalSource(signal: s, queue: queue)
                source.setEventHandler { if once.take() { done.resume() } }
                source.resume()
                sources.append(source)
            }
            signalSources = sources
        }
    }
    nonisolated(unsafe) static var signalSources: [DispatchSourceSignal] = []

    static func fail(_ why: String) -> Never {
        FileHandle.standardError.write(Data("PodWatcher: \(why)\n".utf8))
        exit(2)
    }
}

/// True the first time only (signal handlers run on one serial queue).
final class OnceFlag: @unchecked Sendable {
    private var taken = false
    func take() -> Bool {
        defer { taken = true }
        return !taken
    }
}

actor Controller {
    let client: EtcdClient
    let prefix: [UInt8]
    let pageSize: Int64
    var cache = PodCache()

    init(client: EtcdClient, prefix: [UInt8], pageSize: Int64) {
        self.client = client
        self.prefix = prefix
        self.pageSize = pageSize
    }

    func run() async {
        var listed = false
        while !Task.isCancelled {
            do {
                if !listed {
                    try await relist()
                    listed = true
                }
                try await watch()
            } catch EtcdError.compacted {
                listed = false  // the resume point is gone: list again
            } catch {
                // The server is away: resume after the last revision seen.
                try? await Task.sleep(nanoseconds: 200_000_000)
            }
        }
    }

    /// Pages of `pageSize` pods, all read at the first page's revision.
    private func relist() async throws {
        var items: [(key: String, value: String)] = []
        var start = prefix
        var revision: Int64 = 0
        while true {
            var options = GetOptions()
            options.limit = pageSize
            options.revision = revision
            let page = try await client.get(.range(start, end: KeyRange.prefixEnd(prefix)), options)
            if revision == 0 { revision = page.header.revision }
            items += page.kvs.map { ($0.keyString, $0.valueString) }
            guard page.more, let last = page.kvs.last else { break }
            start = last.key + [0]
        }
        cache.relist(items, at: revision)
        print("list \(revision) \(items.count)")
        fflush(nil)
    }

    /// Watches from the revision after the cache's, resuming across lost
    /// connections; ends by throwing (compacted, or cancelled).
    private func watch() async throws {
        var options = WatchOptions()
        options.startRevision = cache.revision + 1
        for try await r in client.resumableWatch(.prefix(prefix), options) {
            guard let revision = r.events.last?.kv.modRevision else { continue }
            // One response holds whole revisions; apply them one by one.
            var byRevision: [(Int64, [PodCache.Change], [String])] = []
            for e in r.events {
                let change: PodCache.Change = e.kind == .put ? .put(key: e.kv.keyString, value: e.kv.valueString)
                    : .delete(key: e.kv.keyString)
                let line = "event \(e.kv.modRevision) \(e.kind == .put ? "PUT" : "DELETE") \(e.kv.keyString)"
                if byRevision.last?.0 == e.kv.modRevision {
                    byRevision[byRevision.count - 1].1.append(change)
                    byRevision[byRevision.count - 1].2.append(line)
                } else {
                    byRevision.append((e.kv.modRevision, [change], [line]))
                }
            }
            for (rev, changes, lines) in byRevision where cache.apply(changes, at: rev) {
                for l in lines { print(l) }
            }
            _ = revision
            fflush(nil)
            if Task.isCancelled { return }
        }
    }

    func dumpCache() {
        for (key, value) in cache.pods.sorted(by: { $0.key < $1.key }) { print("cache \(key) \(value)") }
        fflush(nil)
    }
}
