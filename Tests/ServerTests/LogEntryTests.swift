import Auth
import Raft
import Testing
import TestSupport
@testable import Server

@Suite struct LogEntryTests {
    @Test func proposedRequestsRoundTripAndGarbageIsRejected() {
        for id: UInt64 in [0, 1, 0x1234 << 48 | 77, .max] {
            let p = ProposedRequest(kind: .txn, id: id, request: [1, 2, 3])
            #expect(ProposedRequest(decoding: p.encoded()) == p)
        }
        #expect(ProposedRequest(decoding: ProposedRequest(kind: .put, id: 9, request: []).encoded())?.request == [])
        #expect(ProposedRequest(decoding: []) == nil)
        #expect(ProposedRequest(decoding: [200, 1, 1, 1, 1, 1, 1, 1, 1]) == nil, "unknown kind")
        #expect(ProposedRequest(decoding: [1, 1, 1]) == nil, "truncated ID")
    }

    /// Entries the member wrote before Raft still decode, and become Raft
    /// entries of their term and index carrying the same request.
    @Test func entriesOfTheMemberBeforeRaftBecomeRaftEntries() {
        for (term, index) in [(UInt64(0), UInt64(0)), (2, 1), (7, 300), (UInt64.max, UInt64.max)] {
            let e = LegacyLogEntry(term: term, index: index, kind: .txn, request: [1, 2, 3])
            #expect(LegacyLogEntry(decoding: e.encoded()) == e)
            let raft = e.raftEntry
            #expect(raft.term == term && raft.index == index && raft.kind == .normal)
            #expect(ProposedRequest(decoding: raft.data) == ProposedRequest(kind: .txn, id: 0, request: [1, 2, 3]))
        }
        #expect(LegacyLogEntry(decoding: []) == nil)
        #expect(LegacyLogEntry(decoding: [200, 1, 1]) == nil, "unknown kind")
        #expect(LegacyLogEntry(decoding: [1, 0x80]) == nil, "truncated varint")
    }

    /// Every auth change survives its encoding; every proper prefix of an
    /// encoding, and trailing bytes, are refused (a damaged entry changes
    /// nothing rather than something else).
    @Test func authChangesRoundTripAndDamageIsRefused() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        func bytes() -> [UInt8] { (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        func name() -> String { String(decoding: bytes(), as: UTF8.self) }
        func hash() -> PasswordHash? {
            Bool.random(using: &rng) ? nil : PasswordHash(salt: bytes(), iterations: Int.random(in: 1...1_000_000, using: &rng), hash: bytes())
        }
        for _ in 0..<500 {
            let access = AuthStore.Access(rawValue: Int.random(in: 0...2, using: &rng))!
            let change: AuthChange = switch Int.random(in: 0..<11, using: &rng) {
            case 0: .enable
            case 1: .disable
            case 2: .addUser(name(), hash())
            case 3: .deleteUser(name())
            case 4: .changePassword(name(), hash())
            case 5: .grantRole(role: name(), user: name())
            case 6: .revokeRole(role: name(), user: name())
            case 7: .addRole(name())
            case 8: .deleteRole(name())
            case 9: .grantPermission(role: name(), AuthStore.Permission(access, key: bytes(), rangeEnd: bytes()))
            default: .revokePermission(role: name(), key: bytes(), rangeEnd: bytes())
            }
            let encoded = change.encoded
            #expect(AuthChange(encoded: encoded) == change, "seed \(seed): \(change)")
            for cut in 0..<encoded.count { #expect(AuthChange(encoded: Array(encoded[..<cut])) == nil, "seed \(seed): cut at \(cut)") }
            #expect(AuthChange(encoded: encoded + [0]) == nil, "seed \(seed): trailing byte")
        }
    }

    /// Found by the log-entry fuzz target: an iteration count past Int.max trapped.
    @Test func aPasswordHashWithImpossibleIterationsIsRefused() {
        var d: [UInt8] = [3, 1, UInt8(ascii: "u"), 1]  // addUser "u" with a hash
        WireBytes.appendVarint(UInt64.max, to: &d)
        d += [0, 0]  // empty salt and hash
        #expect(AuthChange(encoded: d) == nil)
        let fine = AuthChange.addUser("u", PasswordHash(salt: [], iterations: 5, hash: []))
        #expect(fine.encoded == [3, 1, UInt8(ascii: "u"), 1, 5, 0, 0] && AuthChange(encoded: fine.encoded) == fine)
    }
}
