/*
 * watch-sink: the lightest watch load this machine can make, so that a
 * server's fan-out, not the client, is what runs out of CPU.
 *
 * Opens CONNS plaintext HTTP/2 connections, each with one Watch stream of
 * WATCHERS watchers on PREFIX, and one more connection that puts RATE
 * keys per second under PREFIX (each put a new stream; replies ignored).
 * Watch responses are counted by their gRPC length prefixes, and their
 * events by the top-level tags; nothing else is parsed. Flow-control windows are opened to the maximum and topped
 * up; SETTINGS and PING are acknowledged. After SECONDS (plus one second of
 * warm-up, not counted) it prints one JSON line: responses and bytes
 * received per second, and puts sent.
 *
 *   watch_sink HOST PORT CONNS WATCHERS PREFIX RATE SECONDS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    unsigned char buf[1 << 16];
    size_t have;
    /* The gRPC message being skipped on the watch stream. */
    unsigned char prefix[5];
    int prefixHave;
    uint64_t bodyLeft;
    uint64_t sinceUpdate;
    /* The top-level field being read in that message: its tag, a length
       or varint value (shift > 0 while one is under way), bytes to skip. */
    int phase; /* 0 tag, 1 varint value, 2 length, 3 skipping */
    uint64_t value, skip;
    int shift, field;
} Conn;

static uint64_t responses, eventCount, bytes;
static int counting;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void writeAll(int fd, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd pfd = {fd, POLLOUT, 0};
                poll(&pfd, 1, 1000);
                continue;
            }
            perror("write");
            exit(1);
        }
        b += w;
        n -= (size_t)w;
    }
}

static size_t frameHeader(unsigned char *o, uint32_t len, int type, int flags, uint32_t stream) {
    o[0] = len >> 16; o[1] = len >> 8; o[2] = len;
    o[3] = type; o[4] = flags;
    o[5] = stream >> 24; o[6] = stream >> 16; o[7] = stream >> 8; o[8] = stream;
    return 9;
}

static size_t varint(unsigned char *o, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { o[n++] = (v & 0x7f) | 0x80; v >>= 7; }
    o[n++] = v;
    return n;
}

/* A literal header field without indexing, no Huffman coding. */
static size_t header(unsigned char *o, const char *name, const char *value) {
    size_t n = 0, nl = strlen(name), vl = strlen(value);
    o[n++] = 0;
    n += varint(o + n, nl); /* lengths here stay under 127 */
    memcpy(o + n, name, nl); n += nl;
    n += varint(o + n, vl);
    memcpy(o + n, value, vl); n += vl;
    return n;
}

static void sendHeaders(int fd, uint32_t stream, const char *path, const char *authority) {
    unsigned char block[512], frame[600];
    size_t n = 0;
    n += header(block + n, ":method", "POST");
    n += header(block + n, ":scheme", "http");
    n += header(block + n, ":path", path);
    n += header(block + n, ":authority", authority);
    n += header(block + n, "content-type", "application/grpc");
    n += header(block + n, "te", "trailers");
    size_t h = frameHeader(frame, n, 1, 0x4 /* END_HEADERS */, stream);
    memcpy(frame + h, block, n);
    writeAll(fd, frame, h + n);
}

static void sendData(int fd, uint32_t stream, const unsigned char *p, size_t n, int endStream) {
    unsigned char h[9];
    frameHeader(h, n, 0, endStream ? 1 : 0, stream);
    writeAll(fd, h, 9);
    writeAll(fd, p, n);
}

/* A gRPC message: uncompressed flag, 4-byte length, the message. */
static size_t grpcFrame(unsigned char *o, const unsigned char *m, size_t n) {
    o[0] = 0; o[1] = n >> 24; o[2] = n >> 16; o[3] = n >> 8; o[4] = n;
    memcpy(o + 5, m, n);
    return n + 5;
}

/* Protobuf field 'field' of wire type 2. */
static size_t bytesField(unsigned char *o, int field, const void *p, size_t n) {
    size_t k = varint(o, (uint64_t)field << 3 | 2);
    k += varint(o + k, n);
    memcpy(o + k, p, n);
    return k + n;
}

