/* REST API server: h2o (libuv flavour) on the ingress loop, routing, request life cycle, JSON
 * responses and errors, and the authentication gate in front of every non-public route.
 *
 * DESIGN
 * Handlers are asynchronous (they wait for Redis), and h2o frees a request whose client went away.
 * So each request gets a heap hreq_t with two references: h2o's request pool holds one (dropped by a
 * dispose hook, which also clears hr->req) and the handler holds one until it has answered. Every
 * answer goes through http_json/http_error, which do nothing once the request is gone.
 */
#define DR_MODULE "ingress/http"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "http.h"

#define SCOPE(x) (1u << (x))
#define S_PRODUCER SCOPE(DR_SCOPE_PRODUCER)
#define S_DEVICE SCOPE(DR_SCOPE_DEVICE)
#define S_ADMIN SCOPE(DR_SCOPE_ADMIN)
#define OPEN 0u

typedef struct route {
    const char *method;
    const char *pattern;  /* "{dev}" and "{id}" segments are parameters */
    unsigned scopes;      /* allowed scopes; OPEN: no key needed */
    int duster;           /* a Duster path: open when http.duster_open is set */
    route_fn *fn;
} route_t;

static void healthz(hreq_t *hr);
static void readyz(hreq_t *hr);

static const route_t routes[] = {
    {"GET", "/healthz", OPEN, 0, healthz},
    {"GET", "/readyz", OPEN, 0, readyz},
    {"GET", "/metrics", OPEN, 0, rest_metrics},
    {"GET", "/v1/openapi.json", OPEN, 0, v1_openapi},
    /* Duster's endpoints (duster-compat.md §4.1) */
    {"PUT", "/producer/request/{dev}", S_PRODUCER | S_ADMIN, 1, duster_submit},
    {"POST", "/consumer/request/{dev}", S_DEVICE | S_ADMIN, 1, duster_ack},
    {"GET", "/consumer/getLastMessage/{dev}", S_DEVICE | S_ADMIN, 1, duster_peek},
    {"GET", "/producer/getMessageStatus/{id}", S_PRODUCER | S_ADMIN, 1, duster_status},
    /* v1 */
    {"POST", "/v1/devices/{dev}/messages", S_PRODUCER | S_ADMIN, 0, v1_submit},
    {"GET", "/v1/devices/{dev}/messages", S_PRODUCER | S_DEVICE | S_ADMIN, 0, v1_list_messages},
    {"DELETE", "/v1/devices/{dev}/messages", S_PRODUCER | S_ADMIN, 0, v1_purge},
    {"GET", "/v1/devices/{dev}", S_PRODUCER | S_DEVICE | S_ADMIN, 0, v1_device},
    {"PUT", "/v1/devices/{dev}/pacing", S_ADMIN, 0, v1_pacing},
    {"POST", "/v1/devices/{dev}/next", S_DEVICE | S_ADMIN, 0, v1_pull},
    {"POST", "/v1/devices/{dev}/messages/{id}/ack", S_DEVICE | S_ADMIN, 0, v1_ack},
    {"POST", "/v1/messages/bulk", S_PRODUCER | S_ADMIN, 0, v1_bulk},
    {"GET", "/v1/messages/{id}", S_PRODUCER | S_DEVICE | S_ADMIN, 0, v1_get_message},
    {"POST", "/v1/messages/{id}/cancel", S_PRODUCER | S_ADMIN, 0, v1_cancel},
    {"GET", "/v1/events", S_PRODUCER | S_DEVICE | S_ADMIN, 0, v1_events},
    {"GET", "/v1/messages", S_PRODUCER | S_ADMIN, 0, rest_console_search},
    {"GET", "/v1/devices", S_PRODUCER | S_ADMIN, 0, v1_devices},
    {"GET", "/v1/stats", S_ADMIN, 0, v1_stats},
    {"POST", "/v1/rollouts", S_PRODUCER | S_ADMIN, 0, rollout_create},
    {"GET", "/v1/rollouts", S_PRODUCER | S_ADMIN, 0, rollout_list},
    {"GET", "/v1/rollouts/{id}", S_PRODUCER | S_ADMIN, 0, rollout_get},
    {"POST", "/v1/rollouts/{id}/pause", S_PRODUCER | S_ADMIN, 0, rollout_pause},
    {"POST", "/v1/rollouts/{id}/resume", S_PRODUCER | S_ADMIN, 0, rollout_resume},
    {"POST", "/v1/rollouts/{id}/cancel", S_PRODUCER | S_ADMIN, 0, rollout_cancel},
    {"POST", "/v1/keys", S_ADMIN, 0, keys_create},
    {"GET", "/v1/keys", S_ADMIN, 0, keys_list},
    {"DELETE", "/v1/keys/{dev}", S_ADMIN, 0, keys_revoke}, /* {dev}: the key id, a plain name */
    /* Duster's login and admin API (rest_auth.c, rest_admin.c): they check their callers themselves,
     * to answer with Duster's 401/403 bodies */
    {"POST", "/auth/login", OPEN, 0, rest_auth_login},
    {"GET", "/auth/me", OPEN, 0, rest_auth_me},
    {"POST", "/auth/logout", OPEN, 0, rest_auth_logout},
    {"POST", "/auth/isClientEnabled", OPEN, 0, rest_auth_is_client_enabled},
    {"GET", "/admin/api/clients", OPEN, 0, admin_list},
    {"POST", "/admin/api/clients", OPEN, 0, admin_create},
    {"GET", "/admin/api/clients/{id}", OPEN, 0, admin_get},
    {"PUT", "/admin/api/clients/{id}", OPEN, 0, admin_update},
    {"DELETE", "/admin/api/clients/{id}", OPEN, 0, admin_delete},
    {"GET", "/admin/api/messages", OPEN, 0, rest_console_messages},
    {"GET", "/admin/api/saved-messages", OPEN, 0, saved_list},
    {"POST", "/admin/api/saved-messages", OPEN, 0, saved_create},
    {"GET", "/admin/api/saved-messages/{id}", OPEN, 0, saved_get},
    {"PUT", "/admin/api/saved-messages/{id}", OPEN, 0, saved_update},
    {"DELETE", "/admin/api/saved-messages/{id}", OPEN, 0, saved_delete},
    {"POST", "/admin/api/saved-messages/{id}/send", OPEN, 0, saved_send},
};

