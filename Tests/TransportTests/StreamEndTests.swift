import Logging
import Testing
@testable import Transport

/// A server and a client on one loop, over loopback.
@Suite struct StreamEndTests {
    final class Router: GRPCRouter, HTTP1Handler {
        var refused = 0
        func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
            .success(GRPCMethod(.bidirectionalStreaming) { [unowned self] call, _ in
                refused += 1
                call.finish(GRPCStatus(.failedPrecondition, "refused"))
            })
        }
        func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange) {}
    }

    /// A server that ends a stream the client is still sending on ends
    /// the client's call, with the server's status; the connection serves
    /// the next call.
    @Test func aStreamTheServerEndsCompletesWhileTheClientStillSends() throws {
        let loop = EventLoop(), router = Router()
        let server = TransportServer(loop: loop, router: router, http1: router, logger: Logger(label: "test"))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let client = HTTP2ClientConnection(loop: loop, host: "127.0.0.1", port: port)
        var results: [GRPCClientResult] = []
        for round in 1...2 {
            let stream = client.call("/s/m", request: [1, 2, 3], timeout: nil, onMessage: { _ in }, keepSending: true) {
                results.append($0)
            }
            #expect(stream > 0)
            #expect(loop.run(until: { results.count == round }, seconds: 5), "round \(round): the call never completed")
            guard case .failure(let status)? = results.last else {
                Issue.record("round \(round): \(String(describing: results.last))")
                return
            }
            #expect(status.code == .failedPrecondition && status.message == "refused")
        }
        #expect(router.refused == 2)
        client.close()
        server.closeAll()
    }
}
