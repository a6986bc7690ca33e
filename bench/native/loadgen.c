/* The native load generator: the same stdin/stdout JSON-lines protocol as
 * `python -m bench.loadgen`, without being the latency floor.
 *
 * One epoll loop (level-triggered), nonblocking sockets, no threads, libc only.
 * Python (bench/loadgen.py) builds every connection's HTTP upgrade request
 * (JWT included), the expected Sec-WebSocket-Accept, and the pre-masked
 * subscribe frame, writes them to a spec file and execs this program with its
 * path (the PID stays the same). This program reads and unlinks the file.
 *
 * Spec file (text header lines, then length-prefixed records):
 *   pgcast-loadgen 1
 *   protocol <pgcast|raw|sio>
 *   connections <N>
 *   sample_every <S>
 *   concurrency <C>
 *   ready_timeout <seconds>
 *   trace_index <I>
 *   conn <index> <host> <port> <sampled> <len channel> <len request> <len hello> <len accept>\n
 *   <channel bytes><request bytes><hello bytes><accept bytes>      (N times)
 *
 * Per event frame: "bseq": (integer) and, on sampled connections, "bts":
 * (epoch seconds) by byte search; seq marked in a per-connection bitmap
 * (a repeat is a duplicate); latency = CLOCK_REALTIME taken once per read()
 * minus bts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 200000
#define MAX_FAILED 20
#define SCRATCH_SIZE (256 * 1024)
#define MAX_HEAD (64 * 1024)
#define MAX_SEQ (1LL << 30)
#define STDIN_TAG UINT64_MAX

enum { P_PGCAST, P_RAW, P_SIO };
enum { S_NEW, S_CONNECTING, S_UPGRADING, S_OPEN, S_DEAD };

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Buf;

typedef struct {
    int fd, state, index, port;
    int sampled, done, subscribed, close_code; /* close_code < 0: none */
    uint32_t events;                           /* epoll mask registered */
    char *host, *channel, *request, *hello, *accept;
    uint32_t channel_len, request_len, hello_len, accept_len;
    Buf in, out;
    size_t out_off;
    uint8_t *seen;
    size_t seen_len;
    long long unique, dups;
} Conn;

typedef struct {
    double now, sent;
    long long seq;
} TracePoint;

/* ---- configuration and counters --------------------------------------- */
static int protocol = P_PGCAST, sample_every = 10, concurrency = 200, trace_index = -1;
static double ready_timeout = 60.0;
static Conn *conns;
static int nconns;
static long long deliveries, g_subscribed, g_closed, resyncs;
static int settled, slots_used, next_open, ready_emitted, epfd;
static char *failed[MAX_FAILED];
static int nfailed;
static double *lat;
static size_t nlat, lat_cap;
static TracePoint *trace;
static size_t ntrace, trace_cap;
static uint8_t scratch[SCRATCH_SIZE];
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static const char *message_prefix = "{\"type\":\"message\"";
static size_t message_prefix_len = 17;

/* ---- small helpers ----------------------------------------------------- */
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("native loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory (%zu bytes)", n);
    return q;
}

static void buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

static void buf_add(Buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_str(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_fmt(Buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal of arbitrary bytes (invalid UTF-8 passes through; the
 * reasons we quote are ASCII in practice). */
static void buf_json_str(Buf *b, const char *s, size_t n) {
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            buf_add(b, e, 2);
        } else if (ch < 0x20) {
            buf_fmt(b, "\\u%04x", ch);
        } else {
            buf_add(b, &ch, 1);
        }
    }
    buf_add(b, "\"", 1);
}

static uint64_t rng(void) { /* xorshift64*: masks and sampling, not secrets */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static double realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static int starts_with(const uint8_t *p, size_t n, const char *prefix) {
    size_t k = strlen(prefix);
    return n >= k && memcmp(p, prefix, k) == 0;
}

static void emit(Buf *b) {
    buf_add(b, "\n", 1);
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(1, b->data + off, b->len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            exit(1); /* the orchestrator is gone */
        }
        off += (size_t)w;
    }
    free(b->data);
}

/* ---- spec file --------------------------------------------------------- */
static char *read_file(const char *path, size_t *len) {
    FILE *fh = fopen(path, "rb");
    if (!fh) die("cannot open %s: %s", path, strerror(errno));
    Buf b = {0};
    size_t n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, fh)) > 0) buf_add(&b, chunk, n);
    fclose(fh);
    buf_add(&b, "", 1);
    *len = b.len - 1;
    return (char *)b.data;
}

