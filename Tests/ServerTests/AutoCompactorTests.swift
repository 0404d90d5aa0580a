import Testing
@testable import Server

@Suite struct AutoCompactorTests {
    /// Ticks every `tickInterval` for `duration` seconds with the revision
    /// going up by `perTick`; returns (time, target) of each compaction.
    func run(_ mode: AutoCompactor.Mode, duration: Double, perTick: Int64 = 7) -> [(Double, Int64)] {
        var c = AutoCompactor(mode)
        var out: [(Double, Int64)] = []
        var t = 0.0, revision: Int64 = 1
        while t <= duration + 1e-6 {
            if let target = c.tick(now: t, revision: revision) { out.append((t, target)) }
            t += c.tickInterval
            revision += perTick
        }
        return out
    }

    /// The revision the store had at time `t` in `run` (sampled each tick).
    func revision(at t: Double, tick: Double, perTick: Int64 = 7) -> Int64 { 1 + Int64((t / tick).rounded()) * perTick }

    @Test func periodicUnderAnHourCompactsEveryRetentionToTheRevisionThatOld() {
        let got = run(.periodic(seconds: 100), duration: 1000)
        #expect(got.map(\.0) == stride(from: 100.0, through: 1000, by: 100).map { $0 })
        for (t, target) in got { #expect(target == revision(at: t - 100, tick: 10), "at \(t)") }
    }

    @Test func periodicOverAnHourCompactsHourlyKeepingTheWholeRetention() {
        let got = run(.periodic(seconds: 3 * 3600), duration: 6 * 3600)
        #expect(got.map { Int($0.0.rounded()) } == [3, 4, 5, 6].map { $0 * 3600 })
        for (t, target) in got { #expect(target == revision(at: t - 3 * 3600, tick: 360), "at \(t)") }
    }

    @Test func revisionModeKeepsTheLastNEveryFiveMinutes() {
        #expect(AutoCompactor(.revision(keep: 1000)).tickInterval == 300)
        let got = run(.revision(keep: 1000), duration: 3000, perTick: 300)
        // Nothing until the store holds more than 1,000 revisions.
        let first: Int64? = got.first?.1
        #expect(first == Int64(1 + 4 * 300 - 1000))
        for (t, target) in got { #expect(target == 1 + Int64((t / 300).rounded()) * 300 - 1000) }
        // An idle store is not compacted again to the same revision.
        var c = AutoCompactor(.revision(keep: 10))
        #expect(c.tick(now: 0, revision: 50) == 40)
        #expect(c.tick(now: 300, revision: 50) == nil)
    }

    @Test func flagsFollowEtcd() throws {
        func mode(_ args: [String]) throws -> AutoCompactor.Mode? { try ServerConfig.parse(arguments: args, environment: [:]).autoCompaction }
        #expect(try mode([]) == nil)
        #expect(try mode(["--auto-compaction-retention", "1"]) == .periodic(seconds: 3600))
        #expect(try mode(["--auto-compaction-retention=30m"]) == .periodic(seconds: 1800))
        #expect(try mode(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"]) == .revision(keep: 1000))
        #expect(try mode(["--auto-compaction-mode", "revision"]) == nil)
        #expect(try ServerConfig.parse(arguments: [], environment: ["ETCD_AUTO_COMPACTION_RETENTION": "2h"]).autoCompaction
                == .periodic(seconds: 7200))
        #expect(throws: ServerConfig.ParseError.self) { try mode(["--auto-compaction-mode", "hourly"]) }
        #expect(throws: ServerConfig.ParseError.self) { try mode(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"]) }
        #expect(throws: ServerConfig.ParseError.self) { try mode(["--auto-compaction-retention", "soon"]) }
    }
}