struct http_server {
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    int listening;
    int conns;            /* open client connections */
};

typedef struct {
    h2o_handler_t super;
    ingress_t *in;
} handler_t;

/* ---- request life cycle ----------------------------------------------------------------------- */

static void hreq_unref(hreq_t *hr)
{
    if (--hr->refs > 0)
        return;
    if (hr->free_state)
        hr->free_state(hr->state);
    free(hr);
}

void hreq_release(hreq_t *hr)
{
    hreq_unref(hr);
}

typedef struct {
    hreq_t *hr;
} pool_link_t;

static void on_pool_dispose(void *p)
{
    pool_link_t *link = p;
    link->hr->req = NULL;
    hreq_unref(link->hr);
}

/* ---- responses -------------------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "OK";
}

void http_add_header(hreq_t *hr, const char *name, const char *value)
{
    if (hr->req == NULL)
        return;
    h2o_req_t *req = hr->req;
    h2o_iovec_t v = h2o_strdup(&req->pool, value, strlen(value));
    h2o_iovec_t n = h2o_strdup(&req->pool, name, strlen(name));
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
}

void http_json(hreq_t *hr, int status, const char *body, size_t len)
{
    if (hr->req == NULL)
        return;
    h2o_req_t *req = hr->req;
    req->res.status = status;
    req->res.reason = reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    /* Without a content length h2o closes the connection after a POST response. */
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void http_empty(hreq_t *hr, int status)
{
    if (hr->req == NULL)
        return;
    h2o_req_t *req = hr->req;
    req->res.status = status;
    req->res.reason = reason(status);
    req->res.content_length = 0;
    h2o_send_inline(req, "", 0);
}

