/* libFuzzer target for the REST front of the ingress: path splitting and percent-decoding, the route
 * table and its precedence (404, 405, 400), the scope gate, query parameters and the body checks of
 * services/ingress/http_api.c, driven without a socket.
 *
 * The .c file is included to reach its statics (on_req, split_path, url_decode). The request is a
 * zeroed h2o_req_t with a real h2o memory pool, so the request life cycle (the pool's dispose hook and
 * the handler's reference) runs as in the server and LeakSanitizer sees a request that is never freed.
 * libh2o is linked for its pool and header helpers; h2o_send_inline is replaced below to record the
 * answer instead of writing to a connection. The route handlers, auth_check and the readiness probes
 * are stubs.
 *
 * Input: byte 0 is flags (below), byte 1 sets ingress.max_device_id (1 + value), then
 * "METHOD\nPATH?QUERY\nNAME\nBODY": NAME is a query parameter the handler asks for; a BODY is sent as
 * application/json unless it starts with '<' (then text/plain).
 *
 * Oracles, for every request: it is answered exactly once (unless the client went away first) and
 * nothing is leaked. When a route handler runs: the method is the route's; the raw path, split and
 * decoded by a separate reference decoder, equals the pattern's literal segments; the {dev} segment
 * equals hr->dev byte for byte and passes dr_codec_check_id; {id} is a positive integer equal to
 * hr->id; the caller's key was allowed on that route; and http_query returns what the reference
 * query lookup gives. */
#include "../../services/ingress/http_api.c"

#include <stdint.h>
#include <stdlib.h>

#include "dr/status.h"

enum {
    F_STOPPING = 1 << 0,   /* the node is shutting down */
    F_DUSTER_OPEN = 1 << 1, /* http.duster_open */
    F_AUTH_SHIFT = 2,      /* 2 bits: auth_check answers 0, 401, 429 or 503 */
    F_SCOPE_SHIFT = 4,     /* 2 bits: the key's scope (3 is admin too) */
    F_AUTH_HEADER = 1 << 6, /* send "authorization: Bearer <token>" */
    F_GONE = 1 << 7,       /* the client goes away before the handler answers */
};

#define KEY_DEVICE "d1" /* the device a device-scope key is bound to */

static struct {
    unsigned flags;
    h2o_req_t req;
    int pool_cleared;
    int answers;        /* h2o_send_inline calls */
    int handled;        /* route handler calls */
    const char *qname;  /* query parameter the handler asks for */
    size_t qname_len;
} t;

static ingress_t ingress;

static void check(int ok)
{
    if (!ok)
        abort();
}

/* ---- stubs ------------------------------------------------------------------------------------ */

void h2o_send_inline(h2o_req_t *req, const char *body, size_t len)
{
    (void)body;
    (void)len;
    check(req == &t.req && !t.pool_cleared);
    check(req->res.status >= 200 && req->res.status <= 599);
    t.answers++;
}

int dr_redis_ready(const dr_redis_t *r)
{
    (void)r;
    return 1;
}

int dr_bus_connected(dr_bus_t *b)
{
    (void)b;
    return 0;
}

int dr_mqttc_connected(const dr_mqttc_t *m)
{
    (void)m;
    return 1;
}

void sse_close_all(void)
{
}

void auth_check(hreq_t *hr, const char *token, size_t len, auth_cb *cb)
{
    size_t alen = 0;
    const char *auth = http_header(hr, "authorization", &alen);
    check(auth != NULL && token == auth + 7 && len == alen - 7 && len > 0);
    static const int outcome[] = {0, 401, 429, 503};
    int scope = (t.flags >> F_SCOPE_SHIFT) & 3;
    hr->who.authenticated = 1;
    hr->who.scope = scope > DR_SCOPE_ADMIN ? DR_SCOPE_ADMIN : scope;
    snprintf(hr->who.device, sizeof(hr->who.device), "%s", KEY_DEVICE);
    cb(hr, outcome[(t.flags >> F_AUTH_SHIFT) & 3]);
}

