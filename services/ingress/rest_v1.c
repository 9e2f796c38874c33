/* The v1 REST API for fleet back ends and pulling devices (docs/openapi.yaml).
 *
 * Bodies use the same field names as the MQTT producer message, so one command looks the same on
 * every transport. Every handler answers exactly once and then releases its request.
 */
#define DR_MODULE "ingress/rest_v1"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "rest.h"

#define BULK_MAX 1000
#define LIST_MAX 100

/* ---- a growable text buffer for JSON bodies ---------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = dr_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_fmt(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_fmt(buf_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    buf_add(b, tmp, n < 0 ? 0 : ((size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1));
}

static void buf_str(buf_t *b, const char *s)
{
    char *q = dr_codec_json_string(s ? s : "");
    buf_add(b, q, strlen(q));
    free(q);
}

/* ---- POST /v1/devices/{dev}/messages ---------------------------------------------------------- */

static void message_ref(buf_t *b, const char *id, const char *dev, const char *status)
{
    buf_fmt(b, "{\"id\":%s,\"device\":", id);
    buf_str(b, dev);
    buf_fmt(b, ",\"status\":\"%s\"}", status);
}

static void on_v1_submitted(void *data, const store_result_t *res)
{
    hreq_t *hr = data;
    if (!http_unavailable(hr, res->err)) {
        if (res->result == RES_STORED || res->result == RES_DUPLICATE) {
            buf_t b = {0};
            message_ref(&b, res->id, hr->dev, res->status);
            char loc[64];
            snprintf(loc, sizeof(loc), "/v1/messages/%s", res->id);
            http_add_header(hr, "location", loc);
            if (res->result == RES_DUPLICATE)
                http_add_header(hr, "idempotent-replayed", "true");
            http_json(hr, res->result == RES_STORED ? 201 : 200, b.p, b.len);
            free(b.p);
        } else {
            rest_store_error(hr, res);
        }
    }
    hreq_release(hr);
}

void v1_submit(hreq_t *hr)
{
    dr_producer_msg_t m;
    if (rest_parse_message(hr, &m) != 0) {
        hreq_release(hr);
        return;
    }
    rest_accept(hr, &m, on_v1_submitted);
    dr_producer_msg_dispose(&m);
}

/* ---- POST /v1/messages/bulk ------------------------------------------------------------------- */

typedef struct {
    int n, pending;
    char (*dev)[256];
    store_result_t *res;
} bulk_t;

typedef struct {
    hreq_t *hr;
    int i;
} bulk_item_t;

static void bulk_free(void *p)
{
    bulk_t *b = p;
    free(b->dev);
    free(b->res);
    free(b);
}

static void on_bulk_item(void *data, const store_result_t *res)
{
    bulk_item_t *it = data;
    hreq_t *hr = it->hr;
    bulk_t *bk = hr->state;
    bk->res[it->i] = *res;
    free(it);
    if (--bk->pending > 0)
        return;
    buf_t b = {0};
    buf_add(&b, "{\"messages\":[", 13);
    int failures = 0;
    for (int i = 0; i < bk->n; i++) {
        const store_result_t *r = &bk->res[i];
        if (i)
            buf_add(&b, ",", 1);
        if (r->err == 0 && (r->result == RES_STORED || r->result == RES_DUPLICATE)) {
            message_ref(&b, r->id, bk->dev[i], r->status);
        } else {
            failures++;
            const char *code = r->err                           ? "UNAVAILABLE"
                               : r->result == RES_CONFLICT  ? "IDEMPOTENCY_CONFLICT"
                               : r->result == RES_TOO_LARGE ? "TOO_LARGE"
                                                            : "INTERNAL";
            buf_add(&b, "{\"device\":", 10);
            buf_str(&b, bk->dev[i]);
            buf_fmt(&b, ",\"error\":{\"code\":\"%s\",\"message\":\"not accepted; retry this device\"}}", code);
        }
    }
    buf_fmt(&b, "],\"accepted\":%d,\"failed\":%d}", bk->n - failures, failures);
    http_json(hr, 200, b.p, b.len);
    free(b.p);
    hreq_release(hr);
}

