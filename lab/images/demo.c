/*
 * swarmgate lab demo backend: behaves like ehazlett/docker-demo for what the seed shows.
 *
 *   GET /ping -> 200 {"instance": <hostname>, "version": "0.1", "metadata": <$METADATA>,
 *                     "request_id": <x-request-id request header>}
 *   GET /     -> 200 small HTML page
 *   GET /ws   -> a websocket echo (RFC 6455): with `Upgrade: websocket`, `Connection: upgrade`,
 *                `Sec-WebSocket-Version: 13` and a valid `Sec-WebSocket-Key`, 101 with its
 *                `Sec-WebSocket-Accept`; then every data frame comes back unmasked with the same
 *                opcode and FIN bit, a ping gets its pong, a close frame gets a close frame back
 *                and ends the connection. Without `Upgrade`: 426; a bad key or version: 400.
 *   other     -> 404
 *
 * Listens on $PORT (default 8080). One forked child per connection (so slow clients never block
 * others); HTTP/1.1 keep-alive is honoured because nginx upstream keepalive may reuse connections.
 * SIGTERM: stop accepting, let in-flight children finish, exit 0.
 * Built with `gcc -static -O2` by lab/images.py; no libraries needed in the image.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

static volatile sig_atomic_t stopping = 0;
static char hostname_buf[256];

static void on_term(int sig) { (void)sig; stopping = 1; }

static void on_chld(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    errno = saved;
}

/* JSON-escape src into dst (bounded); control characters become \u00XX. */
static void json_escape(const char *src, char *dst, size_t cap) {
    size_t o = 0;
    for (; *src && o + 7 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '"' || c == '\\') { dst[o++] = '\\'; dst[o++] = (char)c; }
        else if (c < 0x20) { o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c); }
        else dst[o++] = (char)c;
    }
    dst[o] = '\0';
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

/* Case-insensitive header lookup in the raw header block; copies the trimmed value. */
static void header_value(const char *headers, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *line = headers; line && *line; ) {
        const char *eol = strstr(line, "\r\n");
        if (!eol) eol = line + strlen(line);
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            size_t len = (size_t)(eol - v);
            while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
            if (len >= cap) len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return;
        }
        line = *eol ? eol + 2 : eol;
    }
}

/* -- websocket (RFC 6455): SHA-1 and base64 for the handshake, then an echo of frames ---------- */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    size_t done = 0;
    for (; len - done >= 64; done += 64) sha1_block(h, msg + done);
    unsigned char tail[128] = {0};
    size_t rest = len - done;
    memcpy(tail, msg + done, rest);
    tail[rest] = 0x80;
    size_t total = rest + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) sha1_block(h, tail + off);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const unsigned char *src, size_t len, char *dst) {
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (i + 1 < len ? (uint32_t)src[i + 1] << 8 : 0)
                     | (i + 2 < len ? src[i + 2] : 0);
        dst[o++] = B64[v >> 18 & 63];
        dst[o++] = B64[v >> 12 & 63];
        dst[o++] = i + 1 < len ? B64[v >> 6 & 63] : '=';
        dst[o++] = i + 2 < len ? B64[v & 63] : '=';
    }
    dst[o] = '\0';
}

static int b64_value(char c) {
    const char *at = c ? strchr(B64, c) : NULL;
    return at ? (int)(at - B64) : -1;
}

/* A Sec-WebSocket-Key is base64 of exactly 16 bytes: 22 symbols, the last with 4 unused zero bits, "==". */
static int valid_ws_key(const char *key) {
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=') return 0;
    for (int i = 0; i < 22; i++)
        if (b64_value(key[i]) < 0) return 0;
    return (b64_value(key[21]) & 0x0f) == 0;
}

/* Is `token` one of the comma-separated, case-insensitive tokens of a header value? */
static int has_token(const char *list, const char *token) {
    size_t tl = strlen(token);
    for (const char *p = list; *p; ) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *end = p;
        while (*end && *end != ',') end++;
        const char *last = end;
        while (last > p && (last[-1] == ' ' || last[-1] == '\t')) last--;
        if ((size_t)(last - p) == tl && strncasecmp(p, token, tl) == 0) return 1;
        p = end;
    }
    return 0;
}

/* Bytes already read past the handshake come first, then the socket. */
struct ws_reader { int fd; const char *pending; size_t have, off; };

static int ws_read(struct ws_reader *r, unsigned char *dst, size_t n) {
    while (n > 0) {
        if (r->off < r->have) {
            size_t k = r->have - r->off < n ? r->have - r->off : n;
            memcpy(dst, r->pending + r->off, k);
            r->off += k; dst += k; n -= k;
            continue;
        }
        ssize_t got = read(r->fd, dst, n);
        if (got < 0 && errno == EINTR && !stopping) continue;
        if (got <= 0) return -1; /* closed, 30 s idle, or stopping */
        dst += got; n -= (size_t)got;
    }
    return 0;
}

