// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for swetcd's decoders, in their own package so the main
// build and `swift test` never compile them. One executable serves every
// target (FUZZ_TARGET picks one) through libFuzzer's LLVMFuzzerRunDriver;
// scripts/fuzz.sh builds it with
// `-sanitize=fuzzer,address` over every module and runs a target.
let package = Package(
    name: "swetcd-fuzz",
    dependencies: [.package(name: "swetcd", path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "swetcd-fuzz",
            dependencies: [
                "CFuzzerDriver",
                .product(name: "Transport", package: "swetcd"), .product(name: "MVCC", package: "swetcd"),
                .product(name: "Raft", package: "swetcd"), .product(name: "Member", package: "swetcd"),
                .product(name: "Server", package: "swetcd"), .product(name: "WAL", package: "swetcd"),
                .product(name: "Bolt", package: "swetcd"), .product(name: "Auth", package: "swetcd"),
                .product(name: "Snapshot", package: "swetcd"), .product(name: "V2Store", package: "swetcd"),
                .product(name: "EtcdProto", package: "swetcd"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
