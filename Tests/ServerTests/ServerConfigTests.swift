import Logging
import Testing
@testable import Server

@Suite struct ServerConfigTests {
    @Test func defaultsAreTheEmbeddedOnes() throws {
        let c = try ServerConfig.parse(arguments: [], environment: [:])
        #expect(c.name == "default" && c.dataDir == "default.swetcd")
        #expect(c.listenClientURLs.map(\.description) == ["http://127.0.0.1:2379"])
        #expect(c.clientURLs == c.listenClientURLs)
        #expect(c.maxRequestBytes == 1_572_864 && c.maxTxnOps == 128 && c.logLevel == .info)
        #expect(c.backendBatchInterval == 0.1 && c.backendBatchLimit == 10_000 && c.loneWritePoll == 0.000_150)
    }

    @Test func flagsInEveryGoSpelling() throws {
        let c = try ServerConfig.parse(arguments: [
            "--name", "n1", "-data-dir=/tmp/x", "--listen-client-urls=http://localhost:1,http://10.0.0.1:2",
            "--advertise-client-urls", "http://example:3", "--max-request-bytes=10", "--max-txn-ops", "7",
            "--log-level=warn", "--backend-batch-interval=250ms", "--backend-batch-limit", "500", "--experimental-lone-write-poll=0",
            "--experimental-lease-checkpoint-interval", "2m",
        ], environment: [:])
        #expect(c.name == "n1" && c.dataDir == "/tmp/x")
        #expect(c.listenClientURLs.map(\.description) == ["http://127.0.0.1:1", "http://10.0.0.1:2"])
        #expect(c.clientURLs.map(\.description) == ["http://example:3"])
        #expect(c.maxRequestBytes == 10 && c.maxTxnOps == 7 && c.logLevel == .warning)
        #expect(c.backendBatchInterval == 0.25 && c.backendBatchLimit == 500 && c.loneWritePoll == 0)
        #expect(c.leaseCheckpointInterval == 120)
    }