static char *next_line(char **cursor, char *end) {
    char *line = *cursor, *nl = memchr(line, '\n', (size_t)(end - line));
    if (!nl) die("truncated spec file");
    *nl = '\0';
    *cursor = nl + 1;
    return line;
}

static char *take(char **cursor, char *end, uint32_t n) {
    if ((size_t)(end - *cursor) < n) die("truncated spec record");
    char *p = *cursor;
    *cursor += n;
    return p;
}

static void load_spec(const char *path) {
    size_t len;
    char *data = read_file(path, &len), *cur = data, *end = data + len;
    if (strcmp(next_line(&cur, end), "pgcast-loadgen 1") != 0) die("not a spec file: %s", path);
    char proto[16] = "";
    if (sscanf(next_line(&cur, end), "protocol %15s", proto) != 1) die("bad protocol line");
    if (strcmp(proto, "pgcast") == 0) protocol = P_PGCAST;
    else if (strcmp(proto, "raw") == 0) protocol = P_RAW;
    else if (strcmp(proto, "sio") == 0) protocol = P_SIO;
    else die("unknown protocol %s", proto);
    if (protocol == P_SIO) {
        message_prefix = "42[\"message\",";
        message_prefix_len = strlen(message_prefix);
    }
    if (sscanf(next_line(&cur, end), "connections %d", &nconns) != 1 || nconns < 0)
        die("bad connections line");
    if (sscanf(next_line(&cur, end), "sample_every %d", &sample_every) != 1) die("bad sample_every");
    if (sscanf(next_line(&cur, end), "concurrency %d", &concurrency) != 1 || concurrency < 1)
        die("bad concurrency");
    if (sscanf(next_line(&cur, end), "ready_timeout %lf", &ready_timeout) != 1)
        die("bad ready_timeout");
    if (sscanf(next_line(&cur, end), "trace_index %d", &trace_index) != 1) die("bad trace_index");
    conns = calloc((size_t)nconns + 1, sizeof(Conn));
    if (!conns) die("out of memory");
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        char host[256];
        if (sscanf(next_line(&cur, end), "conn %d %255s %d %d %u %u %u %u", &c->index, host,
                   &c->port, &c->sampled, &c->channel_len, &c->request_len, &c->hello_len,
                   &c->accept_len) != 8)
            die("bad conn line %d", i);
        c->host = strdup(host);
        c->channel = take(&cur, end, c->channel_len);
        c->request = take(&cur, end, c->request_len);
        c->hello = take(&cur, end, c->hello_len);
        c->accept = take(&cur, end, c->accept_len);
        c->fd = -1;
        c->close_code = -1;
    }
    /* `data` stays allocated: the records point into it. */
}

/* ---- bookkeeping -------------------------------------------------------- */
static void open_more(void);

static void settle(Conn *c) {
    if (c->done) return;
    c->done = 1;
    settled++;
    slots_used--;
    open_more();
}

static void on_failed(Conn *c, const char *reason, size_t n) {
    if (nfailed < MAX_FAILED) {
        char *s = xrealloc(NULL, n + 1);
        memcpy(s, reason, n);
        s[n] = '\0';
        failed[nfailed++] = s;
    }
    settle(c);
}

static void failf(Conn *c, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    on_failed(c, tmp, n < 0 ? 0 : ((size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1));
}

static void mark_subscribed(Conn *c) {
    c->subscribed = 1;
    g_subscribed++;
    settle(c);
}

/* The connection is gone (EOF, error, or aborted by us): like connection_lost. */
static void lost(Conn *c) {
    if (c->state == S_DEAD) return;
    if (c->close_code < 0) c->close_code = 1006;
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = S_DEAD;
    free(c->in.data);
    free(c->out.data);
    c->in = (Buf){0};
    c->out = (Buf){0};
    g_closed++;
    if (!c->done) failf(c, "closed during setup (%d)", c->close_code);
}

static void set_events(Conn *c, uint32_t events) {
    if (c->events == events || c->fd < 0) return;
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - conns)};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void flush(Conn *c) {
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            lost(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        set_events(c, EPOLLIN | EPOLLRDHUP | EPOLLET);
    } else {
        set_events(c, EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET);
    }
}