void v1_bulk(hreq_t *hr)
{
    dr_producer_msg_t m;
    if (rest_parse_message(hr, &m) != 0) { /* the command fields; "devices" is ignored there */
        hreq_release(hr);
        return;
    }
    size_t len;
    const char *body = hr->req->entity.base;
    len = hr->req->entity.len;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *devs = json_object_get(root, "devices");
    size_t n = json_is_array(devs) ? json_array_size(devs) : 0;
    if (n == 0 || n > BULK_MAX) {
        http_error(hr, 400, "BAD_FIELD", "devices must be an array of 1..%d device ids", BULK_MAX);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(devs, i);
        if (!json_is_string(d) || dr_codec_check_id(json_string_value(d), json_string_length(d),
                                                    (size_t)hr->in->node.cfg.ingress_max_device_id) != 0) {
            http_error(hr, 400, "BAD_DEVICE_ID", "devices[%zu] is not a valid device id", i);
            goto out;
        }
    }
    bulk_t *bk = dr_calloc(1, sizeof(*bk));
    bk->n = bk->pending = (int)n;
    bk->dev = dr_calloc(n, sizeof(*bk->dev));
    bk->res = dr_calloc(n, sizeof(*bk->res));
    hr->state = bk;
    hr->free_state = bulk_free;
    /* The last item to finish answers and drops the handler's reference. Items may finish before
     * ingest_accept returns, so hold one more reference while starting them. */
    hr->refs++;
    char *base_key = m.idem_key;
    for (size_t i = 0; i < n; i++) {
        snprintf(bk->dev[i], sizeof(bk->dev[i]), "%s", json_string_value(json_array_get(devs, i)));
        /* One idempotency key per device, derived from the request's key. */
        char key[DR_MAX_IDEM_KEY + 300];
        if (base_key) {
            snprintf(key, sizeof(key), "%s:%s", base_key, bk->dev[i]);
            m.idem_key = key;
        }
        bulk_item_t *it = dr_malloc(sizeof(*it));
        it->hr = hr;
        it->i = (int)i;
        accept_req_t a = {.dev = bk->dev[i], .dev_len = strlen(bk->dev[i]), .msg = &m, .key_id = hr->who.key_id};
        ingest_accept(hr->in, &a, on_bulk_item, it);
    }
    m.idem_key = base_key;
    json_decref(root);
    dr_producer_msg_dispose(&m);
    hreq_release(hr);
    return;
out:
    json_decref(root);
    dr_producer_msg_dispose(&m);
    hreq_release(hr);
}


/* ---- GET /v1/messages/{id} -------------------------------------------------------------------- */

static void write_message(buf_t *b, const dr_store_msg_t *m)
{
    buf_fmt(b, "{\"id\":%lld,\"device\":", (long long)m->id);
    buf_str(b, m->dev);
    buf_fmt(b, ",\"status\":\"%s\",\"guarantee\":\"%s\",\"command\":", rest_status_name(m->status, m->ext, 1),
            dr_guarantee_name(m->guarantee));
    buf_str(b, m->command);
    buf_add(b, ",\"data\":", 8);
    buf_add(b, m->data ? m->data : "null", m->data ? strlen(m->data) : 4);
    buf_fmt(b, ",\"attempts\":%lld,\"createdAt\":%lld,\"updatedAt\":%lld", (long long)m->attempts,
            (long long)m->accepted_ms, (long long)m->changed_ms);
    if (m->last_send_ms > 0)
        buf_fmt(b, ",\"lastSentAt\":%lld", (long long)m->last_send_ms);
    if (m->has_tmp) {
        buf_add(b, ",\"producerDeviseId\":", 20);
        buf_str(b, m->pd);
        buf_fmt(b, ",\"tmpId\":%lld", (long long)m->tmp);
    }
}

