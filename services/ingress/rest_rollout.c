/* Rollouts: POST/GET /v1/rollouts, GET /v1/rollouts/{id}, POST /v1/rollouts/{id}/pause|resume|cancel
 * (docs/console-api.md §4), and the loop timer that advances running rollouts.
 *
 * DESIGN
 * A rollout lives in Redis (dr/rollout.h, keys under <prefix>{ro}), never in a node: any ingress
 * advances it, and a restarted one picks it up. Every ROLLOUT_TICK_MS the timer asks ro_take for
 * work: the call claims (or keeps) a short lease per running rollout for this process, so one node
 * advances a rollout at a time, and hands out as many devices as the rollout's token bucket allows
 * (rate per second, burst rate/10, counted by Redis's clock, so no node can make it go faster). Each
 * device's message goes through ingest_accept, the path REST and MQTT submissions take, with the
 * idempotency key ro:<id>:<index>: a batch handed out again (a node died before recording it, or a
 * write was not stored) is accepted again as the original messages, never as new ones. ro_done then
 * records the ids. Only one take cycle runs at a time, and it ends when its last batch is recorded.
 *
 * Progress is counted from the messages' current records (ro_count, one call per group of shards and
 * DR_RO_COUNT_MAX ids), so it is always what the devices did, whichever node sent what.
 */
#define DR_MODULE "ingress/rest_rollout"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/codec.h"
#include "dr/console.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/rollout.h"
#include "dr/status.h"
#include "dr/store.h"
#include "http.h"
#include "rest.h"

#define ROLLOUT_TICK_MS 100   /* how often a node looks for work */
#define ROLLOUT_LEASE_MS 3000 /* a dead node's rollouts move on after this */
#define ROLLOUT_PER_TAKE 100  /* devices of one rollout per tick: DR_RO_MAX_RATE per second */
#define ROLLOUT_MOST 16       /* rollouts one tick advances */
#define ROLLOUT_TTL_MAX INT64_C(31536000000)

struct rollouts {
    ingress_t *in;
    uv_timer_t timer;
    char holder[160]; /* lease value: node id and a per-process nonce */
    int batches;      /* batches of the current take cycle not yet recorded */
    int busy;         /* a take cycle runs */
    int closed;       /* the timer is closed: free when nothing is in flight */
};

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

/* The owner recorded with a rollout: a producer key sees and controls only its own; operators and
 * admin keys all of them. */
static const char *owner_of(const hreq_t *hr)
{
    return hr->who.scope == DR_SCOPE_PRODUCER ? hr->who.key_id : "";
}

static json_t *ro_json(const dr_ro_t *ro)
{
    json_t *data = ro->data ? json_loads(ro->data, 0, NULL) : NULL;
    return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:I}", "id", (json_int_t)ro->id,
                     "state", ro->state, "command", ro->command, "believerGuarantee", ro->guarantee, "data",
                     data ? data : json_null(), "ttlMs",
                     ro->ttl_ms > 0 ? json_integer(ro->ttl_ms) : json_null(), "ratePerSecond",
                     (json_int_t)ro->rate, "total", (json_int_t)ro->total, "enqueued",
                     (json_int_t)ro->enqueued, "createdAt", (json_int_t)ro->created_ms, "updatedAt",
                     (json_int_t)ro->updated_ms);
}

/* ---- cancelling a rollout's messages ---------------------------------------------------------------- */

typedef void cancel_done_fn(void *data);

typedef struct {
    ingress_t *in;
    int pending;
    cancel_done_fn *done;
    void *data;
} cancels_t;

static void cancels_finish(cancels_t *c)
{
    if (--c->pending > 0)
        return;
    if (c->done)
        c->done(c->data);
    free(c);
}

static void on_msg_cancelled(void *data, int err, const char *errstr, const dr_store_cancel_res_t *res,
                             const dr_note_t *notes, size_t nnotes)
{
    (void)errstr;
    cancels_t *c = data;
    if (err == 0) {
        ingest_after_commit(c->in, notes, nnotes);
        if (res->code == DR_STORE_CANCEL_OK)
            ingest_wake(c->in, res->shard);
    }
    cancels_finish(c);
}

