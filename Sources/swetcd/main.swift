import CBuildInfo
import CMimalloc
import Logging
import Server
import Snapshot
import Transport
#if canImport(Glibc)
import Glibc
#endif

// swetcd: parse etcd's flags, open the store, serve clients until SIGINT or
// SIGTERM, then shut down cleanly.

/// The architecture as Go and etcd's release names call it.
#if arch(x86_64)
let releaseArchitecture = "amd64"
#elseif arch(arm64)
let releaseArchitecture = "arm64"
#else
let releaseArchitecture = "unknown"
#endif

func writeError(_ s: String) {
    var bytes = Array((s + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

var environment: [String: String] = [:]
var envp = environ
while let entry = envp.pointee {
    let s = String(cString: entry)
    if let eq = s.firstIndex(of: "=") { environment[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
    envp += 1
}

/// The member a restore or a migration makes a data dir for, from etcdctl's
/// restore flags; its data dir is `<name>.swetcd` unless given.
func newMemberConfig(_ flags: [String]) throws -> ServerConfig {
    var config = try ServerConfig.parse(arguments: flags, environment: [:])
    if !flags.contains(where: { $0.hasPrefix("--data-dir") || $0.hasPrefix("-data-dir") }) { config.dataDir = config.name + ".swetcd" }
    return config
}

// `swetcd snapshot restore FILE [--data-dir DIR] [--name N --initial-cluster
// ... --initial-cluster-token T --initial-advertise-peer-urls URL]`, as
// etcdctl's: a data dir for one member of a new cluster (by default one of
// its own, named "default").
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "snapshot" {
    guard arguments.count >= 3, arguments[1] == "restore", !arguments[2].hasPrefix("-") else {
        writeError("usage: swetcd snapshot restore FILE [--data-dir DIR] [--skip-hash-check] [--name NAME --initial-cluster NAME=URL,... --initial-cluster-token TOKEN --initial-advertise-peer-urls URL]")
        exit(2)
    }
    let skipFlags = ["--skip-hash-check", "-skip-hash-check", "--skip-hash-check=true", "-skip-hash-check=true"]
    let skipHashCheck = arguments[3...].contains { skipFlags.contains($0) }
    let flags = Array(arguments[3...]).filter { !(skipFlags + ["--skip-hash-check=false", "-skip-hash-check=false"]).contains($0) }
    do {
        let restore = try newMemberConfig(flags)
        try SnapshotFile.restore(file: arguments[2], dataDir: restore.dataDir, skipHashCheck: skipHashCheck)
        try EtcdServer.restoreIdentity(dataDir: restore.dataDir, config: restore)
        print("restored snapshot \(arguments[2]) into \(restore.dataDir)")
        exit(0)
    } catch {
        writeError("swetcd: \(error)")
        exit(1)
    }
}

// `swetcd migrate --from-etcd-data-dir DIR [--data-dir NEW] [the restore's
// cluster flags]`: a data dir from a stopped etcd's, its WAL's acknowledged
// writes included.
if arguments.first == "migrate" {
    var flags = Array(arguments.dropFirst())
    var from: String?
    if let i = flags.firstIndex(where: { $0 == "--from-etcd-data-dir" || $0 == "-from-etcd-data-dir" }), i + 1 < flags.count {
        from = flags[i + 1]
        flags.removeSubrange(i...(i + 1))
    } else if let i = flags.firstIndex(where: { $0.hasPrefix("--from-etcd-data-dir=") || $0.hasPrefix("-from-etcd-data-dir=") }) {
        from = String(flags[i].split(separator: "=", maxSplits: 1)[1])
        flags.remove(at: i)
    }
    guard let from else {
        writeError("usage: swetcd migrate --from-etcd-data-dir DIR [--data-dir NEW] [--name NAME --initial-cluster NAME=URL,... --initial-cluster-token TOKEN --initial-advertise-peer-urls URL]")
        exit(2)
    }
    do {
        let target = try newMemberConfig(flags)
        let report = try EtcdMigration.migrate(from: from, config: target)
        print("migrated \(from) into \(target.dataDir): backend at index \(report.backendIndex), "
              + "\(report.replayed) writes from etcd's WAL to replay up to index \(report.commitIndex)")
        if report.v2Writes > 0 {
            writeError("swetcd: warning: etcd's WAL holds \(report.v2Writes) v2 store writes; the v2 store is not migrated")
        }
        exit(0)
    } catch {
        writeError("swetcd: \(error)")
        exit(1)
    }
}

var config: ServerConfig
do {
    config = try ServerConfig.parse(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment)
} catch ServerConfig.ParseError.helpRequested {
    print(ServerConfig.usage)
    exit(0)
} catch ServerConfig.ParseError.versionRequested {
    // As etcd prints its version, with the etcd API level clients see.
    print("""
        swetcd Version: \(String(cString: swetcd_build_version()))
        Git SHA: \(String(cString: swetcd_build_git_sha()))
        etcd API Version: \(ServerVersion.server)
        OS/Arch: linux/\(releaseArchitecture)
        """)
    exit(0)
} catch {
    writeError("swetcd: \(error)\n\n\(ServerConfig.usage)")
    exit(2)
}

let level = config.logLevel
let logOutputs: [Int32]
do {
    logOutputs = try JSONLogHandler.open(outputs: config.logOutputs)
} catch {
    writeError("swetcd: \(error)\n")
    exit(1)
}
LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level, outputs: logOutputs) }
let logger = Logger(label: "swetcd")
signal(SIGPIPE, SIG_IGN)
// A parent may have started us with signals blocked (the mask is inherited);
// SIGINT and SIGTERM must reach the loop for a clean shutdown.
var shutdownSignals = sigset_t()
sigemptyset(&shutdownSignals)
sigaddset(&shutdownSignals, SIGINT)
sigaddset(&shutdownSignals, SIGTERM)
pthread_sigmask(SIG_UNBLOCK, &shutdownSignals, nil)
// Every client connection is a descriptor: take all the kernel allows this
// process (the hard limit), as Go's runtime does for etcd at start.
var openFiles = rlimit()
if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &openFiles) == 0 && openFiles.rlim_cur < openFiles.rlim_max {
    openFiles.rlim_cur = openFiles.rlim_max
    _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &openFiles)
}

// mimalloc replaces malloc for the whole process when it is linked ahead of
// libc; say so, or warn that the build fell back to glibc's.
let probe = malloc(64)
if mi_is_in_heap_region(probe) {
    let v = mi_version()
    logger.info("allocator", metadata: ["mimalloc": "\(v / 100).\(v / 10 % 10).\(v % 10)"])
} else {
    logger.warning("mimalloc is linked but does not serve malloc; running on the C library's allocator")
}
free(probe)
// mimalloc hands freed pages back to the kernel 25 ms after they empty;
// a watch stream's send buffer empties after every revision and fills
// again at the next, so at tens of writes a second every burst faulted its
// pages in afresh (97,594 minor faults against 5,951 in a go-watch run of
// 10,000 watchers). A second keeps them while writes keep coming; the
// MIMALLOC_DECOMMIT_DELAY environment variable still decides if set.
if getenv("MIMALLOC_DECOMMIT_DELAY") == nil { mi_option_set(mi_option_decommit_delay, 1000) }

/// etcd's --auto-tls and --peer-auto-tls: a self-signed certificate kept in
/// `<data-dir>/fixtures/<kind>`, made once.
func selfSignedCertificate(_ kind: String, dataDir: String, hosts: [String]) -> (String, String) {
    let dir = dataDir + "/fixtures/" + kind
    let (cert, key) = (dir + "/cert.pem", dir + "/key.pem")
    for d in [dataDir, dataDir + "/fixtures", dir] { mkdir(d, 0o700) }
    if access(cert, R_OK) != 0 || access(key, R_OK) != 0 {
        do {
            try TLSServerContext.writeSelfSigned(certFile: cert, keyFile: key, ips: Array(Set(hosts)))
            logger.info("made a self-signed certificate", metadata: ["cert-file": "\(cert)"])
        } catch {
            logger.critical("cannot make a certificate for --\(kind == "peer" ? "peer-" : "")auto-tls", metadata: ["error": "\(error)"])
            exit(1)
        }
    }
    return (cert, key)
}
if config.peerTLS && config.peerCertFile == nil && config.peerAutoTLS {
    // Peers present it; none is verified (etcd's auto TLS checks nothing).
    let (cert, key) = selfSignedCertificate("peer", dataDir: config.dataDir, hosts: config.listenPeerURLs.compactMap(ServerConfig.ClientURL.init).map(\.host))
    (config.peerCertFile, config.peerKeyFile) = (cert, key)
    config.peerTrustedCAFile = nil
    config.peerClientCertAuth = false
}

let loop = EventLoop()
let server: EtcdServer
do {
    server = try EtcdServer(config: config, loop: loop, logger: logger)
} catch ServerError.corrupt(let why) {
    // etcd's words for it: the initial corruption check found a mismatch.
    logger.critical("discovery failed", metadata: ["error": "\(why)"])
    exit(1)
} catch ServerError.alreadyBootstrapped(let id) {
    // etcd's words for it.
    logger.critical("discovery failed", metadata: ["error": "\(ServerError.alreadyBootstrapped(id))"])
    exit(1)
} catch {
    logger.critical("cannot open the store", metadata: ["error": "\(error)"])
    exit(1)
}
var transportLimits = TransportLimits()
transportLimits.maxReceiveMessageBytes = config.maxRequestBytes + 512 * 1024
transportLimits.maxHTTP1BodyBytes = config.maxRequestBytes + 512 * 1024
transportLimits.tlsHandshakeSeconds = config.tlsHandshakeTimeout
transportLimits.maxConcurrentStreams = config.maxConcurrentStreams
if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &openFiles) == 0 && openFiles.rlim_cur < rlim_t(Int.max) {
    transportLimits.maxConnections = TransportLimits.connections(forOpenFiles: Int(openFiles.rlim_cur))
}
let transport = TransportServer(loop: loop, router: server, http1: server, limits: transportLimits,
                                ioLoops: config.ioThreads, logger: logger)
