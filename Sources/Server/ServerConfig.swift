import Auth
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The server's settings, from etcd's flags and their `ETCD_*` environment
/// variables (a flag wins over its variable).
public struct ServerConfig: Equatable, Sendable {
    public var name = "default"
    /// Serve etcd's v2 API (`--enable-v2`, off by default as in etcd 3.4).
    public var enableV2 = false
    public var dataDir = "default.swetcd"
    public var listenClientURLs = [ClientURL(host: "127.0.0.1", port: 2379)]
    /// Where `/metrics` and `/health` are also served, alone (etcd's
    /// --listen-metrics-urls; https ones with the client certificate).
    public var listenMetricsURLs: [ClientURL] = []
    /// etcd's --metrics: `extensive` adds grpc-go's handling-time histogram
    /// per method (`grpc_server_handling_seconds`).
    public var extensiveMetrics = false
    public var advertiseClientURLs: [ClientURL]?
    public var maxRequestBytes = 1_572_864
    public var maxTxnOps = 128
    /// Streams one client connection may have open at once (etcd's flag;
    /// its default is unbounded, ours 4096: a client past it waits).
    public var maxConcurrentStreams: UInt32 = 4096
    public var logLevel = Logger.Level.info
    /// etcd's --log-outputs: "default" or "stderr" (standard error),
    /// "stdout", or files to append to.
    public var logOutputs = ["default"]
    public var quotaBackendBytes: Int64 = 2 << 30
    /// bcrypt's cost for the passwords users are given (etcd's default).
    public var bcryptCost = 10
    /// Seconds between progress notifications to watchers that asked.
    public var watchProgressNotifyInterval: Double = 600
    /// Size of each preallocated WAL segment.
    public var walSegmentBytes = 64 << 20
    /// Seconds between backend checkpoints (fsync, then old WAL segments go).
    public var checkpointInterval: Double = 5
    /// Most seconds an applied write waits before its backend commit.
    public var backendBatchInterval: Double = 0.1
    /// Most applied writes in one backend commit.
    public var backendBatchLimit = 10_000
    /// How long the loop and the WAL's writer poll instead of sleeping
    /// around a lone write (0: never).
    public var loneWritePoll: Double = 0.000_150
    /// Threads serving client connections (TLS, HTTP/2, gRPC framing,
    /// watch delivery) beside the loop that owns the store; 0: that loop
    /// serves them too (--experimental-io-threads).
    public var ioThreads = ServerConfig.defaultIOThreads
    /// One per core on machines of four cores or more; none below (on two
    /// cores, the crossings between loops cost more than the second core
    /// gives: docs/architecture.md).
    public static var defaultIOThreads: Int {
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return cores >= 4 ? cores : 0
    }
    /// Seconds between writes of each lease's remaining TTL to the backend,
    /// which a restart resumes from (0: never; a restart then restarts
    /// every lease's whole TTL).
    public var leaseCheckpointInterval: Double = 10
    /// TLS for https client URLs: the member's certificate and key, and
    /// the CA client certificates must chain to.
    public var certFile: String?
    public var keyFile: String?
    public var trustedCAFile: String?
    /// Refuse clients without a certificate signed by the trusted CA.
    public var clientCertAuth = false
    /// Peer TLS (etcd's --peer-* flags): the member's certificate and key,
    /// both to serve https peer URLs and to present to peers; the CA peers'
    /// certificates must chain to; whether peers must present one.
    public var peerCertFile: String?
    public var peerKeyFile: String?
    public var peerTrustedCAFile: String?
    public var peerClientCertAuth = false
    /// Without --peer-cert-file, https peer URLs served with a self-signed
    /// certificate, peers' unverified (--peer-auto-tls).
    public var peerAutoTLS = false
    /// The CommonName a peer's client certificate must have
    /// (--peer-cert-allowed-cn).
    public var peerCertAllowedCN: String?
    /// Serve https with a self-signed certificate made in the data dir when
    /// no --cert-file is given.
    public var autoTLS = false
    /// Seconds a TLS client has to finish its handshake.
    public var tlsHandshakeTimeout: Double = 10
    /// Seconds an auth token lives after its last use (--auth-token-ttl).
    public var authTokenTTL = 300
    /// Automatic compaction (--auto-compaction-mode and -retention); nil: off.
    public var autoCompaction: AutoCompactor.Mode?
    /// This member's peer URLs as the cluster is told them at bootstrap.
    public var initialAdvertisePeerURLs = ["http://localhost:2380"]
    /// Where peers are listened for.
    public var listenPeerURLs = ["http://localhost:2380"]
    /// Whether --listen-peer-urls was given (a member alone listens for
    /// peers only then).
    public var listenPeerURLsGiven = false
    /// Compare HashKV with the peers' before serving, refusing to start on
    /// a mismatch (--experimental-initial-corrupt-check).
    public var initialCorruptCheck = false
    /// Seconds between the leader's HashKV comparisons, which raise the
    /// CORRUPT alarm (--experimental-corrupt-check-time); 0: never.
    public var corruptCheckTime: Double = 0
    /// Start an existing member as a cluster of one, removing the others
    /// (--force-new-cluster: after losing a quorum for good).
    public var forceNewCluster = false
    /// Refuse membership changes that would leave too few started or
    /// connected members for a quorum (--strict-reconfig-check).
    public var strictReconfigCheck = true
    /// Every member at bootstrap, by name; nil: this member alone, named
    /// `name`, at `initialAdvertisePeerURLs` (etcd's default).
    var initialCluster: InitialCluster?
    public var initialClusterToken = "etcd-cluster"
    /// `new` (bootstrap) or `existing` (join).
    public var initialClusterState = "new"
    /// The initial cluster as etcd reads its flags.
    var effectiveInitialCluster: InitialCluster {
        initialCluster ?? InitialCluster(initialAdvertisePeerURLs.map { "\(name)=\($0)" }.joined(separator: ","))!
    }
    /// Milliseconds per Raft tick: a leader's heartbeats (--heartbeat-interval).
    public var heartbeatIntervalMs = 100
    /// Milliseconds without a leader before a member campaigns
    /// (--election-timeout; randomized up to twice this).
    public var electionTimeoutMs = 1000
    /// Applied entries after which Raft's log is compacted; a follower
    /// further behind gets the leader's backend (--snapshot-count).
    public var snapshotCount: UInt64 = 100_000
    /// Entries kept after a compaction, for followers a little behind
    /// (--experimental-snapshot-catchup-entries).
    public var snapshotCatchUpEntries: UInt64 = 5_000
    /// Accepted for etcd's command lines: swetcd keeps no snapshot files
    /// once installed, and drops WAL segments the backend covers.
    public var maxSnapshots = 5
    public var maxWALs = 5
    /// Raft's pre-vote: a member cut off does not disrupt the cluster when
    /// it returns (--pre-vote; on by default, as in etcd 3.5).
    public var preVote = true

