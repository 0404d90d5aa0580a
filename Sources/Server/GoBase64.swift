import Foundation

/// Where Go's base64.StdEncoding (which etcd's gateway decodes `bytes`
/// fields with) gives up on a string: the byte offset its
/// CorruptInputError reports, or nil when Go would decode it. swift-protobuf
/// is more lenient (it takes missing padding and URL-safe letters), so the
/// gateway checks the `bytes` fields of a body with this first and answers
/// bad ones as etcd does: 400, "illegal base64 data at input byte N".
enum GoBase64 {
    static func corruptionOffset(_ s: String) -> Int? {
        let src = Array(s.utf8)
        func value(_ c: UInt8) -> Bool {
            (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 43 || c == 47
        }
        func newline(_ c: UInt8) -> Bool { c == 10 || c == 13 }
        var si = 0
        // One quantum (four letters, or the end) at a time, as decodeQuantum.
        while si < src.count {
            var j = 0
            while j < 4 {
                if si == src.count {
                    if j == 0 { return nil }
                    return si - j  // a quantum cut short (StdEncoding pads)
                }
                let c = src[si]
                si += 1
                if value(c) { j += 1; continue }
                if newline(c) { continue }
                if c != UInt8(ascii: "=") { return si - 1 }
                // Padding: only after two or three letters, and the end.
                if j < 2 { return si - 1 }
                if j == 2 {
                    while si < src.count && newline(src[si]) { si += 1 }
                    if si == src.count { return src.count }
                    if src[si] != UInt8(ascii: "=") { return si - 1 }
                    si += 1
                }
                while si < src.count && newline(src[si]) { si += 1 }
                return si < src.count ? si : nil
            }
        }
        return nil
    }

    /// The names of the `bytes` fields in etcd's requests (keys, range ends,
    /// values, in both JSON spellings).
    static let bytesFields: Set<String> = ["key", "range_end", "rangeEnd", "value"]

    /// etcd's message for the first bad `bytes` field in a JSON body, if any.
    static func problem(inJSON body: [UInt8]) -> String? {
        guard !body.isEmpty, let object = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
        else { return nil }
        func walk(_ v: Any) -> Int? {
            if let d = v as? [String: Any] {
                for (name, field) in d {
                    if bytesFields.contains(name), let s = field as? String, let at = corruptionOffset(s) { return at }
                    if let at = walk(field) { return at }
                }
            } else if let a = v as? [Any] {
                for element in a { if let at = walk(element) { return at } }
            }
            return nil
        }
        return walk(object).map { "illegal base64 data at input byte \($0)" }
    }
}