static void queue(Conn *c, const void *p, size_t n) {
    if (c->state == S_DEAD || c->fd < 0) return;
    buf_add(&c->out, p, n);
    flush(c);
}

/* One final, masked client frame (RFC 6455 §5.3). */
static void send_frame(Conn *c, int opcode, const uint8_t *payload, size_t n) {
    uint8_t head[14];
    size_t h = 0;
    head[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0x80 | 127;
        for (int k = 7; k >= 0; k--) head[h++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    uint32_t key = (uint32_t)rng();
    uint8_t *mask = head + h;
    memcpy(mask, &key, 4);
    h += 4;
    uint8_t *frame = xrealloc(NULL, h + n);
    memcpy(frame, head, h);
    for (size_t i = 0; i < n; i++) frame[h + i] = payload[i] ^ mask[i & 3];
    queue(c, frame, h + n);
    free(frame);
}

static void record(Conn *c, long long seq, double sent, double now) {
    if (nlat == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = xrealloc(lat, lat_cap * sizeof *lat);
    }
    lat[nlat++] = now - sent;
    if (c->index == trace_index) {
        if (ntrace == trace_cap) {
            trace_cap = trace_cap ? trace_cap * 2 : 4096;
            trace = xrealloc(trace, trace_cap * sizeof *trace);
        }
        trace[ntrace++] = (TracePoint){now, sent, seq};
    }
}

/* The number after `key` in p[0..n): 1 and *out when found. */
static int find_int(const uint8_t *p, size_t n, const char *key, long long *out) {
    size_t k = strlen(key);
    const uint8_t *at = memmem(p, n, key, k), *end = p + n;
    if (!at) return 0;
    at += k;
    while (at < end && (*at == ' ' || *at == '\t')) at++;
    int neg = at < end && *at == '-';
    if (neg) at++;
    if (at >= end || *at < '0' || *at > '9') return 0;
    long long v = 0;
    while (at < end && *at >= '0' && *at <= '9' && v < (1LL << 58)) v = v * 10 + (*at++ - '0');
    *out = neg ? -v : v;
    return 1;
}

static int find_double(const uint8_t *p, size_t n, const char *key, double *out) {
    size_t k = strlen(key);
    const uint8_t *at = memmem(p, n, key, k), *end = p + n;
    if (!at) return 0;
    at += k;
    while (at < end && (*at == ' ' || *at == '\t')) at++;
    char tmp[64];
    size_t m = 0;
    while (at < end && m < sizeof tmp - 1 &&
           ((*at >= '0' && *at <= '9') || *at == '.' || *at == '-' || *at == '+' || *at == 'e' ||
            *at == 'E'))
        tmp[m++] = (char)*at++;
    tmp[m] = '\0';
    char *stop;
    *out = strtod(tmp, &stop);
    return m > 0 && stop != tmp;
}

static void book(Conn *c, const uint8_t *p, size_t n, double now) {
    long long seq;
    if (!find_int(p, n, "\"bseq\":", &seq) || seq < 0 || seq >= MAX_SEQ) return;
    size_t byte = (size_t)(seq >> 3);
    uint8_t bit = (uint8_t)(1u << (seq & 7));
    if (byte >= c->seen_len) {
        size_t len = c->seen_len ? c->seen_len : 64;
        while (len <= byte) len = len * 2 > byte + 256 ? len * 2 : byte + 256;
        c->seen = xrealloc(c->seen, len);
        memset(c->seen + c->seen_len, 0, len - c->seen_len);
        c->seen_len = len;
    }
    if (c->seen[byte] & bit) {
        c->dups++;
    } else {
        c->seen[byte] |= bit;
        c->unique++;
    }
    double sent;
    if (c->sampled && find_double(p, n, "\"bts\":", &sent)) record(c, seq, sent, now);
}

/* ---- protocols ---------------------------------------------------------- */
static void on_open(Conn *c) {
    if (protocol == P_RAW) mark_subscribed(c);
    else if (protocol == P_PGCAST) queue(c, c->hello, c->hello_len);
    /* sio: the server speaks first (the Engine.IO open packet). */
}

static void on_text(Conn *c, const uint8_t *p, size_t n) {
    size_t shown = n < 200 ? n : 200;
    if (protocol == P_SIO) {
        if (n == 1 && p[0] == '2') {
            send_frame(c, 0x1, (const uint8_t *)"3", 1); /* Engine.IO ping -> pong */
        } else if (starts_with(p, n, "0{")) {
            send_frame(c, 0x1, (const uint8_t *)"40", 2);
        } else if (starts_with(p, n, "40")) {
            queue(c, c->hello, c->hello_len);
        } else if (starts_with(p, n, "431")) {
            if (memmem(p, n, "true", 4)) mark_subscribed(c);
            else failf(c, "subscribe refused: %.*s", (int)shown, (const char *)p);
        } else if (starts_with(p, n, "44")) {
            failf(c, "connect refused: %.*s", (int)shown, (const char *)p);
        }
        return;
    }
    if (starts_with(p, n, "{\"type\":\"subscribed\"")) {
        if (!c->subscribed) mark_subscribed(c);
        else resyncs++; /* recovered:false under a live subscription */
    } else if (starts_with(p, n, "{\"type\":\"error\"")) {
        failf(c, "error frame: %.*s", (int)shown, (const char *)p);
    }
}

static void on_frame(Conn *c, int opcode, const uint8_t *p, size_t n) {
    if (opcode == 0x1 || opcode == 0x2) on_text(c, p, n);
    else if (opcode == 0x8) c->close_code = n >= 2 ? (p[0] << 8) | p[1] : 1005;
    else if (opcode == 0x9) send_frame(c, 0xA, p, n);
}

/* Check the server's 101: status line and Sec-WebSocket-Accept. */
static int check_upgrade(Conn *c, const uint8_t *head, size_t n) {
    const uint8_t *eol = memmem(head, n, "\r\n", 2);
    size_t status_len = eol ? (size_t)(eol - head) : n;
    const uint8_t *sp = memchr(head, ' ', status_len);
    if (!sp || status_len - (size_t)(sp - head) < 4 || memcmp(sp + 1, "101", 3) != 0 ||
        (status_len - (size_t)(sp - head) > 4 && sp[4] != ' ')) {
        failf(c, "%.*s", (int)(status_len < 300 ? status_len : 300), (const char *)head);
        return 0;
    }
    const uint8_t *line = eol ? eol + 2 : head + n, *end = head + n;
    while (line < end) {
        const uint8_t *next = memmem(line, (size_t)(end - line), "\r\n", 2);
        size_t len = next ? (size_t)(next - line) : (size_t)(end - line);
        const char *name = "sec-websocket-accept:";
        size_t k = strlen(name);
        if (len >= k && strncasecmp((const char *)line, name, k) == 0) {
            const uint8_t *v = line + k, *ve = line + len;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            if ((size_t)(ve - v) == c->accept_len && memcmp(v, c->accept, c->accept_len) == 0)
                return 1;
            break;
        }
        line = next ? next + 2 : end;
    }
    failf(c, "bad Sec-WebSocket-Accept");
    return 0;
}

/* Walk the complete frames in data[0..len); returns the bytes used. */
static size_t consume(Conn *c, uint8_t *data, size_t len, double now) {
    size_t pos = 0;
    if (c->state == S_UPGRADING) {
        uint8_t *end = memmem(data, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > MAX_HEAD) {
                failf(c, "upgrade response over %d bytes", MAX_HEAD);
                lost(c);
            }
            return 0;
        }
        if (!check_upgrade(c, data, (size_t)(end - data))) {
            lost(c); /* abort: connection_lost follows, closed counted */
            return len;
        }
        pos = (size_t)(end - data) + 4;
        c->state = S_OPEN;
        on_open(c);
    }
    while (c->state == S_OPEN && len - pos >= 2) {
        uint8_t b0 = data[pos], b1 = data[pos + 1];
        uint64_t plen = b1 & 0x7F;
        size_t head = 2;
        if (plen == 126) {
            if (len - pos < 4) break;
            plen = ((uint64_t)data[pos + 2] << 8) | data[pos + 3];
            head = 4;
        } else if (plen == 127) {
            if (len - pos < 10) break;
            plen = 0;
            for (int k = 0; k < 8; k++) plen = (plen << 8) | data[pos + 2 + k];
            head = 10;
        }
        int masked = (b1 & 0x80) != 0; /* servers must not mask; tolerate it */
        if (masked) head += 4;
        if (len - pos < head || plen > len - pos - head) break;
        uint8_t *payload = data + pos + head;
        size_t n = (size_t)plen;
        if (masked) {
            const uint8_t *mask = payload - 4;
            for (size_t i = 0; i < n; i++) payload[i] ^= mask[i & 3];
        }
        if (b0 == 0x81 && n >= message_prefix_len &&
            memcmp(payload, message_prefix, message_prefix_len) == 0) {
            book(c, payload, n, now);
            deliveries++;
        } else {
            on_frame(c, b0 & 0x0F, payload, n);
        }
        pos += head + n;
    }
    return c->state == S_DEAD ? len : pos;
}

static void on_data(Conn *c, size_t n) {
    double now = realtime(); /* once per read, like time.time() once per data_received */
    if (c->in.len == 0) {
        size_t used = consume(c, scratch, n, now);
        if (c->state != S_DEAD && used < n) buf_add(&c->in, scratch + used, n - used);
    } else {
        buf_add(&c->in, scratch, n);
        size_t used = consume(c, c->in.data, c->in.len, now);
        if (c->state != S_DEAD) {
            memmove(c->in.data, c->in.data + used, c->in.len - used);
            c->in.len -= used;
        }
    }
}

/* Edge-triggered: one read that comes back short has emptied the socket (TCP),
 * and data arriving later raises a new edge; only a full read reads again.
 * `hangup` (the peer's FIN or an error was reported): read on to EOF, no edge follows. */
static void on_readable(Conn *c, int hangup) {
    ssize_t r;
    do {
        r = read(c->fd, scratch, sizeof scratch);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r <= 0) {
            lost(c);
            return;
        }
        on_data(c, (size_t)r);
    } while (c->state != S_DEAD && (hangup || (size_t)r == sizeof scratch));
}