/* Cancels every pending message among ids (others are left as they are); done runs once after. */
static void cancel_ids(ingress_t *in, const char *const *ids, size_t n, cancel_done_fn *done, void *data)
{
    cancels_t *c = dr_calloc(1, sizeof(*c));
    *c = (cancels_t){.in = in, .pending = 1, .done = done, .data = data};
    for (size_t i = 0; i < n; i++) {
        long long id = strtoll(ids[i], NULL, 10);
        if (id <= 0)
            continue; /* "-": the store refused it, nothing to cancel */
        c->pending++;
        if (dr_store_cancel(in->node.redis, &in->store, id, "", NULL, on_msg_cancelled, c) != 0)
            c->pending--;
    }
    cancels_finish(c);
}

/* ---- the engine ------------------------------------------------------------------------------------ */

typedef struct {
    struct rollouts *e;
    int64_t id, first;
    size_t n, pending;
    char **ids; /* per device: message id, "-" refused, "" not stored */
} batch_t;

static void engine_maybe_free(struct rollouts *e)
{
    if (e->closed && e->batches == 0 && !e->busy) {
        e->in->rollouts = NULL;
        free(e);
    }
}

static void batch_free(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->ids[i]);
    free(b->ids);
    free(b);
}

static void cycle_end(struct rollouts *e)
{
    if (--e->batches > 0)
        return;
    e->busy = 0;
    engine_maybe_free(e);
}

static void on_batch_cancelled(void *data)
{
    batch_t *b = data;
    struct rollouts *e = b->e;
    batch_free(b);
    cycle_end(e);
}

static void on_recorded(void *data, int err, const char *errstr, const char *const *v, size_t n)
{
    batch_t *b = data;
    struct rollouts *e = b->e;
    if (err != 0) {
        /* Not recorded: the devices are handed out again and meet their original messages. */
        dr_log(DR_LOG_WARNING, "event=rollout_record_failed rollout=%lld error=\"%s\"", (long long)b->id,
               errstr ? errstr : dr_strerror(err));
    } else if (n == 1 && strcmp(v[0], "cancelled") == 0) {
        /* Cancelled while these were being accepted: they must not be delivered either. */
        cancel_ids(e->in, (const char *const *)b->ids, b->n, on_batch_cancelled, b);
        return;
    }
    batch_free(b);
    cycle_end(e);
}

static void batch_record(batch_t *b)
{
    struct rollouts *e = b->e;
    if (dr_ro_done(e->in->node.redis, &e->in->store, b->id, b->first, (const char *const *)b->ids, b->n,
                   on_recorded, b) != 0)
        on_recorded(b, DR_EUNAVAIL, NULL, NULL, 0);
}

typedef struct {
    batch_t *b;
    size_t i;
} item_t;

static void on_item_stored(void *data, const store_result_t *res)
{
    item_t *it = data;
    batch_t *b = it->b;
    const char *v = "";
    if (res->err == 0) {
        if (res->result == RES_STORED || res->result == RES_DUPLICATE)
            v = res->id;
        else if (res->result != RES_PENDING)
            v = "-"; /* refused for good (too large for the device, a conflict): counted as failed */
    }
    b->ids[it->i] = dr_strdup(v);
    free(it);
    if (--b->pending == 0)
        batch_record(b);
}

