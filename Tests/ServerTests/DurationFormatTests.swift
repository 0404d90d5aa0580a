import Testing
@testable import Server

/// Log lines give durations as zap writes Go's time.Duration, whatever
/// clock they were measured on.
@Test func durationsAreWrittenAsGoWritesThem() {
    #expect(EtcdServer.duration(nanoseconds: 1_500_000_000).description == "1.5s")
    #expect(EtcdServer.duration(nanoseconds: 2_250_000).description == "2.25ms")
    #expect(EtcdServer.duration(nanoseconds: 850_000).description == "850µs")
    #expect(EtcdServer.duration(nanoseconds: 1_000_000_000).description == "1s")
    #expect(EtcdServer.duration(nanoseconds: 999).description == "999ns")
}