/* ---- reference decoding ----------------------------------------------------------------------- */

static int ref_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes s[0..len) into out (at least len + 1 bytes). Returns the length, or -1 for a bad escape or
 * a NUL, encoded or raw. Unlike the product it has no length limit: callers compare lengths. */
static long ref_decode(const char *s, size_t len, int plus, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (len - i < 3 || ref_hex((unsigned char)s[i + 1]) < 0 || ref_hex((unsigned char)s[i + 2]) < 0)
                return -1;
            c = (unsigned char)(ref_hex((unsigned char)s[i + 1]) * 16 + ref_hex((unsigned char)s[i + 2]));
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (c == 0)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

/* The path (before '?') against the route's pattern, segment by segment, with the reference decoder. */
static void check_route(hreq_t *hr)
{
    const route_t *r = hr->route;
    const h2o_req_t *req = &t.req;
    check(req->method.len == strlen(r->method) && memcmp(req->method.base, r->method, req->method.len) == 0);
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    check(plen > 0 && req->path.base[0] == '/');
    const char *s = req->path.base + 1, *end = req->path.base + plen;
    const char *pat = r->pattern + 1;
    char *seg = malloc(plen + 1);
    for (;;) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *stop = slash ? slash : end;
        long n = ref_decode(s, (size_t)(stop - s), 0, seg);
        const char *pslash = strchr(pat, '/');
        size_t tlen = pslash ? (size_t)(pslash - pat) : strlen(pat);
        check(n >= 0 && n < 256);
        if (tlen == 5 && memcmp(pat, "{dev}", 5) == 0) {
            check(strlen(hr->dev) == (size_t)n && memcmp(hr->dev, seg, (size_t)n) == 0);
            check(dr_codec_check_id(hr->dev, (size_t)n, (size_t)ingress.node.cfg.ingress_max_device_id) == 0);
        } else if (tlen == 4 && memcmp(pat, "{id}", 4) == 0) {
            check(hr->id > 0 && (size_t)n == strlen(seg));
            char *e;
            check(strtoll(seg, &e, 10) == hr->id && *e == '\0');
        } else {
            check((size_t)n == tlen && memcmp(seg, pat, tlen) == 0);
        }
        check((slash == NULL) == (pslash == NULL)); /* as many segments as the pattern */
        if (slash == NULL)
            break;
        s = slash + 1;
        pat = pslash + 1;
    }
    free(seg);
}

/* The scope gate let this caller through. */
static void check_caller(hreq_t *hr)
{
    const route_t *r = hr->route;
    if (r->scopes == OPEN || (r->duster && ingress.node.cfg.http_duster_open))
        return;
    check(hr->who.authenticated && (r->scopes & SCOPE(hr->who.scope)) != 0);
    if (hr->who.scope == DR_SCOPE_DEVICE && strstr(r->pattern, "{dev}"))
        check(strcmp(hr->dev, KEY_DEVICE) == 0);
}

/* http_query against a reference lookup: the first "name[=value]" pair, value decoded with '+' as a
 * space, found only when the value decodes and fits. */
static void check_query(hreq_t *hr)
{
    char name[64];
    if (t.qname_len == 0 || t.qname_len >= sizeof(name) || memchr(t.qname, '\0', t.qname_len) != NULL)
        return;
    memcpy(name, t.qname, t.qname_len);
    name[t.qname_len] = '\0';
    static const size_t caps[] = {1, 2, 8, 33, 256};
    size_t cap = caps[t.qname_len % 5];
    char *buf = malloc(cap);
    int got = http_query(hr, name, buf, cap);

    int want = 0;
    const h2o_req_t *req = &t.req;
    char *ref = NULL;
    if (req->query_at != SIZE_MAX) {
        const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
        ref = malloc((size_t)(end - q) + 1);
        while (q < end) {
            const char *amp = memchr(q, '&', (size_t)(end - q));
            const char *stop = amp ? amp : end;
            const char *eq = memchr(q, '=', (size_t)(stop - q));
            const char *kend = eq ? eq : stop;
            if ((size_t)(kend - q) == t.qname_len && memcmp(q, name, t.qname_len) == 0) {
                const char *v = eq ? eq + 1 : stop;
                long n = ref_decode(v, (size_t)(stop - v), 1, ref);
                want = n >= 0 && (size_t)n < cap;
                if (want)
                    check(got == 1 && strcmp(buf, ref) == 0 && strlen(buf) == (size_t)n);
                break;
            }
            q = stop + 1;
        }
    }
    check(got == want);
    free(ref);
    free(buf);
}

