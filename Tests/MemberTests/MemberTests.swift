import Foundation
import Logging
import Member
import Raft
import Testing
import Transport
import WAL

/// A result handed from the loop's thread to the test's.
final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }

/// A member alone, on a real loop and WAL: proposals are applied in order
/// once durable, linearizable reads wait for every entry committed before
/// them, and a restart from the WAL hands the committed entries over again.
@Suite struct MemberTests {
    final class Applied: @unchecked Sendable {
        var entries: [Entry] = []
        /// For each read, how many entries had been applied when it ran
        /// and how many had been proposed when it was asked.
        var reads: [(applied: Int, proposedBefore: Int)] = []
    }

    static func start(_ dir: String, loop: EventLoop, applied: Applied) throws -> (Member, GroupCommitWAL) {
        let wal = try WAL(directory: dir, segmentBytes: 1 << 16)
        wal.tagOf = RaftRecords.entryIndex
        let log = try RecoveredRaftLog(records: try wal.recover(), voters: [1], defaultSnapshot: (0, 0))
        let writer = GroupCommitWAL(wal)
        let member = Member(id: 1, voters: [1], storage: log.storage, wal: writer, loop: loop,
                            timing: Member.Timing(heartbeatInterval: 0.05, electionTicks: 10), seed: 7,
                            logger: Logger(label: "test"), apply: { applied.entries += $0 }, onFailure: { _ in })
        member.start()
        return (member, writer)
    }

    /// Runs `body` on the loop and waits for it.
    static func onLoop<T>(_ loop: EventLoop, _ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>(), work = LoopBound(body)
        loop.execute {
            box.result = Result { try work.value() }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }

    @Test func proposalsApplyInOrderAndSurviveARestart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("member-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let thread = EventLoopThread()
        defer { thread.stop() }
        let applied = Applied()
        let (member, writer) = try Self.onLoop(thread.loop) { try Self.start(dir, loop: thread.loop, applied: applied) }
        try Self.onLoop(thread.loop) {
            #expect(member.isLeader && member.term == 1)
            #expect(applied.entries.map(\.index) == [1], "the leader's empty entry")
        }
        var proposed = 0
        for batch in 0..<20 {
            try Self.onLoop(thread.loop) {
                for i in 0..<5 {
                    try member.propose([UInt8(batch), UInt8(i)])
                    proposed += 1
                    let before = proposed
                    member.linearizableRead { applied.reads.append((applied.entries.count - 1, before)) }
                }
            }
        }
        let deadline = Date().addingTimeInterval(20)
        while try Self.onLoop(thread.loop, { applied.reads.count }) < 100 && Date() < deadline { usleep(10_000) }
        try Self.onLoop(thread.loop) {
            #expect(applied.entries.dropFirst().map(\.data) == (0..<20).flatMap { b in (0..<5).map { [UInt8(b), UInt8($0)] } })
            #expect(applied.reads.count == 100)
            #expect(applied.reads.allSatisfy { $0.applied >= $0.proposedBefore }, "a read ran before a write proposed before it was applied")
            #expect(member.appliedIndex == 101 && member.commitIndex == 101)
        }
        writer.stop()

        // Restarted from the WAL: the committed entries come again, in
        // order, and a new term begins.
        let again = Applied()
        let (restarted, writer2) = try Self.onLoop(thread.loop) { try Self.start(dir, loop: thread.loop, applied: again) }
        try Self.onLoop(thread.loop) {
            #expect(again.entries.map(\.index) == Array(1...102))
            #expect(again.entries[1...100].map(\.data) == applied.entries[1...100].map(\.data))
            #expect(restarted.term == 2 && restarted.isLeader)
        }
        writer2.stop()
    }
}
