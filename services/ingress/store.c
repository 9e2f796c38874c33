/* Loop side of ingestion, shared by MQTT and REST: runs the accept and ack scripts, interprets their
 * answers once (metrics, logs, error notifications, NATS wake-ups) and reports a store_result_t.
 */
#define DR_MODULE "ingress/store"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "ingress.h"

typedef struct {
    ingress_t *in;
    store_cb *cb;
    void *data;
    int kind;
    char dev[256];
    uint32_t shard;
    int64_t ack_id;
    int ack_status;
    int has_cert;          /* accept: the producer can be told about a failure */
    int64_t tmp_id;
    char producer_id[DR_MAX_PRODUCER_ID + 1];
    int guarantee;
} op_t;

void store_new_token(char token[33])
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0, sizeof(rnd)); /* an all-zero token only disables the retry check */
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
}

/* Redis errors that go away by themselves: retry rather than drop the message. */
static int transient(const redisReply *reply)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "NOSCRIPT", "READONLY", "MASTERDOWN",
                                           "TRYAGAIN", "OOM", "MISCONF", "NOREPLICAS"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(reply->str, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static void wake(ingress_t *in, uint32_t shard)
{
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "%u", shard);
    if (dr_bus_publish(in->node.bus, in->wake_subject, buf, (size_t)n) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);
}

static const char *elem(const redisReply *r, size_t i)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return "";
    const redisReply *e = r->element[i];
    return (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) ? e->str : "";
}

static void complete(op_t *op, store_result_t *res)
{
    op->cb(op->data, res);
    free(op);
}

/* Common error handling; returns 1 when the reply was an error and op is completed. */
static int failed(op_t *op, redisReply *reply, int err, store_result_t *res)
{
    if (err == 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
        return 0;
    res->result = RES_FAILED;
    if (err == DR_EREDIS && !transient(reply)) {
        /* A script error is a bug, not an outage: retrying would block every later message. */
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        dr_log(DR_LOG_WARNING, "event=script_error device=\"%s\" error=\"%s\" action=dropped", op->dev, reply->str);
        res->notify = "INTERNAL";
        res->err = 0;
    } else {
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        res->err = err != 0 ? err : DR_EREDIS;
    }
    complete(op, res);
    return 1;
}

static void on_accept(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    op_t *op = data;
    ingress_t *in = op->in;
    store_result_t res;
    memset(&res, 0, sizeof(res));
    if (failed(op, reply, err, &res))
        return;
    const char *what = elem(reply, 0);
    snprintf(res.id, sizeof(res.id), "%s", elem(reply, 1));
    if (strcmp(what, "OK") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_ACCEPTED);
        snprintf(res.status, sizeof(res.status), "%s", elem(reply, 2));
        dr_log(DR_LOG_VERBOSE, "event=accepted id=%s device=\"%s\" guarantee=%s shard=%u%s", res.id, op->dev,
               dr_guarantee_name(op->guarantee), op->shard,
               strcmp(elem(reply, 4), "retry") == 0 ? " note=stored_by_an_earlier_attempt" : "");
        wake(in, op->shard);
        res.result = RES_STORED;
    } else if (strcmp(what, "DUP") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_DUPLICATE);
        snprintf(res.status, sizeof(res.status), "%s", elem(reply, 2));
        dr_log(DR_LOG_VERBOSE, "event=duplicate id=%s device=\"%s\"", res.id, op->dev);
        wake(in, op->shard);
        res.result = RES_DUPLICATE;
    } else if (strcmp(what, "CONFLICT") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_CONFLICT);
        dr_log(DR_LOG_NOTICE, "event=idempotency_conflict device=\"%s\" original_id=%s", op->dev, res.id);
        res.notify = "IDEMPOTENCY_CONFLICT";
        res.result = RES_CONFLICT;
    } else {
        dr_log(DR_LOG_WARNING, "event=id_space_exhausted device=\"%s\" hint=\"raise ids.max or lower retention_s\"",
               op->dev);
        res.notify = "ID_SPACE_EXHAUSTED";
        res.result = RES_FAILED;
    }
    complete(op, &res);
}

