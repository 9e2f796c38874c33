/* drover-load: a small HTTP/1.1 client over plain sockets (see http.h).
 *
 * DESIGN
 * Sockets are non-blocking and every wait is a poll() on the socket and the stop descriptor with
 * what is left of the request's deadline, so no call can outlive rest.timeout_ms nor delay the end
 * of a run. Answers are read into one growing buffer per connection, bounded by MAX_HEAD + MAX_BODY;
 * Content-Length, chunked and close-delimited bodies are understood (the ingress sends
 * Content-Length, but a careful client should not depend on it). Chunked bodies are decoded in place.
 * There is no pipelining: bytes after an answer are unexpected and end the connection.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/mem.h"

#define MAX_HEAD (16 * 1024)
#define MAX_BODY (1024 * 1024)
#define MAX_BUF (MAX_HEAD + MAX_BODY + 64 * 1024) /* head, body and chunk framing */

/* ---- target ------------------------------------------------------------------------------------- */

int lt_http_target_parse(const char *url, lt_http_target_t *t, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        int family;
        const char *ip;
    } hosts[] = {{"127.0.0.1", AF_INET, "127.0.0.1"}, {"localhost", AF_INET, "127.0.0.1"}, {"[::1]", AF_INET6, "::1"}};
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "'%s' is not an http:// URL (https is not supported)", url);
        return DR_EINVAL;
    }
    const char *h = url + 7, *p = NULL;
    size_t hi = 0;
    for (; hi < sizeof(hosts) / sizeof(hosts[0]); hi++) {
        size_t l = strlen(hosts[hi].name);
        if (strncmp(h, hosts[hi].name, l) == 0 && (h[l] == ':' || h[l] == '/' || h[l] == '\0')) {
            p = h + l;
            break;
        }
    }
    if (p == NULL) {
        snprintf(err, errlen, "only http://127.0.0.1, localhost or [::1] are allowed");
        return DR_EINVAL;
    }
    long port = 80;
    if (*p == ':') {
        char *e;
        p++;
        if (*p < '0' || *p > '9') {
            snprintf(err, errlen, "'%s': the port is not a number", url);
            return DR_EINVAL;
        }
        port = strtol(p, &e, 10);
        if (port < 1 || port > 65535 || (*e != '\0' && *e != '/')) {
            snprintf(err, errlen, "'%s': the port must be 1..65535", url);
            return DR_EINVAL;
        }
        p = e;
    }
    size_t bl = strlen(p);
    while (bl > 0 && p[bl - 1] == '/')
        bl--;
    if (bl >= sizeof(t->base)) {
        snprintf(err, errlen, "'%s': the path is longer than %zu bytes", url, sizeof(t->base) - 1);
        return DR_EINVAL;
    }
    for (size_t i = 0; i < bl; i++) {
        if (p[i] <= ' ' || p[i] > '~' || p[i] == '?' || p[i] == '#') {
            snprintf(err, errlen, "'%s': the path may hold only visible ASCII without '?' or '#'", url);
            return DR_EINVAL;
        }
    }
    memcpy(t->base, p, bl);
    t->base[bl] = '\0';
    snprintf(t->host, sizeof(t->host), "%s:%ld", hosts[hi].name, port);
    if (hosts[hi].family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&t->addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, hosts[hi].ip, &a->sin_addr);
        t->addr_len = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t->addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, hosts[hi].ip, &a->sin6_addr);
        t->addr_len = sizeof(*a);
    }
    return 0;
}

int lt_http_path_segment(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '.' || ch == '_' || ch == '~';
        if (o + (plain ? 1 : 3) >= size)
            return -1;
        if (plain) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    if (o >= size)
        return -1;
    out[o] = '\0';
    return 0;
}

/* ---- socket waits --------------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the socket is ready for events. Returns 0 (also on POLLERR/POLLHUP: the following
 * read or write reports those), DR_ETIMEDOUT, DR_ECLOSED (stop) or DR_EIO. */
