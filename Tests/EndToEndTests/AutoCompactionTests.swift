import Foundation
import Testing

/// --auto-compaction-mode periodic with a short retention, through etcdctl:
/// history older than the retention goes, newer history stays.
@Suite struct AutoCompactionTests {
    @Test func periodicCompactionTrimsHistoryOlderThanTheRetention() throws {
        let server = try ServerProcess(arguments: ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"])
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        try e.run("put", "k", "old")  // revision 2
        let start = Date()
        var compacted = false
        // Keep writing; within a few retentions revision 2 must be gone.
        while !compacted && Date().timeIntervalSince(start) < 15 {
            try e.run("put", "k", "new")
            let r = try e.run("get", "k", "--rev=2")
            compacted = r.stderr.contains("etcdserver: mvcc: required revision has been compacted")
            if !compacted {
                #expect(r.lines == ["k", "old"])
                usleep(200_000)
            }
        }
        #expect(compacted)
        #expect(Date().timeIntervalSince(start) >= 1.5, "compacted before the retention had passed")
        #expect(try e.run("get", "k").lines == ["k", "new"])
        #expect(server.log.contains("starting auto-compaction"))
    }
}
