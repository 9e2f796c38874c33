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
            const char *code = r->err ? "UNAVAILABLE" : (r->result == RES_CONFLICT ? "IDEMPOTENCY_CONFLICT" : "INTERNAL");
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
     * store_accept returns, so hold one more reference while starting them. */
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
        char token[33];
        store_new_token(token);
        accept_req_t a = {.dev = bk->dev[i], .dev_len = strlen(bk->dev[i]), .msg = &m, .token = token,
                          .key_id = hr->who.key_id};
        store_accept(hr->in, &a, on_bulk_item, it);
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

static void write_message(buf_t *b, int64_t id, const rest_msg_t *m)
{
    buf_fmt(b, "{\"id\":%lld,\"device\":", (long long)id);
    buf_str(b, m->dev);
    buf_fmt(b, ",\"status\":\"%s\",\"guarantee\":\"%s\",\"command\":", rest_status_name(m->st, m->ext, 1), m->g);
    buf_str(b, m->cmd);
    buf_add(b, ",\"data\":", 8);
    buf_add(b, m->data ? m->data : "null", m->data ? strlen(m->data) : 4);
    buf_fmt(b, ",\"attempts\":%lld,\"createdAt\":%lld,\"updatedAt\":%lld", m->att, m->ts, m->chg);
    if (m->sent)
        buf_fmt(b, ",\"lastSentAt\":%lld", m->sent);
    if (m->pd) {
        buf_add(b, ",\"producerDeviseId\":", 20);
        buf_str(b, m->pd);
        buf_fmt(b, ",\"tmpId\":%s", m->tmp ? m->tmp : "null");
    }
}

static void on_history(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    hreq_t *hr = data;
    buf_t *b = hr->state;
    if (!http_unavailable(hr, err)) {
        buf_add(b, ",\"history\":[", 12);
        for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
            if (i)
                buf_add(b, ",", 1);
            buf_add(b, reply->element[i]->str, reply->element[i]->len);
        }
        buf_add(b, "]}", 2);
        http_json(hr, 200, b->p, b->len);
    }
    hreq_release(hr);
}

static void buf_free(void *p)
{
    buf_t *b = p;
    free(b->p);
    free(b);
}

static void on_message(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    hreq_t *hr = data;
    rest_msg_t m;
    if (http_unavailable(hr, err)) {
        hreq_release(hr);
        return;
    }
    if (rest_msg_from_reply(reply, &m) != 0 || !rest_may_read(hr, &m)) {
        http_error(hr, 404, "NOT_FOUND", "message %lld not found", (long long)hr->id);
        hreq_release(hr);
        return;
    }
    buf_t *b = dr_calloc(1, sizeof(*b));
    write_message(b, hr->id, &m);
    hr->state = b;
    hr->free_state = buf_free;
    char key[96];
    snprintf(key, sizeof(key), "%sh:%lld", hr->in->node.cfg.redis_prefix, (long long)hr->id);
    const char *argv[] = {"LRANGE", key, "0", "-1"};
    if (dr_redis_cmd(r, on_history, hr, 4, argv, NULL) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
    }
}

void v1_get_message(hreq_t *hr)
{
    rest_fetch_msg(hr, on_message);
}

/* ---- GET /v1/devices/{dev}/messages ----------------------------------------------------------- */

typedef struct {
    buf_t out;
    int status_filter;     /* -1: any */
    int pending, count, limit;
    long long last_id;
    char **ids;
    int nids;
    char **rows;           /* formatted row per id, NULL when filtered out */
} list_t;

static void list_free(void *p)
{
    list_t *l = p;
    for (int i = 0; i < l->nids; i++) {
        free(l->ids[i]);
        free(l->rows[i]);
    }
    free(l->ids);
    free(l->rows);
    free(l->out.p);
    free(l);
}

typedef struct {
    hreq_t *hr;
    int i;
} list_item_t;

static void list_finish(hreq_t *hr)
{
    list_t *l = hr->state;
    buf_add(&l->out, "{\"messages\":[", 13);
    int first = 1;
    for (int i = 0; i < l->nids; i++) {
        if (l->rows[i] == NULL)
            continue;
        if (!first)
            buf_add(&l->out, ",", 1);
        first = 0;
        buf_add(&l->out, l->rows[i], strlen(l->rows[i]));
    }
    buf_add(&l->out, "],\"nextCursor\":", 15);
    if (l->nids == l->limit)
        buf_fmt(&l->out, "\"%lld\"}", l->last_id);
    else
        buf_add(&l->out, "null}", 5);
    http_json(hr, 200, l->out.p, l->out.len);
}