    @Test func maxConcurrentStreams() throws {
        #expect(try ServerConfig.parse(arguments: [], environment: [:]).maxConcurrentStreams == 4096)
        #expect(try ServerConfig.parse(arguments: ["--max-concurrent-streams=10"], environment: [:]).maxConcurrentStreams == 10)
        #expect(try ServerConfig.parse(arguments: [], environment: ["ETCD_MAX_CONCURRENT_STREAMS": "4294967295"])
            .maxConcurrentStreams == UInt32.max)
        for bad in ["0", "-1", "4294967296", "x"] {
            #expect(throws: ServerConfig.ParseError.badValue(flag: "max-concurrent-streams", value: bad,
                                                            why: "want a positive 32-bit integer")) {
                try ServerConfig.parse(arguments: ["--max-concurrent-streams", bad], environment: [:])
            }
        }
    }

    /// Raft's snapshot and pre-vote flags, by flag and by ETCD_* variable.
    /// Peer TLS and metrics listener flags, from flags and ETCD_*
    /// variables; https peer URLs without a certificate and key are
    /// refused, as is a peer-client-cert-auth that is not a boolean.
    @Test func peerTLSAndMetricsFlags() throws {
        #expect(try ServerConfig.parse(arguments: ["--metrics", "extensive"], environment: [:]).extensiveMetrics)
        #expect(try !ServerConfig.parse(arguments: [], environment: ["ETCD_METRICS": "basic"]).extensiveMetrics)
        #expect(try ServerConfig.parse(arguments: [], environment: ["ETCD_METRICS": "extensive"]).extensiveMetrics)
        #expect(try !ServerConfig.parse(arguments: [], environment: [:]).extensiveMetrics)
        let c = try ServerConfig.parse(arguments: [
            "--listen-peer-urls=https://127.0.0.1:2380", "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--peer-cert-file=p.crt", "--peer-key-file=p.key", "--peer-trusted-ca-file=ca.crt", "--peer-client-cert-auth=true",
            "--listen-metrics-urls=http://127.0.0.1:2381",
        ], environment: [:])
        #expect(c.peerTLS && c.peerCertFile == "p.crt" && c.peerKeyFile == "p.key" && c.peerTrustedCAFile == "ca.crt" && c.peerClientCertAuth)
        #expect(c.listenMetricsURLs.map(\.description) == ["http://127.0.0.1:2381"])
        let e = try ServerConfig.parse(arguments: [], environment: ["ETCD_PEER_CLIENT_CERT_AUTH": "true", "ETCD_LISTEN_METRICS_URLS": "http://127.0.0.1:9"])
        #expect(e.peerClientCertAuth && !e.peerTLS && e.listenMetricsURLs.count == 1)
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--listen-peer-urls=https://127.0.0.1:2380"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--initial-cluster=a=https://127.0.0.1:2380", "--name=a", "--peer-cert-file=p.crt"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--peer-client-cert-auth=maybe"], environment: [:]) }
    }

    @Test func snapshotAndPreVoteFlags() throws {
        let d = try ServerConfig.parse(arguments: [], environment: [:])
        #expect(d.snapshotCount == 100_000 && d.snapshotCatchUpEntries == 5_000 && d.preVote)
        let c = try ServerConfig.parse(arguments: ["--snapshot-count=300", "--experimental-snapshot-catchup-entries", "50",
                                                   "--pre-vote=false", "--max-snapshots", "2", "--max-wals=3"],
                                       environment: [:])
        #expect(c.snapshotCount == 300 && c.snapshotCatchUpEntries == 50 && !c.preVote && c.maxSnapshots == 2 && c.maxWALs == 3)
        let e = try ServerConfig.parse(arguments: [], environment: ["ETCD_SNAPSHOT_COUNT": "7", "ETCD_PRE_VOTE": "false"])
        #expect(e.snapshotCount == 7 && !e.preVote)
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--snapshot-count=0"], environment: [:]) }
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--pre-vote=maybe"], environment: [:]) }
        // Retention counts: 0 is unlimited (etcd's), a negative one an error.
        #expect(try ServerConfig.parse(arguments: ["--max-wals=0", "--max-snapshots=0"], environment: [:]).maxWALs == 0)
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--max-wals=-1"], environment: [:]) }
    }

    @Test func environmentVariablesAndFlagsWin() throws {
        let c = try ServerConfig.parse(arguments: ["--name=flag"],
                                       environment: ["ETCD_NAME": "env", "ETCD_DATA_DIR": "envdir", "ETCD_MAX_TXN_OPS": "9"])
        #expect(c.name == "flag" && c.dataDir == "envdir" && c.maxTxnOps == 9)
    }

    /// Raft's timing, checked as etcd checks it and refused in its words.
    @Test func heartbeatAndElectionTimeout() throws {
        let defaults = try ServerConfig.parse(arguments: [], environment: [:])
        #expect(defaults.heartbeatIntervalMs == 100 && defaults.electionTimeoutMs == 1000)
        let set = try ServerConfig.parse(arguments: ["--heartbeat-interval=50"], environment: ["ETCD_ELECTION_TIMEOUT": "500"])
        #expect(set.heartbeatIntervalMs == 50 && set.electionTimeoutMs == 500)
        #expect(throws: ServerConfig.ParseError.badValue(
            flag: "election-timeout", value: "400",
            why: "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]")) {
            try ServerConfig.parse(arguments: ["--election-timeout", "400"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--election-timeout=60000", "--heartbeat-interval=1000"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--heartbeat-interval=0"], environment: [:]) }
    }

    @Test func badInputIsAClearError() {
        #expect(throws: ServerConfig.ParseError.unknownFlag("--nope")) {
            try ServerConfig.parse(arguments: ["--nope"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.missingValue("--name")) {
            try ServerConfig.parse(arguments: ["--name"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--max-txn-ops=-1"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--listen-client-urls=https://127.0.0.1:2379"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--log-level=loud"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--metrics=everything"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--backend-batch-interval=soon"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--experimental-lone-write-poll=1s"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--experimental-lease-checkpoint-interval=soon"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.helpRequested) { try ServerConfig.parse(arguments: ["-h"], environment: [:]) }
    }

    @Test func tlsFlags() throws {
        let c = try ServerConfig.parse(arguments: [
            "--listen-client-urls", "https://127.0.0.1:2379,http://127.0.0.1:2380", "--cert-file", "s.crt",
            "--key-file=s.key", "--trusted-ca-file", "ca.crt", "--client-cert-auth", "--name", "n",
        ], environment: [:])
        #expect(c.listenClientURLs.map(\.description) == ["https://127.0.0.1:2379", "http://127.0.0.1:2380"])
        #expect(c.certFile == "s.crt" && c.keyFile == "s.key" && c.trustedCAFile == "ca.crt" && c.clientCertAuth)
        #expect(c.name == "n", "a boolean flag takes no value")
        #expect(try ServerConfig.parse(arguments: ["--client-cert-auth=false"], environment: [:]).clientCertAuth == false)
        #expect(try ServerConfig.parse(arguments: [], environment: ["ETCD_CLIENT_CERT_AUTH": "true"]).clientCertAuth)
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--listen-client-urls", "https://127.0.0.1:2379"], environment: [:])
        }
        let auto = try ServerConfig.parse(arguments: ["--listen-client-urls", "https://127.0.0.1:2379", "--auto-tls"], environment: [:])
        #expect(auto.autoTLS && auto.certFile == nil)
    }

    @Test func authTokenFlags() throws {
        #expect(try ServerConfig.parse(arguments: [], environment: [:]).authTokenTTL == 300)
        let c = try ServerConfig.parse(arguments: ["--auth-token", "simple", "--auth-token-ttl", "60"], environment: [:])
        #expect(c.authTokenTTL == 60)
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--auth-token", "jwt,pub-key=a.pub,priv-key=a.key"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--auth-token-ttl", "0"], environment: [:]) }
    }

    @Test func enableV2IsOffUnlessAskedFor() throws {
        #expect(try !ServerConfig.parse(arguments: [], environment: [:]).enableV2)
        #expect(try !ServerConfig.parse(arguments: ["--enable-v2=false"], environment: [:]).enableV2)
        #expect(try ServerConfig.parse(arguments: ["--enable-v2"], environment: [:]).enableV2)
        #expect(try ServerConfig.parse(arguments: [], environment: ["ETCD_ENABLE_V2": "true"]).enableV2)
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--enable-v2=maybe"], environment: [:]) }
    }
}

