/* Ingest: group commit of producer messages and acks.
 *
 * DESIGN
 * Producer messages and acks from MQTT and REST are queued and stored in batches: once per loop turn
 * (a uv_check handle, run right after the poll phase that read them) every queued item goes into one
 * accept_batch or ack_batch call (at most BATCH_MAX items each; at most CALLS_MAX calls in flight, of
 * which at most ACCEPT_CALLS_MAX accept calls, so acks always find a free call; the rest wait for the
 * next turn). Redis replies only after the batch is in the AOF and fsynced, and
 * only then are the items completed: an MQTT item's PUBACK goes out (dr_mqttc sends them in arrival
 * order), a REST request is answered. So one fsync covers a whole batch, and nothing is acknowledged
 * that Redis does not hold.
 *
 * A failed call (Redis unreachable, timed out, loading) is retried with the same batch and the same
 * token, so a call whose reply was lost returns the first answer instead of storing twice. MQTT items
 * wait for as long as it takes (the broker keeps them; dr_mqttc keeps the session alive); REST
 * requests are answered 503 at the first failure and their items stay in the batch without a
 * callback, so the retried call keeps the shape its token recorded. A function error (a bug, not an
 * outage) fails the batch's items with INTERNAL instead of retrying forever.
 *
 * Receipt acks that a device repeats (it answers every re-send) are answered from a small cache of
 * acks that already moved their message past NOT_DELIVERED, without a Redis call.
 */
#define DR_MODULE "ingress/ingest"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include "dr/apikey.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "ingress.h"

#define BATCH_MAX 256       /* items per call: a few ms of Redis time, one fsync */
#define CALLS_MAX 4         /* calls in flight; more items wait for the next loop turn */
#define ACCEPT_CALLS_MAX 3  /* of which accept calls: one is always free for acks (see on_check) */
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 1000
#define RECENT_SLOTS 16384  /* cache of settled receipt acks */

enum { K_ACCEPT, K_ACK };

typedef struct item {
    STAILQ_ENTRY(item) link;
    int kind;
    char *dev;
    uint32_t shard;
    dr_producer_msg_t msg;  /* K_ACCEPT, owned */
    char *key_id;           /* K_ACCEPT */
    int64_t ack_id;         /* K_ACK */
    int ack_status;
    store_cb *cb;           /* NULL once answered (a REST request answered 503 while its batch retries) */
    void *data;
    int retry_forever;      /* MQTT: never answered with an error while running */
    uint64_t queued_ns;     /* uv_hrtime() when queued: drover_receipt_seconds, drover_rest_accept_seconds */
} item_t;

STAILQ_HEAD(item_list, item);

typedef struct batch {
    struct ingest *ig;
    int kind;
    item_t **items;
    size_t n;
    char token[33];
    int delay_ms;
    LIST_ENTRY(batch) link; /* in ig->retrying */
    int64_t retry_at;
} batch_t;

struct recent_ack {
    int64_t id;
    char *dev;
};

struct ingest {
    ingress_t *in;
    uv_check_t check;
    uv_idle_t idle;         /* keeps the poll phase from blocking while items are queued */
    uv_timer_t timer;       /* retries */
    struct item_list accepts, acks;
    size_t queued;
    size_t in_calls;        /* items inside calls (or waiting to retry) */
    int calls;
    int accept_calls;       /* of calls, accept_batch calls */
    LIST_HEAD(, batch) retrying;
    struct recent_ack *recent;
    int closing;            /* ingest_free was called */
    int handles_open;       /* uv handles not yet closed */
};

/* ---- settled receipt acks -------------------------------------------------------------------- */

static struct recent_ack *recent_slot(struct ingest *ig, const char *dev, int64_t id)
{
    if (ig->recent == NULL)
        ig->recent = dr_calloc(RECENT_SLOTS, sizeof(*ig->recent));
    uint64_t h = dr_fnv1a64(dev, strlen(dev), (uint64_t)id);
    return &ig->recent[h & (RECENT_SLOTS - 1)];
}

static int recent_has(struct ingest *ig, const char *dev, int64_t id)
{
    struct recent_ack *r = recent_slot(ig, dev, id);
    return r->dev != NULL && r->id == id && strcmp(r->dev, dev) == 0;
}

