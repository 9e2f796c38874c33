/* API key verification and per-key rate limiting for the REST API.
 *
 * A presented key is hashed and compared in constant time with the digest stored under
 * <prefix>ak:<id>. Verified (and unknown) ids are cached for http.key_cache_ms so a busy client costs
 * no Redis round trip per request; a revoked key therefore stops working within that delay. Each
 * cached key carries a token bucket (http.rate per second, http.burst deep); the limit is per ingress
 * node, so a cluster of N ingress nodes allows up to N times the rate.
 *
 * Login tokens of the client registry ("drt_...", rest_auth.c) are checked against Redis on every
 * request instead (dr_reg_token_check): revoking one, or deleting, disabling or re-keying its client,
 * takes effect at once. A MAN token acts with the admin scope, a DEVISE token with the device scope
 * bound to its own deviseId, exactly like a device API key. Tokens have no request-rate bucket.
 */
#define DR_MODULE "ingress/auth"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/registry.h"
#include "http.h"

#include <openssl/evp.h>
#include <strings.h>

#define NBUCKETS 4096
#define MAX_ENTRIES 100000 /* beyond this (random ids from a scanner) the cache starts over */

typedef struct entry {
    char id[DR_APIKEY_ID_LEN + 1];
    char hash[DR_APIKEY_HASH_LEN + 1];
    int valid;          /* 0: unknown or revoked id (negative cache) */
    int scope;
    char device[256];
    int64_t expires;    /* monotonic ms */
    double tokens;
    int64_t refilled;   /* monotonic ms */
    struct entry *next;
} entry_t;

struct auth_cache {
    entry_t *buckets[NBUCKETS];
    size_t count;
};

static unsigned bucket_of(const char *id)
{
    unsigned h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % NBUCKETS;
}

static void clear(struct auth_cache *c)
{
    for (int i = 0; i < NBUCKETS; i++) {
        while (c->buckets[i]) {
            entry_t *e = c->buckets[i];
            c->buckets[i] = e->next;
            free(e);
        }
    }
    c->count = 0;
}

