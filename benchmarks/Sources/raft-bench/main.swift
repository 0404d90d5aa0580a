import Foundation
import Raft

/// Committed entries per second through a 3-member group in memory: no
/// disk, no network, messages delivered at once; the leader takes
/// `batch` proposals at a time. What Raft itself costs per entry.
///
///     swift run -c release --package-path benchmarks raft-bench [entries] [batch] [value bytes]
let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let total = arguments.count > 0 ? arguments[0] : 1_000_000
let batch = arguments.count > 1 ? arguments[1] : 64
let valueBytes = arguments.count > 2 ? arguments[2] : 256

let ids: [NodeID] = [1, 2, 3]
var storages: [NodeID: MemoryStorage] = [:]
var nodes: [NodeID: RaftNode] = [:]
for id in ids {
    storages[id] = MemoryStorage()
    var config = RaftConfig(id: id, peers: ids, seed: id)
    config.maxEntriesPerMessage = 256
    config.maxInflight = 256
    nodes[id] = RaftNode(config: config, storage: storages[id]!)
}

var applied: [NodeID: UInt64] = [1: 0, 2: 0, 3: 0]
var mailbox: [Message] = []

/// Persists (in memory), sends (to the mailbox) and applies every member's Ready.
@MainActor func processAll() {
    for id in ids {
        guard var n = nodes[id], n.hasReady else { continue }
        let r = n.ready()
        storages[id]!.append(r.entries)
        if let h = r.hardState { storages[id]!.setHardState(h) }
        mailbox += r.messages
        if let last = r.committedEntries.last { applied[id] = last.index }
        n.advance(r)
        nodes[id] = n
    }
}

@MainActor func deliverAll() {
    while !mailbox.isEmpty {
        let batch = mailbox
        mailbox = []
        for m in batch { nodes[m.to]!.step(m) }
        processAll()
    }
}

// Elect member 1.
while nodes[1]!.role != .leader {
    nodes[1]!.tick()
    processAll()
    deliverAll()
}
let value = [UInt8](repeating: 0x61, count: valueBytes)
let start = DispatchTime.now().uptimeNanoseconds
var proposed = 0
let base = applied[1]!
while proposed < total {
    for _ in 0..<min(batch, total - proposed) {
        try! nodes[1]!.propose(value)
        proposed += 1
    }
    processAll()
    deliverAll()
}
let target = base + UInt64(total)
while ids.contains(where: { applied[$0]! < target }) {
    nodes[1]!.tick()
    processAll()
    deliverAll()
}
let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
print(String(format: "%d entries of %d bytes, proposed %d at a time: %.2f s, %.0f committed entries/s (applied on all 3)",
             total, valueBytes, batch, seconds, Double(total) / seconds))
