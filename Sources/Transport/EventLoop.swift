import Dispatch
import CLibevent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One libevent loop, owned by the thread that runs it. Everything a loop
/// owns (connections, timers, the store) is touched only on that thread;
/// other threads hand work over with `execute(_:)`.
public final class EventLoop: @unchecked Sendable {
    // @unchecked: the C base is used only on the loop thread, except for
    // `execute`, which takes the lock and uses libevent's thread-safe
    // `event_active` (libevent is set up with pthreads locking).

    let base: OpaquePointer
    private var wakeup: OpaquePointer?
    private let queued = PthreadLocked<[@Sendable () -> Void]>([])
    /// Plaintext connections' reads past the bufferevent's 4 KiB.
    let directInput = DirectInput()
    private var signalEvents: [OpaquePointer] = []

    /// Priorities: 0 for I/O, 1 for work that should run after the I/O of
    /// the same iteration (`runAfterIO`), e.g. committing a batch of writes.
    static let priorities: Int32 = 2

    public init() {
        Self.enableThreads
        // epoll's changelist: a socket's interest in writing, enabled and
        // disabled again within one iteration (a reply queued, then the
        // write that drains it), costs no epoll_ctl.
        let config = event_config_new()
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        let made = event_base_new_with_config(config)
        event_config_free(config)
        guard let base = made else { fatalError("event_base_new failed") }
        self.base = base
        event_base_priority_init(base, Self.priorities)
        let me = Unmanaged.passUnretained(self).toOpaque()
        wakeup = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().runQueued()
        }, me)
    }

    private static let enableThreads: Void = {
        _ = evthread_use_pthreads()
        // A write to a connection the peer has closed must fail with EPIPE
        // (the connection then ends), not kill the process: libevent writes
        // with writev, which has no MSG_NOSIGNAL. Only a default disposition
        // is changed; a program's own handler stays.
        var current = sigaction()
        if sigaction(SIGPIPE, nil, &current) == 0 && current.__sigaction_handler.sa_handler == nil {
            signal(SIGPIPE, SIG_IGN)
        }
    }()

    deinit {
        for e in signalEvents { event_free(e) }
        if let wakeup { event_free(wakeup) }
        event_base_free(base)
    }

    /// Runs until `stop()`, also while no event is pending.
    public func run() {
        stopRequested.store(false, ordering: .relaxed)
        while !stopRequested.load(ordering: .relaxed) {
            if pollUntil > 0 && monotonicNanoseconds() < pollUntil {
                event_base_loop(base, EVLOOP_NONBLOCK)
                sched_yield()
            } else {
                pollUntil = 0
                event_base_loop(base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY)
            }
        }
    }

    /// Runs the loop until `done()` holds or `seconds` have passed (for a
    /// question asked before serving starts, e.g. of peers at bootstrap).
    /// True when `done()` held.
    public func run(until done: () -> Bool, seconds: Double) -> Bool {
        var expired = false
        let deadline = schedule(every: seconds, repeats: false) { expired = true }
        while !done() && !expired { event_base_loop(base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) }
        withExtendedLifetime(deadline) {}
        return done()
    }

    /// Makes `run()` return after the current callbacks.
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        event_base_loopbreak(base)
    }
    private let stopRequested = Atomic<Bool>(false)

    /// Polls for events instead of sleeping for the next `seconds` (loop
    /// thread only), yielding the CPU between polls: for when an event is
    /// due that soon and waking a sleeping thread would cost a good part of
    /// the wait (tens of microseconds on virtual CPUs that halt when idle).
    public func poll(for seconds: Double) {
        pollUntil = max(pollUntil, monotonicNanoseconds() + UInt64(seconds * 1e9))
    }
    private var pollUntil: UInt64 = 0

    /// Runs `work` on the loop thread soon; callable from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        queued.withLock { $0.append(work) }
        event_active(wakeup, 0, 0)
    }

    private func runQueued() {
        let work = queued.withLock { (q: inout [@Sendable () -> Void]) -> [@Sendable () -> Void] in
            defer { q.removeAll() }
            return q
        }
        for w in work { w() }
    }

    /// Calls `handler` on the loop when the process receives `signal`.
    public func onSignal(_ signal: Int32, _ handler: @escaping () -> Void) {
        let box = Unmanaged.passRetained(CallbackBox(handler)).toOpaque()
        guard let ev = event_new(base, signal, Int16(EV_SIGNAL | EV_PERSIST), { _, _, arg in
            Unmanaged<CallbackBox>.fromOpaque(arg!).takeUnretainedValue().callback()
        }, box) else { return }
        event_add(ev, nil)
        signalEvents.append(ev)
    }

    /// A timer firing every `interval` seconds (or once) on the loop, for as
    /// long as the caller keeps the returned `Timer`.
    public func schedule(every interval: Double, repeats: Bool = true, _ handler: @escaping () -> Void) -> Timer {
        Timer(loop: self, interval: interval, repeats: repeats, handler: handler)
    }

    /// An event that, once triggered, runs after the I/O callbacks of the
    /// current loop iteration.
    public func makeDeferredTask(_ handler: @escaping () -> Void) -> DeferredTask {
        DeferredTask(loop: self, handler: handler)
    }
}

final class CallbackBox {
    let callback: () -> Void
    init(_ callback: @escaping () -> Void) { self.callback = callback }
}

/// A repeating or one-shot timer on a loop.
public final class Timer {
    private var event: OpaquePointer?
    private let box: CallbackBox