static void write_history(buf_t *b, const dr_store_msg_t *m)
{
    buf_add(b, ",\"history\":[", 12);
    for (size_t i = 0; i < m->nhistory; i++) {
        const dr_store_hist_t *h = &m->history[i];
        buf_fmt(b, "%s{\"ts\":%lld,\"status\":\"%s\",\"attempt\":%lld,\"event\":", i ? "," : "", (long long)h->ts,
                rest_status_name(h->status, 1, 1), (long long)h->attempt);
        buf_str(b, h->event);
        buf_add(b, "}", 1);
    }
    buf_add(b, "]", 1);
}

static void on_message(hreq_t *hr, const dr_store_msg_t *m)
{
    if (m == NULL) {
        http_error(hr, 404, "NOT_FOUND", "message %lld not found", (long long)hr->id);
    } else {
        buf_t b = {0};
        write_message(&b, m);
        write_history(&b, m);
        buf_add(&b, "}", 1);
        http_json(hr, 200, b.p, b.len);
        free(b.p);
    }
    hreq_release(hr);
}

void v1_get_message(hreq_t *hr)
{
    rest_load_msg(hr, on_message);
}

/* ---- GET /v1/devices/{dev}/messages ----------------------------------------------------------- */

typedef struct {
    int status_filter;     /* -1: any */
    int64_t limit;
    int64_t last_id;       /* the oldest id of this page, before filtering: the next page's cursor */
    size_t nids;
} list_t;

static void list_answer(hreq_t *hr, const dr_store_msg_t *msgs, size_t n)
{
    list_t *l = hr->state;
    buf_t b = {0};
    buf_add(&b, "{\"messages\":[", 13);
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        const dr_store_msg_t *m = &msgs[i];
        if (!m->found || !rest_may_read(hr, m) || (l->status_filter >= 0 && m->status != l->status_filter))
            continue;
        if (!first)
            buf_add(&b, ",", 1);
        first = 0;
        write_message(&b, m);
        buf_add(&b, "}", 1);
    }
    buf_add(&b, "],\"nextCursor\":", 15);
    if ((int64_t)l->nids == l->limit)
        buf_fmt(&b, "\"%lld\"}", (long long)l->last_id);
    else
        buf_add(&b, "null}", 5);
    http_json(hr, 200, b.p, b.len);
    free(b.p);
}

static void on_list_msgs(void *data, int err, const char *errstr, const dr_store_msg_t *msgs, size_t n)
{
    hreq_t *hr = data;
    if (!rest_store_failed(hr, err, errstr))
        list_answer(hr, msgs, n);
    hreq_release(hr);
}

