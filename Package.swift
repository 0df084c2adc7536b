// swift-tools-version:6.0
// SwiftSSI: a single-system-image cluster runtime for Linux, in user space.
// The targets follow the stack of docs/architecture.md, bottom to top.
import PackageDescription

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "SwiftSSI",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ssi", targets: ["ssi"]),
        .executable(name: "ssid", targets: ["ssid"]),
        .executable(name: "ssi-bench", targets: ["ssi-bench"]),
        .executable(name: "ssi-init", targets: ["ssi-init"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C shim: ptrace, raw syscalls, the one spawner, prctl, wait macros, CRC-32C, SysV IPC.
        // Only SSISystem, SSIInject and SSIIPC import it.
        .target(name: "CSSILinux", cSettings: [.define("_GNU_SOURCE"), .unsafeFlags(["-msse4.2"])]),
        // Typed system layer: spawn, typed pid/signal/fd, prctl, socket options, /proc readers.
        .target(name: "SSISystem", dependencies: ["CSSILinux"], swiftSettings: swiftSettings),
        // The snapshot format, the image writer/reader protocols, the version store, archives.
        .target(name: "SSIImage", dependencies: ["SSISystem"], swiftSettings: swiftSettings),
        // Injection library: seizing, remote syscalls, per-architecture registers (Arch/).
        .target(name: "SSIInject", dependencies: ["SSISystem", "CSSILinux"], swiftSettings: swiftSettings),
        // The checkpoint/restart engine: Drivers/ (checkpoint, restart, launch), Resources/.
        .target(name: "SSICheckpoint", dependencies: ["SSISystem", "SSIInject", "SSIImage", "SSIIPC"], swiftSettings: swiftSettings),
        // SysV IPC objects saved and restored with their key and id.
        .target(name: "SSIIPC", dependencies: ["SSISystem", "SSIImage", "CSSILinux"], swiftSettings: swiftSettings),
        // Cluster column, bottom to top (docs/cluster.md). Transport: frames, authentication,
        // RPC, the registry of service numbers.
        .target(name: "SSITransport", dependencies: [
            "SSISystem",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // Membership: the etcd client, views, leases.
        .target(name: "SSIMembership", dependencies: [
            "SSISystem", "SSITransport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // KDDM: protocol messages, the owner side (coherence), the client side, hooks.
        .target(name: "SSIKDDM", dependencies: [
            "SSISystem", "SSITransport", "SSIMembership",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // The cluster-wide application table (KDDM sets applications, snapshots) and this
        // node's side of cluster applications: launch, refresh, checkpoint/restart anywhere.
        .target(name: "SSIProcessTable", dependencies: [
            "SSISystem", "SSITransport", "SSIMembership", "SSIKDDM", "SSICheckpoint", "SSIImage",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // The operators' view: events, Prometheus metrics, the dashboard's HTTP server, the
        // cluster-wide views gathered over RPC (docs/observe.md).
        .target(name: "SSIObserve", dependencies: [
            "SSISystem", "SSITransport", "SSIMembership",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], swiftSettings: swiftSettings),
        // The control protocol between ssi and ssid (typed requests and replies) and its client.
        .target(name: "SSIControl", dependencies: ["SSISystem", "SSITransport", "SSIMembership", "SSIKDDM", "SSIProcessTable", "SSIScheduler", "SSIObserve", "SSINetwork"], swiftSettings: swiftSettings),
        // The scheduler: probes, filters, policies, the Scheduling Configuration Changer
        // (settings XML, selectors), external plug-ins. Pure decisions; the daemon acts on them.
        .target(name: "SSIScheduler", dependencies: ["SSISystem"], swiftSettings: swiftSettings),
        // The cluster address and the port table (issue 13): listening sockets found from
        // /proc, steering by nftables and policy routing, driven from KDDM (docs/network.md).
        .target(name: "SSINetwork", dependencies: ["SSISystem", "SSITransport"], swiftSettings: swiftSettings),
        // A cluster on one machine for development and tests (ssi cluster up): network
        // namespaces, etcd, a supervisor. Not part of the daemon.
        .target(name: "SSILocalCluster", dependencies: ["SSISystem", "SSIControl"], swiftSettings: swiftSettings),
        // The node daemon: assembles the subsystems, serves the control socket.
        .target(name: "SSIDaemon", dependencies: [
            "SSISystem", "SSITransport", "SSIMembership", "SSIKDDM", "SSIControl", "SSIProcessTable", "SSIScheduler", "SSIObserve", "SSINetwork", "SSICheckpoint", "SSIImage",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "ssi", dependencies: [
            "SSIControl", "SSILocalCluster", "SSIKDDM", "SSIMembership",
            "SSICheckpoint", "SSIIPC", "SSIImage", "SSISystem", "SSIProcessTable", "SSIScheduler", "SSIObserve", "SSINetwork",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "ssid", dependencies: [
            "SSIDaemon", "SSISystem",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // Process 1 of a cluster application's PID namespace (C: a few pages, no runtime).
        // A C program, but SwiftPM links every executable through swiftc, which adds the Swift
        // runtime (swiftrt.o needs libswiftCore, which needs libstdc++, libm, libgcc_s): 35
        // more mappings in every cluster application, to save and map again at each migration.
        // Linked static (glibc only, 0.8 MB) without swiftrt.o: eight mappings.
        .executableTarget(name: "ssi-init", linkerSettings: [.unsafeFlags(["-static-executable", "-nostartfiles"])]),
        .executableTarget(name: "ssi-bench", dependencies: ["SSICheckpoint", "SSIIPC", "SSIImage", "SSISystem", "SSIControl", "SSILocalCluster", "SSITransport"], swiftSettings: swiftSettings),
        .target(name: "SSITestSupport", dependencies: ["SSISystem"], path: "Tests/SSITestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "SSICheckpointTests", dependencies: ["SSICheckpoint", "SSITestSupport", "SSISystem", "SSIImage"], swiftSettings: swiftSettings),
        .testTarget(name: "SSIImageTests", dependencies: ["SSIImage", "SSISystem", "SSITestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "SSIClusterTests", dependencies: [
            "SSITransport", "SSIMembership", "SSIKDDM", "SSIControl", "SSILocalCluster", "SSISystem",
            "SSIProcessTable", "SSINetwork", "SSIScheduler", "SSITestSupport",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "SSIIPCTests", dependencies: ["SSIIPC", "SSISystem", "SSITestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "SSISchedulerTests", dependencies: ["SSIScheduler"], swiftSettings: swiftSettings),
        .testTarget(name: "SSIObserveTests", dependencies: [
            "SSIObserve", "SSILocalCluster", "SSISystem", "SSITransport", "SSIMembership", "SSITestSupport",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "SSIInjectTests", dependencies: ["SSIInject", "SSISystem", "CSSILinux", "SSITestSupport"], swiftSettings: swiftSettings),
    ]
)
