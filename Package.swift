// swift-tools-version:6.1
import PackageDescription

// The module graph is the architecture (docs/ARCHITECTURE.md):
//
//   CairnCore     pure domain: digests, refs, errors, filters, labels, the store protocol and
//                 the Write-session state machine. No NIO, no gRPC.
//   CairnDisk     the durable single-node store (containerd's content/local layout) and
//                 DurableFiles, the one helper for small files that must survive a crash.
//   CairnCluster  cluster config, ring placement, views and the SWIM membership state
//                 machine, fed by an injected transport, clock and seeded RNG; CairnCore only.
//   CairnMessages generated protobuf messages and their conversions to domain values
//                 (scripts/generate-protos.sh); no gRPC, so the fuzz driver builds fast.
//   CairnProto    generated gRPC services over those messages (re-exports CairnMessages).
//   CairnTransport HTTP/2 details both ends need (HTTP2ConnectionGuard).
//   CairnServer   thin gRPC adapters from both Content APIs + health onto any ContentStore,
//                 and what every call passes: TLS, access (tokens, rates), RPC metrics.
//   CairnAdmin    the admin HTTP port: /metrics, /healthz, /readyz and the dashboard.
//   CairnClient   a client for both APIs (used by the CLI, the bench, the tests and the
//                 nodes' connections to their peers).
//   CairnNode     a cluster node: the membership driver, the peer protocol and the cluster
//                 store (routing, forwarding, replication, failover reads) over a local store;
//                 its hints, tombstones and adopted config through CairnDisk's DurableFiles.
//   CairnAgent    the node-local endpoint for containerd: local ingests and cache, blobs in
//                 the cluster under the host's client identity (docs/containerd.md).
//   cairn         the CLI: serve, client commands, bench.
//   CairnChaos    the chaos harness's history model and checker (pure; chaos/README.md).
//   CairnFuzzTargets  fuzz targets over the pure core (filters, regexes, the Write session,
//                 SWIM); cairn-fuzz is libFuzzer's driver for them (scripts/fuzz).
//   CairnTestKit  in-memory store and the store conformance suite every store must pass.
let package = Package(
  name: "Cairn",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "cairn", targets: ["cairn"]),
    .library(name: "CairnCore", targets: ["CairnCore"]),
    .library(name: "CairnDisk", targets: ["CairnDisk"]),
    .library(name: "CairnServer", targets: ["CairnServer"]),
    .library(name: "CairnClient", targets: ["CairnClient"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
  ],
  targets: [
    .target(
      name: "CairnCore",
      dependencies: [.product(name: "Crypto", package: "swift-crypto")]
    ),
    .target(name: "CCairnSys"),
    .target(name: "CairnCluster", dependencies: ["CairnCore"]),
    .target(name: "CairnChaos"),
    .target(
      name: "CairnDisk",
      dependencies: [
        "CairnCore",
        "CCairnSys",
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    .target(
      name: "CairnMessages",
      dependencies: ["CairnCore", "CairnCluster", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    .target(
      name: "CairnProto",
      dependencies: [
        "CairnMessages",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
      ]
    ),
    .target(
      name: "CairnTransport",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "X509", package: "swift-certificates"),
      ]
    ),
    .target(
      name: "CairnServer",
      dependencies: [
        "CairnCore",
        "CairnProto",
        "CairnTransport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "X509", package: "swift-certificates"),
      ]
    ),
    .target(
      name: "CairnAdmin",
      dependencies: [
        "CairnServer",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    .target(
      name: "CairnClient",
      dependencies: [
        "CairnCore",
        "CairnCluster",
        "CairnProto",
        "CairnTransport",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
        .product(name: "X509", package: "swift-certificates"),
      ]
    ),
    .target(
      name: "CairnNode",
      dependencies: [
        "CairnCore",
        "CairnDisk",
        "CairnCluster",
        "CairnProto",
        "CairnServer",
        "CairnClient",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ]
    ),
    .target(
      name: "CairnAgent",
      dependencies: ["CairnCore", "CairnDisk", "CairnClient", .product(name: "Logging", package: "swift-log")]
    ),
    .executableTarget(
      name: "cairn",
      dependencies: [
        "CairnAdmin",
        "CairnAgent",
        "CairnChaos",
        "CairnCore",
        "CairnDisk",
        "CairnCluster",
        "CairnNode",
        "CairnProto",
        "CairnServer",
        "CairnClient",
        "CairnTransport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "Crypto", package: "swift-crypto"),
      ]
    ),
    // Fuzz targets (pure code fed arbitrary bytes) and libFuzzer's driver for them
    // (scripts/fuzz); FuzzReplayTests runs the committed corpora in every test run.
    .target(
      name: "CairnFuzzTargets",
      dependencies: ["CairnCore", "CairnCluster", "CairnMessages", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
    .executableTarget(name: "cairn-fuzz", dependencies: ["CairnFuzzTargets"]),
    .target(
      name: "CairnTestKit",
      dependencies: ["CairnCore", "CairnCluster"]
    ),
    .testTarget(name: "CairnCoreTests", dependencies: ["CairnCore"]),
    .testTarget(name: "CairnChaosTests", dependencies: ["CairnChaos"]),
    .testTarget(name: "CairnFuzzTests", dependencies: ["CairnFuzzTargets"]),
    .testTarget(name: "CairnClusterTests", dependencies: ["CairnCore", "CairnCluster", "CairnTestKit"]),
    .testTarget(
      name: "CairnTransportTests",
      dependencies: [
        "CairnTransport", "CairnCluster",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
      ]
    ),
    .testTarget(name: "CairnDiskTests", dependencies: ["CairnCore", "CairnDisk", "CairnTestKit"]),
    .testTarget(
      name: "CairnServerTests",
      dependencies: ["CairnCore", "CairnDisk", "CairnServer", "CairnClient", "CairnTestKit", "CairnProto",
                     .product(name: "GRPCCore", package: "grpc-swift-2"),
                     .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")]
    ),
    .testTarget(
      name: "CairnNodeTests",
      dependencies: [
        "CairnCore", "CairnCluster", "CairnNode", "CairnServer", "CairnTestKit",
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    .testTarget(
      name: "CairnProcessTests",
      dependencies: [
        "CairnAgent", "CairnCore", "CairnClient", "CairnCluster", "CairnDisk", "CairnProto", "CairnTestKit",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    ),
  ],
  swiftLanguageModes: [.v6]
)