void http_error(hreq_t *hr, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *qmsg = dr_codec_json_string(msg);
    size_t cap = strlen(qmsg) + strlen(code) + 64;
    char *body = dr_malloc(cap);
    int n = snprintf(body, cap, "{\"error\":{\"code\":\"%s\",\"message\":%s}}", code, qmsg);
    http_json(hr, status, body, (size_t)n);
    free(body);
    free(qmsg);
}

int http_unavailable(hreq_t *hr, int err)
{
    if (err == 0)
        return 0;
    http_add_header(hr, "retry-after", "1");
    http_error(hr, 503, "UNAVAILABLE", "the store is unavailable (%s); nothing was changed, retry later",
               dr_strerror(err));
    return 1;
}

/* ---- request inputs --------------------------------------------------------------------------- */

const char *http_header(hreq_t *hr, const char *name, size_t *len)
{
    if (hr->req == NULL)
        return NULL;
    ssize_t i = h2o_find_header_by_str(&hr->req->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    *len = hr->req->headers.entries[i].value.len;
    return hr->req->headers.entries[i].value.base;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes len bytes into out (cap bytes, NUL-terminated). Returns the length, or -1 for a
 * malformed escape, a NUL (encoded or raw: either would cut the C string short) or an overlong result. */
static ssize_t url_decode(const char *s, size_t len, char *out, size_t cap, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

int http_query(hreq_t *hr, const char *name, char *buf, size_t cap)
{
    if (hr->req == NULL || hr->req->query_at == SIZE_MAX)
        return 0;
    const char *q = hr->req->path.base + hr->req->query_at + 1;
    const char *end = hr->req->path.base + hr->req->path.len;
    size_t nl = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - q) == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : stop;
            return url_decode(v, (size_t)(stop - v), buf, cap, 1) >= 0 ? 1 : 0;
        }
        q = stop + 1;
    }
    return 0;
}

const char *http_body(hreq_t *hr, size_t *len)
{
    h2o_req_t *req = hr->req;
    const dr_settings_t *cfg = &hr->in->node.cfg;
    if (req == NULL || req->entity.base == NULL) {
        *len = 0;
        return NULL;
    }
    if (req->entity.len > (size_t)cfg->http_max_body) {
        http_error(hr, 413, "TOO_LARGE", "the body has %zu bytes; the limit is %lld", req->entity.len,
                   (long long)cfg->http_max_body);
        *len = (size_t)-1;
        return NULL;
    }
    size_t ctl;
    const char *ct = http_header(hr, "content-type", &ctl);
    if (req->entity.len > 0 && (ct == NULL || ctl < 16 || strncasecmp(ct, "application/json", 16) != 0)) {
        http_error(hr, 415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json");
        *len = (size_t)-1;
        return NULL;
    }
    if (dr_codec_json_depth(req->entity.base, req->entity.len) > cfg->http_max_depth) {
        http_error(hr, 400, "BAD_JSON", "JSON nesting deeper than %lld levels", (long long)cfg->http_max_depth);
        *len = (size_t)-1;
        return NULL;
    }
    *len = req->entity.len;
    return req->entity.base;
}

/* ---- routing ---------------------------------------------------------------------------------- */

#define MAX_SEGS 8

typedef struct {
    char seg[MAX_SEGS][256];
    int nseg;
} path_t;

/* Splits and decodes the path (without query). Returns 0, or -1 when it cannot be a route. */
static int split_path(const h2o_req_t *req, path_t *p)
{
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *s = req->path.base, *end = s + plen;
    p->nseg = 0;
    if (plen == 0 || *s != '/')
        return -1;
    s++;
    while (s <= end && p->nseg < MAX_SEGS) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *stop = slash ? slash : end;
        if (url_decode(s, (size_t)(stop - s), p->seg[p->nseg], sizeof(p->seg[0]), 0) < 0)
            return -1;
        p->nseg++;
        if (slash == NULL)
            break;
        s = slash + 1;
    }
    return s <= end ? 0 : -1;
}