static void on_ack(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    op_t *op = data;
    store_result_t res;
    memset(&res, 0, sizeof(res));
    if (failed(op, reply, err, &res))
        return;
    const char *what = elem(reply, 0);
    snprintf(res.id, sizeof(res.id), "%lld", (long long)op->ack_id);
    snprintf(res.status, sizeof(res.status), "%s", elem(reply, 1));
    if (strcmp(what, "OK") == 0) {
        dr_metrics_inc(DR_M_ACK_APPLIED);
        dr_log(DR_LOG_VERBOSE, "event=ack_applied id=%s device=\"%s\" status=%s", res.id, op->dev, res.status);
        wake(op->in, op->shard);
        res.result = RES_STORED;
    } else if (strcmp(what, "IGNORED") == 0) {
        dr_metrics_inc(DR_M_ACK_IGNORED);
        dr_log(DR_LOG_VERBOSE, "event=ack_ignored id=%s device=\"%s\" reported=%s current=%s", res.id, op->dev,
               dr_status_name(op->ack_status), res.status);
        res.result = RES_IGNORED;
    } else if (strcmp(what, "WRONG_DEVICE") == 0) {
        dr_metrics_inc(DR_M_ACK_WRONG_DEVICE);
        dr_log(DR_LOG_NOTICE, "event=ack_wrong_device id=%s device=\"%s\"", res.id, op->dev);
        res.result = RES_WRONG_DEVICE;
    } else {
        dr_metrics_inc(DR_M_ACK_UNKNOWN_ID);
        dr_log(DR_LOG_VERBOSE, "event=ack_unknown_id id=%s device=\"%s\"", res.id, op->dev);
        res.result = RES_UNKNOWN_ID;
    }
    complete(op, &res);
}

static op_t *new_op(ingress_t *in, int kind, const char *dev, size_t dev_len, store_cb *cb, void *data)
{
    op_t *op = dr_calloc(1, sizeof(*op));
    op->in = in;
    op->kind = kind;
    op->cb = cb;
    op->data = data;
    snprintf(op->dev, sizeof(op->dev), "%.*s", (int)dev_len, dev);
    op->shard = dr_shard_of(dev, dev_len, (uint32_t)in->node.cfg.shards);
    return op;
}

static void unavailable(op_t *op)
{
    store_result_t res;
    memset(&res, 0, sizeof(res));
    res.err = DR_EUNAVAIL;
    res.result = RES_FAILED;
    complete(op, &res);
}

void store_accept(ingress_t *in, const accept_req_t *a, store_cb *cb, void *data)
{
    const dr_settings_t *cfg = &in->node.cfg;
    const dr_producer_msg_t *m = a->msg;
    op_t *op = new_op(in, JOB_ACCEPT, a->dev, a->dev_len, cb, data);
    op->has_cert = m->has_cert;
    op->tmp_id = m->tmp_id;
    op->guarantee = m->guarantee;
    if (m->has_cert)
        snprintf(op->producer_id, sizeof(op->producer_id), "%s", m->producer_id);
    if (in->node.closed) {
        unavailable(op);
        return;
    }
    int64_t now = dr_now_ms();
    char now_s[24], ret_s[24], shard_s[16], tmp_s[24], ttl_s[24], max_s[24], nb_s[24], fp_s[24], idmax_s[24],
        rqttl_s[24];
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
    snprintf(ret_s, sizeof(ret_s), "%lld", (long long)cfg->retention_s);
    snprintf(shard_s, sizeof(shard_s), "%u", op->shard);
    snprintf(tmp_s, sizeof(tmp_s), "%lld", (long long)m->tmp_id);
    int64_t deadline = 0;
    if (m->ttl_ms > 0)
        deadline = now + m->ttl_ms;
    if (m->deliver_by > 0 && (deadline == 0 || m->deliver_by < deadline))
        deadline = m->deliver_by;
    ttl_s[0] = max_s[0] = nb_s[0] = '\0';
    if (deadline > 0)
        snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)deadline);
    if (m->max_attempts > 0)
        snprintf(max_s, sizeof(max_s), "%lld", (long long)m->max_attempts);
    if (m->not_before > 0)
        snprintf(nb_s, sizeof(nb_s), "%lld", (long long)m->not_before);
    snprintf(fp_s, sizeof(fp_s), "%016llx", (unsigned long long)dr_producer_msg_fingerprint(m, op->dev));
    snprintf(idmax_s, sizeof(idmax_s), "%lld", (long long)cfg->ids_max);
    /* The token must outlive every retry of this request: retries stop within seconds of Redis
     * answering again, so a few minutes is ample. */
    snprintf(rqttl_s, sizeof(rqttl_s), "%lld", (long long)(cfg->redis_timeout_ms / 1000 * 4 + 300));
    const char *argv[] = {
        cfg->redis_prefix, now_s, ret_s, op->dev, shard_s, dr_guarantee_name(m->guarantee), m->command,
        m->data ? m->data : "", m->has_cert ? tmp_s : "", m->has_cert ? m->producer_id : "", ttl_s, max_s, nb_s,
        m->idem_key ? m->idem_key : "", fp_s, idmax_s, m->ext ? "1" : "0", a->token, rqttl_s,
        a->key_id ? a->key_id : "",
    };
    if (dr_redis_eval(in->node.redis, in->s_accept, on_accept, op, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL) != 0)
        unavailable(op);
}

