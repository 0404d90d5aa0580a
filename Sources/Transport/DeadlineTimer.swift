/// One timer for the deadlines of many calls on a connection: due at the
/// earliest of them, it asks its owner to end the calls past theirs and to
/// name the next. A libevent timer per call would cost an allocation, a heap
/// insert and a weak reference on every request. Used only on its loop.
final class DeadlineTimer {
    private let loop: EventLoop
    private var timer: Timer?
    private var due: UInt64?
    /// Ends the calls due by `now` (CLOCK_MONOTONIC nanoseconds); returns
    /// the earliest deadline left, if any.
    private let expire: (UInt64) -> UInt64?

    init(loop: EventLoop, expire: @escaping (UInt64) -> UInt64?) {
        self.loop = loop
        self.expire = expire
    }

    /// Makes sure the timer fires by `deadline`.
    func arm(at deadline: UInt64) {
        if let due, due <= deadline { return }
        due = deadline
        let now = monotonicNanoseconds()
        let seconds = deadline > now ? Double(deadline - now) / 1e9 : 0
        if let timer {
            timer.reschedule(after: seconds)
        } else {
            timer = loop.schedule(every: seconds, repeats: false) { [unowned self] in fired() }
        }
    }

    private func fired() {
        due = nil
        if let next = expire(monotonicNanoseconds()) { arm(at: next) }
    }

    func cancel() {
        timer?.cancel()
        timer = nil
        due = nil
    }
}

/// The CLOCK_MONOTONIC instant `seconds` from now, in nanoseconds.
func deadline(after seconds: Double) -> UInt64 {
    monotonicNanoseconds() + UInt64(max(seconds, 0) * 1e9)
}