static void on_list_item(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    list_item_t *it = data;
    hreq_t *hr = it->hr;
    list_t *l = hr->state;
    rest_msg_t m;
    if (err == 0 && rest_msg_from_reply(reply, &m) == 0 && rest_may_read(hr, &m)) {
        int st = dr_status_parse(m.st, strlen(m.st));
        if (l->status_filter < 0 || st == l->status_filter) {
            buf_t row = {0};
            write_message(&row, strtoll(l->ids[it->i], NULL, 10), &m);
            buf_add(&row, "}", 1);
            l->rows[it->i] = row.p;
        }
    }
    free(it);
    if (--l->pending == 0) {
        list_finish(hr);
        hreq_release(hr);
    }
}

static void on_list_ids(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    hreq_t *hr = data;
    list_t *l = hr->state;
    if (http_unavailable(hr, err)) {
        hreq_release(hr);
        return;
    }
    l->nids = (int)reply->elements;
    l->ids = dr_calloc(reply->elements + 1, sizeof(char *));
    l->rows = dr_calloc(reply->elements + 1, sizeof(char *));
    for (size_t i = 0; i < reply->elements; i++)
        l->ids[i] = dr_strdup(reply->element[i]->str);
    if (l->nids == 0) {
        list_finish(hr);
        hreq_release(hr);
        return;
    }
    l->last_id = strtoll(l->ids[l->nids - 1], NULL, 10);
    l->pending = l->nids;
    for (int i = 0; i < l->nids; i++) {
        char key[96];
        snprintf(key, sizeof(key), "%sm:%s", hr->in->node.cfg.redis_prefix, l->ids[i]);
        const char *argv[] = {"HMGET", key, REST_MSG_FIELDS};
        list_item_t *it = dr_malloc(sizeof(*it));
        it->hr = hr;
        it->i = i;
        if (dr_redis_cmd(r, on_list_item, it, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL) != 0) {
            free(it);
            if (--l->pending == 0) {
                list_finish(hr);
                hreq_release(hr);
            }
        }
    }
}

void v1_list_messages(hreq_t *hr)
{
    char status[32], cursor[32], limit_s[16];
    list_t *l = dr_calloc(1, sizeof(*l));
    hr->state = l;
    hr->free_state = list_free;
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
        l->limit = (int)v;
    }
    char max[40] = "+inf", lim[16], key[320];
    if (http_query(hr, "cursor", cursor, sizeof(cursor))) {
        char *e;
        long long c = strtoll(cursor, &e, 10);
        if (*e != '\0' || c <= 0) {
            http_error(hr, 400, "BAD_FIELD", "cursor must be the nextCursor of a previous page");
            hreq_release(hr);
            return;
        }
        snprintf(max, sizeof(max), "(%lld", c);
    }
    snprintf(lim, sizeof(lim), "%d", l->limit);
    snprintf(key, sizeof(key), "%sdm:%s", hr->in->node.cfg.redis_prefix, hr->dev);
    const char *argv[] = {"ZREVRANGEBYSCORE", key, max, "-inf", "LIMIT", "0", lim};
    if (dr_redis_cmd(hr->in->node.redis, on_list_ids, hr, 7, argv, NULL) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
    }
}

/* ---- POST /v1/messages/{id}/cancel ------------------------------------------------------------ */

static void wake_shard(ingress_t *in, const char *shard)
{
    char subject[96];
    snprintf(subject, sizeof(subject), "%swake", in->node.cfg.nats_subject_prefix);
    if (dr_bus_publish(in->node.bus, subject, shard, strlen(shard)) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);
}

static void on_cancelled(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    hreq_t *hr = data;
    if (!http_unavailable(hr, err)) {
        const char *what = reply->type == REDIS_REPLY_ARRAY && reply->elements ? reply->element[0]->str : "";
        if (strcmp(what, "OK") == 0) {
            wake_shard(hr->in, reply->element[1]->str);
            char body[96];
            int n = snprintf(body, sizeof(body), "{\"id\":%lld,\"status\":\"CANCELLED\"}", (long long)hr->id);
            http_json(hr, 200, body, (size_t)n);
        } else if (strcmp(what, "CONFLICT") == 0) {
            http_error(hr, 409, "NOT_CANCELLABLE", "message %lld is %s and can no longer be cancelled",
                       (long long)hr->id, reply->element[1]->str);
        } else {
            http_error(hr, 404, "NOT_FOUND", "message %lld not found", (long long)hr->id);
        }
    }
    hreq_release(hr);
}