static void on_connected(Conn *c) {
    c->state = S_UPGRADING;
    queue(c, c->request, c->request_len);
}

static void on_writable(Conn *c) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->state = S_DEAD; /* never connected: no connection_lost, not counted closed */
            failf(c, "connect: [Errno %d] %s", err, strerror(err));
            return;
        }
        on_connected(c);
        return;
    }
    flush(c);
}

static int resolve(const char *host, int port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) == 1) return 0;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) return -1;
    sa->sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

static void open_conn(Conn *c) {
    struct sockaddr_in sa;
    slots_used++;
    if (resolve(c->host, c->port, &sa) != 0) {
        c->state = S_DEAD;
        failf(c, "connect: cannot resolve %s", c->host);
        return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->state = S_DEAD;
        failf(c, "connect: [Errno %d] %s", errno, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio does */
    c->fd = fd;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        c->fd = -1;
        c->state = S_DEAD;
        failf(c, "connect: [Errno %d] %s", err, strerror(err));
        return;
    }
    c->events = (rc == 0 ? 0 : EPOLLOUT) | EPOLLIN | EPOLLRDHUP | EPOLLET;
    struct epoll_event ev = {.events = c->events, .data.u64 = (uint64_t)(c - conns)};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc == 0) on_connected(c);
    else c->state = S_CONNECTING;
}

