import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

/// A load generator for etcd's v3 API, modelled on etcd's `benchmark` tool.
/// It runs against any endpoint: swetcd or etcd.
@main
struct SwetcdBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swetcd-bench",
        abstract: "Load an etcd-compatible server and report throughput and latency.",
        subcommands: [Put.self, Range.self, TxnPut.self, TxnMixed.self, LeaseKeepAlive.self, WatchBench.self, WatchLatency.self,
                      Failover.self, K8sBench.self])
}

struct GlobalOptions: ParsableArguments {
    @Option(help: "Comma-separated endpoints (host:port).")
    var endpoints = "127.0.0.1:2379"
    @Option(help: "HTTP/2 connections to spread the clients over.")
    var conns = 1
    @Option(help: "Concurrent clients, each with one request in flight.")
    var clients = 1
    @Option(help: "Stop after this many seconds even if --total is not reached.")
    var duration: Double?
    @Option(help: ArgumentHelp("After each request, poll for its reply this many microseconds before sleeping (0: sleep at once).",
                               discussion: "Waking a sleeping thread costs tens of microseconds on virtual CPUs that halt when idle: a large part of one client's round trip. Go's runtime spins briefly before it parks."))
    var pollForReply = 0.0
    @Option(help: "CA certificate to verify a TLS server with (TLS when set).") var cacert: String?
    @Option(help: "Client certificate for TLS.") var cert: String?
    @Option(help: "Client key for TLS.") var key: String?
    @Flag(help: "Print numbers with full precision.")
    var precise = false

    @Option(help: "Authenticate as this user (user:password), as etcdctl's --user.") var user: String?

    var settings: ClientSettings {
        let credentials = user.map { $0.split(separator: ":", maxSplits: 1).map(String.init) }
        return ClientSettings(tls: cacert.map { EtcdClient.TLS(caFile: $0, certFile: cert, keyFile: key) },
                              user: credentials?.first, password: credentials.map { $0.count > 1 ? $0[1] : "" })
    }
    @Flag(help: "Print a JSON summary instead of text.")
    var json = false

    var endpointList: [String] { endpoints.split(separator: ",").map(String.init) }

    func print(_ r: Report) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            Swift.print(String(decoding: try encoder.encode(r), as: UTF8.self))
            return
        }
        func n(_ x: Double) -> String { precise ? "\(x)" : String(format: "%.4f", x) }
        Swift.print("""
        Summary (\(r.workload), \(r.clients) clients over \(r.connections) connections):
          Total:\t\(n(r.seconds)) secs.
          Requests:\t\(r.requests)
          Requests/sec:\t\(n(r.requestsPerSecond))
          Latency (ms):\tp50 \(n(r.latencyMs["p50"]!))  p90 \(n(r.latencyMs["p90"]!))  p99 \(n(r.latencyMs["p99"]!))  p99.9 \(n(r.latencyMs["p99.9"]!))  max \(n(r.latencyMs["max"]!))
          Bench CPU:\t\(n(r.benchCPUPercentOfOneCore))% of one core (\(n(r.benchCPUPercentOfMachine))% of the machine)
        """)
        if !r.errors.isEmpty {
            Swift.print("  Errors:")
            for (e, c) in r.errors.sorted(by: { $0.value > $1.value }) { Swift.print("    \(c)\t\(e)") }
        }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put keys.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Key size in bytes.") var keySize = 8
    @Option(help: "Value size in bytes.") var valSize = 8
    @Option(help: "Total requests.") var total = 10_000
    @Option(help: "Distinct keys to put into (random unless --sequential-keys).") var keySpaceSize = 1
    @Flag(help: "Put keys 0, 1, 2, ... in order.") var sequentialKeys = false
    @Flag(help: "Random bytes as values (incompressible, each put's different), as etcd's benchmark tool puts; otherwise every value is 'vvv...'.")
    var randomValues = false

    func run() async throws {
        let value = Data(repeating: UInt8(ascii: "v"), count: valSize)
        // A pool twice the value size (at least 1 MiB) to take random slices of.
        let pool = randomValues ? Data((0..<max(2 * valSize, 1 << 20)).map { _ in UInt8.random(in: 0...255) }) : Data()
        let (keySize, space, sequential, valSize) = (keySize, keySpaceSize, sequentialKeys, valSize)
        let r = try await runLoad(workload: "put", endpoints: global.endpointList, connections: global.conns,
                                  clients: global.clients, total: total, seconds: global.duration,
                                  pollForReply: global.pollForReply / 1e6, settings: global.settings) { n in
            let k = sequential ? n % space : Int.random(in: 0..<max(space, 1))
            var p = Etcdserverpb_PutRequest()
            p.key = Data(benchKey(k, size: keySize))
            if pool.isEmpty {
                p.value = value
            } else {
                let start = Int.random(in: 0...(pool.count - valSize))
                p.value = pool[start..<(start + valSize)]
            }
            return ("/etcdserverpb.KV/Put", try! p.serializedBytes())
        }
        try global.print(r)
    }
}