/* Matches a pattern; fills dev/id. Returns 1 on a match. */
static int match(const char *pattern, const path_t *p, hreq_t *hr, int *bad_param)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "%s", pattern + 1);
    int i = 0;
    char *save = NULL;
    for (char *tok = strtok_r(pat, "/", &save); tok; tok = strtok_r(NULL, "/", &save), i++) {
        if (i >= p->nseg)
            return 0;
        if (strcmp(tok, "{dev}") == 0) {
            size_t l = strlen(p->seg[i]);
            if (dr_codec_check_id(p->seg[i], l, (size_t)hr->in->node.cfg.ingress_max_device_id) != 0)
                *bad_param = 1;
            snprintf(hr->dev, sizeof(hr->dev), "%s", p->seg[i]);
        } else if (strcmp(tok, "{id}") == 0) {
            char *e;
            long long v = strtoll(p->seg[i], &e, 10);
            if (*e != '\0' || e == p->seg[i] || v <= 0)
                *bad_param = 2;
            hr->id = v;
        } else if (strcmp(tok, p->seg[i]) != 0) {
            return 0;
        }
    }
    return i == p->nseg;
}

static void after_auth(hreq_t *hr, int status)
{
    if (hr->req == NULL) {
        hreq_release(hr);
        return;
    }
    if (status != 0) {
        if (status == 401)
            http_error(hr, 401, "UNAUTHORIZED", "a valid API key is required (Authorization: Bearer <key>)");
        else if (status == 429)
            http_error(hr, 429, "RATE_LIMITED", "too many requests for this API key");
        else
            http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
        return;
    }
    const route_t *r = hr->route;
    if (!auth_csrf_ok(hr)) {
        http_error(hr, 403, "CSRF", "missing or wrong X-CSRF-Token header");
        hreq_release(hr);
        return;
    }
    if ((r->scopes & SCOPE(hr->who.scope)) == 0) {
        http_error(hr, 403, "FORBIDDEN", "a %s key may not use %s %s", dr_scope_name(hr->who.scope), r->method,
                   r->pattern);
        hreq_release(hr);
        return;
    }
    if (hr->who.scope == DR_SCOPE_DEVICE && strstr(r->pattern, "{dev}") && strcmp(hr->dev, hr->who.device) != 0) {
        http_error(hr, 403, "FORBIDDEN", "this key is bound to another device");
        hreq_release(hr);
        return;
    }
    r->fn(hr);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    ingress_t *in = ((handler_t *)self)->in;
    hreq_t *hr = dr_calloc(1, sizeof(*hr));
    hr->req = req;
    hr->in = in;
    hr->refs = 2;
    pool_link_t *link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_pool_dispose);
    link->hr = hr;

    /* Precedence: a route whose path and method match cleanly; else a route whose path matches
     * cleanly with another method (405); else a route that matches but with a bad parameter (400). */
    if (static_route(hr))
        return 0;
    path_t p;
    int bad = 0, path_matched = 0;
    const route_t *found = NULL, *bad_route = NULL;
    if (split_path(req, &p) == 0) {
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]) && !found; i++) {
            int b = 0;
            if (!match(routes[i].pattern, &p, hr, &b))
                continue;
            int method_ok = req->method.len == strlen(routes[i].method) &&
                            memcmp(req->method.base, routes[i].method, req->method.len) == 0;
            if (b == 0 && method_ok)
                found = &routes[i];
            else if (b == 0)
                path_matched = 1;
            else if (method_ok && bad_route == NULL) {
                bad_route = &routes[i];
                bad = b;
            }
        }
    }
    if (found == NULL && !path_matched && bad_route != NULL) {
        found = bad_route;
        /* re-run the match to leave the parameters of this route in hr */
        int b = 0;
        match(found->pattern, &p, hr, &b);
    } else {
        bad = 0;
    }
    if (found == NULL) {
        if (path_matched)
            http_error(hr, 405, "METHOD_NOT_ALLOWED", "%.*s is not allowed here", (int)req->method.len, req->method.base);
        else
            http_error(hr, 404, "NOT_FOUND", "no such endpoint");
        hreq_release(hr);
        return 0;
    }
    hr->route = found;
    if (in->node.stopping) {
        http_error(hr, 503, "SHUTTING_DOWN", "this node is shutting down; retry on another");
        hreq_release(hr);
        return 0;
    }
    if (bad) {
        if (bad == 1)
            http_error(hr, 400, "BAD_DEVICE_ID", "device id must be 1..%lld bytes without '/', '+', '#' or control characters",
                       (long long)in->node.cfg.ingress_max_device_id);
        else
            http_error(hr, 400, "BAD_ID", "message id must be a positive integer");
        hreq_release(hr);
        return 0;
    }
    if (found->scopes == OPEN || (found->duster && in->node.cfg.http_duster_open)) {
        hr->who.scope = DR_SCOPE_ADMIN; /* open routes act without a caller identity */
        found->fn(hr);
        return 0;
    }
    const char *tok;
    size_t tlen;
    int how = auth_credential(hr, &tok, &tlen); /* Bearer header, else the session cookie */
    if (how == 0) {
        after_auth(hr, 401);
        return 0;
    }
    hr->who.cookie = how == 2;
    auth_check(hr, tok, tlen, after_auth);
    return 0;
}