static void open_more(void) {
    static int opening;
    if (opening) return; /* a failure inside open_conn settles and re-enters */
    opening = 1;
    while (!ready_emitted && next_open < nconns && slots_used < concurrency)
        open_conn(&conns[next_open++]);
    opening = 0;
}

/* ---- commands ------------------------------------------------------------ */
static void stats_fields(Buf *b) {
    buf_fmt(b, "\"deliveries\":%lld,\"subscribed\":%lld,\"closed\":%lld,\"resyncs\":%lld,",
            deliveries, g_subscribed, g_closed, resyncs);
    buf_fmt(b, "\"cpu\":%.6f,\"time\":%.6f", self_cpu(), realtime());
}

static void failed_field(Buf *b) {
    buf_str(b, "\"failed\":[");
    for (int i = 0; i < nfailed; i++) {
        if (i) buf_add(b, ",", 1);
        buf_json_str(b, failed[i], strlen(failed[i]));
    }
    buf_str(b, "]");
}

static void emit_stats(void) {
    Buf b = {0};
    buf_str(&b, "{");
    stats_fields(&b);
    buf_str(&b, "}");
    emit(&b);
}

/* Expected counts per channel: an open-addressing table filled from the report command. */
typedef struct {
    char *key;
    size_t len;
    long long value;
} Slot;
static Slot *table;
static size_t table_size;

