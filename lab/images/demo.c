/*
 * swarmgate lab demo backend: behaves like ehazlett/docker-demo for what the seed shows.
 *
 *   GET /ping -> 200 {"instance": <hostname>, "version": "0.1", "metadata": <$METADATA>,
 *                     "request_id": <x-request-id request header>}
 *   GET /     -> 200 small HTML page
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

        char conn[64], reqid[512], clen_s[32];
        header_value(headers, "connection", conn, sizeof conn);
        header_value(headers, "x-request-id", reqid, sizeof reqid);
        header_value(headers, "content-length", clen_s, sizeof clen_s);
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
