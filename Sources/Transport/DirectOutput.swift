import CLibevent

/// A plaintext socket's output, written at the end of the loop iteration
/// that queued it rather than when epoll next reports the socket writable:
/// a reply costs one writev, not also two epoll_ctl calls (write interest
/// on, then off) and an iteration to learn that the socket is writable.
/// Only what the socket does not take at once waits for write interest, as
/// the bufferevent would have it; `drained` (the bufferevent's write
/// callback) turns the interest off once everything is written.
final class DirectOutput {
    private var bev: OpaquePointer?
    private var task: DeferredTask!
    private var waitingForSocket = false
    private let onDrained: () -> Void

    /// `onDrained` runs when a direct write took everything (as the
    /// bufferevent's write callback would): time to produce more.
    init(bev: OpaquePointer, loop: EventLoop, onDrained: @escaping () -> Void) {
        self.bev = bev
        self.onDrained = onDrained
        task = loop.makeDeferredTask { [unowned self] in write() }
    }

    /// Bytes were added to the bufferevent's output.
    func queued() {
        if bev != nil && !waitingForSocket { task.trigger() }
    }

    /// The bufferevent wrote (its write callback): once nothing is left,
    /// write interest goes off again.
    func drained() {
        guard waitingForSocket, let bev, evbuffer_get_length(bufferevent_get_output(bev)) == 0 else { return }
        waitingForSocket = false
        bufferevent_disable(bev, Int16(EV_WRITE))
    }

    /// The bufferevent is about to be freed: nothing more is written.
    func detach() { bev = nil }

    private func write() {
        guard let bev, !waitingForSocket else { return }
        let output = bufferevent_get_output(bev)
        guard evbuffer_get_length(output) > 0 else { return }
        // A socket bufferevent keeps its output's start frozen, so that only
        // it drains it; it thaws it the same way around its own writes.
        evbuffer_unfreeze(output, 1)
        evbuffer_write(output, bufferevent_getfd(bev))
        evbuffer_freeze(output, 1)
        if evbuffer_get_length(output) > 0 {
            // The socket is full (or failed): the bufferevent writes the
            // rest when it can, or reports the error through its event
            // callback.
            waitingForSocket = true
            bufferevent_enable(bev, Int16(EV_WRITE))
        } else {
            onDrained()
        }
    }
}
