/// A stream's response bytes waiting for flow control. Small pieces are
/// copied together into one buffer; a large array that many streams send
/// (a watch event's bytes, the same for every watcher of it) is kept by
/// reference, in its place among them, until it is written out: each
/// stream would otherwise copy it once more on its way to the socket.
struct OutboundQueue {
    /// Arrays at least this long are queued by reference.
    static let sharedMinBytes = 1024

    private var owned = ByteQueue()
    /// Bytes appended to `owned` since the queue was created, and dropped
    /// from it: positions in the owned stream of bytes, where shared
    /// arrays sit.
    private var ownedAppended = 0
    private var ownedDropped = 0
    /// Shared arrays in order, each after the owned bytes appended before
    /// it; `offset` is how much of the first has been written.
    private var shared: [(after: Int, bytes: [UInt8])] = []
    private var sharedFirst = 0
    private var offset = 0
    private var sharedCount = 0

    var count: Int { owned.count + sharedCount }
    var isEmpty: Bool { count == 0 }

    /// Room for `n` bytes of small pieces in an empty queue.
    mutating func reserveIfEmpty(_ n: Int) { owned.reserveIfEmpty(n) }

    mutating func appendFrameHeader(_ n: UInt32) {
        owned.appendFrameHeader(n)
        ownedAppended += 5
    }

    mutating func appendVarint(_ v: UInt64) {
        let before = owned.count
        owned.appendVarint(v)
        ownedAppended += owned.count - before
    }

    /// Appends `bytes`: by reference when long, else copied.
    mutating func append(_ bytes: [UInt8]) {
        if bytes.count >= Self.sharedMinBytes {
            shared.append((ownedAppended, bytes))
            sharedCount += bytes.count
        } else {
            owned.append(bytes)
            ownedAppended += bytes.count
        }
    }

    /// Appends `bytes`, taking the array itself when nothing is queued.
    mutating func append(adopting bytes: [UInt8]) {
        owned.append(adopting: bytes)
        ownedAppended += bytes.count
    }

    /// Appends `n` bytes that `write` fills in (all of them), copied with
    /// the small pieces.
    mutating func append(count n: Int, _ write: (UnsafeMutableRawBufferPointer) -> Void) {
        guard n > 0 else { return }
        let block = [UInt8](unsafeUninitializedCapacity: n) { buffer, initialized in
            write(UnsafeMutableRawBufferPointer(buffer))
            initialized = n
        }
        append(adopting: block)
    }

    /// Hands the first `n` bytes (at most `count`) to `write` in the
    /// pieces they are held in, and drops them.
    mutating func write(_ n: Int, _ write: (UnsafeRawBufferPointer) -> Void) {
        var left = Swift.min(n, count)
        while left > 0 {
            if sharedFirst < shared.count && shared[sharedFirst].after == ownedDropped {
                let bytes = shared[sharedFirst].bytes
                let piece = Swift.min(left, bytes.count - offset)
                bytes.withUnsafeBytes { write(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + piece])) }
                left -= piece
                sharedCount -= piece
                offset += piece
                if offset == bytes.count { dropFirstShared() }
            } else {
                let upTo = sharedFirst < shared.count ? shared[sharedFirst].after - ownedDropped : owned.count
                let piece = Swift.min(left, upTo)
                owned.withFront(piece, write)
                owned.drop(piece)
                ownedDropped += piece
                left -= piece
            }
        }
    }

    private mutating func dropFirstShared() {
        offset = 0
        sharedFirst += 1
        if sharedFirst == shared.count {
            shared.removeAll(keepingCapacity: shared.count <= 16)
            sharedFirst = 0
        } else if sharedFirst >= 64 && sharedFirst > shared.count / 2 {
            shared.removeSubrange(0..<sharedFirst)
            sharedFirst = 0
        }
    }
}