void v1_cancel(hreq_t *hr)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)hr->id);
    const char *caller = hr->who.scope == DR_SCOPE_ADMIN ? "" : hr->who.key_id;
    rest_script(hr, hr->in->s_cancel, on_cancelled, 2, (const char *[]){id, caller});
}

/* ---- DELETE /v1/devices/{dev}/messages -------------------------------------------------------- */

typedef struct {
    long long purged;
    char shard[16];
} purge_t;

static void purge_step(hreq_t *hr);

static void on_purged(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    hreq_t *hr = data;
    purge_t *p = hr->state;
    if (http_unavailable(hr, err) || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        hreq_release(hr);
        return;
    }
    p->purged += reply->element[1]->integer;
    if (reply->element[2]->integer && hr->req != NULL) {
        purge_step(hr);
        return;
    }
    wake_shard(hr->in, p->shard);
    buf_t b = {0};
    buf_add(&b, "{\"device\":", 10);
    buf_str(&b, hr->dev);
    buf_fmt(&b, ",\"purged\":%lld}", p->purged);
    http_json(hr, 200, b.p, b.len);
    free(b.p);
    hreq_release(hr);
}

static void purge_step(hreq_t *hr)
{
    purge_t *p = hr->state;
    rest_script(hr, hr->in->s_purge, on_purged, 3, (const char *[]){hr->dev, p->shard, "500"});
}

void v1_purge(hreq_t *hr)
{
    purge_t *p = dr_calloc(1, sizeof(*p));
    snprintf(p->shard, sizeof(p->shard), "%u",
             dr_shard_of(hr->dev, strlen(hr->dev), (uint32_t)hr->in->node.cfg.shards));
    hr->state = p;
    hr->free_state = free;
    purge_step(hr);
}

/* ---- GET /v1/devices/{dev} and PUT /v1/devices/{dev}/pacing ----------------------------------- */

static void num_or_null(buf_t *b, const char *name, const redisReply *v, long long dflt, int has_dflt)
{
    if (v->type == REDIS_REPLY_STRING && v->len > 0)
        buf_fmt(b, ",\"%s\":%s", name, v->str);
    else if (has_dflt)
        buf_fmt(b, ",\"%s\":%lld", name, dflt);
    else
        buf_fmt(b, ",\"%s\":null", name);
}

static void on_devinfo(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    hreq_t *hr = data;
    const dr_settings_t *cfg = &hr->in->node.cfg;
    if (!http_unavailable(hr, err) && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 9) {
        buf_t b = {0};
        buf_add(&b, "{\"device\":", 10);
        buf_str(&b, hr->dev);
        buf_fmt(&b, ",\"queued\":%lld,\"inFlight\":%lld,\"scheduled\":%lld", reply->element[0]->integer,
                reply->element[1]->integer, reply->element[2]->integer);
        num_or_null(&b, "nextSendAllowedAt", reply->element[3], 0, 0);
        num_or_null(&b, "lastSentAt", reply->element[4], 0, 0);
        num_or_null(&b, "lastAckAt", reply->element[5], 0, 0);
        num_or_null(&b, "intervalMs", reply->element[6], cfg->interval_ms, 1);
        num_or_null(&b, "window", reply->element[7], cfg->window, 1);
        buf_fmt(&b, ",\"mode\":\"%s\",\"shard\":%u}", reply->element[8]->len ? reply->element[8]->str : "mqtt",
                dr_shard_of(hr->dev, strlen(hr->dev), (uint32_t)cfg->shards));
        http_json(hr, 200, b.p, b.len);
        free(b.p);
    }
    hreq_release(hr);
}

void v1_device(hreq_t *hr)
{
    rest_script(hr, hr->in->s_devinfo, on_devinfo, 1, (const char *[]){hr->dev});
}

static void on_release_only(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    (void)reply;
    (void)err;
    hreq_release(data);
}