static void batch_start(struct rollouts *e, const dr_ro_batch_t *rb)
{
    ingress_t *in = e->in;
    batch_t *b = dr_calloc(1, sizeof(*b));
    *b = (batch_t){.e = e, .id = rb->ro.id, .first = rb->first, .n = rb->n, .pending = rb->n};
    b->ids = dr_calloc(rb->n, sizeof(*b->ids));
    e->batches++;
    int g = dr_guarantee_parse(rb->ro.guarantee, strlen(rb->ro.guarantee));
    for (size_t i = 0; i < rb->n; i++) {
        char idk[64];
        snprintf(idk, sizeof(idk), "ro:%lld:%lld", (long long)rb->ro.id, (long long)(rb->first + (int64_t)i));
        dr_producer_msg_t m = {.guarantee = g < 0 ? DR_G_RECEIPT_CONFIRMATION : g,
                               .command = (char *)rb->ro.command,
                               .data = (char *)rb->ro.data,
                               .ttl_ms = rb->ro.ttl_ms,
                               .idem_key = idk,
                               .ext = 1};
        accept_req_t a = {
            .dev = rb->devs[i], .dev_len = strlen(rb->devs[i]), .msg = &m, .key_id = rb->ro.owner};
        item_t *it = dr_malloc(sizeof(*it));
        *it = (item_t){.b = b, .i = i};
        ingest_accept(in, &a, on_item_stored, it);
    }
}

static void on_taken(void *data, int err, const char *errstr, const dr_ro_batch_t *b, size_t n)
{
    struct rollouts *e = data;
    if (err != 0) {
        static int64_t last_log;
        if (dr_mono_ms() - last_log > 10000) {
            last_log = dr_mono_ms();
            dr_log(DR_LOG_WARNING, "event=rollout_take_failed error=\"%s\"",
                   errstr ? errstr : dr_strerror(err));
        }
    }
    e->batches = 1; /* held while the batches start */
    /* A node that is stopping starts nothing more: what it took is handed out again once its lease
     * expires. */
    for (size_t i = 0; i < n && !e->in->node.stopping; i++)
        if (b[i].n > 0)
            batch_start(e, &b[i]);
    cycle_end(e);
}

static void on_tick(uv_timer_t *t)
{
    struct rollouts *e = t->data;
    ingress_t *in = e->in;
    if (e->busy || in->node.stopping || !in->layout_ok || !dr_redis_ready(in->node.redis))
        return;
    e->busy = 1;
    if (dr_ro_take(in->node.redis, &in->store, e->holder, ROLLOUT_LEASE_MS, ROLLOUT_PER_TAKE, ROLLOUT_MOST,
                   on_taken, e) != 0)
        e->busy = 0;
}

void rollout_start(ingress_t *in)
{
    struct rollouts *e = dr_calloc(1, sizeof(*e));
    e->in = in;
    /* the pid and start time tell this process from an earlier one of the same node id, whose lease
     * must expire before anything it took is handed out again */
    snprintf(e->holder, sizeof(e->holder), "%s:%ld:%lld", in->node.cfg.node_id, (long)getpid(),
             (long long)dr_mono_ms());
    uv_timer_init(in->node.loop.uv, &e->timer);
    e->timer.data = e;
    uv_timer_start(&e->timer, on_tick, ROLLOUT_TICK_MS, ROLLOUT_TICK_MS);
    in->rollouts = e;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct rollouts *e = h->data;
    e->closed = 1;
    engine_maybe_free(e);
}

void rollout_stop(ingress_t *in)
{
    struct rollouts *e = in->rollouts;
    if (e == NULL || uv_is_closing((uv_handle_t *)&e->timer))
        return;
    uv_timer_stop(&e->timer);
    uv_close((uv_handle_t *)&e->timer, on_timer_closed);
}

/* ---- progress ------------------------------------------------------------------------------------- */

typedef struct {
    hreq_t *hr;
    json_t *ro;    /* the rollout's JSON, counts added when all calls are back */
    int cancelled; /* the rollout's state is cancelled */
    int64_t total, nids, refused;
    dr_ro_counts_t c;
    int pending, err, status;
} progress_t;

