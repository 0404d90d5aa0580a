import Testing
@testable import Server

/// Go's base64.StdEncoding verdicts, worked out from its decodeQuantum
/// (the end-to-end gateway test checks several against etcd itself).
@Suite struct GoBase64Tests {
    @Test(arguments: [
        ("", nil), ("Zm9v", nil), ("Zm9=", nil), ("Zg==", nil), ("Zm9vYmFy", nil), ("Zm9v\nYmFy\r\n", nil),
        ("!!!", 0), ("Zm9", 0), ("Zm9vYg", 4), ("Zg=", 3), ("Zm=v", 2), ("Zg==Zg==", 4), ("Zm9vYmFy!", 8),
        ("Z===", 1), ("=Zm9", 0), ("Zm9v-_", 4), ("Zm9vYmF=x", 8),
    ] as [(String, Int?)])
    func offsets(_ input: String, _ expected: Int?) {
        #expect(GoBase64.corruptionOffset(input) == expected, "\(input.debugDescription)")
    }

    @Test func findsTheBadFieldAnywhereInARequest() {
        #expect(GoBase64.problem(inJSON: Array(#"{"key":"Zm9v","range_end":"Zm9w"}"#.utf8)) == nil)
        #expect(GoBase64.problem(inJSON: Array(#"{"compare":[{"value":"YQ"}]}"#.utf8)) == "illegal base64 data at input byte 0")
        #expect(GoBase64.problem(inJSON: Array(#"{"create_request":{"key":"Zm9v!"}}"#.utf8)) == "illegal base64 data at input byte 4")
        #expect(GoBase64.problem(inJSON: Array(#"{"name":"not base64!"}"#.utf8)) == nil, "only bytes fields")
        #expect(GoBase64.problem(inJSON: Array("{not json".utf8)) == nil, "left to the JSON decoder")
    }
}
