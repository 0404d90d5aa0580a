import ArgumentParser
import CBuildInfo
import Foundation

/// swetcdctl: etcdctl's v3 commands and flags over the Swift client.
@main
struct SwetcdCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swetcdctl",
        abstract: "A simple command line client for etcd3 (etcdctl's commands, flags and output).",
        version: "swetcdctl version: \(String(cString: swetcd_build_version()))\nGit SHA: \(String(cString: swetcd_build_git_sha()))\n"
            + "API version: \(Version.apiVersion)",
        subcommands: [Get.self, Put.self, Del.self, Txn.self, Compaction.self, Watch.self, Lease.self, Member.self, Endpoint.self,
                      Alarm.self, Defrag.self, SnapshotCommand.self, Lock.self, Elect.self, Check.self, User.self, Role.self, Auth.self, Version.self])

    /// Every command's boolean flags, which pflag also takes as --flag=true.
    static let booleans: Set<String> = Get.booleans.union(Put.booleans).union(Del.booleans).union(Compaction.booleans)
        .union(Txn.booleans).union(Lease.booleans).union(Endpoint.booleans).union(Defrag.booleans)
        .union(User.booleans).union(Role.booleans).union(Watch.booleans).union(SnapshotCommand.booleans).union(Elect.booleans).union(Check.booleans)

    static func main() async {
        await main(GlobalOptions.normalize(Array(CommandLine.arguments.dropFirst()), booleans: booleans))
    }
}

/// A command that reports its errors as etcdctl does: `Error: <message>`
/// on standard error and etcdctl's exit code.
protocol CtlCommand: AsyncParsableCommand {
    func execute() async throws
}

extension CtlCommand {
    func run() async throws {
        do {
            try await execute()
        } catch let code as ExitCode {
            throw code
        } catch {
            let e = CtlError(error)
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
            throw ExitCode(e.code.rawValue)
        }
    }
}
