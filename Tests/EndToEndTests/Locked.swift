import Foundation

/// A value behind a lock that ThreadSanitizer sees (a pthread mutex, through
/// NSLock). Synchronization's `Mutex` waits on a futex TSan does not model,
/// so the sanitized suite reported the accesses it guards as races.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
