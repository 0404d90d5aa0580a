#if canImport(Glibc)
import Glibc
#endif

func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o700) != 0 && errno != EEXIST {
        struct MakeDirectoryError: Error { let path: String; let errno: Int32 }
        throw MakeDirectoryError(path: path, errno: errno)
    }
}
