#if canImport(Glibc)
import Glibc
#endif

/// The standard `process_*` series (client_golang's process collector),
/// read from /proc at scrape time.
public enum ProcessMetrics {
    public struct Reading: Equatable, Sendable {
        public var cpuSeconds: Double
        public var residentBytes: Double
        public var virtualBytes: Double
        public var virtualMaxBytes: Double
        public var openFDs: Double
        public var maxFDs: Double
        public var startTimeSeconds: Double
    }

    /// This process's figures now, or nil where /proc cannot be read.
    public static func read() -> Reading? {
        guard let stat = readFile("/proc/self/stat"), let systemStat = readFile("/proc/stat"),
              let fields = statFields(stat), let bootTime = bootTime(systemStat) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        return Reading(
            cpuSeconds: (fields.utime + fields.stime) / ticks,
            residentBytes: fields.rssPages * pageSize,
            virtualBytes: fields.vsize,
            virtualMaxBytes: limit(RLIMIT_AS),
            openFDs: Double(countOpenFDs()),
            maxFDs: limit(RLIMIT_NOFILE),
            startTimeSeconds: bootTime + fields.startTicks / ticks)
    }

    /// Writes the seven families (nothing when /proc cannot be read).
    public static func write(_ r: Reading, to out: inout Exposition) {
        out.single("process_cpu_seconds_total", .counter, help: "Total user and system CPU time spent in seconds.", r.cpuSeconds)
        out.single("process_max_fds", .gauge, help: "Maximum number of open file descriptors.", r.maxFDs)
        out.single("process_open_fds", .gauge, help: "Number of open file descriptors.", r.openFDs)
        out.single("process_resident_memory_bytes", .gauge, help: "Resident memory size in bytes.", r.residentBytes)
        out.single("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.", r.startTimeSeconds)
        out.single("process_virtual_memory_bytes", .gauge, help: "Virtual memory size in bytes.", r.virtualBytes)
        out.single("process_virtual_memory_max_bytes", .gauge, help: "Maximum amount of virtual memory available in bytes.", r.virtualMaxBytes)
    }

    struct StatFields: Equatable {
        var utime: Double, stime: Double, startTicks: Double, vsize: Double, rssPages: Double
    }

    /// The fields of /proc/PID/stat that matter here. The command name
    /// (field 2) is in parentheses and may hold spaces or parentheses, so
    /// fields are counted from the last ')'.
    static func statFields(_ text: String) -> StatFields? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        // After ")": field 3 (state) onwards.
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        func field(_ n: Int) -> Double? { n - 3 < rest.count ? Double(rest[n - 3]) : nil }
        guard let utime = field(14), let stime = field(15), let start = field(22),
              let vsize = field(23), let rss = field(24) else { return nil }
        return StatFields(utime: utime, stime: stime, startTicks: start, vsize: vsize, rssPages: rss)
    }

    /// The boot time (`btime`) in /proc/stat, in seconds since the epoch.
    static func bootTime(_ text: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: " "))
        }
        return nil
    }

    private static func limit(_ resource: __rlimit_resource) -> Double {
        var l = rlimit()
        guard getrlimit(__rlimit_resource_t(resource.rawValue), &l) == 0 else { return 0 }
        return Double(l.rlim_cur)  // RLIM_INFINITY reads as 2^64-1, as client_golang's does
    }

    private static func countOpenFDs() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            // Skip "." and ".."; descriptors are numbers.
            if withUnsafeBytes(of: entry.pointee.d_name, { $0[0] }) != UInt8(ascii: ".") { n += 1 }
        }
        return n - 1  // the directory's own descriptor
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

private extension Substring {
    func trimmingCharacters(in c: Character) -> Substring {
        var s = self
        while s.first == c { s = s.dropFirst() }
        while s.last == c { s = s.dropLast() }
        return s
    }
}
