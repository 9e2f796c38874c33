/* Duster's login API (duster-compat.md §4.2): POST /auth/login, GET /auth/me, POST /auth/logout,
 * POST /auth/isClientEnabled, the gate in front of the admin API, and the first operator.
 *
 * DESIGN
 * A login is three steps: the registry says whether the id or the source address is over its
 * failure limit and hands out the client (dr_reg_login); bcrypt runs on libuv's thread pool, never on
 * the loop; then a random token is issued and only its SHA-256 stored (dr_reg_token_issue), tied to
 * the client's generation, so a password change, disabling or deleting revokes it. An unknown id
 * costs the same bcrypt work as a known one and gets the same answer, so neither the body nor the
 * time tells whether an id exists. Error bodies on these routes are Duster's ({"error":"Unauthorized"},
 * {"error":"Forbidden"}, {"error":"Invalid credentials"}), since its web console reads them.
 */
#define DR_MODULE "ingress/rest_auth"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/registry.h"
#include "http.h"

/* ---- answers ------------------------------------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 409:
        return "Conflict";
    case 429:
        return "Too Many Requests";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    }
    return "Internal Server Error";
}

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

void rest_auth_error(hreq_t *hr, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_json(hr, status,
              json_pack("{s:s, s:s, s:i}", "error", reason_of(status), "message", msg, "status", status));
}

/* Duster's bare security answers. */
static void deny(hreq_t *hr, int status)
{
    static const char u[] = "{\"error\":\"Unauthorized\"}", f[] = "{\"error\":\"Forbidden\"}";
    if (status == 403)
        http_json(hr, 403, f, sizeof(f) - 1);
    else
        http_json(hr, 401, u, sizeof(u) - 1);
}

static void bad_credentials(hreq_t *hr)
{
    static const char b[] = "{\"error\":\"Invalid credentials\"}";
    http_json(hr, 401, b, sizeof(b) - 1);
}

static void limited(hreq_t *hr, int64_t wait_ms)
{
    char ra[24];
    snprintf(ra, sizeof(ra), "%lld", (long long)(wait_ms + 999) / 1000);
    http_add_header(hr, "retry-after", ra[0] == '0' ? "1" : ra);
    rest_auth_error(hr, 429, "too many failed logins; retry in %s s", ra[0] == '0' ? "1" : ra);
}

static void unavailable(hreq_t *hr)
{
    http_add_header(hr, "retry-after", "1");
    rest_auth_error(hr, 503, "the registry is unavailable; nothing was changed, retry later");
}

void rest_auth_peer(hreq_t *hr, char *buf, size_t cap)
{
    snprintf(buf, cap, "?");
    if (hr->req == NULL || hr->req->conn == NULL || hr->req->conn->callbacks->get_peername == NULL)
        return;
    struct sockaddr_storage ss;
    socklen_t sl = hr->req->conn->callbacks->get_peername(hr->req->conn, (struct sockaddr *)&ss);
    char host[NI_MAXHOST];
    if (sl != 0 && h2o_socket_getnumerichost((struct sockaddr *)&ss, sl, host) != SIZE_MAX)
        snprintf(buf, cap, "%s", host);
}

/* The session cookie (HttpOnly: scripts never see the token) and the CSRF cookie (readable: the page
 * echoes it in X-CSRF-Token). SameSite=Strict keeps both out of cross-site requests; Secure when the
 * API is served over HTTPS. An empty token with max_age 0 clears them. */
static void set_cookies(hreq_t *hr, const char *tok, const char *csrf, int64_t max_age)
{
    const char *secure = hr->in->node.cfg.http_tls_cert[0] ? "; Secure" : "";
    char v[256];
    snprintf(v, sizeof(v), "drover_session=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict%s", tok,
             (long long)max_age, secure);
    http_add_header(hr, "set-cookie", v);
    snprintf(v, sizeof(v), "drover_csrf=%s; Path=/; Max-Age=%lld; SameSite=Strict%s", csrf, (long long)max_age,
             secure);
    http_add_header(hr, "set-cookie", v);
}

/* ---- the gate of the auth and admin routes -------------------------------------------------------- */

