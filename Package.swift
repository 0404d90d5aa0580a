// swift-tools-version:6.0
import PackageDescription

// Dependencies point down this list and never back up (docs/architecture.md).
/// Release builds of the server's modules skip Swift's run-time
/// exclusivity checks (measured in docs/benchmarks.md).
let serverSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "swetcd",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "swetcd", targets: ["swetcd"]),
        .executable(name: "swetcdctl", targets: ["swetcdctl"]),
        .library(name: "MVCC", targets: ["MVCC"]),
        .library(name: "EtcdProto", targets: ["EtcdProto"]),
        .library(name: "EtcdClient", targets: ["EtcdClient"]),
        .library(name: "Raft", targets: ["Raft"]),
        // For the fuzz package (fuzz/), which reaches the decoders inside.
        .library(name: "Transport", targets: ["Transport"]),
        .library(name: "WAL", targets: ["WAL"]),
        .library(name: "Member", targets: ["Member"]),
        .library(name: "Server", targets: ["Server"]),
        .library(name: "Bolt", targets: ["Bolt"]),
        .library(name: "Auth", targets: ["Auth"]),
        .library(name: "Snapshot", targets: ["Snapshot"]),
        .library(name: "V2Store", targets: ["V2Store"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        // C libraries, each a module map + shim header, installed from Debian.
        .systemLibrary(
            name: "CLibevent", pkgConfig: "libevent_core",
            providers: [.apt(["libevent-dev"])]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CCrypt", pkgConfig: "libxcrypt",
            providers: [.apt(["libcrypt-dev"])]),
        .systemLibrary(
            name: "CNghttp2", pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(
            name: "CLMDB", pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]),
        // The server's allocator (docs/architecture.md: glibc's per-thread
        // cache is too small for the loop's bursts). Debian ships no .pc.
        .systemLibrary(
            name: "CMimalloc",
            providers: [.apt(["libmimalloc-dev"])]),
        // The version and git commit a release build was made from
        // (scripts/package.sh defines them; a header, no library).
        .systemLibrary(name: "CBuildInfo"),

        // etcd's wire messages: swift-protobuf code generated from proto/ by
        // scripts/generate-protos.sh and committed.
        .target(
            name: "EtcdProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["proto"], swiftSettings: serverSettings),

        // Revisioned key-value store: key index, LMDB backend, compaction.
        // No sockets, threads or clocks of its own.
        .target(name: "EtcdStatus"),
        .target(name: "Checksum"),
        // Counters and histograms counted from any thread without locks, and
        // Prometheus's text format; the process_* series.
        .target(name: "Metrics", swiftSettings: serverSettings),
        .target(name: "Bolt", swiftSettings: serverSettings),
        .target(name: "MVCC", dependencies: ["CLMDB", "EtcdStatus", "Checksum", "Metrics"], swiftSettings: serverSettings),
        // Users, roles and key permissions, as a state machine; password hashes.
        .target(name: "Auth", dependencies: ["EtcdStatus", "COpenSSL", "CCrypt"], swiftSettings: serverSettings),
        // The lessor: leases, their TTLs and keys, as a clockless state machine.
        .target(name: "Lease", dependencies: ["EtcdStatus"], swiftSettings: serverSettings),
        // Snapshot files: restore into a data dir, status (server and CLI).
        .target(name: "Snapshot", dependencies: ["MVCC", "Bolt", "Auth", "EtcdProto", "Checksum", "COpenSSL",
                                                .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // etcd's v2 keys store, as a state machine (served behind
        // --enable-v2).
        .target(name: "V2Store"),
        // Raft as a pure state machine: no I/O, clocks or threads.
        .target(name: "Raft", swiftSettings: serverSettings),
        // Write-ahead log: segments, chained CRC records, torn-tail recovery.
        .target(name: "WAL", dependencies: ["Checksum", "Metrics"], swiftSettings: serverSettings),

        // Event loop, connections, HTTP/2 via nghttp2, gRPC framing, HTTP/1.1.
        .target(
            name: "Transport",
            dependencies: ["CLibevent", "CNghttp2", "COpenSSL", "EtcdStatus",
                           .product(name: "Logging", package: "swift-log")], swiftSettings: serverSettings),

        // A member of a Raft group on the loop: drives Raft, persists its
        // state through the WAL, hands committed entries to the server.
        .target(
            name: "Member",
            dependencies: ["Raft", "WAL", "Metrics", "Transport", "EtcdProto", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                           .product(name: "Logging", package: "swift-log")], swiftSettings: serverSettings),

        // The services over the store, etcd's flags, metrics, logs.
        .target(
            name: "Server",
            dependencies: ["Member", "Raft", "MVCC", "Metrics", "WAL", "Lease", "Auth", "V2Store", "Snapshot", "Transport", "EtcdProto", "EtcdStatus",
                           "COpenSSL", .product(name: "Logging", package: "swift-log")], swiftSettings: serverSettings),

        // The Swift client: async calls over our own transport.
        .target(name: "EtcdClient", dependencies: ["Transport", "EtcdProto", "EtcdStatus", "COpenSSL"]),

        .executableTarget(
            name: "swetcd",
            dependencies: ["Server", "Snapshot", "Transport", "CMimalloc", "CBuildInfo", .product(name: "Logging", package: "swift-log")]),

        // etcdctl's commands on the client library (never on server code).
        .executableTarget(
            name: "swetcdctl",
            dependencies: ["EtcdClient", "EtcdProto", "EtcdStatus", "Snapshot", "CBuildInfo",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]),

        // A pod-watching controller on the client library (an example).
        .executableTarget(name: "PodWatcher", dependencies: ["EtcdClient", "EtcdProto"], path: "Examples/PodWatcher"),

        // posix_spawn's close-from action, for the tests' child processes.
        .target(name: "CSpawn", path: "Tests/CSpawn"),
        .target(name: "TestSupport", dependencies: ["CSpawn"], path: "Tests/TestSupport"),
        .testTarget(name: "MVCCTests", dependencies: ["MVCC", "EtcdProto", "TestSupport"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "EtcdStatus", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "MetricsTests", dependencies: ["Metrics", "TestSupport"]),
        .testTarget(name: "WALTests", dependencies: ["WAL", "Checksum", "TestSupport"]),
        .testTarget(name: "RaftTests", dependencies: ["Raft", "TestSupport"]),
        .testTarget(name: "MemberTests", dependencies: ["Member", "Raft", "WAL", "Transport", "TestSupport", "EtcdProto",
                                                        .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "V2StoreTests", dependencies: ["V2Store", "TestSupport"]),
        .testTarget(name: "BoltTests", dependencies: ["Bolt", "Checksum", "Snapshot", "EtcdProto", "TestSupport"]),
        .testTarget(name: "LeaseTests", dependencies: ["Lease", "EtcdStatus", "TestSupport"]),
        .testTarget(name: "AuthTests", dependencies: ["Auth", "EtcdStatus", "TestSupport"]),
        .testTarget(name: "ServerTests", dependencies: ["Server", "Transport", "Raft", "Auth", "TestSupport"]),
        // Real clients (etcdctl, Python etcd3, raw sockets) against the built
        // swetcd executable.
        .testTarget(name: "EndToEndTests", dependencies: ["swetcd", "swetcdctl", "PodWatcher", "EtcdClient", "EtcdProto", "MVCC", "WAL", "Bolt", "TestSupport"], exclude: ["python"]),
        .testTarget(
            name: "CLibrariesTests",
            dependencies: ["CLibevent", "COpenSSL", "CNghttp2", "CLMDB"]),
    ],
    swiftLanguageModes: [.v6]
)
