#if canImport(Glibc)
import Glibc
#endif

/// Reads past libevent's 4 KiB. A socket bufferevent in libevent 2.1 reads
/// at most 4096 bytes per callback, so a 20 KiB batch of Raft entries took
/// five loop iterations (each an epoll_wait, an ioctl and a readv). After
/// a callback that got the full 4096, a plaintext HTTP/2 connection reads
/// the rest itself into the loop's scratch buffer.
final class DirectInput {
    /// The bufferevent read this much at most: more may be waiting.
    static let bufferEventReadCap = 4096
    private static let scratchBytes = 1 << 16
    private var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: DirectInput.scratchBytes, alignment: 16)
    private var inUse = false

    deinit { scratch.deallocate() }

    /// Reads from `fd` and hands each chunk to `consume` (false: stop)
    /// until a short read or `limit` bytes (fairness among connections).
    /// The end of the stream and errors are left to the bufferevent, whose
    /// next read finds them.
    func read(from fd: Int32, limit: Int = 1 << 18, _ consume: (UnsafeRawBufferPointer) -> Bool) {
        // A consumer that reads another connection from inside `consume`
        // (none does) would get a buffer of its own.
        let buffer = inUse ? UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchBytes, alignment: 16) : scratch
        let borrowed = !inUse
        inUse = true
        defer {
            if borrowed { inUse = false } else { buffer.deallocate() }
        }
        var total = 0
        while total < limit {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            guard n > 0 else { return }
            total += n
            guard consume(UnsafeRawBufferPointer(rebasing: buffer[0..<n])), n == buffer.count else { return }
        }
    }
}