static void after_gate(hreq_t *hr, int status)
{
    if (hr->req == NULL) {
        hreq_release(hr);
        return;
    }
    if (status == 429) {
        rest_auth_error(hr, 429, "too many requests for this API key");
    } else if (status == 503) {
        unavailable(hr);
    } else if (status != 0) {
        deny(hr, 401);
    } else {
        if (!auth_csrf_ok(hr)) {
            rest_auth_error(hr, 403, "missing or wrong X-CSRF-Token header");
            hreq_release(hr);
            return;
        }
        hr->resume(hr); /* now authenticated: the handler runs its body */
        return;
    }
    hreq_release(hr);
}

int rest_auth_gate(hreq_t *hr, int admin_only, route_fn *self)
{
    if (hr->who.authenticated) {
        if (admin_only && hr->who.scope != DR_SCOPE_ADMIN) {
            deny(hr, 403);
            hreq_release(hr);
            return 0;
        }
        return 1;
    }
    const char *tok;
    size_t tlen;
    int how = auth_credential(hr, &tok, &tlen); /* Bearer header, else the session cookie */
    if (how == 0) {
        deny(hr, 401);
        hreq_release(hr);
        return 0;
    }
    hr->who.cookie = how == 2;
    hr->resume = self;
    auth_check(hr, tok, tlen, after_gate);
    return 0;
}

/* ---- request bodies ------------------------------------------------------------------------------ */

/* Parses the body as a JSON object; answers 400/413/415 itself and returns NULL on failure. */
static json_t *body_object(hreq_t *hr)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1)
        return NULL;
    if (body == NULL || len == 0) {
        rest_auth_error(hr, 400, "a JSON body is required");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        rest_auth_error(hr, 400, "the body is not a JSON object%s%s", j ? "" : ": ", j ? "" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A required, non-blank string field; NULL when missing, blank or not a string. */
static const char *str_field(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s == NULL || strspn(s, " \t\r\n") == strlen(s) || strlen(s) != json_string_length(v))
        return NULL;
    return s;
}

/* ---- POST /auth/login and POST /auth/isClientEnabled ------------------------------------------- */

typedef struct {
    hreq_t *hr;
    int hook; /* isClientEnabled: answer {decision} */
    int cookie; /* browser login: also set the session and CSRF cookies */
    char name[256];
    char addr[320];
    char *pw;
    int found, enabled;
    char gen[24];
    char tok[DR_TOKEN_LEN + 1], tok_hash[DR_TOKEN_HASH_LEN + 1];
} login_t;

static void login_free(login_t *l)
{
    if (l->pw) {
        memset(l->pw, 0, strlen(l->pw));
        free(l->pw);
    }
    memset(l->tok, 0, sizeof(l->tok));
    free(l);
}

static void login_done(login_t *l)
{
    hreq_release(l->hr);
    login_free(l);
}

static void decision(hreq_t *hr, int yes)
{
    static const char t[] = "{\"decision\":true}", f[] = "{\"decision\":false}";
    http_json(hr, 200, yes ? t : f, yes ? sizeof(t) - 1 : sizeof(f) - 1);
}

static void on_failed_counted(void *data, int err, const char *errstr, int64_t result)
{
    (void)err, (void)errstr, (void)result;
    login_t *l = data;
    if (l->hook)
        decision(l->hr, 0);
    else
        bad_credentials(l->hr);
    login_done(l);
}

static void fail(login_t *l)
{
    ingress_t *in = l->hr->in;
    dr_log(DR_LOG_VERBOSE, "event=login_failed hook=%d addr=%s", l->hook, l->addr);
    if (dr_reg_failed(in->node.redis, &in->store, l->name, l->addr, in->node.cfg.auth_login_window_s * 1000,
                      on_failed_counted, l) != 0)
        on_failed_counted(l, DR_EUNAVAIL, NULL, 0);
}

static void on_issued(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                      int64_t aux)
{
    (void)errstr, (void)aux;
    login_t *l = data;
    hreq_t *hr = l->hr;
    if (err != 0) {
        unavailable(hr);
    } else if (result != DR_REG_OK) {
        bad_credentials(hr); /* deleted, disabled or a new password since the check */
    } else {
        dr_log(DR_LOG_NOTICE, "event=login client=\"%s\" role=%s addr=%s cookie=%d", c->devise_id,
               dr_reg_role_name(c->role), l->addr, l->cookie);
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "accessToken", l->tok, "tokenType", "Bearer",
                              "deviseId", c->devise_id, "role", dr_reg_role_name(c->role), "expiresIn",
                              (json_int_t)hr->in->node.cfg.auth_token_ttl_s);
        if (l->cookie) {
            char csrf[AUTH_CSRF_LEN + 1];
            auth_csrf_of(l->tok, strlen(l->tok), csrf);
            set_cookies(hr, l->tok, csrf, hr->in->node.cfg.auth_token_ttl_s);
            json_object_set_new(j, "csrfToken", json_string(csrf));
        }
        send_json(hr, 200, j);
    }
    login_done(l);
}

