// swift-tools-version:6.0
import PackageDescription

// Benchmarks live in their own package so the main build and `swift test`
// never compile them.
//   swift run -c release --package-path benchmarks mvcc-bench      (in-process store)
//   swift run -c release --package-path benchmarks swetcd-bench    (load generator, any etcd endpoint)
//   swift run -c release --package-path benchmarks raft-bench      (Raft alone, 3 members in memory)
let package = Package(
    name: "swetcd-benchmarks",
    dependencies: [
        .package(name: "swetcd", path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        .target(name: "CMallocStats"),
        .executableTarget(
            name: "mvcc-bench",
            dependencies: ["CMallocStats", .product(name: "MVCC", package: "swetcd")]),
        .executableTarget(name: "raft-bench", dependencies: [.product(name: "Raft", package: "swetcd")]),
        .executableTarget(
            name: "swetcd-bench",
            dependencies: [
                .product(name: "EtcdClient", package: "swetcd"),
                .product(name: "EtcdProto", package: "swetcd"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