static void handle(hreq_t *hr)
{
    t.handled++;
    check(hr->req == &t.req && hr->route != NULL && !ingress.node.stopping);
    check_route(hr);
    check_caller(hr);
    check_query(hr);
    size_t len = 0;
    const char *body = http_body(hr, &len);
    if (body == NULL && len == (size_t)-1) { /* http_body answered the error */
        check(t.answers == 1);
        hreq_release(hr);
        return;
    }
    check(body == NULL ? len == 0 : len <= (size_t)ingress.node.cfg.http_max_body);
    if (t.flags & F_GONE) {
        /* h2o disposes the request under the handler; answering afterwards must do nothing. */
        h2o_mem_clear_pool(&t.req.pool);
        t.pool_cleared = 1;
        check(hr->req == NULL);
    }
    http_json(hr, 200, "{}", 2);
    hreq_release(hr);
}

void duster_submit(hreq_t *hr) { handle(hr); }
void duster_ack(hreq_t *hr) { handle(hr); }
void duster_peek(hreq_t *hr) { handle(hr); }
void duster_status(hreq_t *hr) { handle(hr); }
void v1_submit(hreq_t *hr) { handle(hr); }
void v1_bulk(hreq_t *hr) { handle(hr); }
void v1_get_message(hreq_t *hr) { handle(hr); }
void v1_list_messages(hreq_t *hr) { handle(hr); }
void v1_cancel(hreq_t *hr) { handle(hr); }
void v1_purge(hreq_t *hr) { handle(hr); }
void v1_device(hreq_t *hr) { handle(hr); }
void v1_pacing(hreq_t *hr) { handle(hr); }
void v1_pull(hreq_t *hr) { handle(hr); }
void v1_ack(hreq_t *hr) { handle(hr); }
void v1_openapi(hreq_t *hr) { handle(hr); }
void v1_events(hreq_t *hr) { handle(hr); }
void rest_metrics(hreq_t *hr) { handle(hr); }
void rest_auth_login(hreq_t *hr) { handle(hr); }
void rest_auth_me(hreq_t *hr) { handle(hr); }
void rest_auth_logout(hreq_t *hr) { handle(hr); }
void rest_auth_is_client_enabled(hreq_t *hr) { handle(hr); }
void admin_list(hreq_t *hr) { handle(hr); }
void admin_get(hreq_t *hr) { handle(hr); }
void admin_create(hreq_t *hr) { handle(hr); }
void admin_update(hreq_t *hr) { handle(hr); }
void admin_delete(hreq_t *hr) { handle(hr); }
void rest_console_messages(hreq_t *hr) { handle(hr); }
void saved_list(hreq_t *hr) { handle(hr); }
void saved_get(hreq_t *hr) { handle(hr); }
void saved_create(hreq_t *hr) { handle(hr); }
void saved_update(hreq_t *hr) { handle(hr); }
void saved_delete(hreq_t *hr) { handle(hr); }
void saved_send(hreq_t *hr) { handle(hr); }
void rest_console_search(hreq_t *hr) { handle(hr); }
void v1_devices(hreq_t *hr) { handle(hr); }
void v1_stats(hreq_t *hr) { handle(hr); }
void rollout_create(hreq_t *hr) { handle(hr); }
void rollout_list(hreq_t *hr) { handle(hr); }
void rollout_get(hreq_t *hr) { handle(hr); }
void rollout_pause(hreq_t *hr) { handle(hr); }
void rollout_resume(hreq_t *hr) { handle(hr); }
void rollout_cancel(hreq_t *hr) { handle(hr); }
void keys_create(hreq_t *hr) { handle(hr); }
void keys_list(hreq_t *hr) { handle(hr); }
void keys_revoke(hreq_t *hr) { handle(hr); }

