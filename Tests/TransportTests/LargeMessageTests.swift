import Logging
import Testing
import TestSupport
@testable import Transport

/// Messages far larger than the 4 KiB a bufferevent reads per callback go
/// through unchanged both ways over h2c (the server and the client read the
/// rest of the socket themselves), while small calls share the connection.
@Suite struct LargeMessageTests {
    final class Echo: GRPCRouter, HTTP1Handler {
        func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
            .success(GRPCMethod(.unary) { call, request in call.respond(request) })
        }
        func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange) {}
    }

    @Test func largeAndSmallMessagesEchoIntact() throws {
        let loop = EventLoop(), router = Echo()
        let server = TransportServer(loop: loop, router: router, http1: router, logger: Logger(label: "test"))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let client = HTTP2ClientConnection(loop: loop, host: "127.0.0.1", port: port)
        var rng = SeededRandom(seed: testSeed())
        var sent: [[UInt8]] = [], got: [Int: [UInt8]] = [:]
        for i in 0..<40 {
            // Sizes around and far past 4 KiB and the 64 KiB scratch buffer.
            let size = [1, 4095, 4096, 4097, 20_000, 65_536, 70_001, 1 << 20][Int.random(in: 0..<8, using: &rng)]
            let message = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            sent.append(message)
            client.call("/echo/m", request: message, timeout: nil) { result in
                if case .success(let messages) = result, messages.count == 1 { got[i] = messages[0] } else { got[i] = [] }
            }
        }
        #expect(loop.run(until: { got.count == sent.count }, seconds: 20), "\(got.count) of \(sent.count) answered")
        for (i, message) in sent.enumerated() {
            let intact = got[i] == message  // (not inside #expect: it would print both arrays)
            #expect(intact, "message \(i) of \(message.count) bytes came back as \(got[i]?.count ?? 0) different bytes")
        }
        client.close()
        server.closeAll()
    }
}
