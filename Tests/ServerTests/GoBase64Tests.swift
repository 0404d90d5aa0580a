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

    @Test func lineBreaksLeaveBytesFieldsOnly() {
        func strip(_ s: String) -> String { String(decoding: GoBase64.withoutLineBreaks(inBytesFields: Array(s.utf8)), as: UTF8.self) }
        #expect(strip(#"{"key":"Zm9v\nYmFy\r\n","limit":"10"}"#) == #"{"key":"Zm9vYmFy","limit":"10"}"#)
        #expect(strip(#"{"name":"a\nb", "value" : "YQ\n==","x":["key","\n"]}"#) == #"{"name":"a\nb", "value" : "YQ==","x":["key","\n"]}"#)
        #expect(strip(#"{"compare":[{"key":"a\\nb","value":"\"x\n"}]}"#) == #"{"compare":[{"key":"a\\nb","value":"\"x"}]}"#)
        #expect(strip(#"{"key":"Zm9v"}"#) == #"{"key":"Zm9v"}"#)
        #expect(strip(#"{"key":"unterminated\n"#) == #"{"key":"unterminated"#)
    }

    @Test func findsTheBadFieldAnywhereInARequest() {
        #expect(GoBase64.problem(inJSON: Array(#"{"key":"Zm9v","range_end":"Zm9w"}"#.utf8)) == nil)
        #expect(GoBase64.problem(inJSON: Array(#"{"compare":[{"value":"YQ"}]}"#.utf8)) == "illegal base64 data at input byte 0")
        #expect(GoBase64.problem(inJSON: Array(#"{"create_request":{"key":"Zm9v!"}}"#.utf8)) == "illegal base64 data at input byte 4")
        #expect(GoBase64.problem(inJSON: Array(#"{"name":"not base64!"}"#.utf8)) == nil, "only bytes fields")
        #expect(GoBase64.problem(inJSON: Array("{not json".utf8)) == nil, "left to the JSON decoder")
    }
}
