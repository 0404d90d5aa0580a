import ArgumentParser
import EtcdClient
import Foundation
import Snapshot

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Manages etcd node snapshots",
        subcommands: [SnapshotSave.self, SnapshotStatus.self, SnapshotRestore.self])
    static let booleans: Set<String> = ["skip-hash-check"]
}

/// `snapshot save FILE`: the member's backend streamed into FILE.part,
/// its SHA-256 checked, then renamed to FILE. On a terminal it shows the
/// bytes received so far (etcdctl shows nothing).
struct SnapshotSave: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "save", abstract: "Stores an etcd node backend snapshot to a given file")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "<filename>") var args: [String] = []

    func execute() async throws {
        guard args.count == 1 else { throw CtlError(.badArgs, "snapshot save expects one argument") }
        let path = args[0], partial = args[0] + ".part"
        unlink(partial)
        let client = try global.client()
        defer { client.shutdown() }
        let progress = isatty(2) == 1 ? ProgressLine() : nil
        let timeout = global.commandTimeout == nil ? 365 * 24 * 3600 : global.commandSeconds
        let bytes: Int
        do {
            bytes = try await client.snapshot(to: partial, timeout: timeout) { received in progress?.show(received) }
        } catch {
            unlink(partial)
            progress?.finish()
            throw CtlError(CtlError(error).code == .error ? .interrupted : CtlError(error).code, CtlError(error).message)
        }
        progress?.finish()
        guard rename(partial, path) == 0 else { throw CtlError(.interrupted, "could not rename \(partial) to \(path)") }
        _ = bytes
        print("Snapshot saved at \(path)")
    }
}

/// Bytes received so far, rewritten in place on a terminal.
final class ProgressLine: @unchecked Sendable {
    private var last = DispatchTime.now().uptimeNanoseconds

    func show(_ bytes: Int) {
        let now = DispatchTime.now().uptimeNanoseconds
        guard now - last > 100_000_000 else { return }
        last = now
        FileHandle.standardError.write(Data("\rreceived \(humanBytes(UInt64(bytes)))   ".utf8))
    }

    func finish() { FileHandle.standardError.write(Data("\r\u{1b}[K".utf8)) }
}

struct SnapshotStatus: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Gets backend snapshot status of a given file")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "<filename>") var args: [String] = []

    func execute() async throws {
        let out = try Output(global)
        if out.format == .protobuf { throw out.unsupported() }
        guard args.count == 1 else { throw CtlError(.badArgs, "snapshot status requires exactly one argument") }
        try goFileCheck("stat", args[0])
        let s: SnapshotFile.Status
        do {
            s = try SnapshotFile.status(file: args[0])
        } catch {
            throw CtlError(.error, "\(error)")
        }
        let row = [String(s.hash, radix: 16), "\(s.revision)", "\(s.totalKeys)", humanBytes(UInt64(s.totalSize))]
        switch out.format {
        case .json:
            out.json(.object([("hash", .number(s.hash)), ("revision", .number(s.revision)), ("totalKey", .number(s.totalKeys)),
                              ("totalSize", .number(s.totalSize))]))
        case .table: print(table(["hash", "revision", "total keys", "total size"], [row]), terminator: "")
        case .fields:
            print("\"Hash\" : \(s.hash)")
            print("\"Revision\" : \(s.revision)")
            print("\"Keys\" : \(s.totalKeys)")
            print("\"Size\" : \(s.totalSize)")
        default: print(row.joined(separator: ", "))
        }
    }
}

/// `snapshot restore FILE --data-dir DIR`: a new data dir for one member.
/// A member of a new cluster of several is restored by `swetcd snapshot
/// restore`, which writes the cluster's members and IDs into the data dir
/// (server code, which swetcdctl does not link).
struct SnapshotRestore: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restores an etcd member snapshot to an etcd directory")
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("data-dir"), help: "Path to the data directory") var dataDir = ""
    @Option(help: "Human-readable name for this member") var name = "default"
    @Option(name: .customLong("wal-dir"), help: .hidden) var walDir = ""
    @Option(name: .customLong("initial-cluster"), help: .hidden) var initialCluster = ""
    @Option(name: .customLong("initial-cluster-token"), help: .hidden) var initialClusterToken = ""
    @Option(name: .customLong("initial-advertise-peer-urls"), help: .hidden) var initialAdvertisePeerURLs = ""
    @Flag(name: .customLong("skip-hash-check"), help: .hidden) var skipHashCheck = false
    @Argument(help: "<filename>") var args: [String] = []

    func execute() async throws {
        guard args.count == 1 else { throw CtlError(.badArgs, "snapshot restore requires exactly one argument") }
        if !walDir.isEmpty { throw CtlError(.badArgs, "--wal-dir is not supported: swetcd keeps its WAL in the data dir") }
        if initialCluster.contains(",") {
            throw CtlError(.badArgs, "restoring a member of a cluster of several: use `swetcd snapshot restore` with the same flags")
        }
        let directory = dataDir.isEmpty ? name + ".swetcd" : dataDir
        try goFileCheck("open", args[0])
        do {
            try SnapshotFile.restore(file: args[0], dataDir: directory, skipHashCheck: skipHashCheck)
        } catch {
            throw CtlError(.error, "\(error)")
        }
    }
}

/// etcdctl's error for a file it cannot reach: Go's `<op> <path>: <reason>`.
func goFileCheck(_ op: String, _ path: String) throws {
    var st = stat()
    guard stat(path, &st) != 0 else { return }
    throw CtlError(.error, "\(op) \(path): \(String(cString: strerror(errno)).lowercased())")
}