    init(loop: EventLoop, interval: Double, repeats: Bool, handler: @escaping () -> Void) {
        box = CallbackBox(handler)
        let arg = Unmanaged.passUnretained(box).toOpaque()
        event = event_new(loop.base, -1, Int16(repeats ? EV_PERSIST : 0), { _, _, arg in
            Unmanaged<CallbackBox>.fromOpaque(arg!).takeUnretainedValue().callback()
        }, arg)
        var tv = timeval(tv_sec: Int(interval), tv_usec: Int((interval - Double(Int(interval))) * 1e6))
        event_add(event, &tv)
    }

    /// Fires once `seconds` from now instead of when it was due.
    public func reschedule(after seconds: Double) {
        guard let event else { return }
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        event_add(event, &tv)
    }

    public func cancel() {
        if let event { event_free(event) }
        event = nil
    }

    deinit { cancel() }
}

/// Work that is triggered any number of times during a loop iteration and
/// runs once, after that iteration's I/O (priority 1).
public final class DeferredTask {
    private var event: OpaquePointer?
    private let handler: () -> Void
    private var isPending = false

    init(loop: EventLoop, handler: @escaping () -> Void) {
        self.handler = handler
        // The task outlives its event (freed in deinit), so the callback may
        // hold it unretained.
        event = event_new(loop.base, -1, 0, { _, _, arg in
            let task = Unmanaged<DeferredTask>.fromOpaque(arg!).takeUnretainedValue()
            task.isPending = false
            task.handler()
        }, Unmanaged.passUnretained(self).toOpaque())
        event_priority_set(event, 1)
    }

    /// Asks for the task to run after this iteration's I/O.
    public func trigger() {
        guard !isPending, let event else { return }
        isPending = true
        event_active(event, 0, 0)
    }

    deinit { if let event { event_free(event) } }
}

/// A value that is only ever used on its loop's thread, carried through a
/// `@Sendable` closure that hops threads and back (see `EventLoop.execute`).
public struct LoopBound<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

/// Runs `body` on a new detached thread (for blocking work such as copying
/// the database), so the loop never waits for it.
public func runOnNewThread(_ body: @escaping @Sendable () -> Void) {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let arg = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        box.body()
        return nil
    }, arg)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    pthread_detach(thread)
}

/// An event loop running on a thread of its own (the client's).
public final class EventLoopThread: Sendable {
    public let loop: EventLoop
    /// Signalled once the thread's loop has returned.
    private let finished = DispatchSemaphore(value: 0)

    public init() {
        let loop = EventLoop()
        self.loop = loop
        let finished = self.finished
        runOnNewThread {
            loop.run()
            finished.signal()
        }
    }

    /// Stops the loop; its thread ends.
    public func stop() {
        let loop = self.loop
        loop.execute { loop.stop() }
    }

    /// Waits (at most `seconds`) for the loop's thread to end after
    /// `stop`: a process must not exit while that thread still frees TLS
    /// state (OpenSSL's exit handlers would race it).
    public func waitUntilStopped(seconds: Double) {
        if finished.wait(timeout: .now() + seconds) == .success { finished.signal() }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Work handed from one loop's thread to another's, in order and in
/// batches: whatever an iteration of the sending loop posts crosses with
/// one lock and one wakeup of the receiving loop, after the sender's I/O.
/// `post` is for the sending loop's thread only.
final class LoopHandoff {
    /// After a batch crosses, both loops poll this long instead of
    /// sleeping: the answer (a reply, the next requests) usually comes
    /// within it, and waking a sleeping thread costs tens of microseconds
    /// (measured: range throughput with one I/O thread 0.66x of none
    /// without the poll, 0.82x with it, on two shared cores).
    static let pollSeconds = 0.000_05
    private let sender: EventLoop
    private let target: EventLoop
    /// What crosses: work, or a message for a call (the fan-out's common
    /// case, carried without a closure of its own).
    private enum Item {
        case work(() -> Void)
        case send(MessageParts, GRPCCall)
        case sendEach(MessageParts, [UInt64], GRPCCall)
    }
    private var pending: [Item] = []
    private var flushTask: DeferredTask!

    init(from sender: EventLoop, to target: EventLoop) {
        self.sender = sender
        self.target = target
        flushTask = sender.makeDeferredTask { [unowned self] in flush() }
    }

    func post(_ work: @escaping () -> Void) {
        pending.append(.work(work))
        flushTask.trigger()
    }

    func postSend(_ message: MessageParts, on call: GRPCCall) {
        pending.append(.send(message, call))
        flushTask.trigger()
    }

    func postSend(_ message: MessageParts, withEachValue values: [UInt64], on call: GRPCCall) {
        pending.append(.sendEach(message, values, call))
        flushTask.trigger()
    }

    private func flush() {
        guard !pending.isEmpty else { return }
        let batch = LoopBound(pending)
        pending = []
        let target = self.target
        target.execute {
            for item in batch.value {
                switch item {
                case .work(let work): work()
                case .send(let message, let call): call.stream?.send(message)
                case .sendEach(let message, let values, let call): call.stream?.send(message, withEachValue: values)
                }
            }
            target.poll(for: LoopHandoff.pollSeconds)
        }
        sender.poll(for: LoopHandoff.pollSeconds)
    }
}

/// A value behind a pthread mutex: what crosses between loops goes through
/// one, because ThreadSanitizer knows pthread mutexes (it does not see
/// `Synchronization.Mutex`'s futex as ordering anything, and reported every
/// handoff as a race).
final class PthreadLocked<Value>: @unchecked Sendable {
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout Value) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&value)
    }
}
