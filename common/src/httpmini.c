/* Minimal HTTP/1.1 responder for operational endpoints (see dr/httpmini.h).
 *
 * DESIGN
 * One request per connection, answered from memory: the state of a connection is its fixed head
 * buffer, a deadline timer and, once answered, one write. Every connection ends closed: after its
 * response was written, when its head grows past DR_HTTPMINI_HEAD_MAX (431), when the deadline passes
 * first, on a read error, or when the server closes. A connection owns two handles (socket, timer) and
 * is freed in the close callback of the second, so nothing is freed while libuv still holds it.
 */
#define DR_MODULE "common/httpmini"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "dr/err.h"
#include "dr/httpmini.h"
#include "dr/log.h"
#include "dr/mem.h"

typedef struct conn {
    uv_tcp_t tcp; /* first: the handle pointer is the struct pointer */
    uv_timer_t timer;
    dr_httpmini_t *server;
    LIST_ENTRY(conn) link;
    char head[DR_HTTPMINI_HEAD_MAX];
    size_t len;
    int answered;     /* a response is being written: further input is ignored */
    int open_handles; /* handles not yet closed */
    int closing;
    uv_write_t wr;
    char *out; /* response being written */
} conn_t;

struct dr_httpmini {
    uv_tcp_t listener;
    dr_httpmini_handler *handler;
    void *data;
    LIST_HEAD(, conn) conns;
    int nconns;
    int closing;
    int listener_open;
    int port;
};

/* ---- connection life cycle ----------------------------------------------------------------------- */

static void maybe_free_server(dr_httpmini_t *s)
{
    if (s->closing && !s->listener_open && s->nconns == 0)
        free(s);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    dr_httpmini_t *s = c->server;
    LIST_REMOVE(c, link);
    s->nconns--;
    free(c->out);
    free(c);
    maybe_free_server(s);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    conn_close(t->data); /* a client that did not send a whole request head in time */
}

static void on_written(uv_write_t *wr, int status)
{
    (void)status;
    conn_close(wr->data);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Writes the response (taking over res->body) and closes the connection once it is out. */
static void respond(conn_t *c, dr_httpmini_res_t *res, int head_only)
{
    c->answered = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    size_t blen = res->body != NULL ? res->len : 0;
    char hdr[512];
    int n =
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                 "%sConnection: close\r\n\r\n",
                 res->status, reason(res->status), res->content_type ? res->content_type : "text/plain", blen,
                 res->status == 405 ? "Allow: GET, HEAD\r\n" : "");
    size_t total = (size_t)n + (head_only ? 0 : blen);
    c->out = dr_malloc(total);
    memcpy(c->out, hdr, (size_t)n);
    if (!head_only && blen > 0)
        memcpy(c->out + n, res->body, blen);
    free(res->body);
    res->body = NULL;
    uv_buf_t buf = uv_buf_init(c->out, (unsigned)total);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
        conn_close(c);
}

static void respond_text(conn_t *c, int status, const char *text)
{
    dr_httpmini_res_t res = {.status = status, .body = dr_strdup(text), .len = strlen(text)};
    respond(c, &res, 0);
}

/* ---- request parsing ----------------------------------------------------------------------------- */

/* 1 when the header block (after the request line) announces a body. */
static int has_body(const char *hdrs, const char *end)
{
    const char *line = hdrs;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0)
            return 1;
        if ((size_t)(eol - line) > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            const char *v = line + 15;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            while (v < eol && *v == '0')
                v++;
            if (v < eol && isdigit((unsigned char)*v))
                return 1;
        }
        line = eol + 1;
    }
    return 0;
}

