#if canImport(Glibc)
import Glibc
#endif
@testable import MVCC
@_exported import TestSupport

/// A fresh directory under /tmp, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/swetcd-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    var database: String { path + "/db" }

    func remove() {
        unlink(path + "/db")
        unlink(path + "/db-lock")
        rmdir(path)
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