/* One unmasked server frame: `first` is the FIN bit and opcode. */
static int ws_send(int fd, unsigned char first, const unsigned char *payload, uint64_t len) {
    unsigned char head[10];
    size_t hn = 2;
    head[0] = first;
    if (len < 126) head[1] = (unsigned char)len;
    else if (len <= 0xffff) { head[1] = 126; head[2] = (unsigned char)(len >> 8); head[3] = (unsigned char)len; hn = 4; }
    else { head[1] = 127; for (int i = 0; i < 8; i++) head[2 + i] = (unsigned char)(len >> (56 - 8 * i)); hn = 10; }
    if (write_all(fd, (const char *)head, hn) < 0) return -1;
    return write_all(fd, (const char *)payload, (size_t)len);
}

static void ws_close(int fd, unsigned code) {
    unsigned char status[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    ws_send(fd, 0x88, status, 2);
}

#define WS_MAX 65536

/* After the 101: echo data frames, answer pings, close on a close frame (or a protocol error). */
static void ws_echo(int fd, const char *pending, size_t have) {
    static unsigned char payload[WS_MAX];
    struct ws_reader r = {.fd = fd, .pending = pending, .have = have, .off = 0};
    for (;;) {
        unsigned char h[2], ext[8], mask[4];
        if (ws_read(&r, h, 2) < 0) { if (stopping) ws_close(fd, 1001); return; }
        unsigned fin = h[0] & 0x80, rsv = h[0] & 0x70, op = h[0] & 0x0f;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            if (ws_read(&r, ext, 2) < 0) return;
            len = (uint64_t)ext[0] << 8 | ext[1];
        } else if (len == 127) {
            if (ws_read(&r, ext, 8) < 0) return;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | ext[i];
        }
        int known = op <= 2 || (op >= 8 && op <= 10);
        /* Clients must mask; control frames are short and never fragmented. */
        if (rsv || !(h[1] & 0x80) || !known || (op >= 8 && (!fin || len > 125))) { ws_close(fd, 1002); return; }
        if (len > WS_MAX) { ws_close(fd, 1009); return; }
        if (ws_read(&r, mask, 4) < 0 || ws_read(&r, payload, (size_t)len) < 0) return;
        for (uint64_t i = 0; i < len; i++) payload[i] ^= mask[i & 3];
        if (op == 8) { ws_send(fd, 0x88, payload, len >= 2 ? 2 : 0); return; }
        if (op == 9) { if (ws_send(fd, 0x8A, payload, len) < 0) return; continue; }
        if (op == 10) continue;
        if (ws_send(fd, (unsigned char)(fin | op), payload, len) < 0) return; /* data: echoed as is */
    }
}