static void recent_put(struct ingest *ig, const char *dev, int64_t id)
{
    struct recent_ack *r = recent_slot(ig, dev, id);
    free(r->dev);
    r->dev = dr_strdup(dev);
    r->id = id;
}

void ingest_forget_acks(struct ingest *ig)
{
    for (int i = 0; ig->recent != NULL && i < RECENT_SLOTS; i++) {
        free(ig->recent[i].dev);
        ig->recent[i].dev = NULL;
    }
}

/* ---- items ------------------------------------------------------------------------------------- */

static void item_free(item_t *it)
{
    free(it->dev);
    free(it->key_id);
    dr_producer_msg_dispose(&it->msg);
    free(it);
}

static void item_answer(item_t *it, const store_result_t *res)
{
    if (it->cb != NULL) {
        store_cb *cb = it->cb;
        it->cb = NULL;
        cb(it->data, res);
    }
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* only keeps the loop from blocking in poll while items are queued */
}

/* Makes the next loop turn flush what is queued without blocking in poll first. */
static void kick(struct ingest *ig)
{
    if (ig->queued > 0 && !ig->closing)
        uv_idle_start(&ig->idle, on_idle);
}

static void queue_item(struct ingest *ig, item_t *it)
{
    STAILQ_INSERT_TAIL(it->kind == K_ACCEPT ? &ig->accepts : &ig->acks, it, link);
    it->queued_ns = uv_hrtime();
    ig->queued++;
    uv_idle_start(&ig->idle, on_idle);
}

static char *dup_or_null(const char *s)
{
    return s ? dr_strdup(s) : NULL;
}

void ingest_accept(ingress_t *in, const accept_req_t *a, store_cb *cb, void *data)
{
    item_t *it = dr_calloc(1, sizeof(*it));
    it->kind = K_ACCEPT;
    it->dev = dr_strndup(a->dev, a->dev_len);
    it->shard = dr_shard_of(it->dev, a->dev_len, (uint32_t)in->node.cfg.shards);
    it->msg = *a->msg;
    it->msg.command = dup_or_null(a->msg->command);
    it->msg.data = dup_or_null(a->msg->data);
    it->msg.producer_id = dup_or_null(a->msg->producer_id);
    it->msg.idem_key = dup_or_null(a->msg->idem_key);
    it->key_id = dr_strdup(a->key_id ? a->key_id : "");
    it->cb = cb;
    it->data = data;
    it->retry_forever = a->hold;
    queue_item(in->ingest, it);
}

void ingest_ack(ingress_t *in, const char *dev, int64_t id, int status, int hold, store_cb *cb, void *data)
{
    struct ingest *ig = in->ingest;
    if (status == DR_ST_DELIVERED && recent_has(ig, dev, id)) {
        /* A repeat of a receipt ack that already moved its message on can change nothing. */
        store_result_t res = {.result = RES_IGNORED};
        snprintf(res.id, sizeof(res.id), "%lld", (long long)id);
        snprintf(res.status, sizeof(res.status), "%s", dr_status_name(DR_ST_DELIVERED));
        dr_metrics_inc(DR_M_ACK_IGNORED);
        cb(data, &res);
        return;
    }
    item_t *it = dr_calloc(1, sizeof(*it));
    it->kind = K_ACK;
    it->dev = dr_strdup(dev);
    it->shard = dr_store_shard_of_id(&in->store, id);
    it->ack_id = id;
    it->ack_status = status;
    it->cb = cb;
    it->data = data;
    it->retry_forever = hold;
    queue_item(ig, it);
}

/* ---- results ------------------------------------------------------------------------------------- */

static void wake_shards(ingress_t *in, item_t **items, size_t n)
{
    /* Once per shard and batch: a small open-addressing set of the shards already woken. */
    uint32_t seen[64];
    size_t nseen = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t sh = items[i]->shard;
        int dup = 0;
        for (size_t k = 0; k < nseen && !dup; k++)
            dup = seen[k] == sh;
        if (dup)
            continue;
        if (nseen < sizeof(seen) / sizeof(seen[0]))
            seen[nseen++] = sh;
        ingest_wake(in, sh);
    }
}

