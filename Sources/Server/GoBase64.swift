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

    /// The body with `\n` and `\r` escapes taken out of its `bytes` fields
    /// strings: Go's decoder skips line breaks in base64 (Python's
    /// `base64.encodebytes` puts one every 76 characters), swift-protobuf's
    /// refuses them. A small scan of the JSON text, so numbers and the rest
    /// stay byte for byte as sent.
    static func withoutLineBreaks(inBytesFields body: [UInt8]) -> [UInt8] {
        guard body.contains(UInt8(ascii: "\\")) else { return body }
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        var i = 0
        var lastString: String?      // the last string token, while it may be a field name
        var inBytesValue = false     // the next string is a bytes field's value
        while i < body.count {
            let c = body[i]
            guard c == UInt8(ascii: "\"") else {
                if c == UInt8(ascii: ":") { inBytesValue = lastString.map(bytesFields.contains) ?? false }
                else if c != UInt8(ascii: " ") && c != 9 && c != 10 && c != 13 { inBytesValue = false; lastString = nil }
                out.append(c)
                i += 1
                continue
            }
            // A string token: copy it, dropping line-break escapes from a bytes value.
            let start = i
            var j = i + 1
            var text: [UInt8] = []
            while j < body.count && body[j] != UInt8(ascii: "\"") {
                if body[j] == UInt8(ascii: "\\"), j + 1 < body.count {
                    let e = body[j + 1]
                    if !(inBytesValue && (e == UInt8(ascii: "n") || e == UInt8(ascii: "r"))) { text += [body[j], e] }
                    j += 2
                } else {
                    text.append(body[j])
                    j += 1
                }
            }
            if inBytesValue {
                out.append(UInt8(ascii: "\""))
                out += text
                if j < body.count { out.append(UInt8(ascii: "\"")) }
                lastString = nil
            } else {
                out += body[start..<min(j + 1, body.count)]
                lastString = String(decoding: text, as: UTF8.self)
            }
            inBytesValue = false
            i = j + 1
        }
        return out
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
