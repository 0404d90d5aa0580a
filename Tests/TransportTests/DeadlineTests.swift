import EtcdStatus
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import Testing
@testable import Transport

/// A router with a method that never answers (only its deadline ends it)
/// and one that echoes at once.
private final class HangingRouter: GRPCRouter, HTTP1Handler {
    var held: [GRPCCall] = []
    func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
        switch path {
        case "/t/Hang": return .success(GRPCMethod(.unary) { [unowned self] call, _ in held.append(call) })
        case "/t/Echo": return .success(GRPCMethod(.unary) { call, bytes in call.respond(bytes) })
        default: return .failure(GRPCStatus(.unimplemented, "no"))
        }
    }
    func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange) { exchange.respond(HTTP1Response(status: 404, text: "")) }
}

/// What the test keeps alive; touched only on the loop.
private final class Holder { var pair: (TransportServer, HTTP2ClientConnection)? }

@Suite struct ServerDeadlineTests {
    /// The server ends each call when its grpc-timeout passes, earliest
    /// first, whatever order the calls came in, and leaves calls without
    /// a deadline (or answered in time) alone. The client enforces nothing
    /// here: the deadline travels only as the grpc-timeout header.
    @Test func callsEndAtTheirOwnDeadlines() async throws {
        let thread = EventLoopThread()
        defer { thread.stop() }
        let router = HangingRouter()
        let results = Mutex<[(String, GRPCStatusCode?, UInt64)]>([])
        let start = monotonicNanoseconds()
        let calls: [(name: String, path: String, timeout: String?)] = [
            ("hang 600ms", "/t/Hang", "600m"), ("hang 200ms", "/t/Hang", "200m"),
            ("hang 400ms", "/t/Hang", "400000u"), ("echo 100ms", "/t/Echo", "100m"), ("hang forever", "/t/Hang", nil),
        ]
        let box = LoopBound((router, calls))
        let ready = LoopBound(Holder())
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            thread.loop.execute {
                let (router, calls) = box.value
                let server = TransportServer(loop: thread.loop, router: router, http1: router, logger: Logger(label: "test"))
                let port = try! server.listen(host: "127.0.0.1", port: 0)
                let client = HTTP2ClientConnection(loop: thread.loop, host: "127.0.0.1", port: port)
                for c in calls {
                    client.call(c.path, request: [7], timeout: nil, metadata: c.timeout.map { [("grpc-timeout", $0)] } ?? []) { r in
                        let code: GRPCStatusCode? = { if case .failure(let s) = r { return s.code } else { return nil } }()
                        results.withLock { $0.append((c.name, code, monotonicNanoseconds() - start)) }
                    }
                }
                ready.value.pair = (server, client)
                done.resume()
            }
        }
        for _ in 0..<100 where results.withLock({ $0.count }) < 4 { try await Task.sleep(nanoseconds: 20_000_000) }
        try await Task.sleep(nanoseconds: 200_000_000)  // "hang forever" must still be open
        let r = results.withLock { $0 }
        #expect(r.map(\.0) == ["echo 100ms", "hang 200ms", "hang 400ms", "hang 600ms"])
        #expect(r.first?.1 == nil)
        #expect(r.dropFirst().allSatisfy { $0.1 == .deadlineExceeded })
        for (name, _, at) in r.dropFirst() {
            let due = UInt64(name.split(separator: " ")[1].dropLast(2))! * 1_000_000
            #expect(at >= due && at < due + 300_000_000, "\(name) ended after \(at / 1_000_000) ms")
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            thread.loop.execute {
                ready.value.pair?.1.close(); ready.value.pair?.0.closeAll(); ready.value.pair = nil
                done.resume()
            }
        }
    }
}

@Suite struct EventLoopPollTests {
    /// While the loop polls instead of sleeping, work handed over from
    /// other threads and timers still run, in order; afterwards it sleeps
    /// again and stops when asked.
    @Test func pollingLoopRunsEverythingAndStops() async throws {
        let thread = EventLoopThread()
        let loop = thread.loop
        let seen = Mutex<[Int]>([])
        let timerFired = Mutex(false)
        let keep = LoopBound(Holder())
        loop.execute {
            loop.poll(for: 0.05)
            keep.value.timer = loop.schedule(every: 0.01, repeats: false) { timerFired.withLock { $0 = true } }
        }
        for i in 0..<1_000 {
            loop.execute { seen.withLock { $0.append(i) } }
            if i % 100 == 0 { usleep(5_000) }  // across and after the polling window
        }
        for _ in 0..<200 where seen.withLock({ $0.count }) < 1_000 { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(seen.withLock { $0 } == Array(0..<1_000))
        #expect(timerFired.withLock { $0 })
        thread.stop()
    }

    private final class Holder { var timer: Transport.Timer? }
}

@Suite struct BrokenPipeTests {
    /// A loop leaves SIGPIPE ignored (where nobody had set a handler), so a
    /// write to a closed connection fails instead of killing the process.
    @Test func creatingALoopIgnoresSIGPIPE() {
        _ = EventLoop()
        var current = sigaction()
        #expect(sigaction(SIGPIPE, nil, &current) == 0)
        #expect(unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self))
    }
}
