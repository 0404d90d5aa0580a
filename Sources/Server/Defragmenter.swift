import EtcdProto
import MVCC
import Transport
#if canImport(Glibc)
import Glibc
#endif

/// Defragment without stopping the world (DESIGN.md): a copy of the
/// committed backend, rebuilt entry by entry into full pages, is written on
/// another thread while writes go on;
/// the backend journals every write meanwhile, and the loop replays the
/// journal into the copy in bounded batches between requests; once little
/// is left, writes wait while the rest is replayed and the copy is swapped
/// in. Calls that arrive while one runs join it.
/// The progress of the defragmentation that runs, and the calls waiting
/// for it.
struct DefragmentRun {
    var waiters: [(GRPCCall, ServerMetrics.CallKey)] = []
    var startSize = 0
    /// Journaled writes replayed into the copy, in all and since the last
    /// sync of the copy began.
    var replayed = 0
    var replayedSinceSync = 0
    var copySyncing = false
    var copySynced = false
    let started = monotonicNanoseconds()
}

extension EtcdServer {
    /// Journaled writes replayed per loop iteration while catching up.
    static let defragmentBatch = 5_000
    /// Swap once at most this many are left (writes wait for these).
    static let defragmentSwapBacklog = 2_000

    func defragment(_ call: GRPCCall, _ key: ServerMetrics.CallKey) {
        defragmentRun.waiters.append((call, key))
        guard !backend.isDefragmenting else { return }
        let copier: LMDBBackend.Copier
        do {
            try store.commit()
            copier = try backend.beginDefragment()
        } catch {
            endDefragment(GRPCStatus(.internal, "defragment: \(error)"))
            return
        }
        defragmentRun = DefragmentRun(waiters: defragmentRun.waiters, startSize: backend.fileSize)
        logger.info("defragmenting", metadata: ["path": "\(backend.path)", "current-db-size-bytes": "\(backend.fileSize)",
                                                "current-db-size-in-use-bytes": "\(backend.sizeInUse)"])
        let target = backend.defragmentTarget
        let me = LoopBound(self)
        let loop = self.loop
        runOnNewThread {
            let result = Result { try copier.rebuild(to: target, syncBytes: Self.defragmentSyncBytes) }.mapError { "\($0)" }
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

    /// Bytes of entries the copy is written and synced in: a gigabyte
    /// written at once and synced at the end would queue ahead of the
    /// WAL's fsyncs for a quarter second.
    static let defragmentSyncBytes = 4 << 20

    /// One catch-up batch; the swap when the backlog is small and no other
    /// thread uses the backend.
    func defragmentStep() {
        guard backend.isDefragmenting else { return }
        do {
            let before = backend.defragmentBacklog
            let left = try backend.catchUpDefragment(limit: Self.defragmentBatch)
            defragmentRun.replayed += before - left
            defragmentRun.replayedSinceSync += before - left
            guard left <= Self.defragmentSwapBacklog else {
                defragmentTask.trigger()
                return
            }
            // Sync what the catch-up wrote on another thread first, again
            // while much was replayed during the last sync: writes would
            // otherwise wait for all of it at the swap.
            if !defragmentRun.copySynced || defragmentRun.replayedSinceSync > Self.defragmentSwapBacklog / 4 {
                defragmentRun.copySynced = false
                if !defragmentRun.copySyncing, let syncer = backend.defragmentCopySyncer {
                    defragmentRun.copySyncing = true
                    defragmentRun.replayedSinceSync = 0
                    let me = LoopBound(self)
                    let loop = self.loop
                    runOnNewThread {
                        let synced = (try? syncer.sync()) != nil
                        loop.execute {
                            me.value.defragmentRun.copySyncing = false
                            me.value.defragmentRun.copySynced = synced
                            me.value.defragmentTask.trigger()
                        }
                    }
                }
                if left > 0 { defragmentTask.trigger() }
                return
            }
            guard snapshotsInProgress == 0, !checkpointInProgress else {
                defragmentTask.trigger()
                return
            }
            let pauseStart = monotonicNanoseconds()
            try store.commit()
            try backend.finishDefragment()
            let pause = Double(monotonicNanoseconds() - pauseStart) / 1e6
            let retired = backend.retiredFile
            runOnNewThread { unlink(retired) }  // frees the old file's blocks off the loop
            logger.info("finished defragmenting directory", metadata: [
                "path": "\(backend.path)", "current-db-size-bytes-diff": "\(backend.fileSize - defragmentRun.startSize)",
                "current-db-size-bytes": "\(backend.fileSize)", "current-db-size-in-use-bytes": "\(backend.sizeInUse)",
                "took": Self.took(since: defragmentRun.started),
                "replayed-writes": "\(defragmentRun.replayed + left)", "swap-pause-ms": "\(Int(pause.rounded()))"])
            endDefragment(nil)
        } catch {
            backend.abortDefragment()
            endDefragment(GRPCStatus(.internal, "defragment: \(error)"))
        }
    }

    private func endDefragment(_ failure: GRPCStatus?) {
        let waiters = defragmentRun.waiters
        defragmentRun.waiters.removeAll()
        if failure == nil {
            metrics.defragDurations.observe(nanoseconds: monotonicNanoseconds() - defragmentRun.started)
        }
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