static uint64_t hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static Slot *lookup(const char *key, size_t len) {
    size_t i = (size_t)hash(key, len) & (table_size - 1);
    while (table[i].key && !(table[i].len == len && memcmp(table[i].key, key, len) == 0))
        i = (i + 1) & (table_size - 1);
    return &table[i];
}

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

static void put_utf8(Buf *b, unsigned cp) {
    uint8_t u[4];
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        buf_add(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xC0 | (cp >> 6));
        u[1] = (uint8_t)(0x80 | (cp & 0x3F));
        buf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xE0 | (cp >> 12));
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cp & 0x3F));
        buf_add(b, u, 3);
    } else {
        u[0] = (uint8_t)(0xF0 | (cp >> 18));
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (uint8_t)(0x80 | (cp & 0x3F));
        buf_add(b, u, 4);
    }
}

/* A JSON string at p (which points at the opening quote) into out; returns past it. */
static const char *parse_string(const char *p, Buf *out) {
    out->len = 0;
    if (*p != '"') return NULL;
    p++;
    while (*p && *p != '"') {
        if (*p != '\\') {
            buf_add(out, p++, 1);
            continue;
        }
        p++;
        char e = *p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            buf_add(out, &map[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            unsigned cp = 0;
            for (int k = 0; k < 4; k++, p++) {
                char h = *p;
                cp = cp * 16 + (unsigned)(h >= '0' && h <= '9'   ? h - '0'
                                          : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                          : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                                 : 0);
            }
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[5]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            put_utf8(out, cp);
        } else {
            return NULL;
        }
    }
    return *p == '"' ? p + 1 : NULL;
}

static void parse_expected(const char *line) {
    size_t entries = 0;
    for (const char *q = line; *q; q++) entries += *q == ':';
    table_size = 16;
    while (table_size < 2 * entries + 2) table_size *= 2;
    table = calloc(table_size, sizeof(Slot));
    if (!table) die("out of memory");
    const char *p = strstr(line, "\"expected\"");
    if (!p) return;
    p = skip_ws(p + 10);
    if (*p != ':') return;
    p = skip_ws(p + 1);
    if (*p != '{') return;
    p = skip_ws(p + 1);
    Buf key = {0};
    while (*p == '"') {
        p = parse_string(p, &key);
        if (!p) break;
        p = skip_ws(p);
        if (*p != ':') break;
        char *end;
        long long v = strtoll(skip_ws(p + 1), &end, 10);
        Slot *s = lookup((const char *)key.data, key.len);
        if (!s->key) {
            s->key = xrealloc(NULL, key.len ? key.len : 1);
            memcpy(s->key, key.data, key.len);
            s->len = key.len;
        }
        s->value = v;
        p = skip_ws(end);
        if (*p != ',') break;
        p = skip_ws(p + 1);
    }
    free(key.data);
}

static void emit_report(const char *line) {
    parse_expected(line);
    long long lost_total = 0, dups = 0;
    int codes[64][2], ncodes = 0;
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        if (!c->subscribed) continue;
        Slot *s = lookup(c->channel, c->channel_len);
        long long want = s->key ? s->value : 0;
        if (want > c->unique) lost_total += want - c->unique;
        dups += c->dups;
        if (c->close_code >= 0) {
            int k = 0;
            while (k < ncodes && codes[k][0] != c->close_code) k++;
            if (k == ncodes && ncodes < 64) codes[ncodes++][0] = c->close_code, codes[k][1] = 0;
            if (k < ncodes) codes[k][1]++;
        }
    }
    size_t keep = nlat;
    if (keep > MAX_SAMPLES) { /* a random sample: partial Fisher-Yates */
        for (size_t i = 0; i < MAX_SAMPLES; i++) {
            size_t j = i + (size_t)(rng() % (nlat - i));
            double t = lat[i];
            lat[i] = lat[j];
            lat[j] = t;
        }
        keep = MAX_SAMPLES;
    }
    Buf b = {0};
    buf_str(&b, "{");
    stats_fields(&b);
    buf_fmt(&b, ",\"lost\":%lld,\"duplicated\":%lld,\"close_codes\":{", lost_total, dups);
    for (int k = 0; k < ncodes; k++) buf_fmt(&b, "%s\"%d\":%d", k ? "," : "", codes[k][0], codes[k][1]);
    buf_str(&b, "},");
    failed_field(&b);
    buf_str(&b, ",\"latencies\":[");
    buf_reserve(&b, keep * 12 + 16);
    for (size_t i = 0; i < keep; i++) buf_fmt(&b, i ? ",%.6f" : "%.6f", lat[i]);
    buf_str(&b, "],\"trace\":[");
    for (size_t i = 0; i < ntrace; i++)
        buf_fmt(&b, "%s[%.17g,%.17g,%lld]", i ? "," : "", trace[i].now, trace[i].sent, trace[i].seq);
    buf_str(&b, "]}");
    emit(&b);
}