static void on_list_ids(void *data, int err, const char *errstr, const int64_t *ids, size_t n)
{
    hreq_t *hr = data;
    list_t *l = hr->state;
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
        return;
    }
    l->nids = n;
    if (n == 0) {
        list_answer(hr, NULL, 0);
        hreq_release(hr);
        return;
    }
    l->last_id = ids[n - 1];
    int rc = dr_store_get(hr->in->node.redis, &hr->in->store, ids, n, on_list_msgs, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

void v1_list_messages(hreq_t *hr)
{
    char status[32], cursor_s[32], limit_s[16];
    list_t *l = dr_calloc(1, sizeof(*l));
    hr->state = l;
    hr->free_state = free;
    l->status_filter = -1;
    l->limit = 50;
    if (http_query(hr, "status", status, sizeof(status))) {
        l->status_filter = dr_status_parse(status, strlen(status));
        if (l->status_filter < 0) {
            http_error(hr, 400, "BAD_FIELD", "status '%s' is not a status name", status);
            hreq_release(hr);
            return;
        }
    }
    if (http_query(hr, "limit", limit_s, sizeof(limit_s))) {
        char *e;
        long v = strtol(limit_s, &e, 10);
        if (*e != '\0' || v < 1 || v > LIST_MAX) {
            http_error(hr, 400, "BAD_FIELD", "limit must be 1..%d", LIST_MAX);
            hreq_release(hr);
            return;
        }
        l->limit = v;
    }
    long long cursor = 0;
    if (http_query(hr, "cursor", cursor_s, sizeof(cursor_s))) {
        char *e;
        cursor = strtoll(cursor_s, &e, 10);
        if (*e != '\0' || cursor <= 0) {
            http_error(hr, 400, "BAD_FIELD", "cursor must be the nextCursor of a previous page");
            hreq_release(hr);
            return;
        }
    }
    int rc = dr_store_list(hr->in->node.redis, &hr->in->store, hr->dev, cursor, l->limit, on_list_ids, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- POST /v1/messages/{id}/cancel ------------------------------------------------------------ */

static void on_cancelled(void *data, int err, const char *errstr, const dr_store_cancel_res_t *res,
                         const dr_note_t *notes, size_t nnotes)
{
    hreq_t *hr = data;
    if (err == 0) {
        /* Publish and wake whether or not the client is still there: the change is committed. */
        ingest_after_commit(hr->in, notes, nnotes);
        if (res->code == DR_STORE_CANCEL_OK)
            ingest_wake(hr->in, res->shard);
    }
    if (!rest_store_failed(hr, err, errstr)) {
        if (res->code == DR_STORE_CANCEL_OK) {
            char body[96];
            int n = snprintf(body, sizeof(body), "{\"id\":%lld,\"status\":\"CANCELLED\"}", (long long)hr->id);
            http_json(hr, 200, body, (size_t)n);
        } else if (res->code == DR_STORE_CANCEL_CONFLICT) {
            http_error(hr, 409, "NOT_CANCELLABLE", "message %lld is %s and can no longer be cancelled",
                       (long long)hr->id, rest_status_name(res->status, 1, 1));
        } else {
            http_error(hr, 404, "NOT_FOUND", "message %lld not found", (long long)hr->id);
        }
    }
    hreq_release(hr);
}

/* A producer key cancels only what it submitted itself (not what came over MQTT without a key); an
 * admin key anything. A message the caller may not cancel is answered as unknown (404). */
void v1_cancel(hreq_t *hr)
{
    int rc = dr_store_cancel(hr->in->node.redis, &hr->in->store, hr->id, rest_owner(hr), NULL, on_cancelled, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- DELETE /v1/devices/{dev}/messages -------------------------------------------------------- */

#define PURGE_STEP 500

typedef struct {
    int64_t purged;
    char cursor[64];   /* last queue entry scanned */
} purge_t;

static void purge_step(hreq_t *hr);

static void on_purged(void *data, int err, const char *errstr, int64_t purged, int more, const char *cursor,
                      const dr_note_t *notes, size_t nnotes)
{
    hreq_t *hr = data;
    purge_t *p = hr->state;
    if (err == 0) {
        ingest_after_commit(hr->in, notes, nnotes);
        p->purged += purged;
        snprintf(p->cursor, sizeof(p->cursor), "%s", cursor);
        if (more && hr->req != NULL) {
            purge_step(hr);
            return;
        }
    }
    if (err == 0 || p->purged > 0)
        ingest_wake(hr->in, dr_shard_of(hr->dev, strlen(hr->dev), hr->in->store.shards));
    if (!rest_store_failed(hr, err, errstr)) {
        buf_t b = {0};
        buf_add(&b, "{\"device\":", 10);
        buf_str(&b, hr->dev);
        buf_fmt(&b, ",\"purged\":%lld}", (long long)p->purged);
        http_json(hr, 200, b.p, b.len);
        free(b.p);
    }
    hreq_release(hr);
}

static void purge_step(hreq_t *hr)
{
    purge_t *p = hr->state;
    int rc = dr_store_purge(hr->in->node.redis, &hr->in->store, hr->dev, PURGE_STEP, rest_owner(hr), p->cursor,
                            on_purged, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* A producer key purges only the messages it submitted itself; an admin key every pending message. */
void v1_purge(hreq_t *hr)
{
    purge_t *p = dr_calloc(1, sizeof(*p));
    hr->state = p;
    hr->free_state = free;
    purge_step(hr);
}

/* ---- GET /v1/devices/{dev} and PUT /v1/devices/{dev}/pacing ----------------------------------- */

/* v < 0: null, or the default dflt when has_dflt. */
static void num_or_null(buf_t *b, const char *name, int64_t v, long long dflt, int has_dflt)
{
    if (v >= 0)
        buf_fmt(b, ",\"%s\":%lld", name, (long long)v);
    else if (has_dflt)
        buf_fmt(b, ",\"%s\":%lld", name, dflt);
    else
        buf_fmt(b, ",\"%s\":null", name);
}

static void on_devinfo(void *data, int err, const char *errstr, const dr_store_devinfo_t *d)
{
    hreq_t *hr = data;
    const dr_settings_t *cfg = &hr->in->node.cfg;
    if (!rest_store_failed(hr, err, errstr)) {
        buf_t b = {0};
        buf_add(&b, "{\"device\":", 10);
        buf_str(&b, hr->dev);
        buf_fmt(&b, ",\"queued\":%lld,\"inFlight\":%lld,\"scheduled\":%lld", (long long)d->queued,
                (long long)d->in_flight, (long long)d->scheduled);
        num_or_null(&b, "nextSendAllowedAt", d->next_ms, 0, 0);
        num_or_null(&b, "lastSentAt", d->last_send_ms, 0, 0);
        num_or_null(&b, "lastAckAt", d->last_ack_ms, 0, 0);
        num_or_null(&b, "intervalMs", d->interval_ms, cfg->interval_ms, 1);
        num_or_null(&b, "window", d->window, cfg->window, 1);
        buf_fmt(&b, ",\"mode\":\"%s\",\"shard\":%u}", strcmp(d->mode, "pull") == 0 ? "pull" : "mqtt",
                dr_shard_of(hr->dev, strlen(hr->dev), hr->in->store.shards));
        http_json(hr, 200, b.p, b.len);
        free(b.p);
    }
    hreq_release(hr);
}

void v1_device(hreq_t *hr)
{
    int rc = dr_store_devinfo(hr->in->node.redis, &hr->in->store, hr->dev, on_devinfo, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

static void on_pacing_set(void *data, int err, const char *errstr, int64_t result)
{
    (void)result;
    hreq_t *hr = data;
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
        return;
    }
    v1_device(hr); /* the same connection answers in order: the summary shows the new values */
}

/* Reads one optional override: absent leaves it (-1), null removes it (DR_STORE_UNSET). Answers 400
 * and returns -1 when the value is out of range. */
static int pacing_field(hreq_t *hr, json_t *root, const char *name, long long min, long long max, int64_t *out)
{
    json_t *v = json_object_get(root, name);
    *out = -1;
    if (v == NULL)
        return 0;
    if (json_is_null(v)) {
        *out = DR_STORE_UNSET;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        http_error(hr, 400, "BAD_FIELD", "%s must be an integer in [%lld, %lld] or null", name, min, max);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 0;
}

void v1_pacing(hreq_t *hr)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1) {
        hreq_release(hr);
        return;
    }
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        http_error(hr, 400, "BAD_JSON", "expected {\"intervalMs\":N,\"window\":N,\"mode\":\"mqtt\"|\"pull\"}");
        hreq_release(hr);
        return;
    }
    /* null removes an override; absent leaves it as it is */
    int64_t interval, window;
    if (pacing_field(hr, root, "intervalMs", 0, 86400000, &interval) != 0 ||
        pacing_field(hr, root, "window", 1, 64, &window) != 0) {
        json_decref(root);
        hreq_release(hr);
        return;
    }
    const char *mode = NULL; /* NULL: leave; "": MQTT delivery (the default, so no override) */
    json_t *mv = json_object_get(root, "mode");
    if (mv != NULL) {
        const char *s = json_is_string(mv) ? json_string_value(mv) : "";
        if (strcmp(s, "mqtt") != 0 && strcmp(s, "pull") != 0) {
            http_error(hr, 400, "BAD_FIELD", "mode must be \"mqtt\" or \"pull\"");
            json_decref(root);
            hreq_release(hr);
            return;
        }
        mode = strcmp(s, "pull") == 0 ? "pull" : "";
    }
    int rc = dr_store_devset(hr->in->node.redis, &hr->in->store, hr->dev, interval, window, mode, -1,
                             on_pacing_set, hr);
    json_decref(root);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- POST /v1/devices/{dev}/next and .../messages/{id}/ack ------------------------------------ */

static void on_pulled(void *data, int err, const char *errstr, const dr_store_send_t *msg, int64_t due_in_ms,
                      const dr_note_t *notes, size_t nnotes)
{
    hreq_t *hr = data;
    if (err == 0)
        ingest_after_commit(hr->in, notes, nnotes); /* what the pass expired or failed on the way */
    if (!rest_store_failed(hr, err, errstr)) {
        if (msg != NULL) {
            dr_metrics_inc(msg->attempt > 1 ? DR_M_RESENT : DR_M_SENT);
            char *body = dr_codec_encode_consumer(msg->id, msg->guarantee, msg->command,
                                                  msg->sent_ms > 0 ? msg->sent_ms : dr_now_ms(), msg->data);
            http_json(hr, 200, body, strlen(body));
            free(body);
        } else {
            /* Nothing may go now: say when to ask again (pacing, window, or nothing queued). */
            long long wait = due_in_ms > 0 ? (long long)(due_in_ms + 999) / 1000 : 0;
            char ra[24];
            snprintf(ra, sizeof(ra), "%lld", wait < 1 ? 1 : wait);
            http_add_header(hr, "retry-after", ra);
            http_empty(hr, 204);
        }
    }
    hreq_release(hr);
}

void v1_pull(hreq_t *hr)
{
    dr_store_policy_t pol;
    ingest_policy(hr->in, &pol);
    int rc = dr_store_pull(hr->in->node.redis, &hr->in->store, hr->dev, &pol, on_pulled, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

static void on_v1_acked(void *data, const store_result_t *res)
{
    hreq_t *hr = data;
    if (!http_unavailable(hr, res->err)) {
        if (res->result == RES_UNKNOWN_ID || res->result == RES_WRONG_DEVICE) {
            http_error(hr, 404, "NOT_FOUND", "message %s not found for device %s", res->id, hr->dev);
        } else {
            char body[128];
            int n = snprintf(body, sizeof(body), "{\"id\":%s,\"status\":\"%s\",\"applied\":%s}", res->id,
                             res->status, res->result == RES_STORED ? "true" : "false");
            http_json(hr, 200, body, (size_t)n);
        }
    }
    hreq_release(hr);
}

void v1_ack(hreq_t *hr)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1) {
        hreq_release(hr);
        return;
    }
    int status = DR_ST_DELIVERED;
    if (body != NULL && len > 0) {
        json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *st = json_object_get(root, "deliveryStatus");
        if (!json_is_object(root) ||
            (st != NULL && !json_is_null(st) &&
             (!json_is_string(st) || !dr_status_is_ack(status = dr_status_parse(json_string_value(st),
                                                                                 json_string_length(st)))))) {
            json_decref(root);
            dr_metrics_inc(DR_M_ACK_REJECTED);
            http_error(hr, 400, "BAD_STATUS", "expected {\"deliveryStatus\":\"DELIVERED|COMPLETED|COMPLETED_WITH_ERROR\"}");
            hreq_release(hr);
            return;
        }
        json_decref(root);
    }
    ingest_ack(hr->in, hr->dev, hr->id, status, 0, on_v1_acked, hr);
}