var tls: TLSServerContext?
var certFile = config.certFile, keyFile = config.keyFile
if config.listenClientURLs.contains(where: \.isTLS) && certFile == nil && config.autoTLS {
    (certFile, keyFile) = selfSignedCertificate("client", dataDir: config.dataDir, hosts: config.listenClientURLs.filter(\.isTLS).map(\.host))
}
/// A TLS server context, or the process exits saying what could not be set up.
func serverTLS(_ what: String, _ settings: TLSServerContext.Settings) -> TLSServerContext {
    do {
        return try TLSServerContext(settings)
    } catch {
        logger.critical("cannot set up \(what)", metadata: ["error": "\(error)"])
        exit(1)
    }
}
if (config.listenClientURLs + config.listenMetricsURLs).contains(where: \.isTLS), let cert = certFile, let key = keyFile {
    tls = serverTLS("TLS", .init(certFile: cert, keyFile: key, trustedCAFile: config.trustedCAFile, clientCertAuth: config.clientCertAuth))
}
var boundURLs: [ServerConfig.ClientURL] = []
for url in config.listenClientURLs {
    do {
        let port = try transport.listen(host: url.host, port: url.port, tls: url.isTLS ? tls : nil)
        var bound = url
        bound.port = port
        boundURLs.append(bound)
        logger.info(url.isTLS ? "serving client traffic securely" : "serving client traffic insecurely",
                    metadata: ["address": "\(url.host):\(port)"])
    } catch {
        logger.critical("cannot listen for clients", metadata: ["url": "\(url)", "error": "\(error)"])
        exit(1)
    }
}
// /metrics and /health on their own listeners (kubeadm's probes use one).
let metricsEndpoint = server.metricsEndpoint
let metricsServer = TransportServer(loop: loop, router: metricsEndpoint, http1: metricsEndpoint, limits: transportLimits, logger: logger)
for url in config.listenMetricsURLs {
    do {
        guard !url.isTLS || tls != nil else { throw ServerError.unsupported("an https metrics URL without --cert-file and --key-file") }
        let port = try metricsServer.listen(host: url.host, port: url.port, tls: url.isTLS ? tls : nil)
        logger.info("serving metrics", metadata: ["address": "\(url.host):\(port)", "tls": "\(url.isTLS)"])
    } catch {
        logger.critical("cannot listen for metrics", metadata: ["url": "\(url)", "error": "\(error)"])
        exit(1)
    }
}
// A port 0 in a listen URL was a free port: members list the one bound.
server.listenedClientURLs = boundURLs
// Peers' Raft streams (a member alone on the default peer URL listens for
// none, so many can run on one machine).
var peerServer: TransportServer?
if server.listensForPeers {
    let peers = TransportServer(loop: loop, router: server.peerRouter, http1: server, limits: transportLimits, logger: logger)
    var peerTLS: TLSServerContext?
    if config.listenPeerURLs.contains(where: { $0.hasPrefix("https://") }), let cert = config.peerCertFile, let key = config.peerKeyFile {
        peerTLS = serverTLS("peer TLS", .init(certFile: cert, keyFile: key, trustedCAFile: config.peerTrustedCAFile,
                                              clientCertAuth: config.peerClientCertAuth))
    }
    for url in config.listenPeerURLs.compactMap(ServerConfig.ClientURL.init) {
        do {
            let port = try peers.listen(host: url.host, port: url.port, tls: url.isTLS ? peerTLS : nil)
            logger.info(url.isTLS ? "serving peer traffic securely" : "serving peer traffic insecurely",
                        metadata: ["address": "\(url.host):\(port)"])
        } catch {
            logger.critical("cannot listen for peers", metadata: ["url": "\(url)", "error": "\(error)"])
            exit(1)
        }
    }
    peerServer = peers
}
// Removed from the cluster (it said so): the process ends, as etcd's does.
server.onRemoved = { loop.stop() }
for sig in [SIGINT, SIGTERM] {
    loop.onSignal(sig) {
        logger.info("received a signal, shutting down", metadata: ["signal": "\(sig)"])
        loop.stop()
    }
}
// Listening: a unit of Type=notify may go on (etcd tells systemd once it
// serves clients).
if notifySystemd("READY=1", environment: environment) { logger.info("told systemd the server is ready") }
loop.run()
transport.closeAll()
metricsServer.closeAll()
peerServer?.closeAll()
server.shutdown()
logger.info("stopped")