/* Returns 0 when the program should stop. */
static int on_command(const char *line) {
    const char *p = strstr(line, "\"cmd\"");
    if (!p) return 1;
    p = skip_ws(p + 5);
    if (*p != ':') return 1;
    p = skip_ws(p + 1);
    if (strncmp(p, "\"stats\"", 7) == 0) {
        emit_stats();
    } else if (strncmp(p, "\"window\"", 8) == 0) {
        nlat = 0;
        ntrace = 0;
        emit_stats();
    } else if (strncmp(p, "\"report\"", 8) == 0) {
        emit_report(line);
        return 0;
    }
    return 1;
}

static Buf stdin_buf;

static int on_stdin(void) {
    buf_reserve(&stdin_buf, 65536);
    ssize_t r = read(0, stdin_buf.data + stdin_buf.len, stdin_buf.cap - stdin_buf.len - 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (r <= 0) return 0; /* EOF: the orchestrator went away */
    stdin_buf.len += (size_t)r;
    for (;;) {
        uint8_t *nl = memchr(stdin_buf.data, '\n', stdin_buf.len);
        if (!nl) return 1;
        *nl = '\0';
        int go = on_command((const char *)stdin_buf.data);
        size_t used = (size_t)(nl - stdin_buf.data) + 1;
        memmove(stdin_buf.data, stdin_buf.data + used, stdin_buf.len - used);
        stdin_buf.len -= used;
        if (!go) return 0;
    }
}

static void emit_ready(double started) {
    Buf b = {0};
    buf_str(&b, "{\"event\":\"ready\",");
    stats_fields(&b);
    buf_str(&b, ",");
    failed_field(&b);
    buf_fmt(&b, ",\"secs\":%.6f}", monotonic() - started);
    emit(&b);
    ready_emitted = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) != 0) die("stdin: %s", strerror(errno));
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: loadgen SPEC_FILE");
    load_spec(argv[1]);
    unlink(argv[1]);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    rng_state ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(realtime() * 1e6);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll: %s", strerror(errno));
    double started = monotonic(), deadline = started + ready_timeout;
    open_more();
    struct epoll_event events[1024];
    for (;;) {
        if (!ready_emitted && (settled >= nconns || monotonic() >= deadline)) emit_ready(started);
        int timeout = -1;
        if (!ready_emitted) timeout = (int)((deadline - monotonic()) * 1000) + 1;
        int n = epoll_wait(epfd, events, 1024, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == STDIN_TAG) {
                if (!on_stdin()) return 0; /* exiting closes (aborts) every socket */
                continue;
            }
            Conn *c = &conns[events[i].data.u64];
            if (c->state == S_DEAD) continue;
            uint32_t ev = events[i].events;
            if (ev & EPOLLOUT) on_writable(c);
            if (c->state != S_DEAD && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
                if (c->state == S_CONNECTING) on_writable(c);
                else on_readable(c, (ev & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0);
            }
        }
    }
}