void store_ack(ingress_t *in, const char *dev, int64_t id, int status, store_cb *cb, void *data)
{
    const dr_settings_t *cfg = &in->node.cfg;
    op_t *op = new_op(in, JOB_ACK, dev, strlen(dev), cb, data);
    op->ack_id = id;
    op->ack_status = status;
    if (in->node.closed) {
        unavailable(op);
        return;
    }
    char now_s[24], ret_s[24], id_s[24];
    snprintf(now_s, sizeof(now_s), "%lld", (long long)dr_now_ms());
    snprintf(ret_s, sizeof(ret_s), "%lld", (long long)cfg->retention_s);
    snprintf(id_s, sizeof(id_s), "%lld", (long long)id);
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, op->dev, id_s, dr_status_name(status)};
    if (dr_redis_eval(in->node.redis, in->s_ack, on_ack, op, 6, argv, NULL) != 0)
        unavailable(op);
}

/* ---- MQTT jobs: the paho thread waits for these ------------------------------------------------ */

static void job_done(void *data, const store_result_t *res)
{
    job_t *j = data;
    ingress_t *in = j->in;
    pthread_mutex_lock(&in->mu);
    j->res = *res;
    j->done = 1;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

void ingress_run_job(void *arg)
{
    job_t *j = arg;
    ingress_t *in = j->in;
    if (j->kind == JOB_ACCEPT) {
        accept_req_t a = {.dev = j->dev, .dev_len = strlen(j->dev), .msg = &j->msg, .token = j->token, .key_id = ""};
        store_accept(in, &a, job_done, j);
    } else {
        store_ack(in, j->dev, j->ack.id, j->ack.status, job_done, j);
    }
}

/* ---- deferred receipt acks: queued by the paho thread, nobody waits for them ------------------- */

/* Bound on queued receipt acks: past it the paho thread stores acks synchronously again, which slows
 * the broker down instead of growing memory without limit. */
#define MAX_DEFERRED_ACKS 10000
/* Acks sent to Redis at once. Enough for many to share one fsync; few enough that the last of them
 * is answered long before redis.timeout_ms even on a slow Redis (thousands at once made the
 * connection time out and drop every ack in flight). */
#define MAX_ACKS_IN_FLIGHT 128

struct deferred_ack {
    ingress_t *in;
    struct deferred_ack *next; /* FIFO of acks waiting for a slot (loop thread) */
    dr_ack_t ack;
    char dev[];
};

static void pump_deferred(ingress_t *in);

/* Receipt acks seen recently, by (device, id): a direct-mapped cache of RECENT_SLOTS. Once a DELIVERED
 * ack for a message is stored (or on its way), another one for it can change nothing, so a repeat is
 * counted as ignored without a script call. Devices answer every re-send, and when acks back up
 * (thousands of devices reconnecting) each late ack makes a re-send and each re-send another ack:
 * skipping the repeats keeps that from feeding on itself. An ack that could not be stored leaves the
 * cache, so the next one is tried. A collision only evicts: the next repeat goes to Redis. */
#define RECENT_SLOTS 16384

struct recent_ack {
    int64_t id;
    char *dev; /* owned; NULL: empty slot */
};

static struct recent_ack *recent_slot(ingress_t *in, const char *dev, int64_t id)
{
    if (in->recent_acks == NULL)
        in->recent_acks = dr_calloc(RECENT_SLOTS, sizeof(struct recent_ack));
    uint64_t h = dr_fnv1a64(dev, strlen(dev), (uint64_t)id);
    return &in->recent_acks[h & (RECENT_SLOTS - 1)];
}

/* 1 when the same receipt ack was seen recently (a repeat); otherwise remembers it and returns 0. */
static int recent_seen(ingress_t *in, const char *dev, int64_t id)
{
    struct recent_ack *r = recent_slot(in, dev, id);
    if (r->dev != NULL && r->id == id && strcmp(r->dev, dev) == 0)
        return 1;
    free(r->dev);
    r->dev = dr_strdup(dev);
    r->id = id;
    return 0;
}

static void recent_forget(ingress_t *in, const char *dev, int64_t id)
{
    struct recent_ack *r = recent_slot(in, dev, id);
    if (r->dev != NULL && r->id == id && strcmp(r->dev, dev) == 0) {
        free(r->dev);
        r->dev = NULL;
    }
}

static void deferred_done(void *data, const store_result_t *res)
{
    struct deferred_ack *a = data;
    ingress_t *in = a->in;
    /* Only an ack that leaves the message past NOT_DELIVERED makes its repeats no-ops. One that was not
     * stored, was refused (unknown id, wrong device) or came before the message was sent (still
     * pending) leaves the cache: its repeat is tried and counted again. */
    int settled = res->err == 0 && (res->result == RES_STORED ||
                                     (res->result == RES_IGNORED && strcmp(res->status, "NOT_DELIVERED") != 0 &&
                                      strcmp(res->status, "UNKNOWN") != 0));
    if (!settled) {
        recent_forget(in, a->dev, a->ack.id);
    }
    if (res->err != 0) {
        dr_metrics_inc(DR_M_ACK_DROPPED);
        dr_log(DR_LOG_VERBOSE, "event=ack_dropped id=%lld device=\"%s\" error=\"%s\" repair=resend",
               (long long)a->ack.id, a->dev, dr_strerror(res->err));
    }
    in->acks_in_flight--;
    atomic_fetch_sub(&in->deferred, 1);
    free(a);
    pump_deferred(in);
}

/* Sends waiting acks while fewer than MAX_ACKS_IN_FLIGHT are in flight. Loop thread. Not re-entered
 * when an ack completes at once (Redis down): the running loop goes on instead of recursing. */
static void pump_deferred(ingress_t *in)
{
    if (in->acks_pumping)
        return;
    in->acks_pumping = 1;
    while (in->acks_waiting != NULL && in->acks_in_flight < MAX_ACKS_IN_FLIGHT) {
        struct deferred_ack *a = in->acks_waiting;
        in->acks_waiting = a->next;
        if (in->acks_waiting == NULL)
            in->acks_waiting_tail = NULL;
        in->acks_in_flight++;
        store_ack(a->in, a->dev, a->ack.id, a->ack.status, deferred_done, a); /* may complete at once */
    }
    in->acks_pumping = 0;
}

void ingress_free_deferred(ingress_t *in)
{
    for (int i = 0; in->recent_acks != NULL && i < RECENT_SLOTS; i++)
        free(in->recent_acks[i].dev);
    free(in->recent_acks);
    in->recent_acks = NULL;
    while (in->acks_waiting != NULL) {
        struct deferred_ack *a = in->acks_waiting;
        in->acks_waiting = a->next;
        dr_metrics_inc(DR_M_ACK_DROPPED);
        free(a);
    }
    in->acks_waiting_tail = NULL;
}

static void run_deferred(void *arg)
{
    struct deferred_ack *a = arg;
    ingress_t *in = a->in;
    if (recent_seen(in, a->dev, a->ack.id)) {
        dr_metrics_inc(DR_M_ACK_IGNORED);
        dr_log(DR_LOG_VERBOSE, "event=ack_ignored id=%lld device=\"%s\" reason=repeat", (long long)a->ack.id, a->dev);
        atomic_fetch_sub(&in->deferred, 1);
        free(a);
        return;
    }
    a->next = NULL;
    if (in->acks_waiting_tail)
        in->acks_waiting_tail->next = a;
    else
        in->acks_waiting = a;
    in->acks_waiting_tail = a;
    pump_deferred(in);
}

int ingress_defer_ack(ingress_t *in, const char *dev, size_t dev_len, const dr_ack_t *ack)
{
    if (atomic_fetch_add(&in->deferred, 1) >= MAX_DEFERRED_ACKS) {
        atomic_fetch_sub(&in->deferred, 1);
        return DR_EBUSY;
    }
    struct deferred_ack *a = dr_malloc(sizeof(*a) + dev_len + 1);
    a->in = in;
    a->ack = *ack;
    memcpy(a->dev, dev, dev_len);
    a->dev[dev_len] = '\0';
    if (dr_loop_post(&in->node.loop, run_deferred, a) != 0) {
        atomic_fetch_sub(&in->deferred, 1);
        free(a);
        return DR_EBUSY;
    }
    return 0;
}

/* ---- error notifications ---------------------------------------------------------------------- */

const char *store_notify_text(const char *code)
{
    if (strcmp(code, "IDEMPOTENCY_CONFLICT") == 0)
        return "idempotencyKey was already used for a different command";
    if (strcmp(code, "ID_SPACE_EXHAUSTED") == 0)
        return "no free message id; the message was not accepted";
    return "the message could not be stored; nothing was accepted";
}
