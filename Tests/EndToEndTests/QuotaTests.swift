import Foundation
import Testing

/// --quota-backend-bytes through etcdctl: past the quota NOSPACE is raised
/// and writes are refused with etcd's error while reads and deletes go on;
/// the alarm survives a restart; compaction, defragment and disarm recover,
/// and no acknowledged write is lost on the way.
@Suite struct QuotaTests {
    @Test func quotaExceededThenRecovered() throws {
        let quota = ["--quota-backend-bytes", "2097152"]
        let server = try ServerProcess(arguments: quota)
        defer { server.stop() }
        var e = Etcdctl(endpoint: server.endpoint)
        let padding = String(repeating: "v", count: 20_000)
        var latest: [String: String] = [:]
        var refused: CommandResult?
        for i in 0..<400 {
            let key = "k\(i % 50)", value = "\(i)-\(padding)"
            let r = try e.run("put", key, value)
            if r.status != 0 { refused = r; break }
            latest[key] = value
        }
        let refusal = try #require(refused, "400 puts of 20 KB fit in a 2 MiB quota")
        #expect(refusal.stderr.contains("Error: etcdserver: mvcc: database space exceeded"), "\(refusal)")
        let alarm = try e.run("alarm", "list").stdout
        #expect(alarm.hasPrefix("memberID:") && alarm.hasSuffix(" alarm:NOSPACE \n"), "\(alarm)")
        let table = try e.run("endpoint", "status", "-w", "table").stdout
        #expect(table.contains("DB SIZE") && table.contains("alarm:NOSPACE"), "\(table)")
        // Reads and deletes go on; growing writes do not.
        #expect(try e.run("get", "k1", "--print-value-only").lines == [latest["k1"]!])
        #expect(try e.run("del", "k49").stdout == "1\n")
        latest["k49"] = nil
        #expect(try e.run("lease", "grant", "10").stderr.contains("etcdserver: mvcc: database space exceeded"))
        #expect(try e.run("put", "small", "x").status != 0)

        // The alarm is kept across a restart.
        server.kill()
        let restarted = try ServerProcess(arguments: quota, dataDir: server.dataDir)
        defer { restarted.stop() }
        e = Etcdctl(endpoint: restarted.endpoint)
        #expect(try e.run("alarm", "list").stdout == alarm)
        #expect(try e.run("put", "small", "x").status != 0)

        // Compact, defragment, disarm: writes are accepted again.
        let status = try e.run("endpoint", "status", "-w", "json").stdout
        let revision = try #require(status.range(of: "\"revision\":").map { Int(status[$0.upperBound...].prefix { $0.isNumber }) } ?? nil)
        #expect(try e.run("compact", "\(revision)", "--physical").status == 0)
        // The file keeps its size until the defragment; the size in use drops.
        let compacted = try e.run("endpoint", "status", "-w", "json").stdout
        func number(_ field: String) -> Int? {
            compacted.range(of: "\"\(field)\":").map { Int(compacted[$0.upperBound...].prefix { $0.isNumber }) } ?? nil
        }
        let (size, inUse) = (try #require(number("dbSize")), try #require(number("dbSizeInUse")))
        #expect(inUse < size / 2, "\(compacted)")
        #expect(try e.run("defrag").status == 0)
        #expect(try e.run("alarm", "disarm").stdout == alarm)
        #expect(try e.run("alarm", "list").stdout == "")
        #expect(try e.run("put", "small", "x").stdout == "OK\n")
        for (key, value) in latest {
            #expect(try e.run("get", key, "--print-value-only").lines == [value], "\(key)")
        }
        #expect(try e.run("get", "k49").stdout == "")
    }
}