static void accept_results(batch_t *b, const dr_store_accept_res_t *res, size_t n)
{
    ingress_t *in = b->ig->in;
    for (size_t i = 0; i < b->n; i++) {
        item_t *it = b->items[i];
        store_result_t r;
        memset(&r, 0, sizeof(r));
        if (i >= n) {
            r.result = RES_FAILED;
            r.notify = "INTERNAL";
            item_answer(it, &r);
            continue;
        }
        snprintf(r.id, sizeof(r.id), "%lld", (long long)res[i].id);
        if (res[i].status >= 0)
            snprintf(r.status, sizeof(r.status), "%s", dr_status_name(res[i].status));
        switch (res[i].code) {
        case DR_STORE_OK:
            dr_metrics_inc(DR_M_PRODUCER_ACCEPTED);
            if (!it->retry_forever) /* REST share; MQTT items are the ones held until stored */
                dr_metrics_inc(DR_M_PRODUCER_ACCEPTED_REST);
            dr_log(DR_LOG_VERBOSE, "event=accepted id=%s device=\"%s\" guarantee=%s shard=%u", r.id, it->dev,
                   dr_guarantee_name(it->msg.guarantee), it->shard);
            r.result = RES_STORED;
            break;
        case DR_STORE_DUP:
            dr_metrics_inc(DR_M_PRODUCER_DUPLICATE);
            if (!it->retry_forever)
                dr_metrics_inc(DR_M_PRODUCER_DUPLICATE_REST);
            dr_log(DR_LOG_VERBOSE, "event=duplicate id=%s device=\"%s\"", r.id, it->dev);
            r.result = RES_DUPLICATE;
            break;
        case DR_STORE_TOO_LARGE:
            dr_metrics_inc(DR_M_PRODUCER_REJECTED);
            if (!it->retry_forever)
                dr_metrics_inc(DR_M_PRODUCER_REJECTED_REST);
            dr_log(DR_LOG_NOTICE, "event=producer_rejected device=\"%s\" code=TOO_LARGE limit=%lld", it->dev,
                   (long long)res[i].limit);
            r.notify = "TOO_LARGE";
            r.result = RES_TOO_LARGE;
            snprintf(r.id, sizeof(r.id), "%lld", (long long)res[i].limit);
            break;
        case DR_STORE_CONFLICT:
            dr_metrics_inc(DR_M_PRODUCER_CONFLICT);
            dr_log(DR_LOG_NOTICE, "event=idempotency_conflict device=\"%s\" original_id=%s", it->dev, r.id);
            r.notify = "IDEMPOTENCY_CONFLICT";
            r.result = RES_CONFLICT;
            break;
        default:
            dr_log(DR_LOG_WARNING, "event=id_space_exhausted device=\"%s\" shard=%u hint=\"lower retention_s\"",
                   it->dev, it->shard);
            r.notify = "ID_SPACE_EXHAUSTED";
            r.result = RES_FAILED;
            break;
        }
        /* For MQTT, answering releases the receipt (PUBACK); for REST, the response. */
        dr_metrics_observe(it->retry_forever ? DR_H_RECEIPT : DR_H_REST_ACCEPT,
                           (double)(uv_hrtime() - it->queued_ns) / 1e9);
        item_answer(it, &r);
    }
    (void)in;
}

