import MVCC
import Testing
import TestSupport
@testable import Server

/// What a transaction holds, nested ones included: whether it may write
/// (etcd's !isTxnReadonly, which decides between the log and a read) and
/// whether it puts (the quota's question), against the operations listed
/// flat.
@Suite struct TxnOpsTests {
    static func randomTxn(_ rng: inout SeededRandom, depth: Int, flat: inout [RequestOp]) -> TxnRequest {
        func ops() -> [RequestOp] {
            (0..<Int(rng.next() % 3)).map { _ in
                let op: RequestOp
                switch rng.next() % (depth > 0 ? 4 : 3) {
                case 0: op = .range(RangeRequest(key: [1]))
                case 1: op = .put(PutRequest(key: [1], value: []))
                case 2: op = .deleteRange(DeleteRangeRequest(key: [1]))
                default: return .txn(randomTxn(&rng, depth: depth - 1, flat: &flat))
                }
                flat.append(op)
                return op
            }
        }
        return TxnRequest(success: ops(), failure: ops())
    }

    @Test func nestedOperationsCount() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for round in 0..<500 {
            var flat: [RequestOp] = []
            let t = Self.randomTxn(&rng, depth: 3, flat: &flat)
            let puts = flat.contains { if case .put = $0 { true } else { false } }
            let writes = flat.contains { if case .range = $0 { false } else { true } }
            #expect(t.mayWrite == writes, "seed \(seed), round \(round)")
            #expect(t.containsOp { if case .put = $0 { true } else { false } } == puts, "seed \(seed), round \(round)")
        }
    }
}
