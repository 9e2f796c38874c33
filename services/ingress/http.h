/* REST API of the ingress (h2o, libuv flavour, on the ingress loop). Private to the ingress. */
#ifndef DR_INGRESS_HTTP_H
#define DR_INGRESS_HTTP_H

#include <h2o.h>

#include "dr/apikey.h"
#include "ingress.h"

/* Who is calling, once authenticated. */
typedef struct {
    int authenticated;             /* 0 only on open routes (health, open Duster paths) */
    int scope;                     /* dr_scope_t */
    char key_id[DR_APIKEY_ID_LEN + 1];
    char device[256];              /* device scope: the one device the key may touch */
    char client[256];              /* login token: the registry client (deviseId); "" for API keys */
    int64_t token_ttl_ms;          /* login token: its remaining lifetime */
    int cookie;                    /* authenticated by the session cookie (writes need a CSRF token) */
} caller_t;

typedef struct hreq hreq_t;
typedef void route_fn(hreq_t *hr);

/* One request in flight. Heap-allocated and reference counted: one reference belongs to h2o's
 * request pool (dropped when h2o disposes the request, e.g. because the client went away) and one to
 * the handler while it waits for Redis. After an asynchronous step, check hr->req != NULL before
 * answering. */
struct hreq {
    h2o_req_t *req;                /* NULL once h2o disposed the request */
    ingress_t *in;
    int refs;
    caller_t who;
    char dev[256];                 /* decoded {deviceId} path segment, if the route has one */
    int64_t id;                    /* {messageId} path segment, if the route has one */
    const struct route *route;
    void *state;                   /* handler state, freed with free_state */
    void (*free_state)(void *state);
    route_fn *resume;              /* rest_auth.c: the handler to run again once its caller is verified */
};