static void on_verified(void *data, int err, int match, const char *hash)
{
    (void)hash;
    login_t *l = data;
    hreq_t *hr = l->hr;
    ingress_t *in = hr->in;
    if (err != 0 || !match || !l->found || !l->enabled) {
        fail(l);
        return;
    }
    if (l->hook) {
        decision(hr, 1);
        login_done(l);
        return;
    }
    if (dr_token_new(l->tok, l->tok_hash) != 0) {
        rest_auth_error(hr, 500, "the random source failed");
        login_done(l);
        return;
    }
    if (dr_reg_token_issue(in->node.redis, &in->store, l->tok_hash, l->name, l->gen,
                           in->node.cfg.auth_token_ttl_s * 1000, on_issued, l) != 0) {
        unavailable(hr);
        login_done(l);
    }
}

static void on_login_state(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                           int64_t aux)
{
    (void)errstr;
    login_t *l = data;
    hreq_t *hr = l->hr;
    ingress_t *in = hr->in;
    if (err != 0) {
        unavailable(hr);
        login_done(l);
        return;
    }
    if (result == DR_REG_LIMITED) {
        if (l->hook)
            decision(hr, 0);
        else
            limited(hr, aux);
        login_done(l);
        return;
    }
    l->found = result == DR_REG_OK;
    if (l->found) {
        l->enabled = c->enabled;
        snprintf(l->gen, sizeof(l->gen), "%s", c->gen);
    }
    /* The same bcrypt work whether or not the id exists (hash NULL: a dummy hash at our cost). */
    if (dr_passwd_verify_async(in->node.loop.uv, l->pw, l->found ? c->hash : NULL,
                               (int)in->node.cfg.auth_bcrypt_cost, on_verified, l) != 0) {
        rest_auth_error(hr, 500, "cannot queue the password check");
        login_done(l);
    }
}

static void start_login(hreq_t *hr, int hook)
{
    json_t *j = body_object(hr);
    if (j == NULL) {
        hreq_release(hr);
        return;
    }
    const char *idf = hook ? "username" : "deviseId";
    const char *name = str_field(j, idf), *pw = str_field(j, "password");
    if (name == NULL || pw == NULL) {
        rest_auth_error(hr, 400, "%s and password are required", idf);
        json_decref(j);
        hreq_release(hr);
        return;
    }
    json_t *ck = json_object_get(j, "cookie");
    char q[8];
    if (ck != NULL && !json_is_boolean(ck)) {
        rest_auth_error(hr, 400, "cookie must be true or false");
        json_decref(j);
        hreq_release(hr);
        return;
    }
    int cookie = !hook && (json_is_true(ck) || (http_query(hr, "cookie", q, sizeof(q)) &&
                                                (strcmp(q, "1") == 0 || strcmp(q, "true") == 0)));
    if (strlen(name) > 255) {
        /* no client can have such an id; answered like any unknown id */
        name = "";
    }
    login_t *l = dr_calloc(1, sizeof(*l));
    l->hr = hr;
    l->hook = hook;
    l->cookie = cookie;
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->pw = dr_strdup(pw);
    json_decref(j);
    if (hook)
        snprintf(l->addr, sizeof(l->addr), "hook:%s", l->name); /* the broker's address is everybody's */
    else
        rest_auth_peer(hr, l->addr, sizeof(l->addr));
    ingress_t *in = hr->in;
    if (dr_reg_login(in->node.redis, &in->store, l->name, l->addr, in->node.cfg.auth_login_failures,
                     on_login_state, l) != 0) {
        unavailable(hr);
        login_done(l);
    }
}

void rest_auth_login(hreq_t *hr)
{
    start_login(hr, 0);
}

void rest_auth_is_client_enabled(hreq_t *hr)
{
    start_login(hr, 1);
}

/* ---- GET /auth/me and POST /auth/logout --------------------------------------------------------- */

