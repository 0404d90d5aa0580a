import ArgumentParser
import EtcdProto
import Foundation

/// `txn`: compares, success requests and failure requests read from
/// standard input, each list ended by an empty line, as etcdctl reads them.
struct Txn: CtlCommand {
    static let configuration = CommandConfiguration(abstract: "Txn processes all the requests in one transaction")
    @OptionGroup var global: GlobalOptions
    @Flag(name: [.short, .customLong("interactive")], help: "Input transaction in interactive mode") var interactive = false
    @Argument(help: .hidden) var args: [String] = []

    static let booleans: Set<String> = ["interactive"]

    func execute() async throws {
        let out = try Output(global)
        guard args.isEmpty else { throw CtlError(.badArgs, "txn command does not accept argument") }
        var input = StandardInputLines()
        var t = Etcdserverpb_TxnRequest()
        prompt("compares:")
        t.compare = try input.block().map(Self.compare)
        prompt("success requests (get, put, del):")
        t.success = try input.block().map(Self.operation)
        prompt("failure requests (get, put, del):")
        t.failure = try input.block().map(Self.operation)
        let request = t
        let response: Etcdserverpb_TxnResponse = try await withClient(global) {
            try await $0.unary("/etcdserverpb.KV/Txn", request)
        }
        try out.txn(response)
    }

    private func prompt(_ s: String) {
        if interactive { print(s) }
    }

    /// `target("key") op "value"`: version/ver, create/c, mod/m,
    /// value/val; op one of = != < >.
    static func compare(_ line: String) throws -> Etcdserverpb_Compare {
        guard let paren = line.firstIndex(of: "(") else { throw CtlError(.invalidInput, "malformed comparison: \(line)") }
        let target = String(line[..<paren])
        var scanner = GoScanner(line[line.index(after: paren)...])
        guard let key = scanner.quoted(), scanner.literal(")"), let op = scanner.word(), let value = scanner.quoted() else {
            throw CtlError(.invalidInput, "malformed comparison: \(line)")
        }
        var c = Etcdserverpb_Compare()
        c.key = Data(key.utf8)
        switch op {
        case "=": c.result = .equal
        case "!=": c.result = .notEqual
        case "<": c.result = .less
        case ">": c.result = .greater
        default: throw CtlError(.invalidInput, "malformed comparison: \(line) (unknown result op \(op))")
        }
        func number() throws -> Int64 {
            guard let n = Int64(value) else { throw CtlError(.invalidInput, "invalid txn compare request: \(line)") }
            return n
        }
        switch target {
        case "ver", "version": c.target = .version; c.targetUnion = .version(try number())
        case "c", "create": c.target = .create; c.targetUnion = .createRevision(try number())
        case "m", "mod": c.target = .mod; c.targetUnion = .modRevision(try number())
        case "val", "value": c.target = .value; c.targetUnion = .value(Data(value.utf8))
        case "lease": c.target = .lease; c.targetUnion = .lease(try number())
        default: throw CtlError(.invalidInput, "malformed comparison: \(line) (unknown target \(target))")
        }
        return c
    }

    /// `get ...`, `put ...` or `del ...` with their command's flags.
    static func operation(_ line: String) throws -> Etcdserverpb_RequestOp {
        let words = argify(line)
        guard words.count >= 2 else { throw CtlError(.invalidInput, "invalid txn compare request: \(line)") }
        let rest = Array(words.dropFirst())
        var op = Etcdserverpb_RequestOp()
        do {
            switch words[0] {
            case "get": op.request = .requestRange(try Get.parse(GlobalOptions.normalize(rest, booleans: Get.booleans)).request())
            case "put": op.request = .requestPut(try Put.parse(GlobalOptions.normalize(rest, booleans: Put.booleans)).request())
            case "del": op.request = .requestDeleteRange(try Del.parse(GlobalOptions.normalize(rest, booleans: Del.booleans)).request())
            default: throw CtlError(.invalidInput, "invalid txn request: \(line)")
            }
        } catch let e as CtlError where e.code == .invalidInput {
            throw e
        } catch {
            throw CtlError(.invalidInput, "invalid txn request: \(line)")
        }
        return op
    }

    /// etcdctl's argify: words, "double-quoted" (Go escapes) or
    /// 'single-quoted' strings.
    static func argify(_ line: String) -> [String] {
        let pattern = #""(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?"#
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        let ns = line as NSString
        return regex.matches(in: line, range: NSRange(location: 0, length: ns.length)).map { m in
            let word = ns.substring(with: m.range)
            if word.hasPrefix("'") && word.count >= 2 { return String(word.dropFirst().dropLast()) }
            if word.hasPrefix("\"") {
                var s = GoScanner(Substring(word))
                return s.quoted() ?? word
            }
            return word
        }
    }
}

/// Lines of standard input, read in blocks ended by an empty line (Go's
/// bufio ReadString: the input ending first is an error, "EOF").
struct StandardInputLines {
    private var lines: [String]?

    mutating func block() throws -> [String] {
        if lines == nil {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            let text = String(decoding: data, as: UTF8.self)
            var all = text.components(separatedBy: "\n")
            // Only lines that ended in a newline were read whole.
            all.removeLast()
            lines = all
        }
        var block: [String] = []
        while true {
            guard var remaining = lines, !remaining.isEmpty else { throw CtlError(.invalidInput, "EOF") }
            let line = remaining.removeFirst().trimmingCharacters(in: .whitespaces)
            lines = remaining
            if line.isEmpty { return block }
            block.append(line)
        }
    }
}

/// Just enough of Go's fmt.Sscanf for etcdctl's compare syntax: quoted
/// strings (Go escapes), literals and words, separated by spaces.
struct GoScanner {
    private var rest: Substring

    init(_ text: Substring) { rest = text }

    private mutating func skipSpaces() { rest = rest.drop { $0 == " " || $0 == "\t" } }

    mutating func literal(_ s: String) -> Bool {
        skipSpaces()
        guard rest.hasPrefix(s) else { return false }
        rest = rest.dropFirst(s.count)
        return true
    }

    mutating func word() -> String? {
        skipSpaces()
        let w = rest.prefix { $0 != " " && $0 != "\t" }
        guard !w.isEmpty else { return nil }
        rest = rest.dropFirst(w.count)
        return String(w)
    }

    /// A "double-quoted" string with Go's escapes, or a `back-quoted` one.
    mutating func quoted() -> String? {
        skipSpaces()
        if rest.first == "`" {
            let body = rest.dropFirst().prefix { $0 != "`" }
            guard rest.dropFirst(body.count + 1).first == "`" else { return nil }
            rest = rest.dropFirst(body.count + 2)
            return String(body)
        }
        guard rest.first == "\"" else { return nil }
        var bytes: [UInt8] = []
        var chars = Array(rest.dropFirst().utf8)[...]
        while let c = chars.first {
            chars = chars.dropFirst()
            switch c {
            case UInt8(ascii: "\""):
                rest = Substring(String(decoding: chars, as: UTF8.self))
                return String(decoding: bytes, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let e = chars.first else { return nil }
                chars = chars.dropFirst()
                switch e {
                case UInt8(ascii: "n"): bytes.append(0x0a)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "r"): bytes.append(0x0d)
                case UInt8(ascii: "a"): bytes.append(0x07)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0c)
                case UInt8(ascii: "v"): bytes.append(0x0b)
                case UInt8(ascii: "x"):
                    guard chars.count >= 2, let v = UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                    bytes.append(v)
                    chars = chars.dropFirst(2)
                default: bytes.append(e)
                }
            default:
                bytes.append(c)
            }
        }
        return nil
    }
}