/* Parses the complete head c->head[0..hlen) and answers it. */
static void handle(conn_t *c, size_t hlen)
{
    char *p = c->head, *end = c->head + hlen;
    char *eol = memchr(p, '\n', hlen);
    char *line_end = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
    /* Request line: METHOD SP /target SP HTTP/1.x */
    char *sp1 = memchr(p, ' ', (size_t)(line_end - p));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp1 - p > 16 || sp1[1] != '/' || line_end - sp2 != 9 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1')) {
        respond_text(c, 400, "malformed request line\n");
        return;
    }
    for (char *m = p; m < sp1; m++) {
        if (*m < 'A' || *m > 'Z') {
            respond_text(c, 400, "malformed method\n");
            return;
        }
    }
    for (char *t = sp1 + 1; t < sp2; t++) {
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) {
            respond_text(c, 400, "malformed request target\n");
            return;
        }
    }
    *sp1 = '\0';
    *sp2 = '\0';
    char *q = strchr(sp1 + 1, '?');
    if (q != NULL)
        *q = '\0';
    const char *method = p, *path = sp1 + 1;
    int is_head = strcmp(method, "HEAD") == 0;
    if (!is_head && strcmp(method, "GET") != 0) {
        respond_text(c, 405, "only GET and HEAD are served\n");
        return;
    }
    if (has_body(eol + 1, end)) {
        respond_text(c, 413, "a request body is not accepted\n");
        return;
    }
    dr_httpmini_res_t res = {.status = 404};
    c->server->handler(c->server->data, method, path, &res);
    if (res.status < 100 || res.status > 599)
        res.status = 500;
    respond(c, &res, is_head);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = h->data;
    /* Read into the head buffer directly; a full buffer reads one byte into a scratch byte so the
     * overflow is noticed. */
    static char overflow[1];
    if (c->len < sizeof(c->head))
        *buf = uv_buf_init(c->head + c->len, (unsigned)(sizeof(c->head) - c->len));
    else
        *buf = uv_buf_init(overflow, sizeof(overflow));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->answered)
        return;
    if (buf->base != c->head + c->len) {
        respond_text(c, 431, "request head too large\n");
        return;
    }
    size_t from = c->len > 3 ? c->len - 3 : 0;
    c->len += (size_t)nread;
    /* Look for the blank line that ends the head, starting just before the new bytes. */
    for (size_t i = from; i < c->len; i++) {
        if (c->head[i] != '\n')
            continue;
        if ((i >= 1 && c->head[i - 1] == '\n') ||
            (i >= 2 && c->head[i - 1] == '\r' && c->head[i - 2] == '\n')) {
            handle(c, i + 1);
            return;
        }
    }
    if (c->len >= sizeof(c->head))
        respond_text(c, 431, "request head too large\n");
}

static void on_connection(uv_stream_t *ls, int status)
{
    dr_httpmini_t *s = ls->data;
    if (status != 0 || s->closing)
        return;
    conn_t *c = dr_calloc(1, sizeof(*c));
    c->server = s;
    uv_tcp_init(ls->loop, &c->tcp);
    uv_timer_init(ls->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    LIST_INSERT_HEAD(&s->conns, c, link);
    s->nconns++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (s->nconns > DR_HTTPMINI_CONNS) {
        /* Over the limit: the client gets a closed connection instead of holding a slot. */
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, DR_HTTPMINI_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

/* ---- server -------------------------------------------------------------------------------------- */

int dr_httpmini_open(uv_loop_t *loop, const char *bind, int port, dr_httpmini_handler *handler, void *data,
                     dr_httpmini_t **out, char *err)
{
    struct sockaddr_storage ss;
    if (uv_ip4_addr(bind, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(bind, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, DR_ERR_LEN, "'%s' is not an IPv4 or IPv6 address", bind);
        return DR_EINVAL;
    }
    dr_httpmini_t *s = dr_calloc(1, sizeof(*s));
    s->handler = handler;
    s->data = data;
    LIST_INIT(&s->conns);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->listener_open = 1;
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
    if (rc != 0) {
        snprintf(err, DR_ERR_LEN, "cannot listen on %s:%d: %s", bind, port, uv_strerror(rc));
        dr_httpmini_close(s);
        return DR_EIO;
    }
    struct sockaddr_storage got;
    int len = sizeof(got);
    s->port = port;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len) == 0)
        s->port = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&got)->sin_port);
    *out = s;
    return 0;
}

int dr_httpmini_port(const dr_httpmini_t *s)
{
    return s->port;
}

static void on_listener_closed(uv_handle_t *h)
{
    dr_httpmini_t *s = h->data;
    s->listener_open = 0;
    maybe_free_server(s);
}

void dr_httpmini_close(dr_httpmini_t *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    conn_t *c;
    LIST_FOREACH(c, &s->conns, link)
    conn_close(c);
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}