    public init() {}

    /// What clients are told to use (MemberList): the advertised URLs, or
    /// the listened ones.
    public var clientURLs: [ClientURL] { advertiseClientURLs ?? listenClientURLs }

    public struct ClientURL: Equatable, Sendable, CustomStringConvertible {
        public var host: String
        public var port: UInt16
        /// https: served with TLS.
        public var isTLS = false
        public var description: String { "\(isTLS ? "https" : "http")://\(host):\(port)" }

        /// Parses `http://host:port` or `https://host:port`.
        public init?(_ s: String) {
            guard let scheme = ["http://", "https://"].first(where: { s.hasPrefix($0) }) else { return nil }
            isTLS = scheme == "https://"
            let rest = s.dropFirst(scheme.count).split(separator: "/", maxSplits: 1).first ?? ""
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
                return nil
            }
            host = String(rest[..<colon])
            if host == "localhost" { host = "127.0.0.1" }
            self.port = port
        }

        public init(host: String, port: UInt16, isTLS: Bool = false) {
            self.host = host
            self.port = port
            self.isTLS = isTLS
        }
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case unknownFlag(String)
        case missingValue(String)
        case badValue(flag: String, value: String, why: String)
        case helpRequested
        case versionRequested

        public var description: String {
            switch self {
            case .unknownFlag(let f): return "unknown flag: \(f)"
            case .missingValue(let f): return "flag needs an argument: \(f)"
            case .badValue(let f, let v, let why): return "invalid value \"\(v)\" for flag --\(f): \(why)"
            case .helpRequested: return "help requested"
            case .versionRequested: return "version requested"
            }
        }
    }

    static let flags = ["name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-metrics-urls", "metrics",
                        "max-request-bytes", "max-txn-ops", "max-concurrent-streams", "log-level", "logger", "log-outputs", "quota-backend-bytes", "bcrypt-cost",
                        "experimental-watch-progress-notify-interval", "experimental-wal-segment-bytes",
                        "experimental-checkpoint-interval", "backend-batch-interval", "backend-batch-limit",
                        "experimental-lone-write-poll", "experimental-lease-checkpoint-interval", "experimental-io-threads",
                        "auto-compaction-mode", "auto-compaction-retention",
                        "cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls",
                        "experimental-tls-handshake-timeout", "auth-token", "auth-token-ttl", "enable-v2",
                        "heartbeat-interval", "election-timeout", "initial-advertise-peer-urls", "listen-peer-urls",
                        "initial-cluster", "initial-cluster-token", "initial-cluster-state",
                        "snapshot-count", "experimental-snapshot-catchup-entries", "max-snapshots", "max-wals", "pre-vote",
                        "peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth", "strict-reconfig-check",
                        "force-new-cluster", "peer-auto-tls", "peer-cert-allowed-cn",
                        "experimental-initial-corrupt-check", "experimental-corrupt-check-time"]
    /// Flags that may stand alone (`--client-cert-auth`) for true.
    static let booleanFlags: Set<String> = ["client-cert-auth", "auto-tls", "enable-v2", "pre-vote", "peer-client-cert-auth",
                                            "strict-reconfig-check", "force-new-cluster", "peer-auto-tls",
                                            "experimental-initial-corrupt-check"]

    public static let usage = """
    usage: swetcd [flags]

      --name                  human-readable name of this member (default "default")
      --data-dir              path to the data directory (default "default.swetcd")
      --listen-client-urls    comma-separated URLs to serve clients on (default "http://127.0.0.1:2379")
      --advertise-client-urls comma-separated client URLs to tell clients (default: the listen URLs)
      --listen-metrics-urls   comma-separated URLs to serve only /metrics and /health on (default none;
                              https ones use --cert-file and --key-file)
      --metrics               basic, or extensive to add per-method gRPC handling-time histograms
                              (default basic)
      --max-request-bytes     largest client request accepted, in bytes (default 1572864)
      --max-txn-ops           most operations in one transaction (default 128)
      --max-concurrent-streams most streams open at once on one client connection (default 4096)
      --log-level             debug, info, warn, error, panic or fatal (default info)
      --logger                zap: JSON lines with etcd's fields (the only logger; default zap)
      --log-outputs           comma-separated: default or stderr, stdout, or file paths to append to
                              (default "default")
      --initial-advertise-peer-urls
                              this member's peer URLs, told to the cluster at bootstrap
                              (default "http://localhost:2380")
      --listen-peer-urls      URLs to listen for peers on (default "http://localhost:2380";
                              a member alone listens only when this is given, so it can grow)
      --initial-cluster       every member at bootstrap, name=peer-URL,... (default: --name
                              at --initial-advertise-peer-urls)
      --initial-cluster-token the cluster's token, part of its member and cluster IDs
                              (default "etcd-cluster")
      --initial-cluster-state new, or existing to join a cluster the member was added to
                              with member add (default new)
      --strict-reconfig-check refuse membership changes that would leave too few started
                              and connected members for a quorum (default true)
      --experimental-initial-corrupt-check
                              compare HashKV with the peers' before serving; refuse to start
                              on a mismatch (default false)
      --experimental-corrupt-check-time
                              time between the leader's HashKV comparisons, which raise the
                              CORRUPT alarm for a member that differs (default 0: never)
      --force-new-cluster     start this member's data as a cluster of one (the others
                              removed), after a quorum is lost for good
      --heartbeat-interval    milliseconds between a leader's heartbeats (default 100)
      --election-timeout      milliseconds without a leader before a member campaigns
                              (default 1000; at least 5 heartbeat intervals)
      --snapshot-count        applied entries after which Raft's log is compacted; a member
                              further behind is sent the leader's backend (default 100000)
      --experimental-snapshot-catchup-entries
                              entries kept after a compaction for members a little behind
                              (default 5000)
      --max-snapshots, --max-wals
                              accepted for etcd's command lines (no snapshot files are kept;
                              WAL segments go once the backend holds their entries)
      --peer-cert-file, --peer-key-file
                              the member's certificate and key for https peer URLs (served,
                              and presented to peers)
      --peer-trusted-ca-file  the CA peers' certificates must chain to
      --peer-client-cert-auth refuse peers without a certificate from that CA
      --peer-cert-allowed-cn  the CommonName a peer's certificate must have (with
                              --peer-client-cert-auth)
      --peer-auto-tls         without --peer-cert-file, serve https peer URLs with a self-signed
                              certificate kept in the data dir (peers are not verified)
      --pre-vote              Raft's pre-vote, so a member cut off does not disrupt the
                              cluster when it returns (default true)
      --quota-backend-bytes   backend size that raises the NOSPACE alarm (default 2 GiB)
      --bcrypt-cost           bcrypt's cost for passwords, 4 to 31 (default 10)
      --experimental-watch-progress-notify-interval
                              time between watch progress notifications, as Go durations
                              (10m, 5s, 250ms; default 10m)
      --experimental-wal-segment-bytes
                              size of each preallocated WAL segment (default 64 MiB)
      --experimental-checkpoint-interval
                              time between backend fsyncs after which older WAL segments
                              are removed (default 5s)
      --backend-batch-interval
                              most time applied writes wait for a backend commit, as a Go
                              duration (default 100ms); the WAL, not this, makes them durable
      --backend-batch-limit   most applied writes in one backend commit (default 10000)
      --experimental-lone-write-poll
                              how long the loop and the WAL writer poll instead of sleeping
                              around a lone write, as a Go duration (default 150us; 0 never)
      --experimental-io-threads
                              threads serving client connections beside the one that owns the
                              store (default: one per core with 4 cores or more, else 0;
                              0: that one serves them too)
      --experimental-lease-checkpoint-interval
                              time between writes of every lease's remaining TTL, which a
                              restart resumes from, as a Go duration (default 10s; 0 never)
      --auto-compaction-mode  periodic or revision (default periodic)
      --auto-compaction-retention
                              periodic: history to keep, as a Go duration or a number of
                              hours (1h, 30m, 2); revision: revisions to keep (1000);
                              0 turns automatic compaction off (default 0)
      --cert-file             the member's TLS certificate (PEM), for https client URLs
      --key-file              its private key (PEM)
      --trusted-ca-file       CA certificates (PEM) client certificates must chain to
      --client-cert-auth      refuse clients without a certificate signed by that CA
      --auto-tls              without --cert-file, serve https with a self-signed certificate
                              made in <data-dir>/fixtures/client
      --experimental-tls-handshake-timeout
                              time a TLS client has to finish its handshake (default 10s)
      --enable-v2             serve the v2 keys API (/v2/keys, /v2/members, /v2/stats) (default false)
      --auth-token            the kind of auth token: simple (the default; jwt is not built)
      --auth-token-ttl        seconds a simple token lives after its last use (default 300)
      --version               print the version and exit
      -h, --help              print this help

    swetcd snapshot restore FILE --data-dir DIR [--name --initial-cluster ...]
      makes a new data dir from a snapshot `etcdctl snapshot save` wrote from
      swetcd or from etcd 3.4/3.5 (checked against its SHA-256); DIR must not
      exist.

    swetcd migrate --from-etcd-data-dir ETCD_DIR --data-dir DIR [--name ...]
      makes a new data dir from a stopped etcd's: its backend, and the writes
      its WAL holds past it; ETCD_DIR is only read.

    Every flag may also come from its environment variable: ETCD_ and the flag's
    name in capitals with '-' as '_' (ETCD_DATA_DIR=...).
    """

    /// Parses Go-flag style arguments (`--flag value`, `--flag=value`, one or
    /// two dashes) over the environment's `ETCD_*` values.
    public static func parse(arguments: [String], environment: [String: String]) throws -> ServerConfig {
        var values: [String: String] = [:]
        for flag in flags {
            let variable = "ETCD_" + flag.uppercased().replacingDashes()
            if let v = environment[variable] { values[flag] = v }
        }
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            guard arg.hasPrefix("-") else { throw ParseError.unknownFlag(arg) }
            let body = arg.drop { $0 == "-" }
            let name: String, inline: String?
            if let eq = body.firstIndex(of: "=") {
                name = String(body[..<eq])
                inline = String(body[body.index(after: eq)...])
            } else {
                name = String(body)
                inline = nil
            }
            if name == "h" || name == "help" { throw ParseError.helpRequested }
            if name == "version" { throw ParseError.versionRequested }
            guard flags.contains(name) else { throw ParseError.unknownFlag(arg) }
            if let inline {
                values[name] = inline
            } else if booleanFlags.contains(name) {
                values[name] = "true"
            } else {
                guard i < arguments.count else { throw ParseError.missingValue(arg) }
                values[name] = arguments[i]
                i += 1
            }
        }

        var config = ServerConfig()
        config.autoCompaction = try autoCompaction(mode: values["auto-compaction-mode"] ?? "periodic",
                                                   retention: values["auto-compaction-retention"] ?? "0")
        for (flag, value) in values {
            func bad(_ why: String) -> ParseError { .badValue(flag: flag, value: value, why: why) }
            func urls() throws -> [ClientURL] {
                let parsed = value.split(separator: ",").map { ClientURL(String($0)) }
                guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else {
                    throw bad("want http://IP:PORT or https://IP:PORT[,...]")
                }
                return parsed.compactMap { $0 }
            }
            func positive() throws -> Int {
                guard let n = Int(value), n > 0 else { throw bad("want a positive integer") }
                return n
            }
            /// etcd's retention counts: 0 is unlimited.
            func count() throws -> Int {
                guard let n = Int(value), n >= 0 else { throw bad("want a count (0 is unlimited)") }
                return n
            }
            switch flag {
            case "name": config.name = value
            case "data-dir":
                guard !value.isEmpty else { throw bad("empty path") }
                config.dataDir = value
            case "listen-client-urls": config.listenClientURLs = try urls()
            case "listen-metrics-urls": config.listenMetricsURLs = try urls()
            case "advertise-client-urls": config.advertiseClientURLs = try urls()
            case "max-request-bytes": config.maxRequestBytes = try positive()
            case "max-txn-ops": config.maxTxnOps = try positive()
            case "max-concurrent-streams":
                guard let n = UInt32(value), n > 0 else { throw bad("want a positive 32-bit integer") }
                config.maxConcurrentStreams = n
            case "quota-backend-bytes": config.quotaBackendBytes = Int64(try positive())
            case "bcrypt-cost":
                let cost = try positive()
                guard (PasswordHasher.minimumCost...PasswordHasher.maximumCost).contains(cost) else {
                    throw bad("want a cost from \(PasswordHasher.minimumCost) to \(PasswordHasher.maximumCost)")
                }
                config.bcryptCost = cost
            case "experimental-watch-progress-notify-interval":
                guard let seconds = parseGoDuration(value), seconds > 0 else { throw bad("want a duration such as 10m or 500ms") }
                config.watchProgressNotifyInterval = seconds
            case "experimental-wal-segment-bytes":
                let n = try positive()
                guard n >= 4096 else { throw bad("want at least 4096") }
                config.walSegmentBytes = n
            case "experimental-checkpoint-interval":
                guard let seconds = parseGoDuration(value), seconds > 0 else { throw bad("want a duration such as 5s") }
                config.checkpointInterval = seconds
            case "backend-batch-interval":
                guard let seconds = parseGoDuration(value), seconds > 0 else { throw bad("want a duration such as 100ms") }
                config.backendBatchInterval = seconds
            case "backend-batch-limit": config.backendBatchLimit = try positive()
            case "experimental-lone-write-poll":
                guard let seconds = value == "0" ? 0 : parseGoDuration(value), seconds >= 0, seconds <= 0.01 else {
                    throw bad("want a duration from 0 to 10ms, such as 150us")
                }
                config.loneWritePoll = seconds
            case "experimental-lease-checkpoint-interval":
                guard let seconds = value == "0" ? 0 : parseGoDuration(value), seconds >= 0 else {
                    throw bad("want a duration such as 10s, or 0")
                }
                config.leaseCheckpointInterval = seconds
            case "experimental-tls-handshake-timeout":
                guard let seconds = parseGoDuration(value), seconds > 0 else { throw bad("want a duration such as 10s") }
                config.tlsHandshakeTimeout = seconds
            case "enable-v2":
                guard let on = Bool(value) else { throw bad("want true or false") }
                config.enableV2 = on
            case "auth-token":
                guard value == "simple" else { throw bad("only simple tokens are built (jwt is not)") }
            case "auth-token-ttl": config.authTokenTTL = try positive()
            case "initial-advertise-peer-urls", "listen-peer-urls":
                let list = value.split(separator: ",").map(String.init)
                guard !list.isEmpty, list.allSatisfy({ ClientURL($0) != nil }) else {
                    throw bad("want http://IP:PORT or https://IP:PORT[,...]")
                }
                if flag == "listen-peer-urls" {
                    config.listenPeerURLs = list
                    config.listenPeerURLsGiven = true
                } else {
                    config.initialAdvertisePeerURLs = list
                }
            case "initial-cluster":
                guard let cluster = InitialCluster(value) else { throw bad("want name=http://IP:PORT[,name=...]") }
                config.initialCluster = cluster
            case "initial-cluster-token":
                guard !value.isEmpty else { throw bad("empty token") }
                config.initialClusterToken = value
            case "initial-cluster-state":
                guard value == "new" || value == "existing" else { throw bad("want new or existing") }
                config.initialClusterState = value
            case "heartbeat-interval": config.heartbeatIntervalMs = try positive()
            case "election-timeout": config.electionTimeoutMs = try positive()
            case "snapshot-count": config.snapshotCount = UInt64(try positive())
            case "experimental-snapshot-catchup-entries": config.snapshotCatchUpEntries = UInt64(try positive())
            case "max-snapshots": config.maxSnapshots = try count()
            case "max-wals": config.maxWALs = try count()
            case "experimental-io-threads":
                guard let n = Int(value), n >= 0, n <= 1024 else { throw bad("want a number of threads from 0 to 1024") }
                config.ioThreads = n
            case "pre-vote":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.preVote = b
            case "cert-file": config.certFile = value
            case "key-file": config.keyFile = value
            case "trusted-ca-file": config.trustedCAFile = value
            case "peer-cert-file": config.peerCertFile = value
            case "peer-key-file": config.peerKeyFile = value
            case "peer-trusted-ca-file": config.peerTrustedCAFile = value
            case "peer-client-cert-auth":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.peerClientCertAuth = b
            case "strict-reconfig-check":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.strictReconfigCheck = b
            case "experimental-initial-corrupt-check":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.initialCorruptCheck = b
            case "experimental-corrupt-check-time":
                guard let seconds = parseGoDuration(value), seconds >= 0 else { throw bad("want a duration such as 10m or 500ms") }
                config.corruptCheckTime = seconds
            case "peer-auto-tls":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.peerAutoTLS = b
            case "peer-cert-allowed-cn":
                config.peerCertAllowedCN = value.isEmpty ? nil : value
            case "force-new-cluster":
                guard let b = Bool(value) else { throw bad("want true or false") }
                config.forceNewCluster = b
            case "client-cert-auth", "auto-tls":
                guard let b = Bool(value) else { throw bad("want true or false") }
                if flag == "auto-tls" { config.autoTLS = b } else { config.clientCertAuth = b }
            case "logger":
                guard value == "zap" else { throw bad("swetcd logs as etcd's zap logger does; want zap") }
            case "log-outputs":
                let outputs = value.split(separator: ",").map { String($0.trimmingCharacters(in: .whitespaces)) }
                guard !outputs.isEmpty, !outputs.contains("") else { throw bad("want default, stderr, stdout or file paths") }
                // etcd's rule and words.
                guard outputs.count == 1 || !outputs.contains("default") else {
                    throw bad("multi logoutput for \"default\" is not supported yet")
                }
                config.logOutputs = outputs
            case "metrics":
                guard value == "basic" || value == "extensive" else { throw bad("want basic or extensive") }
                config.extensiveMetrics = value == "extensive"
            case "log-level":
                let levels: [String: Logger.Level] = ["debug": .debug, "info": .info, "warn": .warning,
                                                      "error": .error, "panic": .critical, "fatal": .critical]
                guard let level = levels[value] else { throw bad("want debug, info, warn, error, panic or fatal") }
                config.logLevel = level
            default: break
            }
        }
        // etcd's checks, in its words.
        let cluster = config.effectiveInitialCluster
        guard let mine = cluster.members.first(where: { $0.name == config.name }) else {
            throw ParseError.badValue(flag: "initial-cluster", value: values["initial-cluster"] ?? "",
                                      why: "couldn't find local name \"\(config.name)\" in the initial cluster configuration")
        }
        if mine.peerURLs.sorted() != config.initialAdvertisePeerURLs.sorted() {
            throw ParseError.badValue(flag: "initial-cluster", value: values["initial-cluster"] ?? "",
                                      why: "--initial-cluster has \(config.name)=\(mine.peerURLs.sorted().joined(separator: ",")) but missing from --initial-advertise-peer-urls=\(config.initialAdvertisePeerURLs.sorted().joined(separator: ","))")
        }
        if config.electionTimeoutMs < 5 * config.heartbeatIntervalMs {
            throw ParseError.badValue(flag: "election-timeout", value: "\(config.electionTimeoutMs)",
                                      why: "--election-timeout[\(config.electionTimeoutMs)ms] should be at least as 5 times as --heartbeat-interval[\(config.heartbeatIntervalMs)ms]")
        }
        if config.electionTimeoutMs > 50_000 {
            throw ParseError.badValue(flag: "election-timeout", value: "\(config.electionTimeoutMs)",
                                      why: "--election-timeout[\(config.electionTimeoutMs)ms] is too long, and should be set less than 50000ms")
        }
        if config.listenClientURLs.contains(where: \.isTLS) && (config.certFile == nil || config.keyFile == nil) && !config.autoTLS {
            throw ParseError.badValue(flag: "listen-client-urls", value: config.listenClientURLs.map(\.description).joined(separator: ","),
                                      why: "https needs --cert-file and --key-file, or --auto-tls")
        }
        if config.peerTLS && (config.peerCertFile == nil || config.peerKeyFile == nil) && !config.peerAutoTLS {
            throw ParseError.badValue(flag: "listen-peer-urls", value: config.listenPeerURLs.joined(separator: ","),
                                      why: "https peer URLs need --peer-cert-file and --peer-key-file, or --peer-auto-tls")
        }
        return config
    }

    /// Whether members talk to each other over TLS (https peer URLs).
    public var peerTLS: Bool {
        (listenPeerURLs + effectiveInitialCluster.members.flatMap(\.peerURLs)).contains { $0.hasPrefix("https://") }
    }
}

