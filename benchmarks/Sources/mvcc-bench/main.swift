import CMallocStats
import MVCC
#if canImport(Glibc)
import Glibc
#endif

// In-process micro-benchmarks of the MVCC store on LMDB.
//   mvcc-bench put     [keys]   puts of 8-byte keys with 256-byte values
//   mvcc-bench range   [keys]   single-key Range calls over a loaded store
//   mvcc-bench memory  [keys]   index heap bytes and RSS after loading
//   mvcc-bench all              each of the above with the defaults

let valueSize = 256

func key(_ i: Int) -> [UInt8] {
    // 8 bytes, spread so that inserts land all over the index.
    let x = UInt64(i) &* 0x9E37_79B9_7F4A_7C15
    return (0..<8).map { UInt8(truncatingIfNeeded: x >> (56 - 8 * UInt64($0))) }
}

func temporaryDirectory() -> String {
    var template = Array("/tmp/swetcd-bench-XXXXXX".utf8CString)
    _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
}

func removeDirectory(_ dir: String) {
    unlink(dir + "/db")
    unlink(dir + "/db-lock")
    rmdir(dir)
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Loads `count` keys through the store's write path, committing in the
/// store's default batches. Returns the seconds it took.
func load(_ store: Store, count: Int) throws -> Double {
    let value = [UInt8](repeating: 0x61, count: valueSize)
    let clock = ContinuousClock()
    let start = clock.now
    for i in 0..<count { _ = try store.put(PutRequest(key: key(i), value: value)) }
    try store.commit()
    return seconds(clock.now - start)
}

func benchPut(keys: Int) throws {
    let dir = temporaryDirectory()
    defer { removeDirectory(dir) }
    // No fsync per commit: the WAL will own durability, and fsync cost is
    // the disk's, not the store's.
    let store = try Store(backend: LMDBBackend(path: dir + "/db", syncOnCommit: false))
    let t = try load(store, count: keys)
    print("put: \(keys) keys in \(fmt(t)) s = \(Int(Double(keys) / t)) puts/s (8-byte keys, \(valueSize)-byte values, batches of \(store.limits.backendBatchLimit))")
}

func benchRange(keys: Int) throws {
    let dir = temporaryDirectory()
    defer { removeDirectory(dir) }
    let store = try Store(backend: LMDBBackend(path: dir + "/db", syncOnCommit: false))
    _ = try load(store, count: keys)
    let clock = ContinuousClock()
    var rng = UInt64(42)
    var found = 0
    let calls = keys
    let start = clock.now
    for _ in 0..<calls {
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        let r = try store.range(RangeRequest(key: key(Int(rng >> 33) % keys)))
        found += r.kvs.count
    }
    let t = seconds(clock.now - start)
    precondition(found == calls, "every key must be found")
    print("range: \(calls) single-key calls over \(keys) keys in \(fmt(t)) s = \(Int(Double(calls) / t)) ranges/s")

    var prefixReq = RangeRequest(key: [0x80], rangeEnd: [0x81])
    prefixReq.limit = 10
    let pStart = clock.now
    for _ in 0..<calls / 10 { _ = try store.range(prefixReq) }
    let pt = seconds(clock.now - pStart)
    print("range: \(calls / 10) prefix calls (1/256 of the keys, limit 10) in \(fmt(pt)) s = \(Int(Double(calls / 10) / pt)) ranges/s")
}

func benchMemory(keys: Int) throws {
    let dir = temporaryDirectory()
    defer { removeDirectory(dir) }
    do {
        let store = try Store(backend: LMDBBackend(path: dir + "/db", syncOnCommit: false))
        _ = try load(store, count: keys)
        print("memory: after loading \(keys) keys: RSS \(mib(swetcd_resident_bytes())) MiB (includes LMDB's mapped pages)")
    }
    // The index alone: rebuild it from the backend and count heap growth.
    let backend = try LMDBBackend(path: dir + "/db", syncOnCommit: false)
    let heapBefore = swetcd_heap_bytes_in_use()
    let store = try Store(backend: backend)
    let heapAfter = swetcd_heap_bytes_in_use()
    precondition(store.keyCount == keys)
    let perKey = Double(heapAfter - heapBefore) / Double(keys)
    print("memory: index of \(keys) keys (one version each) = \(mib(heapAfter - heapBefore)) MiB heap = \(fmt(perKey)) bytes/key")
    print("memory: RSS after reopening = \(mib(swetcd_resident_bytes())) MiB")
}

func fmt(_ x: Double) -> String {
    let scaled = (x * 100).rounded() / 100
    return "\(scaled)"
}

func mib(_ bytes: Int) -> String { fmt(Double(bytes) / 1_048_576) }

let args = CommandLine.arguments.dropFirst()
let command = args.first ?? "all"
let count = args.dropFirst().first.flatMap { Int($0) }
do {
    switch command {
    case "put": try benchPut(keys: count ?? 100_000)
    case "range": try benchRange(keys: count ?? 100_000)
    case "memory": try benchMemory(keys: count ?? 1_000_000)
    case "all":
        try benchPut(keys: 100_000)
        try benchRange(keys: 100_000)
        try benchMemory(keys: 1_000_000)
    default:
        print("usage: mvcc-bench [put|range|memory|all] [keys]")
        exit(2)
    }
} catch {
    print("benchmark failed: \(error)")
    exit(1)
}