static void on_pacing_set(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    (void)reply;
    hreq_t *hr = data;
    if (http_unavailable(hr, err)) {
        hreq_release(hr);
        return;
    }
    v1_device(hr);
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
    static const struct {
        const char *json, *field;
        long long min, max;
    } nums[] = {{"intervalMs", "iv", 0, 86400000}, {"window", "win", 1, 64}};
    const char *argv[16];
    char vals[2][24];
    int n = 0, ndel = 0;
    const char *del[4];
    char key[320];
    snprintf(key, sizeof(key), "%sdc:%s", hr->in->node.cfg.redis_prefix, hr->dev);
    argv[n++] = "HSET";
    argv[n++] = key;
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, nums[i].json);
        if (v == NULL)
            continue;
        if (json_is_null(v)) {
            del[ndel++] = nums[i].field;
            continue;
        }
        if (!json_is_integer(v) || json_integer_value(v) < nums[i].min || json_integer_value(v) > nums[i].max) {
            http_error(hr, 400, "BAD_FIELD", "%s must be an integer in [%lld, %lld] or null", nums[i].json,
                       nums[i].min, nums[i].max);
            json_decref(root);
            hreq_release(hr);
            return;
        }
        snprintf(vals[i], sizeof(vals[i]), "%lld", (long long)json_integer_value(v));
        argv[n++] = nums[i].field;
        argv[n++] = vals[i];
    }
    json_t *mode = json_object_get(root, "mode");
    if (mode != NULL) {
        const char *mv = json_is_string(mode) ? json_string_value(mode) : "";
        if (strcmp(mv, "mqtt") != 0 && strcmp(mv, "pull") != 0) {
            http_error(hr, 400, "BAD_FIELD", "mode must be \"mqtt\" or \"pull\"");
            json_decref(root);
            hreq_release(hr);
            return;
        }
        argv[n++] = "mode";
        argv[n++] = strcmp(mv, "pull") == 0 ? "pull" : "mqtt";
    }
    /* One connection answers in order: the HDEL (if any) completes before the final command, and
     * only the final command's callback answers the request. */
    dr_redis_t *r = hr->in->node.redis;
    int rc = 0;
    if (ndel > 0) {
        const char *dv[6] = {"HDEL", key};
        for (int i = 0; i < ndel; i++)
            dv[2 + i] = del[i];
        hr->refs++;
        rc = dr_redis_cmd(r, on_release_only, hr, 2 + ndel, dv, NULL);
        if (rc != 0)
            hr->refs--;
    }
    if (rc == 0) {
        const char *ping[] = {"PING"};
        rc = n > 2 ? dr_redis_cmd(r, on_pacing_set, hr, n, argv, NULL) : dr_redis_cmd(r, on_pacing_set, hr, 1, ping, NULL);
    }
    if (rc != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
    }
    json_decref(root);
}

/* ---- POST /v1/devices/{dev}/next and .../messages/{id}/ack ------------------------------------ */

static void on_pulled(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    hreq_t *hr = data;
    if (!http_unavailable(hr, err) && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        if (strcmp(reply->element[0]->str, "MSG") == 0 && reply->elements >= 6) {
            int g = dr_guarantee_parse(reply->element[2]->str, reply->element[2]->len);
            long long att = reply->element[5]->integer;
            dr_metrics_inc(att > 1 ? DR_M_RESENT : DR_M_SENT);
            char *body = dr_codec_encode_consumer(strtoll(reply->element[1]->str, NULL, 10), g,
                                                  reply->element[3]->str, dr_now_ms(),
                                                  reply->element[4]->len ? reply->element[4]->str : NULL);
            http_json(hr, 200, body, strlen(body));
            free(body);
        } else {
            /* Nothing may go now: say when to ask again (pacing, window, or nothing queued). */
            long long due = reply->element[1]->len ? strtoll(reply->element[1]->str, NULL, 10) : 0;
            long long wait = due > 0 ? (due - dr_now_ms() + 999) / 1000 : 0;
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
    const dr_settings_t *cfg = &hr->in->node.cfg;
    char sh[16], win[16], iv[24], ack[24], rmax[24], bo[32], jit[16], seed[24];
    snprintf(sh, sizeof(sh), "%u", dr_shard_of(hr->dev, strlen(hr->dev), (uint32_t)cfg->shards));
    snprintf(win, sizeof(win), "%lld", (long long)cfg->window);
    snprintf(iv, sizeof(iv), "%lld", (long long)cfg->interval_ms);
    snprintf(ack, sizeof(ack), "%lld", (long long)cfg->ack_timeout_ms);
    snprintf(rmax, sizeof(rmax), "%lld", (long long)cfg->retry_max_ms);
    snprintf(bo, sizeof(bo), "%.6f", cfg->backoff);
    snprintf(jit, sizeof(jit), "%lld", (long long)cfg->jitter_pct);
    snprintf(seed, sizeof(seed), "%lld", (long long)(dr_mono_ms() ^ (int64_t)(uintptr_t)hr) & 0x7fffffff);
    rest_script(hr, hr->in->s_pull, on_pulled, 9, (const char *[]){hr->dev, sh, win, iv, ack, rmax, bo, jit, seed});
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
    store_ack(hr->in, hr->dev, hr->id, status, on_v1_acked, hr);
}