/* The credential as auth.c reads it, without the session cookie (cookies are auth.c's, not the
 * router's): a Bearer header or nothing. */
int auth_credential(hreq_t *hr, const char **tok, size_t *len)
{
    size_t alen = 0;
    const char *a = http_header(hr, "authorization", &alen);
    if (a == NULL || alen < 8 || strncasecmp(a, "Bearer ", 7) != 0)
        return 0;
    *tok = a + 7;
    *len = alen - 7;
    return 1;
}
int auth_csrf_ok(hreq_t *hr)
{
    (void)hr;
    return 1; /* Bearer only: no CSRF check applies */
}
int static_route(hreq_t *hr)
{
    (void)hr;
    return 0; /* the console's files are h2o's file handler, outside the router */
}
void static_register(h2o_hostconf_t *host, const dr_settings_t *cfg)
{
    (void)host;
    (void)cfg;
}

/* ---- driver ------------------------------------------------------------------------------------- */

/* Next '\n'-terminated field of the input (the rest when there is no '\n'). */
static h2o_iovec_t field(const char **p, const char *end)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    h2o_iovec_t v = h2o_iovec_init(*p, (size_t)((nl ? nl : end) - *p));
    *p = nl ? nl + 1 : end;
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    memset(&t, 0, sizeof(t));
    t.flags = data[0];
    ingress.node.stopping = (t.flags & F_STOPPING) != 0;
    ingress.node.cfg.http_duster_open = (t.flags & F_DUSTER_OPEN) != 0;
    ingress.node.cfg.ingress_max_device_id = 1 + data[1];
    ingress.node.cfg.http_max_body = 64;
    ingress.node.cfg.http_max_depth = 4;

    /* Copies, so that ASan sees reads past each field's end. */
    const char *p = (const char *)data + 2, *end = (const char *)data + size;
    h2o_iovec_t m = field(&p, end), path = field(&p, end), qname = field(&p, end);
    h2o_iovec_t body = h2o_iovec_init(p, (size_t)(end - p));
    char *mcopy = dr_strndup(m.base, m.len), *pcopy = dr_strndup(path.base, path.len);
    char *bcopy = body.len ? dr_strndup(body.base, body.len) : NULL;
    t.qname = qname.base;
    t.qname_len = qname.len;

    h2o_req_t *req = &t.req;
    h2o_mem_init_pool(&req->pool);
    req->method = h2o_iovec_init(mcopy, m.len);
    req->path = h2o_iovec_init(pcopy, path.len);
    const char *q = memchr(pcopy, '?', path.len); /* as h2o sets it */
    req->query_at = q ? (size_t)(q - pcopy) : SIZE_MAX;
    if (bcopy != NULL) {
        req->entity = h2o_iovec_init(bcopy, body.len);
        h2o_add_header(&req->pool, &req->headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT(bcopy[0] == '<' ? "text/plain" : "application/json"));
    }
    if (t.flags & F_AUTH_HEADER)
        h2o_add_header(&req->pool, &req->headers, H2O_TOKEN_AUTHORIZATION, NULL, H2O_STRLIT("Bearer k"));

    handler_t h = {.in = &ingress};
    check(on_req(&h.super, req) == 0);
    /* Every handler here answers synchronously: one answer, unless the client went away first. */
    check(t.pool_cleared ? t.answers == 0 : t.answers == 1);
    if (!t.pool_cleared)
        h2o_mem_clear_pool(&req->pool); /* drops h2o's reference: the request must be freed now */
    free(mcopy);
    free(pcopy);
    free(bcopy);
    return 0;
}