extension ServerConfig {
    /// etcd's rules: periodic retention is a duration or a bare number of
    /// hours, revision retention a count; zero turns compaction off.
    static func autoCompaction(mode: String, retention: String) throws -> AutoCompactor.Mode? {
        func bad(_ flag: String, _ value: String, _ why: String) -> ParseError { .badValue(flag: flag, value: value, why: why) }
        switch mode {
        case "periodic":
            let seconds: Double
            if let hours = Double(retention) {
                seconds = hours * 3600
            } else if let d = parseGoDuration(retention) {
                seconds = d
            } else {
                throw bad("auto-compaction-retention", retention, "want a duration (1h, 30m) or a number of hours")
            }
            guard seconds >= 0 else { throw bad("auto-compaction-retention", retention, "want a duration of at least 0") }
            return seconds == 0 ? nil : .periodic(seconds: seconds)
        case "revision":
            guard let keep = Int64(retention), keep >= 0 else {
                throw bad("auto-compaction-retention", retention, "want a number of revisions")
            }
            return keep == 0 ? nil : .revision(keep: keep)
        default:
            throw bad("auto-compaction-mode", mode, "want periodic or revision")
        }
    }
}

extension String {
    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}

/// Parses a Go duration ("10m", "1h30m", "250ms", "5s") into seconds.
func parseGoDuration(_ s: String) -> Double? {
    let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    var rest = Substring(s)
    var total = 0.0
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        // Two-letter units come first in the list, so "ms" is not read as "m".
        guard let unit = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
        total += value * unit.1
        rest = rest.dropFirst(unit.0.count)
    }
    return total
}