static int connectTo(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Preface, SETTINGS (initial window 2^31-1), and the connection's
       window opened to the maximum. */
    writeAll(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    unsigned char f[9 + 6 + 9 + 4];
    size_t n = frameHeader(f, 6, 4, 0, 0);
    unsigned char s[6] = {0, 4, 0x7f, 0xff, 0xff, 0xff};
    memcpy(f + n, s, 6); n += 6;
    n += frameHeader(f + n, 4, 8, 0, 0);
    uint32_t inc = 0x7fffffff - 65535;
    f[n++] = inc >> 24; f[n++] = inc >> 16; f[n++] = inc >> 8; f[n++] = inc;
    writeAll(fd, f, n);
    return fd;
}

static void windowUpdate(int fd, uint32_t stream, uint32_t inc) {
    unsigned char f[13];
    frameHeader(f, 4, 8, 0, stream);
    f[9] = inc >> 24; f[10] = inc >> 16; f[11] = inc >> 8; f[12] = inc;
    writeAll(fd, f, 13);
}

/* Counts the watch stream's gRPC messages in a DATA payload, and the
   events in them (top-level field 11 of WatchResponse), reading only tags
   and lengths. */
static void countMessages(Conn *c, const unsigned char *p, size_t n) {
    while (n > 0) {
        if (c->bodyLeft == 0) {
            c->prefix[c->prefixHave++] = *p++; n--;
            if (c->prefixHave == 5) {
                c->bodyLeft = (uint64_t)c->prefix[1] << 24 | c->prefix[2] << 16 | c->prefix[3] << 8 | c->prefix[4];
                c->prefixHave = 0;
                c->phase = 0; c->value = 0; c->shift = 0;
                if (counting) responses++;
            }
            continue;
        }
        if (c->phase == 3) {
            uint64_t k = n < c->skip ? n : c->skip;
            if (k > c->bodyLeft) k = c->bodyLeft;
            c->skip -= k; c->bodyLeft -= k; p += k; n -= k;
            if (c->skip == 0) c->phase = 0;
            continue;
        }
        unsigned char b = *p++; n--; c->bodyLeft--;
        c->value |= (uint64_t)(b & 0x7f) << c->shift;
        c->shift += 7;
        if (b & 0x80) continue;
        uint64_t v = c->value;
        c->value = 0; c->shift = 0;
        if (c->phase == 0) {
            c->field = (int)(v >> 3);
            int wire = v & 7;
            if (c->field == 11 && counting) eventCount++;
            c->phase = wire == 2 ? 2 : wire == 0 ? 1 : 0;
            if (wire == 1) { c->phase = 3; c->skip = 8; }
            if (wire == 5) { c->phase = 3; c->skip = 4; }
        } else if (c->phase == 2) {
            c->skip = v;
            c->phase = v > 0 ? 3 : 0;
        } else {
            c->phase = 0;
        }
        if (c->bodyLeft == 0) c->phase = 0;
    }
}

/* Handles the complete frames in c->buf. */
static void frames(Conn *c) {
    size_t at = 0;
    while (c->have - at >= 9) {
        unsigned char *h = c->buf + at;
        uint32_t len = h[0] << 16 | h[1] << 8 | h[2];
        if (c->have - at < 9 + len) break;
        int type = h[3], flags = h[4];
        uint32_t stream = (h[5] & 0x7f) << 24 | h[6] << 16 | h[7] << 8 | h[8];
        unsigned char *p = h + 9;
        if (type == 0) {
            size_t pad = (flags & 0x8) ? p[0] + 1 : 0;
            if (stream == 1) countMessages(c, p + (pad ? 1 : 0), len - pad);
            if (counting) bytes += len;
            c->sinceUpdate += len;
            if (c->sinceUpdate >= (64u << 20)) {
                windowUpdate(c->fd, 0, c->sinceUpdate);
                windowUpdate(c->fd, stream, c->sinceUpdate);
                c->sinceUpdate = 0;
            }
        } else if (type == 4 && !(flags & 1)) {
            unsigned char ack[9];
            frameHeader(ack, 0, 4, 1, 0);
            writeAll(c->fd, ack, 9);
        } else if (type == 6 && !(flags & 1) && len == 8) {
            unsigned char pong[17];
            frameHeader(pong, 8, 6, 1, 0);
            memcpy(pong + 9, p, 8);
            writeAll(c->fd, pong, 17);
        } else if (type == 7) {
            fprintf(stderr, "watch_sink: GOAWAY\n");
            exit(1);
        }
        at += 9 + len;
    }
    memmove(c->buf, c->buf + at, c->have - at);
    c->have -= at;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: watch_sink HOST PORT CONNS WATCHERS PREFIX RATE SECONDS\n");
        return 2;
    }
    const char *host = argv[1], *prefix = argv[5];
    int port = atoi(argv[2]), conns = atoi(argv[3]), watchers = atoi(argv[4]);
    double rate = atof(argv[6]), seconds = atof(argv[7]);
    char authority[64];
    snprintf(authority, sizeof authority, "%s:%d", host, port);

    /* WatchRequest{create_request: {key: prefix, range_end: prefix + 1}} */
    size_t pl = strlen(prefix);
    unsigned char end[256], create[600], request[700], framed[710];
    memcpy(end, prefix, pl);
    end[pl - 1]++;
    size_t cn = bytesField(create, 1, prefix, pl);
    cn += bytesField(create + cn, 2, end, pl);
    size_t rn = bytesField(request, 1, create, cn);
    size_t fn = grpcFrame(framed, request, rn);

    int ep = epoll_create1(0);
    Conn *all = calloc(conns + 1, sizeof(Conn));
    for (int i = 0; i <= conns; i++) {
        all[i].fd = connectTo(host, port);
        if (i < conns) {
            sendHeaders(all[i].fd, 1, "/etcdserverpb.Watch/Watch", authority);
            for (int w = 0; w < watchers; w++) sendData(all[i].fd, 1, framed, fn, 0);
        }
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, all[i].fd, &e);
    }
    Conn *writer = &all[conns];
    uint32_t nextStream = 1;
    uint64_t puts = 0, putsCounted = 0;
    char value[256];
    memset(value, 'v', sizeof value);
    double start = now(), warm = start + 1, stop = warm + seconds, nextPut = start + 0.5;
    struct epoll_event events[64];
    while (now() < stop) {
        double t = now();
        if (!counting && t >= warm) counting = 1;
        if (rate > 0 && t >= nextPut) {
            /* PutRequest{key, value}, on a new stream, reply ignored. */
            char key[300];
            int kl = snprintf(key, sizeof key, "%sk%llu", prefix, (unsigned long long)(puts % 100));
            unsigned char put[600], pf[610];
            size_t n = bytesField(put, 1, key, kl);
            n += bytesField(put + n, 2, value, sizeof value);
            size_t m = grpcFrame(pf, put, n);
            sendHeaders(writer->fd, nextStream, "/etcdserverpb.KV/Put", authority);
            sendData(writer->fd, nextStream, pf, m, 1);
            nextStream += 2;
            puts++;
            if (counting) putsCounted++;
            nextPut += 1 / rate;
        }
        int waitMs = rate > 0 ? (int)((nextPut - now()) * 1000) : 100;
        if (waitMs < 0) waitMs = 0;
        int n = epoll_wait(ep, events, 64, waitMs);
        for (int i = 0; i < n; i++) {
            Conn *c = &all[events[i].data.u32];
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                fprintf(stderr, "watch_sink: connection %u closed\n", events[i].data.u32);
                return 1;
            }
            c->have += (size_t)r;
            frames(c);
        }
    }
    printf("{\"seconds\": %.3f, \"eventsPerSecond\": %.0f, \"responsesPerSecond\": %.0f, \"bytesPerSecond\": %.0f, "
           "\"putsPerSecond\": %.1f, \"watchers\": %d}\n", seconds, eventCount / seconds, responses / seconds, bytes / seconds,
           putsCounted / seconds, conns * watchers);
    return 0;
}