static void progress_answer(progress_t *p)
{
    if (--p->pending > 0)
        return;
    hreq_t *hr = p->hr;
    if (p->err != 0) {
        http_unavailable(hr, p->err);
    } else {
        /* devices not enqueued yet are queued, or cancelled with their rollout */
        int64_t never = p->total - p->nids;
        json_object_set_new(p->ro, "counts",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "queued",
                                      (json_int_t)(p->c.queued + (p->cancelled ? 0 : never)), "sent",
                                      (json_int_t)p->c.sent, "delivered", (json_int_t)p->c.delivered,
                                      "completed", (json_int_t)p->c.completed, "completedWithError",
                                      (json_int_t)p->c.completed_with_error, "failed",
                                      (json_int_t)(p->c.completed_with_error + p->c.failed + p->refused),
                                      "expired", (json_int_t)p->c.expired, "cancelled",
                                      (json_int_t)(p->c.cancelled + (p->cancelled ? never : 0)), "forgotten",
                                      (json_int_t)p->c.gone));
        send_json(hr, p->status, json_incref(p->ro));
    }
    hreq_release(hr);
    json_decref(p->ro);
    free(p);
}

static void on_counted(void *data, int err, const char *errstr, const dr_ro_counts_t *c)
{
    progress_t *p = data;
    if (err != 0) {
        if (p->err == 0)
            dr_log(DR_LOG_WARNING, "event=rollout_count_failed error=\"%s\"",
                   errstr ? errstr : dr_strerror(err));
        p->err = err;
    } else {
        p->c.queued += c->queued;
        p->c.sent += c->sent;
        p->c.delivered += c->delivered;
        p->c.completed += c->completed;
        p->c.completed_with_error += c->completed_with_error;
        p->c.failed += c->failed;
        p->c.expired += c->expired;
        p->c.cancelled += c->cancelled;
        p->c.gone += c->gone;
    }
    progress_answer(p);
}

/* Answers hr with the rollout and its counts (status 200 or 201); releases hr. */
static void progress_start(hreq_t *hr, int status, const dr_ro_t *ro, const char *const *ids, size_t n)
{
    progress_t *p = dr_calloc(1, sizeof(*p));
    *p = (progress_t){.hr = hr,
                      .ro = ro_json(ro),
                      .cancelled = strcmp(ro->state, "cancelled") == 0,
                      .total = ro->total,
                      .nids = (int64_t)n,
                      .pending = 1,
                      .status = status};
    const dr_store_t *st = &hr->in->store;
    uint32_t groups = (st->shards + DR_CON_SHARDS_PER_CALL - 1) / DR_CON_SHARDS_PER_CALL;
    int64_t *chunk = dr_calloc(n + 1, sizeof(*chunk));
    for (uint32_t g = 0; g < groups && p->err == 0; g++) {
        size_t k = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n) {
                long long id = strtoll(ids[i], NULL, 10);
                if (id <= 0) {
                    p->refused += g == 0;
                    continue;
                }
                if (dr_store_shard_of_id(st, id) / DR_CON_SHARDS_PER_CALL != g)
                    continue;
                chunk[k++] = id;
            }
            if (k > 0 && (k == DR_RO_COUNT_MAX || i == n)) {
                p->pending++;
                if (dr_ro_count(hr->in->node.redis, st, chunk, k, on_counted, p) != 0) {
                    p->pending--;
                    p->err = DR_EUNAVAIL;
                }
                k = 0;
            }
        }
    }
    free(chunk);
    progress_answer(p);
}

static void rollout_missing(hreq_t *hr)
{
    http_error(hr, 404, "NOT_FOUND", "rollout %lld not found", (long long)hr->id);
}

/* ---- GET /v1/rollouts/{id} ----------------------------------------------------------------------- */

static void on_got(void *data, int err, const char *errstr, int result, const dr_ro_t *ro,
                   const char *const *ids, size_t n)
{
    hreq_t *hr = data;
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
    } else if (result != DR_RO_OK) {
        rollout_missing(hr);
        hreq_release(hr);
    } else {
        progress_start(hr, 200, ro, ids, n);
    }
}

void rollout_get(hreq_t *hr)
{
    int rc = dr_ro_get(hr->in->node.redis, &hr->in->store, hr->id, owner_of(hr), 1, on_got, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- GET /v1/rollouts ------------------------------------------------------------------------------- */

static void on_listed(void *data, int err, const char *errstr, const dr_ro_t *v, size_t n, int more)
{
    hreq_t *hr = data;
    if (!rest_store_failed(hr, err, errstr)) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, ro_json(&v[i]));
        send_json(hr, 200,
                  json_pack("{s:o, s:o}", "rollouts", a, "nextAfter",
                            more && n > 0 ? json_integer(v[n - 1].id) : json_null()));
    }
    hreq_release(hr);
}