void rest_auth_me(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 0, rest_auth_me))
        return;
    const caller_t *w = &hr->who;
    if (w->client[0] != '\0') {
        json_t *j = json_pack("{s:s, s:s, s:I}", "deviseId", w->client, "role",
                              w->scope == DR_SCOPE_ADMIN ? "MAN" : "DEVISE", "expiresIn",
                              (json_int_t)(w->token_ttl_ms / 1000));
        const char *tok;
        size_t tl;
        if (w->cookie && auth_credential(hr, &tok, &tl) == 2) {
            char csrf[AUTH_CSRF_LEN + 1];
            auth_csrf_of(tok, tl, csrf);
            json_object_set_new(j, "csrfToken", json_string(csrf));
        }
        send_json(hr, 200, j);
    } else {
        const char *role = w->scope == DR_SCOPE_ADMIN    ? "MAN"
                           : w->scope == DR_SCOPE_DEVICE ? "DEVISE"
                                                         : "PRODUCER";
        send_json(hr, 200,
                  json_pack("{s:s, s:s, s:s}", "deviseId", w->device, "role", role, "apiKeyId", w->key_id));
    }
    hreq_release(hr);
}

static void on_revoked(void *data, int err, const char *errstr, int64_t result)
{
    (void)errstr, (void)result;
    hreq_t *hr = data;
    if (err != 0) {
        unavailable(hr);
    } else {
        set_cookies(hr, "", "", 0);
        http_empty(hr, 204);
    }
    hreq_release(hr);
}

void rest_auth_logout(hreq_t *hr)
{
    const char *auth;
    size_t alen = 0;
    if (!hr->who.authenticated && auth_credential(hr, &auth, &alen) == 0) {
        /* nothing to revoke: a page resetting its state gets its cookies cleared */
        set_cookies(hr, "", "", 0);
        http_empty(hr, 204);
        hreq_release(hr);
        return;
    }
    if (!rest_auth_gate(hr, 0, rest_auth_logout))
        return;
    if (hr->who.client[0] == '\0' || auth_credential(hr, &auth, &alen) == 0) {
        rest_auth_error(hr, 400,
                        "only a login token can log out; API keys are revoked with drover-ctl key revoke");
        hreq_release(hr);
        return;
    }
    char h[DR_TOKEN_HASH_LEN + 1];
    dr_token_hash(auth, DR_TOKEN_LEN, h);
    if (dr_reg_token_revoke(hr->in->node.redis, &hr->in->store, h, on_revoked, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

/* ---- first operator ------------------------------------------------------------------------------ */

typedef struct {
    ingress_t *in;
    char pw[25];
} boot_t;

static void on_bootstrapped(void *data, int err, const char *errstr, int64_t result)
{
    boot_t *b = data;
    if (err != 0) {
        dr_log(DR_LOG_WARNING, "event=registry_bootstrap_failed error=\"%s\"",
               errstr ? errstr : dr_strerror(err));
    } else if (result == 1) {
        /* Shown only now: Redis keeps its bcrypt hash alone. */
        dr_log(DR_LOG_NOTICE, "event=operator_created client=admin role=MAN");
        fprintf(stdout,
                "drover-ingress: created operator 'admin' with password %s (shown only now; change it with "
                "drover-ctl user passwd admin)\n",
                b->pw);
        fflush(stdout);
    } else if (result == -1) {
        dr_log(DR_LOG_WARNING, "event=no_operator reason=\"client admin exists without role MAN\" "
                               "hint=\"drover-ctl user create ID --role MAN\"");
    }
    memset(b->pw, 0, sizeof(b->pw));
    free(b);
}

static void on_boot_hash(void *data, int err, int match, const char *hash)
{
    (void)match;
    boot_t *b = data;
    ingress_t *in = b->in;
    if (err != 0 || in->node.stopping ||
        dr_reg_bootstrap(in->node.redis, &in->store, "admin", hash, on_bootstrapped, b) != 0) {
        memset(b->pw, 0, sizeof(b->pw));
        free(b);
    }
}

void rest_auth_bootstrap(ingress_t *in)
{
    if (!in->node.cfg.registry_bootstrap || in->node.cfg.http_port == 0)
        return;
    boot_t *b = dr_calloc(1, sizeof(*b));
    b->in = in;
    if (dr_passwd_random(b->pw, 24) != 0 ||
        dr_passwd_hash_async(in->node.loop.uv, b->pw, (int)in->node.cfg.auth_bcrypt_cost, on_boot_hash, b) !=
            0)
        free(b);
}