static int wait_fd(lt_http_conn_t *c, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return DR_ETIMEDOUT;
        /* A negative fd is ignored by poll(), so "no stop descriptor" needs no special case. */
        struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = c->_stop_fd, .events = POLLIN}};
        int n = poll(p, 2, left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return DR_EIO;
        if (p[1].revents != 0)
            return DR_ECLOSED;
        if (n > 0 && p[0].revents != 0)
            return 0;
    }
}

static int do_connect(lt_http_conn_t *c, int64_t deadline)
{
    const lt_http_target_t *t = c->_target;
    c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return DR_EIO;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->_served = 0;
    if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addr_len) != 0) {
        if (errno != EINPROGRESS) {
            lt_http_close(c);
            return DR_EUNAVAIL;
        }
        int rc = wait_fd(c, POLLOUT, deadline);
        if (rc != 0) {
            lt_http_close(c);
            return rc;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
            lt_http_close(c);
            return DR_EUNAVAIL;
        }
    }
    c->opened++;
    return 0;
}

/* True when a kept-alive socket can no longer carry a request: the server closed it (h2o ends idle
 * connections after its request timeout) or sent something unasked. */
static int went_stale(lt_http_conn_t *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

static int write_all(lt_http_conn_t *c, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c, POLLOUT, deadline);
            if (rc != 0)
                return rc;
        } else {
            return DR_EIO;
        }
    }
    return 0;
}

/* Appends what the socket has, waiting for at least one byte. Returns the byte count, 0 at the end
 * of the stream, or a negative DR_E* code. */
static ssize_t fill(lt_http_conn_t *c, int64_t deadline)
{
    if (c->_cap - c->_len < 4096) {
        if (c->_cap >= MAX_BUF)
            return DR_ETOOBIG;
        c->_cap = c->_cap ? c->_cap * 2 : 16384;
        if (c->_cap > MAX_BUF)
            c->_cap = MAX_BUF;
        c->_buf = dr_realloc(c->_buf, c->_cap);
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->_buf + c->_len, c->_cap - c->_len - 1, 0);
        if (r >= 0) {
            c->_len += (size_t)r;
            c->_buf[c->_len] = '\0';
            return r;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return DR_EIO;
        int rc = wait_fd(c, POLLIN, deadline);
        if (rc != 0)
            return rc;
    }
}

/* Reads until the buffer holds at least want bytes. */
static int fill_to(lt_http_conn_t *c, size_t want, int64_t deadline)
{
    while (c->_len < want) {
        ssize_t r = fill(c, deadline);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return DR_EIO;
    }
    return 0;
}

/* ---- answers -------------------------------------------------------------------------------------- */

typedef struct {
    int status;
    int64_t clen;       /* -1: no Content-Length */
    int chunked, close, replayed;
    int64_t retry_after;
} head_t;

static int header_is(const char *name, size_t nl, const char *want)
{
    return nl == strlen(want) && strncasecmp(name, want, nl) == 0;
}

/* 1 when the comma-separated value holds token (case-insensitive). */
static int has_token(const char *v, size_t vl, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= vl; i++)
        if (strncasecmp(v + i, token, tl) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
            (i + tl == vl || v[i + tl] == ',' || v[i + tl] == ' ' || v[i + tl] == ';'))
            return 1;
    return 0;
}