static int query_int(hreq_t *hr, const char *name, long long lo, long long hi, long long def, int64_t *out)
{
    char b[32];
    *out = def;
    if (!http_query(hr, name, b, sizeof(b)))
        return !rest_query_has(hr, name);
    char *e;
    long long v = strtoll(b, &e, 10);
    if (b[0] == '\0' || *e != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

void rollout_list(hreq_t *hr)
{
    int64_t limit, after;
    if (!query_int(hr, "limit", 1, 100, 20, &limit) || !query_int(hr, "after", 1, INT64_MAX, 0, &after)) {
        http_error(hr, 400, "BAD_FIELD", "limit must be an integer in [1, 100] and after a rollout id");
        hreq_release(hr);
        return;
    }
    int rc = dr_ro_list(hr->in->node.redis, &hr->in->store, owner_of(hr), after, limit, on_listed, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- pause, resume, cancel -------------------------------------------------------------------------- */

static void after_cancel(void *data)
{
    rollout_get(data); /* answer with the counts as they are now */
}

static void on_controlled(void *data, int err, const char *errstr, int result, const dr_ro_t *ro,
                          const char *const *ids, size_t n)
{
    hreq_t *hr = data;
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
        return;
    }
    switch (result) {
    case DR_RO_OK:
        dr_log(DR_LOG_NOTICE, "event=rollout_%s rollout=%lld by=%s", ro->state, (long long)ro->id,
               hr->who.key_id[0] ? hr->who.key_id : "-");
        if (strcmp(ro->state, "cancelled") == 0)
            cancel_ids(hr->in, ids, n, after_cancel, hr);
        else
            rollout_get(hr);
        return;
    case DR_RO_NOT_FOUND:
        rollout_missing(hr);
        break;
    case DR_RO_NOT_RUNNING:
        http_error(hr, 409, "NOT_RUNNING", "rollout %lld is %s, not running", (long long)hr->id, ro->state);
        break;
    case DR_RO_NOT_PAUSED:
        http_error(hr, 409, "NOT_PAUSED", "rollout %lld is %s, not paused", (long long)hr->id, ro->state);
        break;
    default:
        http_error(hr, 409, "FINISHED", "rollout %lld is already %s", (long long)hr->id, ro->state);
        break;
    }
    hreq_release(hr);
}

static void control(hreq_t *hr, const char *op)
{
    int rc = dr_ro_control(hr->in->node.redis, &hr->in->store, hr->id, owner_of(hr), op, on_controlled, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

void rollout_pause(hreq_t *hr)
{
    control(hr, "pause");
}

void rollout_resume(hreq_t *hr)
{
    control(hr, "resume");
}

void rollout_cancel(hreq_t *hr)
{
    control(hr, "cancel");
}

/* ---- POST /v1/rollouts ------------------------------------------------------------------------------ */

typedef struct {
    hreq_t *hr;
    char *command, *data, guarantee[32], prefix[256];
    int64_t ttl_ms, rate;
    char **devs;
    size_t ndevs, cap;
} create_t;

static void create_free(create_t *c)
{
    for (size_t i = 0; i < c->ndevs; i++)
        free(c->devs[i]);
    free(c->devs);
    free(c->command);
    free(c->data);
    free(c);
}

static void on_created(void *data, int err, const char *errstr, int result, const dr_ro_t *ro,
                       const char *const *ids, size_t n)
{
    (void)ids, (void)n;
    create_t *c = data;
    hreq_t *hr = c->hr;
    if (!rest_store_failed(hr, err, errstr) && result == DR_RO_OK) {
        dr_log(DR_LOG_NOTICE, "event=rollout_created rollout=%lld devices=%lld rate=%lld by=%s",
               (long long)ro->id, (long long)ro->total, (long long)ro->rate,
               hr->who.key_id[0] ? hr->who.key_id : "-");
        progress_start(hr, 201, ro, NULL, 0);
    } else {
        if (err == 0)
            http_error(hr, 500, "INTERNAL", "the rollout could not be created");
        hreq_release(hr);
    }
    create_free(c);
}

static void create_send(create_t *c)
{
    hreq_t *hr = c->hr;
    /* Kept once finished until its last message (accepted at the end at the latest) has passed its
     * deadline and been kept for the retention; without any deadline, for ever. */
    int64_t deadline_ms = c->ttl_ms > 0 ? c->ttl_ms : hr->in->node.cfg.default_ttl_ms;
    dr_ro_new_t n = {.owner = owner_of(hr),
                     .keep_s = deadline_ms > 0 ? hr->in->store.retention_s + (deadline_ms + 999) / 1000 : 0,
                     .command = c->command,
                     .data = c->data,
                     .guarantee = c->guarantee,
                     .ttl_ms = c->ttl_ms,
                     .rate = c->rate,
                     .burst = c->rate >= 10 ? c->rate / 10 : 1,
                     .devs = (const char *const *)c->devs,
                     .ndevs = c->ndevs};
    int rc = dr_ro_create(hr->in->node.redis, &hr->in->store, &n, on_created, c);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
        create_free(c);
    }
}

static void add_dev(create_t *c, const char *d)
{
    if (c->ndevs == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->devs = dr_realloc(c->devs, c->cap * sizeof(*c->devs));
    }
    c->devs[c->ndevs++] = dr_strdup(d);
}

static void on_query_page(void *data, int err, const dev_entry_t *e, size_t n, const char *next)
{
    create_t *c = data;
    hreq_t *hr = c->hr;
    if (err != 0 || hr->req == NULL) {
        http_unavailable(hr, err ? err : DR_EUNAVAIL);
        goto done;
    }
    for (size_t i = 0; i < n && c->ndevs <= DR_RO_MAX_DEVICES; i++)
        add_dev(c, e[i].name);
    if (c->ndevs > DR_RO_MAX_DEVICES) {
        http_error(hr, 400, "TOO_MANY_DEVICES", "the query matches more than %d devices", DR_RO_MAX_DEVICES);
        goto done;
    }
    if (next != NULL) {
        if (dev_page(hr->in, c->prefix, next, 1000, on_query_page, c) != 0) {
            http_unavailable(hr, DR_EUNAVAIL);
            goto done;
        }
        return;
    }
    if (c->ndevs == 0) {
        http_error(hr, 400, "NO_DEVICES", "no device matches the query");
        goto done;
    }
    create_send(c);
    return;
done:
    hreq_release(hr);
    create_free(c);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the fields of the body into c; answers 400 itself and returns -1 on the first bad one. */
static int parse_create(hreq_t *hr, json_t *root, create_t *c)
{
    const size_t maxid = (size_t)hr->in->node.cfg.ingress_max_device_id;
    static const char *known[] = {"command", "data",  "believerGuarantee", "ttlMs",
                                  "devices", "query", "ratePerSecond"};
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        size_t i = 0;
        while (i < sizeof(known) / sizeof(known[0]) && strcmp(k, known[i]) != 0)
            i++;
        if (i == sizeof(known) / sizeof(known[0])) {
            http_error(hr, 400, "BAD_FIELD", "unknown field '%.64s'", k);
            return -1;
        }
    }
    v = json_object_get(root, "command");
    if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > DR_CON_MAX_TEXT ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        http_error(hr, 400, "BAD_FIELD", "command must be a string of 1..%d bytes", DR_CON_MAX_TEXT);
        return -1;
    }
    c->command = dr_strdup(json_string_value(v));
    v = json_object_get(root, "data");
    if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        http_error(hr, 400, "BAD_FIELD", "data must be a JSON object or null");
        return -1;
    }
    c->data = json_is_object(v) ? json_dumps(v, JSON_COMPACT) : NULL;
    v = json_object_get(root, "believerGuarantee");
    snprintf(c->guarantee, sizeof(c->guarantee), "RECEIPT_CONFIRMATION");
    if (v != NULL) {
        if (!json_is_string(v) || dr_guarantee_parse(json_string_value(v), json_string_length(v)) < 0) {
            http_error(hr, 400, "BAD_GUARANTEE",
                       "believerGuarantee must be NO, RECEIPT_CONFIRMATION or ONLY_LAST");
            return -1;
        }
        snprintf(c->guarantee, sizeof(c->guarantee), "%s", json_string_value(v));
    }
    v = json_object_get(root, "ttlMs");
    if (v != NULL &&
        (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > ROLLOUT_TTL_MAX)) {
        http_error(hr, 400, "BAD_FIELD", "ttlMs must be an integer in [1, %lld]", (long long)ROLLOUT_TTL_MAX);
        return -1;
    }
    c->ttl_ms = v ? json_integer_value(v) : 0;
    v = json_object_get(root, "ratePerSecond");
    if (v != NULL &&
        (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > DR_RO_MAX_RATE)) {
        http_error(hr, 400, "BAD_FIELD", "ratePerSecond must be an integer in [1, %d]", DR_RO_MAX_RATE);
        return -1;
    }
    c->rate = v ? json_integer_value(v) : 10;
    json_t *devs = json_object_get(root, "devices"), *query = json_object_get(root, "query");
    if ((devs == NULL) == (query == NULL)) {
        http_error(hr, 400, "BAD_FIELD", "give exactly one of devices and query");
        return -1;
    }
    if (query != NULL) {
        json_t *p = json_object_get(query, "prefix");
        if (!json_is_object(query) || json_object_size(query) != 1 || !json_is_string(p) ||
            json_string_length(p) > maxid || strlen(json_string_value(p)) != json_string_length(p)) {
            http_error(hr, 400, "BAD_FIELD", "query must be {\"prefix\": string of at most %zu bytes}",
                       maxid);
            return -1;
        }
        snprintf(c->prefix, sizeof(c->prefix), "%s", json_string_value(p));
        return 0;
    }
    if (!json_is_array(devs) || json_array_size(devs) < 1 || json_array_size(devs) > DR_RO_MAX_DEVICES) {
        http_error(hr, 400, "BAD_FIELD", "devices must be an array of 1..%d device ids", DR_RO_MAX_DEVICES);
        return -1;
    }
    size_t i;
    json_array_foreach(devs, i, v)
    {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
            dr_codec_check_id(json_string_value(v), json_string_length(v), maxid) != 0) {
            http_error(hr, 400, "BAD_DEVICE_ID", "devices[%zu] is not a valid device id", i);
            return -1;
        }
        add_dev(c, json_string_value(v));
    }
    char **sorted = dr_malloc(c->ndevs * sizeof(*sorted));
    memcpy(sorted, c->devs, c->ndevs * sizeof(*sorted));
    qsort(sorted, c->ndevs, sizeof(*sorted), cmp_str);
    for (i = 1; i < c->ndevs; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            http_error(hr, 400, "BAD_FIELD", "device '%.64s' is listed twice", sorted[i]);
            free(sorted);
            return -1;
        }
    }
    free(sorted);
    return 0;
}

void rollout_create(hreq_t *hr)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1) {
        hreq_release(hr);
        return;
    }
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    create_t *c = dr_calloc(1, sizeof(*c));
    c->hr = hr;
    if (!json_is_object(root)) {
        http_error(hr, 400, "BAD_JSON", "the body must be a JSON object");
        goto bad;
    }
    if (parse_create(hr, root, c) != 0)
        goto bad;
    int query = json_object_get(root, "query") != NULL;
    json_decref(root);
    if (!query) {
        create_send(c);
    } else if (dev_page(hr->in, c->prefix, "", 1000, on_query_page, c) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
        create_free(c);
    }
    return;
bad:
    json_decref(root);
    hreq_release(hr);
    create_free(c);
}
