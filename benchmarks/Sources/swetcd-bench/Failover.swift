import ArgumentParser
import EtcdClient
import Foundation

/// Kills a cluster's leader with -9 under writers and measures how long
/// the cluster takes to have a new leader and to take writes again.
///
/// Writers (each its own client over every endpoint, starting at a
/// different one) put as fast as they can with a short per-request
/// timeout; a poller per endpoint asks for its status every few
/// milliseconds. After `--before` seconds the leader (from the pollers) is
/// killed (`--pids` names each endpoint's process); `--after` seconds
/// later it reports, as one JSON object: time to a new leader (the first
/// poll of a survivor naming another member) and time to the first
/// successful write begun after the kill, both from the kill.
struct Failover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Kill the leader under writers; time the recovery.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Each endpoint's process ID, in --endpoints order.") var pids: String
    @Option(help: "Seconds of writes before the kill.") var before = 1.5
    @Option(help: "Seconds to watch after the kill.") var after = 5.0
    @Option(help: "Per-request timeout of writers, seconds.") var requestTimeout = 0.5

    struct Result: Codable {
        var oldLeader: String
        var newLeader: String
        var secondsToNewLeader: Double?
        var secondsToFirstWrite: Double?
        var writesBefore: Int
        var writesAfter: Int
    }

    final class Timeline: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var writes: [(start: Double, end: Double)] = []
        private(set) var polls: [(time: Double, endpoint: Int, leader: UInt64)] = []
        func wrote(_ start: Double, _ end: Double) { lock.withLock { writes.append((start, end)) } }
        func polled(_ time: Double, _ endpoint: Int, _ leader: UInt64) { lock.withLock { polls.append((time, endpoint, leader)) } }
    }

    func run() async throws {
        let endpoints = global.endpointList
        let pidList = pids.split(separator: ",").compactMap { Int32($0) }
        guard pidList.count == endpoints.count else { throw ValidationError("--pids needs one ID per endpoint") }
        let pollers = try endpoints.map { try EtcdClient(endpoints: [$0], timeout: 0.2) }
        var memberIDs: [UInt64] = []
        for p in pollers { memberIDs.append(try await p.status().header.memberID) }
        let timeline = Timeline()
        let stopAt = now() + before + after
        let requestTimeout = requestTimeout
        let writers = try (0..<global.clients).map { i in
            try EtcdClient(endpoints: (0..<endpoints.count).map { endpoints[(i + $0) % endpoints.count] }, timeout: requestTimeout)
        }
        var killedAt = 0.0, oldLeader: UInt64 = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, w) in writers.enumerated() {
                group.addTask {
                    var n = 0
                    while now() < stopAt {
                        let start = now()
                        n += 1
                        if (try? await w.put("failover/\(i)", "\(n)")) != nil { timeline.wrote(start, now()) }
                    }
                }
            }
            for (i, p) in pollers.enumerated() {
                group.addTask {
                    while now() < stopAt {
                        if let s = try? await p.status() { timeline.polled(now(), i, s.leader) }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
            }
            try await Task.sleep(for: .seconds(before))
            oldLeader = try await pollers[0].status().leader
            guard let index = memberIDs.firstIndex(of: oldLeader) else { throw ValidationError("no leader to kill") }
            killedAt = now()
            kill(pidList[index], SIGKILL)
            try await group.waitForAll()
        }
        let newLeaderPoll = timeline.polls.filter { $0.time > killedAt && $0.leader != 0 && $0.leader != oldLeader }.min { $0.time < $1.time }
        let firstWrite = timeline.writes.filter { $0.start > killedAt }.map(\.end).min()
        let result = Result(oldLeader: String(oldLeader, radix: 16), newLeader: newLeaderPoll.map { String($0.leader, radix: 16) } ?? "none",
                            secondsToNewLeader: newLeaderPoll.map { $0.time - killedAt },
                            secondsToFirstWrite: firstWrite.map { $0 - killedAt },
                            writesBefore: timeline.writes.filter { $0.end <= killedAt }.count,
                            writesAfter: timeline.writes.filter { $0.start > killedAt }.count)
        for c in pollers + writers { c.close() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(result), as: UTF8.self))
    }
}

private func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