/// Member and cluster IDs as etcd derives them from the bootstrap flags.
@Suite struct ClusterIdentityTests {
    /// etcd's defaults give the IDs every etcd user has seen.
    @Test func etcdsDefaultsGiveEtcdsWellKnownIDs() throws {
        let config = try ServerConfig.parse(arguments: [], environment: [:])
        let cluster = config.effectiveInitialCluster
        #expect(cluster.memberIDs(token: config.initialClusterToken).map(\.id) == [0x8e9e05c52164694d])
        #expect(cluster.clusterID(token: config.initialClusterToken) == 0xcdf818194e3a8c32)
    }

    @Test func theInitialClusterIsReadAsEtcdReadsIt() throws {
        let three = try ServerConfig.parse(arguments: [
            "--name", "b", "--initial-advertise-peer-urls", "http://10.0.0.2:2380",
            "--initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380,c=http://10.0.0.4:2380",
        ], environment: [:])
        #expect(three.effectiveInitialCluster.members.map(\.name) == ["a", "b", "c"])
        #expect(three.effectiveInitialCluster.members[2].peerURLs == ["http://10.0.0.3:2380", "http://10.0.0.4:2380"])
        // A name alone: that name at the advertised URLs.
        let named = try ServerConfig.parse(arguments: ["--name", "x", "--initial-advertise-peer-urls=http://127.0.0.1:7001"], environment: [:])
        #expect(named.effectiveInitialCluster == InitialCluster("x=http://127.0.0.1:7001"))
        #expect(throws: ServerConfig.ParseError.badValue(flag: "initial-cluster", value: "a=http://10.0.0.1:2380",
                                                         why: "couldn't find local name \"default\" in the initial cluster configuration")) {
            try ServerConfig.parse(arguments: ["--initial-cluster", "a=http://10.0.0.1:2380"], environment: [:])
        }
        #expect(throws: ServerConfig.ParseError.self) {
            try ServerConfig.parse(arguments: ["--initial-cluster", "default=http://10.0.0.9:2380"], environment: [:])
        }
        for bad in ["", "a", "=http://x:1", "a=ftp://x:1"] {
            #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--initial-cluster", bad], environment: [:]) }
        }
        #expect(throws: ServerConfig.ParseError.self) { try ServerConfig.parse(arguments: ["--initial-cluster-state", "old"], environment: [:]) }
    }
}
