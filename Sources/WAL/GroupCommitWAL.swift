#if canImport(Glibc)
import Glibc
#endif
import Metrics
import Synchronization

/// A WAL with a writer thread of its own: whatever has been submitted by
/// the time the writer is free is written and made durable with one
/// fdatasync (group commit), then each submitter is told. Latency is about
/// one fsync; throughput is as many records per fsync as arrive meanwhile.
/// The event loop never waits for a disk.
public final class GroupCommitWAL: @unchecked Sendable {
    // @unchecked: `wal` is touched only by the writer thread after init;
    // everything else is guarded by `mutex`.
    public typealias Completion = @Sendable (Result<Void, WALError>) -> Void

    private let wal: WAL
    private var mutex = pthread_mutex_t()
    private var wakeup = pthread_cond_t()
    /// Records waiting for the writer, each batch's completion with its
    /// last record, and whether the batch must reach the disk before it.
    private var queued: [(record: WALRecord, done: Completion?, sync: Bool)] = []
    /// A checkpoint waiting for the writer: segments covered by this tag go.
    private var pendingCheckpoint: UInt64?
    private var removedSegments = 0
    private var stopping = false
    private var stopped = false
    private var failure: WALError?
    private var syncCount = 0
    private var recordCount = 0
    private var syncSeconds = 0.0
    /// Counts submissions, so a spinning writer sees one without the lock.
    private let submissions = Atomic<Int>(0)
    private let spinNanoseconds: Int
    private let keepSegments: Int?