static void ack_results(batch_t *b, const dr_store_ack_res_t *res, size_t n)
{
    struct ingest *ig = b->ig;
    for (size_t i = 0; i < b->n; i++) {
        item_t *it = b->items[i];
        store_result_t r;
        memset(&r, 0, sizeof(r));
        snprintf(r.id, sizeof(r.id), "%lld", (long long)it->ack_id);
        if (i >= n) {
            r.result = RES_FAILED;
            r.notify = "INTERNAL";
            item_answer(it, &r);
            continue;
        }
        if (res[i].status >= 0)
            snprintf(r.status, sizeof(r.status), "%s", dr_status_name(res[i].status));
        switch (res[i].code) {
        case DR_STORE_ACK_OK:
            dr_metrics_inc(DR_M_ACK_APPLIED);
            if (res[i].age_ms >= 0) /* the first ack confirming delivery (DELIVERED or a completion) */
                dr_metrics_observe(DR_H_ACCEPT_DELIVERED, (double)res[i].age_ms / 1e3);
            dr_log(DR_LOG_VERBOSE, "event=ack_applied id=%s device=\"%s\" status=%s", r.id, it->dev, r.status);
            r.result = RES_STORED;
            break;
        case DR_STORE_ACK_IGNORED:
            dr_metrics_inc(DR_M_ACK_IGNORED);
            dr_log(DR_LOG_VERBOSE, "event=ack_ignored id=%s device=\"%s\" reported=%s current=%s", r.id, it->dev,
                   dr_status_name(it->ack_status), r.status);
            r.result = RES_IGNORED;
            break;
        case DR_STORE_ACK_WRONG_DEVICE:
            dr_metrics_inc(DR_M_ACK_WRONG_DEVICE);
            dr_log(DR_LOG_NOTICE, "event=ack_wrong_device id=%s device=\"%s\"", r.id, it->dev);
            r.result = RES_WRONG_DEVICE;
            break;
        default:
            dr_metrics_inc(DR_M_ACK_UNKNOWN_ID);
            dr_log(DR_LOG_VERBOSE, "event=ack_unknown_id id=%s device=\"%s\"", r.id, it->dev);
            r.result = RES_UNKNOWN_ID;
            break;
        }
        /* Only an ack that leaves the message past NOT_DELIVERED makes its repeats no-ops. */
        if (it->ack_status == DR_ST_DELIVERED &&
            (res[i].code == DR_STORE_ACK_OK ||
             (res[i].code == DR_STORE_ACK_IGNORED && res[i].status >= 0 && res[i].status != DR_ST_NOT_DELIVERED &&
              res[i].status != DR_ST_UNKNOWN)))
            recent_put(ig, it->dev, it->ack_id);
        item_answer(it, &r);
    }
}

static void batch_free(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        item_free(b->items[i]);
    free(b->items);
    free(b);
}