/* ---- health ----------------------------------------------------------------------------------- */

static void healthz(hreq_t *hr)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    http_json(hr, 200, ok, sizeof(ok) - 1);
    hreq_release(hr);
}

static void readyz(hreq_t *hr)
{
    ingress_t *in = hr->in;
    int redis = dr_redis_ready(in->node.redis), nats = dr_bus_connected(in->node.bus);
    int mqtt = in->mqtt && dr_mqttc_connected(in->mqtt);
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"ready\":%s,\"redis\":%s,\"nats\":%s,\"mqtt\":%s}",
                     redis && nats && mqtt ? "true" : "false", redis ? "true" : "false", nats ? "true" : "false",
                     mqtt ? "true" : "false");
    http_json(hr, redis && nats && mqtt ? 200 : 503, body, (size_t)n);
    hreq_release(hr);
}

/* ---- server ----------------------------------------------------------------------------------- */

/* h2o takes over the handle's data pointer, so the server is found through the enclosing struct. */
typedef struct {
    uv_tcp_t tcp; /* first: the handle pointer is the struct pointer */
    struct http_server *server;
} conn_t;

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = (conn_t *)h;
    c->server->conns--;
    free(c);
}

static void on_accept(uv_stream_t *listener, int status)
{
    struct http_server *s = listener->data;
    if (status != 0)
        return;
    conn_t *c = dr_malloc(sizeof(*c));
    c->server = s;
    uv_tcp_init(listener->loop, &c->tcp);
    s->conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
    h2o_accept(&s->accept_ctx, sock);
}

int http_idle(ingress_t *in)
{
    return in->http == NULL || in->http->conns == 0;
}

/* HTTPS: h2o runs the TLS handshake itself when the accept context has an SSL_CTX. The files are read
 * once, here, before the loop serves anything; a bad file stops the start with the OpenSSL reason. No
 * ALPN is registered, so clients speak HTTP/1.1 over TLS, as they do over plain TCP. Plain HTTP sent
 * to this port fails the handshake and h2o closes the connection. */
