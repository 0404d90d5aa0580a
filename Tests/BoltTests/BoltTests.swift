import Testing
@testable import Bolt
import TestSupport

@Suite struct BoltTests {
    /// A random bucket: keys in order, values from empty to several pages,
    /// nested buckets a few levels deep.
    /// Random bytes that values are cut from (drawing each byte of each
    /// value would dominate the test's time).
    static let pool: [UInt8] = {
        var rng = SeededRandom(seed: 1)
        return (0..<(1 << 18)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }()

    static func randomBucket(_ rng: inout SeededRandom, depth: Int, pageSize: Int) -> BoltWriter.Bucket {
        var keys = Set<[UInt8]>()
        let count = Int(rng.next() % (depth == 0 ? 400 : 60))
        while keys.count < count {
            keys.insert((0..<Int(1 + rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        var bucket = BoltWriter.Bucket()
        for key in keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if depth < 3 && rng.next() % 12 == 0 {
                bucket.entries.append((key, .bucket(randomBucket(&rng, depth: depth + 1, pageSize: pageSize))))
            } else {
                let size: Int
                switch rng.next() % 10 {
                case 0: size = 0
                case 1: size = Int(rng.next() % UInt64(4 * pageSize))
                default: size = Int(rng.next() % 300)
                }
                let start = Int(rng.next() % UInt64(pool.count - size))
                bucket.entries.append((key, .value(Array(pool[start..<(start + size)]))))
            }
        }
        return bucket
    }

    /// Reads a bucket back the way a caller would: entry by entry, nested
    /// buckets by their path.
    static func readBack(_ reader: BoltReader, _ path: [[UInt8]]) throws -> BoltWriter.Bucket {
        var entries: [(key: [UInt8], entry: BoltWriter.Bucket.Entry)] = []
        var nested: [[UInt8]] = []
        try reader.forEach(inBucket: path) { k, e in
            switch e {
            case .value(let v): entries.append((Array(k), .value(Array(v))))
            case .bucket:
                entries.append((Array(k), .bucket(BoltWriter.Bucket())))
                nested.append(Array(k))
            }
        }
        for name in nested {
            let i = entries.firstIndex { $0.key == name }!
            entries[i].entry = .bucket(try readBack(reader, path + [name]))
        }
        return BoltWriter.Bucket(entries)
    }

    @Test func whatIsWrittenReadsBack() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for round in 0..<8 {
            let pageSize = [1024, 4096, 4096, 16384][round % 4]
            let root = Self.randomBucket(&rng, depth: 0, pageSize: pageSize)
            var writer = BoltWriter(pageSize: pageSize)
            writer.fillPercent = [1.0, 0.5, 0.9][round % 3]
            let file = try writer.write(root, txid: 7)
            let reader = try BoltReader(bytes: file)
            #expect(reader.pageSize == pageSize && reader.txid == 7, "seed \(seed) round \(round)")
            #expect(Int(reader.pageCount) * pageSize == file.count, "seed \(seed) round \(round)")
            #expect(try Self.readBack(reader, []) == root, "seed \(seed) round \(round)")
        }
    }

    /// A bucket given as a stream (read twice, never held) makes the same
    /// file as the same bucket in memory, emitted in order with its size
    /// told first; a stream that changes between the passes is refused.
    @Test func streamedBucketsWriteTheSameFile() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for round in 0..<6 {
            let pageSize = [1024, 4096, 16384][round % 3]
            let values = (0..<Int(rng.next() % 3000)).map { i -> (key: [UInt8], entry: BoltWriter.Bucket.Entry) in
                let size = rng.next() % 8 == 0 ? Int(rng.next() % UInt64(3 * pageSize)) : Int(rng.next() % 200)
                let start = Int(rng.next() % UInt64(Self.pool.count - size))
                return ([UInt8(i >> 8), UInt8(i & 0xFF)] + [UInt8](repeating: 7, count: Int(rng.next() % 20)),
                        .value(Array(Self.pool[start..<(start + size)])))
            }
            let small = Self.randomBucket(&rng, depth: 1, pageSize: pageSize)
            let inMemory = BoltWriter.Bucket([(Array("a".utf8), .bucket(small)), (Array("key".utf8), .bucket(BoltWriter.Bucket(values)))])
            let streamed = BoltWriter.Bucket([(Array("a".utf8), .bucket(small)), (Array("key".utf8), .streamed(BoltWriter.Streamed { visit in
                for (k, e) in values {
                    guard case .value(let v) = e else { continue }
                    try k.withUnsafeBytes { k in try v.withUnsafeBytes { try visit(k, $0) } }
                }
            }))])
            let writer = BoltWriter(pageSize: pageSize)
            var planned = -1
            var out: [UInt8] = []
            let size = try writer.write(streamed, plan: { planned = $0 }) { page in
                #expect(planned >= 0 && page.count % pageSize == 0)
                out += page
            }
            #expect(out == (try writer.write(inMemory)) && size == out.count && planned == size, "seed \(seed) round \(round)")
            #expect(try Self.readBack(try BoltReader(bytes: out), [Array("key".utf8)]) == BoltWriter.Bucket(values))
        }
        var passes = 0
        let changing = BoltWriter.Bucket([(Array("key".utf8), .streamed(BoltWriter.Streamed { visit in
            passes += 1
            for i in 0..<(passes == 1 ? 500 : 501) {
                try [UInt8(i >> 8), UInt8(i & 0xFF)].withUnsafeBytes { k in try [UInt8](repeating: 1, count: 30).withUnsafeBytes { try visit(k, $0) } }
            }
        }))])
        #expect(throws: BoltWriter.Failure.self) { _ = try BoltWriter().write(changing) }
    }

    /// Truncated files and flipped bytes are refused or read as something,
    /// never a crash or a hang (each read is bounded by the file).
    @Test func damagedFilesAreRefusedNotCrashedOn() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var refused = 0
        for round in 0..<300 {
            let root = Self.randomBucket(&rng, depth: 1, pageSize: 1024)
            var file = try BoltWriter(pageSize: 1024).write(root)
            if round % 2 == 0 {
                file.removeLast(Int(rng.next() % UInt64(file.count)))
            } else {
                for _ in 0..<Int(1 + rng.next() % 8) {
                    file[Int(rng.next() % UInt64(file.count))] ^= UInt8(truncatingIfNeeded: 1 + rng.next() % 255)
                }
            }
            do {
                let reader = try BoltReader(bytes: file)
                _ = try Self.readBack(reader, [])
            } catch let error as BoltError {
                #expect(error.description.contains("invalid database") || error.description.hasPrefix("no bucket"), "seed \(seed): \(error)")
                refused += 1
            }
        }
        #expect(refused > 100, "seed \(seed): only \(refused) of 300 damaged files refused")
    }

    @Test func metaChecks() throws {
        let file = try BoltWriter(pageSize: 4096).write(BoltWriter.Bucket([(Array("key".utf8), .bucket(BoltWriter.Bucket()))]))
        #expect(try BoltReader(bytes: file).bucketNames() == [Array("key".utf8)])
        var badMagic = file
        badMagic[16] ^= 1
        badMagic[4096 + 16] ^= 1
        #expect(throws: BoltError("invalid database: not a bbolt file (bad magic)")) { try BoltReader(bytes: badMagic) }
        // One damaged meta: the other one is used.
        var oneBad = file
        oneBad[16 + 20] ^= 0xFF
        #expect(try BoltReader(bytes: oneBad).bucketNames() == [Array("key".utf8)])
        #expect(throws: BoltError.self) { try BoltReader(bytes: Array(file.prefix(100))) }
    }
}