/* Parses a non-negative decimal of vl bytes into *out; -1 when it is anything else. */
static int parse_uint(const char *v, size_t vl, int64_t *out)
{
    if (vl == 0 || vl > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Parses the status line and the headers of s..s+len (the head without its final CRLF CRLF). */
static int parse_head(const char *s, size_t len, head_t *h)
{
    memset(h, 0, sizeof(*h));
    h->clen = -1;
    h->retry_after = -1;
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        return DR_EINVAL;
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9')
            return DR_EINVAL;
    h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (h->status < 100 || (len > 12 && s[12] != ' '))
        return DR_EINVAL;
    int keep_alive = 0;
    const char *end = s + len, *line = memchr(s, '\n', len);
    while (line != NULL && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol ? eol : end;
        size_t ll = (size_t)(stop - line);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line)
            return DR_EINVAL;
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1, *ve = line + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vl = (size_t)(ve - v);
        if (header_is(line, nl, "content-length")) {
            int64_t x;
            if (parse_uint(v, vl, &x) != 0 || (h->clen >= 0 && h->clen != x))
                return DR_EINVAL;
            h->clen = x;
        } else if (header_is(line, nl, "transfer-encoding")) {
            h->chunked = has_token(v, vl, "chunked");
        } else if (header_is(line, nl, "connection")) {
            h->close |= has_token(v, vl, "close");
            keep_alive |= has_token(v, vl, "keep-alive");
        } else if (header_is(line, nl, "retry-after")) {
            if (parse_uint(v, vl, &h->retry_after) != 0)
                h->retry_after = -1; /* an HTTP date: treated as absent */
        } else if (header_is(line, nl, "idempotent-replayed")) {
            h->replayed = vl == 4 && strncasecmp(v, "true", 4) == 0;
        }
        line = eol;
    }
    if (s[7] == '0' && !keep_alive)
        h->close = 1;
    if (h->clen > MAX_BODY)
        return DR_ETOOBIG;
    return 0;
}

/* Decodes a chunked body that starts at offset at, in place. On success the body is
 * [at, at + *body_len) and *end is the offset just after the last chunk's trailers. */
static int read_chunked(lt_http_conn_t *c, size_t at, int64_t deadline, size_t *body_len, size_t *end)
{
    size_t in = at, out = at;
    for (;;) {
        char *nl;
        while ((nl = memmem(c->_buf + in, c->_len - in, "\r\n", 2)) == NULL) {
            if (c->_len - in > 1024)
                return DR_EINVAL;
            int rc = fill_to(c, c->_len + 1, deadline);
            if (rc != 0)
                return rc;
        }
        size_t size = 0, digits = 0;
        for (const char *q = c->_buf + in; q < nl; q++, digits++) {
            int v = (*q >= '0' && *q <= '9') ? *q - '0'
                    : (*q >= 'a' && *q <= 'f') ? *q - 'a' + 10
                    : (*q >= 'A' && *q <= 'F') ? *q - 'A' + 10
                                               : -1;
            if (v < 0)
                break; /* chunk extensions (";...") are ignored */
            size = size * 16 + (size_t)v;
            if (size > MAX_BODY)
                return DR_ETOOBIG;
        }
        if (digits == 0)
            return DR_EINVAL;
        in = (size_t)(nl - c->_buf) + 2;
        if (size == 0)
            break;
        if (out - at + size > MAX_BODY)
            return DR_ETOOBIG;
        int rc = fill_to(c, in + size + 2, deadline);
        if (rc != 0)
            return rc;
        if (c->_buf[in + size] != '\r' || c->_buf[in + size + 1] != '\n')
            return DR_EINVAL;
        memmove(c->_buf + out, c->_buf + in, size);
        out += size;
        in += size + 2;
    }
    /* Trailers: lines up to an empty one. */
    for (;;) {
        char *nl;
        while ((nl = memmem(c->_buf + in, c->_len - in, "\r\n", 2)) == NULL) {
            if (c->_len - in > MAX_HEAD)
                return DR_ETOOBIG;
            int rc = fill_to(c, c->_len + 1, deadline);
            if (rc != 0)
                return rc;
        }
        size_t ll = (size_t)(nl - (c->_buf + in));
        in += ll + 2;
        if (ll == 0)
            break;
    }
    *body_len = out - at;
    *end = in;
    c->_buf[out] = '\0'; /* out < in: the byte is spent framing */
    return 0;
}

/* Reads one whole answer into resp; *keep is cleared when the socket cannot be used again. */
static int read_answer(lt_http_conn_t *c, int head_only, int64_t deadline, lt_http_resp_t *resp, int *keep)
{
    size_t start = 0;
    for (;;) {
        char *he;
        while ((he = memmem(c->_buf + start, c->_len - start, "\r\n\r\n", 4)) == NULL) {
            if (c->_len - start > MAX_HEAD)
                return DR_ETOOBIG;
            int rc = fill_to(c, c->_len + 1, deadline);
            if (rc != 0)
                return rc;
        }
        size_t head_len = (size_t)(he - (c->_buf + start));
        if (head_len > MAX_HEAD)
            return DR_ETOOBIG;
        head_t h;
        int rc = parse_head(c->_buf + start, head_len, &h);
        if (rc != 0)
            return rc;
        size_t at = (size_t)(he - c->_buf) + 4, end = at, blen = 0;
        if (h.status < 200) {
            start = at; /* an interim answer (100 Continue): the real one follows */
            continue;
        }
        if (head_only || h.status == 204 || h.status == 304) {
            blen = 0;
        } else if (h.chunked) {
            rc = read_chunked(c, at, deadline, &blen, &end);
        } else if (h.clen >= 0) {
            blen = (size_t)h.clen;
            end = at + blen;
            rc = fill_to(c, end, deadline);
        } else {
            /* Delimited by the end of the stream. */
            ssize_t r;
            while ((r = fill(c, deadline)) > 0)
                if (c->_len - at > MAX_BODY)
                    return DR_ETOOBIG;
            if (r < 0)
                return (int)r;
            blen = c->_len - at;
            end = c->_len;
            h.close = 1;
        }
        if (rc != 0)
            return rc;
        if (!h.chunked)
            c->_buf[at + blen] = '\0'; /* a byte past the body: fill() keeps one spare */
        resp->status = h.status;
        resp->retry_after_s = h.retry_after;
        resp->replayed = h.replayed;
        resp->body = c->_buf + at;
        resp->body_len = blen;
        /* Without pipelining nothing may follow the answer. */
        *keep = !h.close && end == c->_len;
        return 0;
    }
}

/* ---- requests ------------------------------------------------------------------------------------- */

void lt_http_init(lt_http_conn_t *c, const lt_http_target_t *target, int stop_fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->_target = target;
    c->_stop_fd = stop_fd;
}

int lt_http_request(lt_http_conn_t *c, const char *method, const char *path, const char *headers,
                    const char *body, size_t body_len, int64_t timeout_ms, lt_http_resp_t *resp)
{
    int64_t deadline = mono_ms() + timeout_ms;
    size_t cap = strlen(method) + strlen(c->_target->base) + strlen(path) + strlen(c->_target->host) +
                 strlen(headers) + body_len + 96;
    char *req = dr_malloc(cap);
    int n = snprintf(req, cap, "%s %s%s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %zu\r\n\r\n", method,
                     c->_target->base, path, c->_target->host, headers, body_len);
    size_t req_len = (size_t)n;
    if (body_len > 0) {
        memcpy(req + req_len, body, body_len);
        req_len += body_len;
    }
    int head_only = strcmp(method, "HEAD") == 0, rc = 0;
    memset(resp, 0, sizeof(*resp));
    if (c->_buf == NULL) {
        c->_cap = 16384;
        c->_buf = dr_malloc(c->_cap);
    }
    for (int attempt = 0;; attempt++) {
        int reused = 0;
        if (c->fd >= 0 && went_stale(c))
            lt_http_close(c);
        if (c->fd >= 0) {
            reused = c->_served > 0;
        } else if ((rc = do_connect(c, deadline)) != 0) {
            break;
        }
        c->_len = 0;
        int keep = 0;
        rc = write_all(c, req, req_len, deadline);
        if (rc == 0)
            rc = read_answer(c, head_only, deadline, resp, &keep);
        if (rc == 0) {
            c->_served++;
            if (!keep)
                lt_http_close(c);
            break;
        }
        size_t got = c->_len;
        lt_http_close(c);
        /* The server may close an idle kept-alive socket just as we write to it; then nothing of an
         * answer arrived and the request is sent once more on a new connection. */
        if (rc != DR_EIO || !reused || got != 0 || attempt > 0)
            break;
    }
    free(req);
    return rc;
}

void lt_http_close(lt_http_conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->_served = 0;
}

void lt_http_dispose(lt_http_conn_t *c)
{
    lt_http_close(c);
    free(c->_buf);
    c->_buf = NULL;
    c->_len = c->_cap = 0;
}
