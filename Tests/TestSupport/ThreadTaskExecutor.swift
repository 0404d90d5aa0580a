import Dispatch

/// Runs tasks that prefer it on a thread of its own, not on the test
/// process's few cooperative threads: a test whose tasks must keep pace
/// (watch consumers, writers) is then not starved while other tests hold
/// those threads in blocking waits.
public final class ThreadTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let queue: DispatchQueue

    public init(label: String) { queue = DispatchQueue(label: label) }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}