    /// Takes over a recovered `wal` and starts the writer thread.
    ///
    /// After a batch of one entry, the writer polls for the next
    /// submission for up to `spinAfterSingleRecord` seconds (yielding the
    /// CPU meanwhile) before it sleeps: one writer at a time leaves the
    /// writer idle between its requests, and waking a sleeping thread costs
    /// tens of microseconds on virtual CPUs that halt when idle, a fifth of
    /// such a request. Larger batches mean other writers keep it busy, so it
    /// does not spin then. 0 never spins.
    ///
    /// A checkpoint keeps the newest `keepSegments` closed segments it
    /// covers (nil: it deletes none).
    public init(_ wal: WAL, spinAfterSingleRecord: Double = 0, keepSegments: Int? = 2) {
        self.wal = wal
        self.keepSegments = keepSegments
        spinNanoseconds = Int(max(spinAfterSingleRecord, 0) * 1e9)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wakeup, nil)
        let me = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { arg in
            let writer = Unmanaged<GroupCommitWAL>.fromOpaque(arg!).takeRetainedValue()
            writer.run()
            return nil
        }, me)
        pthread_detach(thread)
    }

    /// Queues a record; `done` runs on the writer thread once it is
    /// durable (or failed: then every later submission fails too, since a
    /// log with a hole must not go on).
    public func submit(_ record: WALRecord, done: @escaping Completion) {
        pthread_mutex_lock(&mutex)
        if let failure {
            pthread_mutex_unlock(&mutex)
            done(.failure(failure))
            return
        }
        queued.append((record, done, true))
        submissions.add(1, ordering: .releasing)
        pthread_mutex_unlock(&mutex)
        // Signalled after unlocking: a writer woken while the lock is held
        // would only block on it again (two more context switches).
        pthread_cond_signal(&wakeup)
    }

    /// Queues records to be made durable together; `done` runs once, as
    /// for `submit(_:done:)`. Without `sync`, `done` runs once they are
    /// written (they survive the process, and reach the disk with the next
    /// synced batch): for records whose loss in a machine crash is harmless,
    /// such as Raft's hard state when only its commit index moved.
    public func submit(_ records: [WALRecord], sync: Bool = true, done: @escaping Completion) {
        guard let last = records.last else { return done(.success(())) }
        pthread_mutex_lock(&mutex)
        if let failure {
            pthread_mutex_unlock(&mutex)
            done(.failure(failure))
            return
        }
        for r in records.dropLast() { queued.append((r, nil, sync)) }
        queued.append((last, done, sync))
        submissions.add(1, ordering: .releasing)
        pthread_mutex_unlock(&mutex)
        pthread_cond_signal(&wakeup)
    }

    /// Asks the writer to delete segments whose entries are all covered by
    /// `tag` (call only once those entries are durable elsewhere).
    public func checkpoint(coveredBy tag: UInt64) {
        pthread_mutex_lock(&mutex)
        pendingCheckpoint = max(pendingCheckpoint ?? 0, tag)
        pthread_cond_signal(&wakeup)
        pthread_mutex_unlock(&mutex)
    }

    /// Segments deleted by checkpoints so far.
    public var segmentsRemoved: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return removedSegments
    }

    /// Batches written so far (one fdatasync each), the records they held,
    /// and the seconds spent writing and syncing them.
    public var stats: (syncs: Int, records: Int, seconds: Double) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return (syncCount, recordCount, syncSeconds)
    }

    /// The log's fsync durations and bytes written (etcd's WAL metrics).
    public var fsyncDurations: Histogram { wal.fsyncDurations }
    public var bytesWritten: Counter { wal.bytesWritten }

    /// Writes what is queued, then stops the writer and closes the log.
    public func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_signal(&wakeup)
        while !stopped { pthread_cond_wait(&wakeup, &mutex) }
        pthread_mutex_unlock(&mutex)
    }

    /// Whether the next submission is expected within the spin: it was
    /// the last time (a spin caught it, or it came that soon after a batch
    /// while the writer slept). Writes spaced wider apart than the spin
    /// (many clients each writing now and then) never spin for nothing.
    private var spinPays = true
    private var lastBatchDone = 0

    private static func now() -> Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec * 1_000_000_000 + t.tv_nsec
    }

    private func spinForSubmission() {
        let seen = submissions.load(ordering: .acquiring)
        let until = Self.now() + spinNanoseconds
        while submissions.load(ordering: .acquiring) == seen && Self.now() < until { sched_yield() }
    }

    private func run() {
        // Two queues trade places, so that neither is reallocated per batch.
        var batch: [(record: WALRecord, done: Completion?, sync: Bool)] = []
        while true {
            // A hard state record rides along with the entries it commits:
            // a lone write is one entry and its hard state.
            var lastBatchEntries = 0
            for item in batch where item.record.type != .hardState { lastBatchEntries += 1 }
            batch.removeAll(keepingCapacity: true)
            if spinNanoseconds > 0 && lastBatchEntries == 1 && spinPays { spinForSubmission() }
            pthread_mutex_lock(&mutex)
            var slept = false
            while queued.isEmpty && pendingCheckpoint == nil && !stopping {
                slept = true
                pthread_cond_wait(&wakeup, &mutex)
            }
            if spinNanoseconds > 0 && lastBatchEntries == 1 {
                spinPays = !slept || Self.now() - lastBatchDone < spinNanoseconds
            }
            swap(&batch, &queued)
            let covered = pendingCheckpoint
            pendingCheckpoint = nil
            let finish = stopping && batch.isEmpty
            pthread_mutex_unlock(&mutex)
            if let covered, let keepSegments, let removed = try? wal.removeSegments(coveredBy: covered, keep: keepSegments) {
                pthread_mutex_lock(&mutex)
                removedSegments += removed
                pthread_mutex_unlock(&mutex)
            }
            if finish { break }
            if batch.isEmpty { continue }

            var result: Result<Void, WALError> = .success(())
            var start = timespec(), end = timespec()
            clock_gettime(CLOCK_MONOTONIC, &start)
            let sync = batch.contains { $0.sync }
            do {
                for item in batch { try wal.append(item.record) }
                if sync { try wal.sync() } else { try wal.write() }
            } catch let e as WALError {
                result = .failure(e)
            } catch {
                result = .failure(.io(operation: "append", path: wal.directory, errno: EIO))
            }
            clock_gettime(CLOCK_MONOTONIC, &end)
            pthread_mutex_lock(&mutex)
            if sync {
                syncSeconds += Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
                syncCount += 1
            }
            recordCount += batch.count
            if case .failure(let e) = result { failure = e }
            pthread_mutex_unlock(&mutex)
            for item in batch { item.done?(result) }
            lastBatchDone = Self.now()
        }
        wal.close()
        pthread_mutex_lock(&mutex)
        stopped = true
        pthread_cond_broadcast(&wakeup)
        pthread_mutex_unlock(&mutex)
    }
}
