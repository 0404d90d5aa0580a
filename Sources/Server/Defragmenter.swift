import EtcdProto
import MVCC
import Transport
#if canImport(Glibc)
import Glibc
#endif

/// Defragment without stopping the world (DESIGN.md): a compacting copy of
/// the committed backend is written on another thread while writes go on;
/// the backend journals every write meanwhile, and the loop replays the
/// journal into the copy in bounded batches between requests; once little
/// is left, writes wait while the rest is replayed and the copy is swapped
/// in. Calls that arrive while one runs join it.
extension EtcdServer {
    /// Journaled writes replayed per loop iteration while catching up.
    static let defragmentBatch = 5_000
    /// Swap once at most this many are left (writes wait for these).
    static let defragmentSwapBacklog = 2_000

    func defragment(_ call: GRPCCall, _ key: Metrics.CallKey) {
        defragmentWaiters.append((call, key))
        guard !backend.isDefragmenting else { return }
        let copier: LMDBBackend.Copier
        do {
            try store.commit()
            copier = try backend.beginDefragment()
        } catch {
            endDefragment(GRPCStatus(.internal, "defragment: \(error)"))
            return
        }
        defragmentStartSize = backend.fileSize
        let target = backend.defragmentTarget
        let me = LoopBound(self)
        let loop = self.loop
        runOnNewThread {
            let result = Result { try copier.copy(to: target) }.mapError { "\($0)" }
            loop.execute {
                switch result {
                case .success: me.value.defragmentTask.trigger()
                case .failure(let why):
                    me.value.backend.abortDefragment()
                    me.value.endDefragment(GRPCStatus(.internal, "defragment copy failed: \(why)"))
                }
            }
        }
    }

    /// One catch-up batch; the swap when the backlog is small and no other
    /// thread uses the backend.
    func defragmentStep() {
        guard backend.isDefragmenting else { return }
        do {
            let left = try backend.catchUpDefragment(limit: Self.defragmentBatch)
            guard left <= Self.defragmentSwapBacklog, snapshotsInProgress == 0, !checkpointInProgress else {
                defragmentTask.trigger()
                return
            }
            try store.commit()
            try backend.finishDefragment()
            logger.info("defragmented", metadata: ["size-before": "\(defragmentStartSize)", "size-after": "\(backend.fileSize)"])
            endDefragment(nil)
        } catch {
            backend.abortDefragment()
            endDefragment(GRPCStatus(.internal, "defragment: \(error)"))
        }
    }

    private func endDefragment(_ failure: GRPCStatus?) {
        let waiters = defragmentWaiters
        defragmentWaiters.removeAll()
        for (call, key) in waiters {
            if let failure {
                finish(call, key, status: failure)
            } else {
                var r = Etcdserverpb_DefragmentResponse()
                r.header = header()
                respond(call, key, r)
            }
        }
    }
}