struct Range: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Get a key or a range.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The key.") var key: String
    @Argument(help: "The range end (exclusive); none for the single key.") var end: String?
    @Option(help: "l (linearizable) or s (serializable).") var consistency = "l"
    @Option(help: "Total requests.") var total = 10_000
    @Option(help: "Most keys per response (0: no limit).") var limit: Int64 = 0

    func run() async throws {
        guard consistency == "l" || consistency == "s" else { throw ValidationError("--consistency is l or s") }
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        if let end { request.rangeEnd = Data(end.utf8) }
        request.serializable = consistency == "s"
        request.limit = limit
        let bytes: [UInt8] = try request.serializedBytes()
        let r = try await runLoad(workload: "range", endpoints: global.endpointList, connections: global.conns,
                                  clients: global.clients, total: total, seconds: global.duration,
                                  pollForReply: global.pollForReply / 1e6, settings: global.settings) { _ in
            ("/etcdserverpb.KV/Range", bytes)
        }
        try global.print(r)
    }
}

struct TxnPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "txn-put", abstract: "Txns of puts.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var keys: WriteOptions
    @Option(help: "Puts per txn.") var txnOps = 1

    func run() async throws {
        let value = keys.value
        let (keySize, space, ops) = (keys.keySize, keys.keySpaceSize, txnOps)
        let r = try await runLoad(workload: "txn-put", endpoints: global.endpointList, connections: global.conns,
                                  clients: global.clients, total: keys.total, seconds: global.duration,
                                  pollForReply: global.pollForReply / 1e6, settings: global.settings) { _ in
            // Distinct keys inside one txn (a key may be written once per txn).
            let base = Int.random(in: 0..<max(space, 1))
            var t = Etcdserverpb_TxnRequest()
            t.success = (0..<ops).map { putOp(benchKey((base + $0) % max(space, ops), size: keySize), value) }
            return ("/etcdserverpb.KV/Txn", try! t.serializedBytes())
        }
        try global.print(r)
    }
}

struct TxnMixed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "txn-mixed", abstract: "Txns that read or write.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var keys: WriteOptions
    @Option(help: "Reads per write.") var rwRatio = 1.0

    func run() async throws {
        let value = keys.value
        let (keySize, space, readShare) = (keys.keySize, keys.keySpaceSize, rwRatio / (rwRatio + 1))
        let r = try await runLoad(workload: "txn-mixed", endpoints: global.endpointList, connections: global.conns,
                                  clients: global.clients, total: keys.total, seconds: global.duration,
                                  pollForReply: global.pollForReply / 1e6, settings: global.settings) { _ in
            let key = benchKey(Int.random(in: 0..<max(space, 1)), size: keySize)
            var t = Etcdserverpb_TxnRequest()
            if Double.random(in: 0..<1) < readShare {
                var op = Etcdserverpb_RequestOp()
                var get = Etcdserverpb_RangeRequest()
                get.key = Data(key)
                op.requestRange = get
                t.success = [op]
            } else {
                t.success = [putOp(key, value)]
            }
            return ("/etcdserverpb.KV/Txn", try! t.serializedBytes())
        }
        try global.print(r)
    }
}

struct LeaseKeepAlive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-keepalive",
        abstract: "Keep-alives of one lease per client, each on a stream of its own (etcdctl lease keep-alive --once).")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Total requests.") var total = 10_000

    func run() async throws {
        let setup = try global.settings.client(global.endpointList)
        var leases: [Int64] = []
        for _ in 0..<max(global.clients, 1) { leases.append(try await setup.grantLease(ttl: 600).id) }
        setup.close()
        let requests = leases.map { id -> [UInt8] in
            var r = Etcdserverpb_LeaseKeepAliveRequest()
            r.id = id
            return try! r.serializedBytes()
        }
        let r = try await runLoad(workload: "lease-keepalive", endpoints: global.endpointList, connections: global.conns,
                                  clients: global.clients, total: total, seconds: global.duration,
                                  pollForReply: global.pollForReply / 1e6, settings: global.settings) { n in
            ("/etcdserverpb.Lease/LeaseKeepAlive", requests[n % requests.count])
        }
        try global.print(r)
    }
}

/// The key and value shape of the write workloads (txn-put, txn-mixed).
struct WriteOptions: ParsableArguments {
    @Option(help: "Key size in bytes.") var keySize = 8
    @Option(help: "Value size in bytes.") var valSize = 8
    @Option(help: "Total requests.") var total = 10_000
    @Option(help: "Distinct keys.") var keySpaceSize = 1

    var value: Data { Data(repeating: UInt8(ascii: "v"), count: valSize) }
}

/// A txn operation putting `value` at `key`.
func putOp(_ key: [UInt8], _ value: Data) -> Etcdserverpb_RequestOp {
    var put = Etcdserverpb_PutRequest()
    put.key = Data(key)
    put.value = value
    var op = Etcdserverpb_RequestOp()
    op.requestPut = put
    return op
}