/* GET /ws: the handshake, then the echo. Always ends the connection. */
static void websocket(int fd, const char *upgrade, const char *conn, const char *key, const char *version,
                      const char *pending, size_t have) {
    char head[512];
    int hn;
    if (!has_token(upgrade, "websocket") || !has_token(conn, "upgrade")) {
        const char *body = "426 websocket upgrade required\n";
        hn = snprintf(head, sizeof head, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
                      "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(body), body);
    } else if (strcmp(version, "13") != 0 || !valid_ws_key(key)) {
        const char *body = "400 bad websocket handshake\n";
        hn = snprintf(head, sizeof head, "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n"
                      "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(body), body);
    } else {
        static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        unsigned char joined[24 + sizeof guid], digest[20];
        char accept[32];
        memcpy(joined, key, 24);
        memcpy(joined + 24, guid, sizeof guid - 1);
        sha1(joined, 24 + sizeof guid - 1, digest);
        base64(digest, sizeof digest, accept);
        hn = snprintf(head, sizeof head, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
        if (write_all(fd, head, (size_t)hn) == 0) ws_echo(fd, pending, have);
        return;
    }
    write_all(fd, head, (size_t)hn);
}

/* Serves requests on one connection until close; returns when the peer or we close. */
static void serve(int fd) {
    char buf[BUF];
    size_t have = 0;
    struct timeval tv = {.tv_sec = 30, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have >= sizeof buf - 1) return; /* header too large */
            ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
            if (r < 0 && errno == EINTR) {
                if (stopping && have == 0) return; /* idle keep-alive connection at shutdown */
                continue;
            }
            if (r <= 0) return;
            have += (size_t)r;
        }
        *end = '\0';
        size_t head_len = (size_t)(end - buf) + 4;

        char method[16] = "", path[2048] = "", version[16] = "";
        if (sscanf(buf, "%15s %2047s %15s", method, path, version) < 2) return;
        const char *headers = strstr(buf, "\r\n");
        headers = headers ? headers + 2 : "";

        char conn[128], reqid[512], clen_s[32], upgrade[64], wskey[64], wsver[16];
        header_value(headers, "connection", conn, sizeof conn);
        header_value(headers, "x-request-id", reqid, sizeof reqid);
        header_value(headers, "content-length", clen_s, sizeof clen_s);
        header_value(headers, "upgrade", upgrade, sizeof upgrade);
        header_value(headers, "sec-websocket-key", wskey, sizeof wskey);
        header_value(headers, "sec-websocket-version", wsver, sizeof wsver);
        int keep = strcmp(version, "HTTP/1.1") == 0 ? strcasecmp(conn, "close") != 0
                                                     : strcasecmp(conn, "keep-alive") == 0;

        /* Discard a request body if any, so the next keep-alive request parses cleanly. */
        long clen = clen_s[0] ? atol(clen_s) : 0;
        size_t rest = have - head_len;
        long skip = clen - (long)rest;
        if (skip < 0) { memmove(buf, buf + head_len + clen, (size_t)(-skip)); have = (size_t)(-skip); }
        else {
            have = 0;
            while (skip > 0) {
                ssize_t r = read(fd, buf, skip < (long)sizeof buf ? (size_t)skip : sizeof buf);
                if (r <= 0) return;
                skip -= r;
            }
        }

        char *q = strchr(path, '?');
        if (q) *q = '\0';
        if (strcmp(path, "/ws") == 0 && strcmp(method, "GET") == 0) {
            websocket(fd, upgrade, conn, wskey, wsver, buf, have); /* bytes past the request: frames */
            return;
        }
        int head_only = strcmp(method, "HEAD") == 0;
        char body[4096], esc_host[600], esc_meta[1100], esc_id[1100];
        const char *ctype = "text/plain; charset=utf-8";
        int status = 200;
        const char *meta = getenv("METADATA");
        json_escape(hostname_buf, esc_host, sizeof esc_host);
        json_escape(meta ? meta : "", esc_meta, sizeof esc_meta);
        json_escape(reqid, esc_id, sizeof esc_id);
        if (strcmp(path, "/ping") == 0) {
            ctype = "application/json";
            snprintf(body, sizeof body,
                     "{\"instance\":\"%s\",\"version\":\"0.1\",\"metadata\":\"%s\",\"request_id\":\"%s\"}",
                     esc_host, esc_meta, esc_id);
        } else if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
            ctype = "text/html; charset=utf-8";
            snprintf(body, sizeof body,
                     "<!doctype html><html><head><title>demo</title></head><body>"
                     "<h1>demo</h1><p>instance %s, version 0.1</p></body></html>\n", esc_host);
        } else {
            status = 404;
            snprintf(body, sizeof body, "404 page not found\n");
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char head[1024];
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                          "Set-Cookie: session=%lld%09ld; Path=/; Max-Age=86400\r\n"
                          "Connection: %s\r\n\r\n",
                          status, status == 200 ? "OK" : "Not Found", ctype, strlen(body),
                          (long long)ts.tv_sec, ts.tv_nsec, keep ? "keep-alive" : "close");
        if (write_all(fd, head, (size_t)hn) < 0) return;
        if (!head_only && write_all(fd, body, strlen(body)) < 0) return;
        if (!keep || stopping) return;
    }
}

int main(void) {
    const char *port_s = getenv("PORT");
    int port = port_s ? atoi(port_s) : 8080;
    gethostname(hostname_buf, sizeof hostname_buf - 1);

    struct sigaction sa = {0};
    sa.sa_handler = on_term; /* no SA_RESTART: accept() must return EINTR on SIGTERM */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET6, SOCK_STREAM, 0);
    int family6 = ls >= 0;
    if (!family6) ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0) { perror("socket"); return 1; }
    int one = 1, zero = 0;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family6) {
        setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero); /* also serve IPv4 */
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                  .sin6_addr = in6addr_any};
        rc = bind(ls, (struct sockaddr *)&a6, sizeof a6);
    } else {
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY)};
        rc = bind(ls, (struct sockaddr *)&a4, sizeof a4);
    }
    if (rc < 0 || listen(ls, 512) < 0) { perror("bind/listen"); return 1; }
    fprintf(stderr, "demo: listening on :%d as %s\n", port, hostname_buf);

    while (!stopping) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) continue; /* EINTR on SIGTERM/SIGCHLD: loop re-checks `stopping` */
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t pid = fork();
        if (pid == 0) {
            close(ls); /* the child keeps on_term: it finishes its request, then closes */
            serve(c);
            shutdown(c, SHUT_WR);
            _exit(0);
        }
        close(c);
    }
    close(ls);
    kill(0, SIGTERM); /* tell connection children (same process group) to finish up */
    /* Graceful: let in-flight requests finish (bounded by the children's 30 s read timeout). */
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    while (wait(NULL) > 0 || errno == EINTR) {}
    fprintf(stderr, "demo: stopped\n");
    return 0;
}