/* Redis errors that go away by themselves: retry rather than fail the items. */
static int transient(int err, const char *errstr)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "NOSCRIPT", "READONLY", "MASTERDOWN", "TRYAGAIN",
                                           "OOM", "MISCONF", "NOREPLICAS", "ERR Function not found"};
    if (err != DR_EREDIS)
        return 1;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (errstr && strncmp(errstr, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static void schedule_retry(batch_t *b, int err)
{
    struct ingest *ig = b->ig;
    store_result_t r;
    memset(&r, 0, sizeof(r));
    r.err = err;
    r.result = RES_FAILED;
    for (size_t i = 0; i < b->n; i++)
        if (!b->items[i]->retry_forever)
            item_answer(b->items[i], &r); /* REST: 503 now; the item stays so the batch keeps its shape */
    if (b->delay_ms == 0 || b->delay_ms % 1000 == 0)
        dr_log(DR_LOG_WARNING, "event=store_retry kind=%s items=%zu error=\"%s\" action=holding_messages",
               b->kind == K_ACCEPT ? "producer" : "ack", b->n, dr_strerror(err));
    b->delay_ms = b->delay_ms == 0 ? RETRY_MIN_MS : (b->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : b->delay_ms * 2);
    b->retry_at = dr_mono_ms() + b->delay_ms;
    LIST_INSERT_HEAD(&ig->retrying, b, link);
    dr_metrics_inc(DR_M_REDIS_ERRORS);
}

static void fail_batch(batch_t *b, const char *errstr)
{
    dr_metrics_inc(DR_M_REDIS_ERRORS);
    dr_log(DR_LOG_WARNING, "event=function_error kind=%s items=%zu error=\"%s\" action=dropped",
           b->kind == K_ACCEPT ? "producer" : "ack", b->n, errstr);
    store_result_t r;
    memset(&r, 0, sizeof(r));
    r.result = RES_FAILED;
    r.notify = "INTERNAL";
    for (size_t i = 0; i < b->n; i++)
        item_answer(b->items[i], &r);
}

static void batch_done(batch_t *b)
{
    struct ingest *ig = b->ig;
    ig->in_calls -= b->n;
    batch_free(b);
    kick(ig);
}

static void maybe_free(struct ingest *ig)
{
    if (ig->closing && ig->calls == 0 && ig->handles_open == 0)
        free(ig);
}

/* A call answered after ingest_free: its items are answered with an error (not stored as far as we
 * know; MQTT items are then not acknowledged and the broker delivers them again). */
static int closing_answer(batch_t *b)
{
    struct ingest *ig = b->ig;
    if (!ig->closing)
        return 0;
    store_result_t r;
    memset(&r, 0, sizeof(r));
    r.err = DR_ECLOSED;
    r.result = RES_FAILED;
    for (size_t i = 0; i < b->n; i++)
        item_answer(b->items[i], &r);
    batch_free(b);
    maybe_free(ig);
    return 1;
}

/* The common part of a batch's reply. Returns 1 when the call succeeded: its notifications are on
 * their way and the caller answers the items, then calls reply_done. Otherwise the batch was retried,
 * failed or dropped here, and the caller does nothing more. */
static int reply_begin(batch_t *b, int err, const char *errstr, const dr_note_t *notes, size_t nnotes)
{
    struct ingest *ig = b->ig;
    ig->calls--;
    if (b->kind == K_ACCEPT)
        ig->accept_calls--;
    if (closing_answer(b))
        return 0;
    if (err != 0 && transient(err, errstr)) {
        schedule_retry(b, err);
        return 0;
    }
    if (err != 0) {
        fail_batch(b, errstr);
        batch_done(b);
        return 0;
    }
    ingest_after_commit(ig->in, notes, nnotes);
    return 1;
}

static void reply_done(batch_t *b)
{
    wake_shards(b->ig->in, b->items, b->n);
    batch_done(b);
}

static void on_accepted(void *data, int err, const char *errstr, const dr_store_accept_res_t *res, size_t n,
                        const dr_note_t *notes, size_t nnotes)
{
    batch_t *b = data;
    if (!reply_begin(b, err, errstr, notes, nnotes))
        return;
    accept_results(b, res, n);
    reply_done(b);
}

static void on_acked(void *data, int err, const char *errstr, const dr_store_ack_res_t *res, size_t n,
                     const dr_note_t *notes, size_t nnotes)
{
    batch_t *b = data;
    if (!reply_begin(b, err, errstr, notes, nnotes))
        return;
    ack_results(b, res, n);
    reply_done(b);
}

/* Sends b; on an immediate refusal (Redis not ready) the batch waits for a retry. */
static void send_batch(batch_t *b)
{
    struct ingest *ig = b->ig;
    ingress_t *in = ig->in;
    int rc;
    ig->calls++;
    if (b->kind == K_ACCEPT) {
        ig->accept_calls++;
        dr_store_accept_t *items = dr_calloc(b->n, sizeof(*items));
        for (size_t i = 0; i < b->n; i++) {
            items[i].dev = b->items[i]->dev;
            items[i].msg = &b->items[i]->msg;
            items[i].key_id = b->items[i]->key_id;
        }
        /* The token must outlive every retry of the batch. Its clock starts when Redis ran the call,
         * and retries stop within a second or two of Redis answering again: a minute is ample. */
        int64_t ttl = in->node.cfg.redis_timeout_ms / 1000 * 4;
        dr_store_limits_t lim = {.ids_max = in->node.cfg.ids_max,
                                 .default_ttl_ms = in->node.cfg.default_ttl_ms,
                                 .max_message = in->node.cfg.device_max_message};
        rc = dr_store_accept(in->node.redis, &in->store, &lim, b->token, ttl < 60 ? 60 : ttl, items, b->n,
                             on_accepted, b);
        free(items);
    } else {
        dr_store_ack_t *items = dr_calloc(b->n, sizeof(*items));
        for (size_t i = 0; i < b->n; i++) {
            items[i].dev = b->items[i]->dev;
            items[i].id = b->items[i]->ack_id;
            items[i].status = b->items[i]->ack_status;
        }
        rc = dr_store_ack(in->node.redis, &in->store, items, b->n, on_acked, b);
        free(items);
    }
    if (rc != 0) {
        ig->calls--;
        if (b->kind == K_ACCEPT)
            ig->accept_calls--;
        schedule_retry(b, rc);
    }
}

/* A batch's token must never repeat while an earlier batch's answer is kept under it (a repeat would
 * be answered with that batch's results and store nothing). Random; should the kernel's source ever
 * fail, the clock, the process and a counter still make it unique. */
static void new_token(char token[33])
{
    unsigned char rnd[16];
    if (dr_random_bytes(rnd, sizeof(rnd)) != 0) {
        static uint32_t counter;
        uint64_t ns = uv_hrtime();
        uint32_t pid = (uint32_t)getpid(), n = ++counter;
        memcpy(rnd, &ns, 8);
        memcpy(rnd + 8, &pid, 4);
        memcpy(rnd + 12, &n, 4);
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
}

static void form_batch(struct ingest *ig, struct item_list *list, int kind)
{
    batch_t *b = dr_calloc(1, sizeof(*b));
    b->ig = ig;
    b->kind = kind;
    b->items = dr_calloc(BATCH_MAX, sizeof(*b->items));
    while (b->n < BATCH_MAX && !STAILQ_EMPTY(list)) {
        item_t *it = STAILQ_FIRST(list);
        STAILQ_REMOVE_HEAD(list, link);
        b->items[b->n++] = it;
    }
    ig->queued -= b->n;
    ig->in_calls += b->n;
    dr_metrics_observe(DR_H_INGEST_BATCH, (double)b->n);
    new_token(b->token);
    send_batch(b);
}

static int can_send_ack(const struct ingest *ig)
{
    return ig->calls < CALLS_MAX && !STAILQ_EMPTY(&ig->acks);
}

static int can_send_accept(const struct ingest *ig)
{
    return ig->calls < CALLS_MAX && ig->accept_calls < ACCEPT_CALLS_MAX && !STAILQ_EMPTY(&ig->accepts);
}

/* Once per loop turn, after the poll phase: everything queued goes to Redis.
 * Acks go first: they free window slots, nothing repeats a completion report, and a device's next
 * command waits for its ack. Producer batches never take the last call slot, so acks that arrive
 * while producers keep the ingress busy leave in the next turn instead of after a whole round of
 * producer batches. */
static void on_check(uv_check_t *h)
{
    struct ingest *ig = h->data;
    if (!dr_redis_ready(ig->in->node.redis) || !ig->in->layout_ok) {
        uv_idle_stop(&ig->idle); /* the items wait; the retry timer kicks again */
        return;
    }
    while (can_send_ack(ig) || can_send_accept(ig)) {
        if (can_send_ack(ig))
            form_batch(ig, &ig->acks, K_ACK);
        if (can_send_accept(ig))
            form_batch(ig, &ig->accepts, K_ACCEPT);
    }
    /* With nothing that can leave now, the loop may block in poll: a call's reply (batch_done) or the
     * retry timer kicks again. Spinning through empty turns meanwhile only took CPU from Redis. */
    if (ig->queued == 0 || (!can_send_ack(ig) && !can_send_accept(ig)))
        uv_idle_stop(&ig->idle);
}

static void on_timer(uv_timer_t *t)
{
    struct ingest *ig = t->data;
    int64_t now = dr_mono_ms();
    batch_t *b = LIST_FIRST(&ig->retrying), *next;
    for (; b != NULL; b = next) {
        next = LIST_NEXT(b, link);
        if (now < b->retry_at || ig->calls >= CALLS_MAX || !dr_redis_ready(ig->in->node.redis))
            continue;
        LIST_REMOVE(b, link);
        send_batch(b);
    }
    if (ig->queued > 0)
        uv_idle_start(&ig->idle, on_idle); /* items that waited for Redis */
}

struct ingest *ingest_new(ingress_t *in)
{
    struct ingest *ig = dr_calloc(1, sizeof(*ig));
    ig->in = in;
    STAILQ_INIT(&ig->accepts);
    STAILQ_INIT(&ig->acks);
    LIST_INIT(&ig->retrying);
    uv_check_init(in->node.loop.uv, &ig->check);
    ig->check.data = ig;
    uv_check_start(&ig->check, on_check);
    uv_unref((uv_handle_t *)&ig->check);
    uv_idle_init(in->node.loop.uv, &ig->idle);
    ig->idle.data = ig;
    uv_timer_init(in->node.loop.uv, &ig->timer);
    ig->timer.data = ig;
    uv_timer_start(&ig->timer, on_timer, RETRY_MIN_MS, RETRY_MIN_MS);
    uv_unref((uv_handle_t *)&ig->timer);
    return ig;
}

size_t ingest_pending(const struct ingest *ig)
{
    return ig->queued + ig->in_calls;
}

static void on_closed(uv_handle_t *h)
{
    struct ingest *ig = h->data;
    ig->handles_open--;
    maybe_free(ig);
}

void ingest_free(struct ingest *ig)
{
    if (ig == NULL)
        return;
    /* Whatever was not stored is answered with an error: MQTT items are not acknowledged (the
     * broker delivers them again), REST requests get 503. Calls still in flight answer on their own
     * when the Redis client closes. */
    store_result_t r;
    memset(&r, 0, sizeof(r));
    r.err = DR_ECLOSED;
    r.result = RES_FAILED;
    struct item_list *lists[] = {&ig->accepts, &ig->acks};
    for (size_t k = 0; k < 2; k++) {
        while (!STAILQ_EMPTY(lists[k])) {
            item_t *it = STAILQ_FIRST(lists[k]);
            STAILQ_REMOVE_HEAD(lists[k], link);
            item_answer(it, &r);
            item_free(it);
        }
    }
    while (!LIST_EMPTY(&ig->retrying)) {
        batch_t *b = LIST_FIRST(&ig->retrying);
        LIST_REMOVE(b, link);
        for (size_t i = 0; i < b->n; i++)
            item_answer(b->items[i], &r);
        batch_free(b);
    }
    for (int i = 0; ig->recent != NULL && i < RECENT_SLOTS; i++)
        free(ig->recent[i].dev);
    free(ig->recent);
    ig->recent = NULL;
    ig->closing = 1;
    ig->handles_open = 3;
    uv_close((uv_handle_t *)&ig->check, on_closed);
    uv_close((uv_handle_t *)&ig->idle, on_closed);
    uv_close((uv_handle_t *)&ig->timer, on_closed);
}

/* ---- after a commit ------------------------------------------------------------------------------ */

void ingest_wake(ingress_t *in, uint32_t shard)
{
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "%u", shard);
    if (dr_bus_publish(in->node.bus, in->wake_subject, buf, (size_t)n) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);
}

void ingest_after_commit(ingress_t *in, const dr_note_t *notes, size_t n)
{
    /* Every status change this node made passes here once, right after the call that made it (with the
     * previous change of a message when that was still unconfirmed: dr_notes_publish counts it once). */
    if (n > 0 && in->notes != NULL)
        dr_notes_publish(in->notes, notes, n, 1);
}

void ingest_policy(ingress_t *in, dr_store_policy_t *pol)
{
    const dr_settings_t *cfg = &in->node.cfg;
    static uint64_t seed = 88172645463325252ULL;
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    pol->window = cfg->window;
    pol->interval_ms = cfg->interval_ms;
    pol->ack_timeout_ms = cfg->ack_timeout_ms;
    pol->retry_max_ms = cfg->retry_max_ms;
    pol->backoff = cfg->backoff;
    pol->jitter_pct = cfg->jitter_pct;
    pol->seed = seed;
}

const char *ingest_notify_text(const char *code)
{
    if (strcmp(code, "IDEMPOTENCY_CONFLICT") == 0)
        return "idempotencyKey was already used for a different command";
    if (strcmp(code, "ID_SPACE_EXHAUSTED") == 0)
        return "no free message id; the message was not accepted";
    if (strcmp(code, "TOO_LARGE") == 0)
        return "the command is larger than its device takes (device.max_message); nothing was accepted";
    return "the message could not be stored; nothing was accepted";
}