static entry_t *find(ingress_t *in, const char *id, int create)
{
    if (in->auth == NULL)
        in->auth = dr_calloc(1, sizeof(*in->auth));
    struct auth_cache *c = in->auth;
    unsigned b = bucket_of(id);
    for (entry_t *e = c->buckets[b]; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    if (!create)
        return NULL;
    if (c->count >= MAX_ENTRIES)
        clear(c);
    entry_t *e = dr_calloc(1, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->tokens = (double)in->node.cfg.http_burst;
    e->refilled = dr_mono_ms();
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->count++;
    return e;
}

void auth_dispose(ingress_t *in)
{
    if (in->auth) {
        clear(in->auth);
        free(in->auth);
        in->auth = NULL;
    }
}

/* Decides once the entry is fresh: 0, 401 or 429. */
static int verdict(hreq_t *hr, entry_t *e, const char *hash)
{
    const dr_settings_t *cfg = &hr->in->node.cfg;
    if (!e->valid || !dr_apikey_hash_equal(e->hash, hash))
        return 401;
    int64_t now = dr_mono_ms();
    e->tokens += (double)(now - e->refilled) * (double)cfg->http_rate / 1000.0;
    if (e->tokens > (double)cfg->http_burst)
        e->tokens = (double)cfg->http_burst;
    e->refilled = now;
    if (e->tokens < 1.0) {
        char ra[24];
        snprintf(ra, sizeof(ra), "%d", (int)ceil((1.0 - e->tokens) / (double)cfg->http_rate));
        http_add_header(hr, "retry-after", ra[0] == '0' ? "1" : ra);
        return 429;
    }
    e->tokens -= 1.0;
    hr->who.authenticated = 1;
    hr->who.scope = e->scope;
    snprintf(hr->who.key_id, sizeof(hr->who.key_id), "%s", e->id);
    snprintf(hr->who.device, sizeof(hr->who.device), "%s", e->device);
    return 0;
}

typedef struct {
    hreq_t *hr;
    auth_cb *cb;
    char id[DR_APIKEY_ID_LEN + 1];
    char hash[DR_APIKEY_HASH_LEN + 1];
} lookup_t;

static const char *str_at(const redisReply *r, size_t i)
{
    return (i < r->elements && r->element[i]->type == REDIS_REPLY_STRING) ? r->element[i]->str : NULL;
}

static void on_lookup(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    lookup_t *l = data;
    hreq_t *hr = l->hr;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        l->cb(hr, 503);
        free(l);
        return;
    }
    entry_t *e = find(hr->in, l->id, 1);
    const char *h = str_at(reply, 0), *scope = str_at(reply, 1), *dev = str_at(reply, 2), *rev = str_at(reply, 3);
    e->valid = h && scope && dr_scope_parse(scope) >= 0 && !(rev && strcmp(rev, "1") == 0);
    if (e->valid) {
        snprintf(e->hash, sizeof(e->hash), "%s", h);
        e->scope = dr_scope_parse(scope);
        snprintf(e->device, sizeof(e->device), "%s", dev ? dev : "");
        if (e->scope == DR_SCOPE_DEVICE && e->device[0] == '\0')
            e->valid = 0; /* a device key without its device is unusable */
    }
    e->expires = dr_mono_ms() + hr->in->node.cfg.http_key_cache_ms;
    l->cb(hr, verdict(hr, e, l->hash));
    free(l);
}

typedef struct {
    hreq_t *hr;
    auth_cb *cb;
    char hash[DR_TOKEN_HASH_LEN + 1];
} token_lookup_t;

static void on_token(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c, int64_t ttl_ms)
{
    (void)errstr;
    token_lookup_t *t = data;
    hreq_t *hr = t->hr;
    if (err != 0) {
        t->cb(hr, 503);
    } else if (result != DR_REG_OK) {
        t->cb(hr, 401);
    } else {
        hr->who.authenticated = 1;
        hr->who.scope = c->role == DR_REG_MAN ? DR_SCOPE_ADMIN : DR_SCOPE_DEVICE;
        snprintf(hr->who.key_id, sizeof(hr->who.key_id), "t%.11s", t->hash);
        snprintf(hr->who.device, sizeof(hr->who.device), "%s", c->role == DR_REG_MAN ? "" : c->devise_id);
        snprintf(hr->who.client, sizeof(hr->who.client), "%s", c->devise_id);
        hr->who.token_ttl_ms = ttl_ms;
        t->cb(hr, 0);
    }
    free(t);
}

static void check_token(hreq_t *hr, const char *token, size_t len, auth_cb *cb)
{
    token_lookup_t *t = dr_malloc(sizeof(*t));
    t->hr = hr;
    t->cb = cb;
    dr_token_hash(token, len, t->hash);
    if (dr_reg_token_check(hr->in->node.redis, &hr->in->store, t->hash, on_token, t) != 0) {
        free(t);
        cb(hr, 503);
    }
}

void auth_check(hreq_t *hr, const char *token, size_t len, auth_cb *cb)
{
    while (len > 0 && (token[len - 1] == ' ' || token[len - 1] == '\t'))
        len--;
    if (dr_token_is(token, len)) {
        check_token(hr, token, len, cb);
        return;
    }
    char id[DR_APIKEY_ID_LEN + 1], hash[DR_APIKEY_HASH_LEN + 1];
    if (dr_apikey_parse(token, len, id) != 0) {
        cb(hr, 401);
        return;
    }
    dr_apikey_hash(token, len, hash);
    entry_t *e = find(hr->in, id, 0);
    if (e && dr_mono_ms() < e->expires) {
        cb(hr, verdict(hr, e, hash));
        return;
    }
    lookup_t *l = dr_malloc(sizeof(*l));
    l->hr = hr;
    l->cb = cb;
    memcpy(l->id, id, sizeof(id));
    memcpy(l->hash, hash, sizeof(hash));
    char key[128];
    dr_store_key_apikey(&hr->in->store, id, key, sizeof(key));
    const char *argv[] = {"HMGET", key, "h", "scope", "dev", "revoked"};
    if (dr_redis_cmd(hr->in->node.redis, on_lookup, l, 6, argv, NULL) != 0) {
        free(l);
        cb(hr, 503);
    }
}

/* ---- browser sessions ----------------------------------------------------------------------------- */

/* Finds name=value in the Cookie headers; returns the value (not NUL-terminated) or NULL. */
static const char *cookie_value(hreq_t *hr, const char *name, size_t *len)
{
    if (hr->req == NULL)
        return NULL;
    size_t nl = strlen(name);
    ssize_t i = -1;
    while ((i = h2o_find_header(&hr->req->headers, H2O_TOKEN_COOKIE, i)) >= 0) {
        const char *p = hr->req->headers.entries[i].value.base;
        const char *end = p + hr->req->headers.entries[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
                *len = (size_t)(stop - p - (ptrdiff_t)nl - 1);
                return p + nl + 1;
            }
            p = stop;
        }
    }
    return NULL;
}

int auth_credential(hreq_t *hr, const char **tok, size_t *len)
{
    size_t alen = 0;
    const char *auth = http_header(hr, "authorization", &alen);
    if (auth != NULL) {
        if (alen < 8 || strncasecmp(auth, "Bearer ", 7) != 0)
            return 0;
        *tok = auth + 7;
        *len = alen - 7;
        return 1;
    }
    const char *c = cookie_value(hr, "drover_session", len);
    if (c == NULL || !dr_token_is(c, *len))
        return 0; /* only login tokens travel in the cookie, never API keys */
    *tok = c;
    return 2;
}

void auth_csrf_of(const char *token, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, "drover-csrf:", 12);
    EVP_DigestUpdate(ctx, token, len);
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < AUTH_CSRF_LEN / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[AUTH_CSRF_LEN] = '\0';
}

int auth_csrf_ok(hreq_t *hr)
{
    if (!hr->who.cookie || hr->req == NULL)
        return 1;
    const h2o_iovec_t m = hr->req->method;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return 1;
    const char *tok;
    size_t tl, hl;
    const char *h = http_header(hr, "x-csrf-token", &hl);
    if (auth_credential(hr, &tok, &tl) != 2 || h == NULL || hl != AUTH_CSRF_LEN)
        return 0;
    char want[AUTH_CSRF_LEN + 1];
    auth_csrf_of(tok, tl, want);
    /* constant time: the header is attacker-controlled */
    unsigned diff = 0;
    for (size_t i = 0; i < AUTH_CSRF_LEN; i++)
        diff |= (unsigned)(want[i] ^ h[i]);
    return diff == 0;
}
