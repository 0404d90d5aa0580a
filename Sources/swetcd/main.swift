#if canImport(Glibc)
import Glibc
#endif
import MVCC

// Until the server lands (issue 3) this opens the default data directory,
// writes and reads back one key, and reports the store's state.
let dataDir = CommandLine.arguments.dropFirst().first ?? "default.swetcd"
do {
    try makeDirectory(dataDir)
    let backend = try LMDBBackend(path: dataDir + "/db")
    let store = try Store(backend: backend)
    let put = try store.put(PutRequest(key: Array("swetcd/self-check".utf8), value: Array("ok".utf8)))
    try store.commit()
    let got = try store.range(RangeRequest(key: Array("swetcd/self-check".utf8)))
    let value = got.kvs.first.map { String(decoding: $0.value, as: UTF8.self) } ?? "<missing>"
    print("swetcd self-check: data dir \(dataDir), revision \(put.revision), keys \(store.keyCount), value \(value)")
    print("The gRPC server (http://127.0.0.1:2379) arrives with issue 3.")
} catch {
    print("swetcd self-check failed: \(error)")
    exit(1)
}