/* http_api.c */
int http_start(ingress_t *in, char *err);
void http_stop(ingress_t *in);
int http_idle(ingress_t *in);       /* 1 when no client connection is open */
void hreq_release(hreq_t *hr);     /* drops the handler's reference */
void http_json(hreq_t *hr, int status, const char *body, size_t len);
void http_error(hreq_t *hr, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void http_empty(hreq_t *hr, int status);
void http_add_header(hreq_t *hr, const char *name, const char *value);
/* Request body, NULL when absent. Checks the size and JSON depth limits and the content type and
 * answers the error itself (returns NULL, *len = (size_t)-1) when a check fails. */
const char *http_body(hreq_t *hr, size_t *len);
/* Value of a query parameter (decoded into buf of cap bytes); 1 if present. */
int http_query(hreq_t *hr, const char *name, char *buf, size_t cap);
/* Value of a request header (not decoded); NULL if absent. */
const char *http_header(hreq_t *hr, const char *name, size_t *len);
/* Answers 503 with a JSON error when Redis is unavailable; returns 1 when it did. */
int http_unavailable(hreq_t *hr, int err);

/* auth.c */
typedef void auth_cb(hreq_t *hr, int status); /* status: 0 ok, 401, 429 (Retry-After set) or 503 */
void auth_check(hreq_t *hr, const char *token, size_t len, auth_cb *cb);
void auth_dispose(ingress_t *in);
/* The request's credential: the Bearer token (returns 1), else the login token of the session cookie
 * (returns 2), else 0. *tok points into the request and is valid while it lives. */
int auth_credential(hreq_t *hr, const char **tok, size_t *len);
#define AUTH_CSRF_LEN 32
/* The CSRF token of a session token into out[AUTH_CSRF_LEN + 1] (a keyed hash of the token). */
void auth_csrf_of(const char *token, size_t len, char *out);
/* 1 when a cookie-authenticated request may proceed: a safe method, or X-CSRF-Token matching the
 * session. Requests authenticated by a Bearer header always may. */
int auth_csrf_ok(hreq_t *hr);

/* rest_auth.c: Duster's login API. Login tokens ("drt_...") are verified by auth_check too. */
void rest_auth_login(hreq_t *hr);
void rest_auth_me(hreq_t *hr);
void rest_auth_logout(hreq_t *hr);
void rest_auth_is_client_enabled(hreq_t *hr);
/* Open-route handlers of the auth and admin API call this first: it returns 1 when the caller is
 * verified and allowed (MAN token or admin key when admin_only), else it authenticates the request,
 * answers 401/403/429/503 with Duster's bodies itself or runs hr->route's handler again, and returns 0. */
int rest_auth_gate(hreq_t *hr, int admin_only, route_fn *self);
/* A Duster/Spring style error body {"error":reason,"message":...,"status":N}. */
void rest_auth_error(hreq_t *hr, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The client's address as text (for login rate limits). */
void rest_auth_peer(hreq_t *hr, char *buf, size_t cap);
/* Creates operator "admin" with a generated password, printed once, when no MAN client exists. */
void rest_auth_bootstrap(ingress_t *in);

/* rest_admin.c: Duster's admin API of registry clients, and the broker provisioning */
void admin_list(hreq_t *hr);
void admin_get(hreq_t *hr);
void admin_create(hreq_t *hr);
void admin_update(hreq_t *hr);
void admin_delete(hreq_t *hr);
int dynsec_start(ingress_t *in, char *err);
void dynsec_stop(ingress_t *in);

/* rest_duster.c and rest_v1.c: route handlers */
void duster_submit(hreq_t *hr);
void duster_ack(hreq_t *hr);
void duster_peek(hreq_t *hr);
void duster_status(hreq_t *hr);
void v1_submit(hreq_t *hr);
void v1_bulk(hreq_t *hr);
void v1_get_message(hreq_t *hr);
void v1_list_messages(hreq_t *hr);
void v1_cancel(hreq_t *hr);
void v1_purge(hreq_t *hr);
void v1_device(hreq_t *hr);
void v1_pacing(hreq_t *hr);
void v1_pull(hreq_t *hr);
void v1_ack(hreq_t *hr);
void v1_openapi(hreq_t *hr);
/* static.c: the console's files (registered on their own h2o paths) and its redirects; static_route
 * answers and returns 1 when the request is one of /, /admin, /swagger-ui.html or /v3/api-docs. */
void static_register(h2o_hostconf_t *host, const dr_settings_t *cfg);
int static_route(hreq_t *hr);
/* rest_console.c: GET /admin/api/messages (Duster's admin list), GET /v1/messages (fleet search) */
void rest_console_messages(hreq_t *hr);
void rest_console_search(hreq_t *hr);
/* rest_saved.c: Duster's saved commands */
void saved_list(hreq_t *hr);
void saved_get(hreq_t *hr);
void saved_create(hreq_t *hr);
void saved_update(hreq_t *hr);
void saved_delete(hreq_t *hr);
void saved_send(hreq_t *hr);
/* rest_metrics.c: GET /metrics (Prometheus text) */
void rest_metrics(hreq_t *hr);
/* rest_stats.c: GET /v1/stats (the cluster's counters and backlog gauges, from the metrics hashes) */
void v1_stats(hreq_t *hr);
/* rest_devices.c: GET /v1/devices, and the name paging it shares with rollout queries */
void v1_devices(hreq_t *hr);
typedef struct {
    char *name;
    int registered;        /* a registry client of role DEVISE */
    char *description;     /* the client's, "" otherwise */
} dev_entry_t;
/* A page of device names: e valid during the call; next the `after` of the next page or NULL. */
typedef void dev_page_cb(void *data, int err, const dev_entry_t *e, size_t n, const char *next);
/* Names starting with prefix after after, at most limit (1..1000); cb is called exactly once when 0
 * is returned. */
int dev_page(ingress_t *in, const char *prefix, const char *after, int64_t limit, dev_page_cb *cb, void *data);
/* 1 when the query names parameter name at all (a value that fails to decode is then an error). */
int rest_query_has(hreq_t *hr, const char *name);
/* rest_rollout.c: rollouts over REST, and the loop timer that advances running ones */
void rollout_create(hreq_t *hr);
void rollout_list(hreq_t *hr);
void rollout_get(hreq_t *hr);
void rollout_pause(hreq_t *hr);
void rollout_resume(hreq_t *hr);
void rollout_cancel(hreq_t *hr);
void rollout_start(ingress_t *in);
void rollout_stop(ingress_t *in);
/* rest_keys.c: API keys over REST */
void keys_create(hreq_t *hr);
void keys_list(hreq_t *hr);
void keys_revoke(hreq_t *hr);
/* sse.c */
void v1_events(hreq_t *hr);
void sse_close_all(void);

#endif