static int http_tls_setup(struct http_server *s, const dr_settings_t *cfg, char *err)
{
    const char *what = "cannot create the TLS context";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        goto bad;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    what = cfg->http_tls_cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->http_tls_cert) != 1)
        goto bad;
    what = cfg->http_tls_key;
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->http_tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto bad;
    s->accept_ctx.ssl_ctx = ctx;
    return 0;
bad:;
    char eb[160] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, eb, sizeof(eb));
    ERR_clear_error();
    snprintf(err, DR_ERR_LEN, "http.tls_cert/http.tls_key: %s: %s", what, eb);
    if (ctx != NULL)
        SSL_CTX_free(ctx);
    return DR_ECONFIG;
}

/* A listener that could not listen: the server is freed once libuv let go of the handle. */
static void on_failed_listener_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    if (s->accept_ctx.ssl_ctx != NULL)
        SSL_CTX_free(s->accept_ctx.ssl_ctx);
    free(s);
}

int http_start(ingress_t *in, char *err)
{
    const dr_settings_t *cfg = &in->node.cfg;
    if (cfg->http_port == 0)
        return 0;
    struct http_server *s = dr_calloc(1, sizeof(*s));
    /* Everything that can fail comes before h2o's configuration: h2o 2.2 does not free all of it
     * (h2o_config_dispose keeps the file handler's allocations), and a node that refuses to start must
     * not leak. The listener accepts nothing before the loop runs, by which time h2o is set up. */
    if (cfg->http_tls_cert[0] && http_tls_setup(s, cfg, err) != 0)
        goto fail;
    struct sockaddr_storage addr;
    if (uv_ip4_addr(cfg->http_bind, (int)cfg->http_port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(cfg->http_bind, (int)cfg->http_port, (struct sockaddr_in6 *)&addr) != 0) {
        snprintf(err, DR_ERR_LEN, "http.bind '%s' is not an IP address", cfg->http_bind);
        goto fail;
    }
    uv_tcp_init(in->node.loop.uv, &s->listener);
    s->listener.data = s;
    int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, on_accept);
    if (rc != 0) {
        snprintf(err, DR_ERR_LEN, "cannot listen on %s:%lld: %s", cfg->http_bind, (long long)cfg->http_port,
                 uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, on_failed_listener_closed); /* frees s */
        return DR_ECONFIG;
    }

    h2o_config_init(&s->config);
    s->config.max_request_entity_size = (size_t)cfg->http_max_body * 4; /* h2o's own 413 beyond this */
    s->config.http1.req_timeout = 5000;
    h2o_hostconf_t *host = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    /* the console's files live beside the API (static.c); /admin/api stays with the API. h2o takes
     * the first registered path that matches, so the longer prefixes come first. */
    handler_t *ha = (handler_t *)h2o_create_handler(h2o_config_register_path(host, "/admin/api", 0), sizeof(*ha));
    ha->super.on_req = on_req;
    ha->in = in;
    static_register(host, cfg);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    handler_t *h = (handler_t *)h2o_create_handler(path, sizeof(*h));
    h->super.on_req = on_req;
    h->in = in;
    h2o_context_init(&s->ctx, in->node.loop.uv, &s->config);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->config.hosts;
    s->listening = 1;
    in->http = s;
    dr_log(DR_LOG_NOTICE, "event=http_listening address=%s port=%lld tls=%d duster_open=%lld", cfg->http_bind,
           (long long)cfg->http_port, s->accept_ctx.ssl_ctx != NULL, (long long)cfg->http_duster_open);
    return 0;
fail:
    if (s->accept_ctx.ssl_ctx != NULL)
        SSL_CTX_free(s->accept_ctx.ssl_ctx);
    free(s);
    return DR_ECONFIG;
}

void http_stop(ingress_t *in)
{
    struct http_server *s = in->http;
    if (s == NULL)
        return;
    if (s->listening) {
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    sse_close_all();
    h2o_context_request_shutdown(&s->ctx);
}

