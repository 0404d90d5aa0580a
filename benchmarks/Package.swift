// swift-tools-version:6.0
import PackageDescription

// Benchmarks live in their own package so the main build and `swift test`
// never compile them. Run: swift run -c release --package-path benchmarks mvcc-bench
let package = Package(
    name: "swetcd-benchmarks",
    dependencies: [.package(name: "swetcd", path: "..")],
    targets: [
        .target(name: "CMallocStats"),
        .executableTarget(
            name: "mvcc-bench",
            dependencies: ["CMallocStats", .product(name: "MVCC", package: "swetcd")]),
    ],
    swiftLanguageModes: [.v6]
)
