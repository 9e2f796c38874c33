/* Dispatch: runs passes over the shards this node holds and publishes what they decided to send.
 *
 * DESIGN
 * The schedule is kept in memory per owned shard (due_at, on the monotonic clock): every pass returns
 * how long until the shard needs the next one, wake-ups from the ingress (NATS) make a shard due at
 * once, and a new owner starts with a pass. Because a wake-up can be lost, every RECONCILE_MS the
 * node asks Redis when each of its shards is next due (heads): a lost wake-up delays, never loses.
 * Passes of one shard never overlap. The shards that become due in one loop turn (the cron's tick,
 * a batch of wake-ups) are passed together, one call per DISPATCH_GROUP shards (dr_store_dispatch_many:
 * one clock read and one round trip for all of them, each shard fenced on its own).
 *
 * No pass starts while dispatch.send_hold publishes wait for the broker: sends are recorded, with the
 * time that paces their device, only as fast as the broker takes them, so none waits long in our
 * queue after its time was recorded. A send is recorded in Redis before it is published, and published only
 * while the lease that recorded it still holds (a node that stalled past its lease publishes nothing
 * stale; its successor re-sends). A publish that fails is taken back (unsend), so it does not count
 * as an attempt and the device does not wait a whole back-off for it. Every status change a pass made
 * (expired, failed) is published right away (dr/notes.h); the notifications other nodes claimed and
 * never confirmed are reclaimed every RECLAIM_MS, and the status logs are trimmed every TRIM_MS.
 */
#define DR_MODULE "dispatcher/dispatch"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "dispatcher.h"

#define DISPATCH_GROUP 64   /* shards per dispatch call (the call also stops at dispatch.batch devices) */
#define RECONCILE_MS 1000   /* ask Redis for every owned shard's next due time */
#define HEADS_CHUNK 256     /* shards per heads call */
#define RECLAIM_MS 5000     /* look for notifications left unconfirmed by their node */
#define RECLAIM_IDLE_MS 5000
#define RECLAIM_COUNT 200
#define TRIM_MS 30000       /* trim the status logs */
#define LOG_KEEP_MS 120000  /* status changes an SSE client can resume from */

/* ---- publishing sends --------------------------------------------------------------------------- */

typedef struct {
    dispatcher_t *d;
    uint32_t shard;
    int64_t epoch, id, attempt;
    uint64_t published_ns;  /* uv_hrtime() at publish: drover_send_confirm_seconds */
} sent_t;

static void on_unsent(void *data, int err, const char *errstr, int64_t result)
{
    (void)data;
    if (err != 0)
        dr_log(DR_LOG_VERBOSE, "event=unsend_failed error=\"%s\" effect=\"re-sent at its retry time\"", errstr);
    else if (result == 1)
        dr_log(DR_LOG_VERBOSE, "event=send_taken_back");
}

static void take_back(sent_t *s)
{
    dispatcher_t *d = s->d;
    if (d->shards[s->shard].epoch != s->epoch || !dr_redis_ready(d->node.redis))
        return;
    if (dr_store_unsend(d->node.redis, &d->store, s->shard, s->epoch, s->id, s->attempt, on_unsent, NULL) == 0)
        dispatch_wake(d, s->shard);
}

static void on_published(void *data, int err)
{
    sent_t *s = data;
    if (err != 0) {
        dr_metrics_inc(DR_M_PUBLISH_FAILED);
        take_back(s);
    } else {
        dr_metrics_observe(DR_H_SEND_CONFIRM, (double)(uv_hrtime() - s->published_ns) / 1e9);
    }
    free(s);
}

static void on_refused(void *data, int err, const char *errstr, const dr_store_cancel_res_t *res,
                       const dr_note_t *notes, size_t nnotes)
{
    dispatcher_t *d = data;
    (void)res;
    if (err != 0) {
        dr_log(DR_LOG_WARNING, "event=refused_send_not_failed error=\"%s\" action=retry_at_next_send", errstr);
        return;
    }
    dr_notes_publish(d->notes, notes, nnotes, 1);
}

static void send_one(dispatcher_t *d, uint32_t shard, int64_t epoch, const dr_store_send_t *m)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "consumer/request/%s", m->dev);
    char *body = dr_codec_encode_consumer(m->id, m->guarantee, m->command, m->sent_ms > 0 ? m->sent_ms : dr_now_ms(),
                                          m->data);
    if (m->attempt == 1 && m->accepted_ms > 0 && m->sent_ms >= m->accepted_ms)
        dr_metrics_observe(DR_H_ACCEPT_SEND, (double)(m->sent_ms - m->accepted_ms) / 1e3);
    sent_t *s = dr_malloc(sizeof(*s));
    *s = (sent_t){.d = d, .shard = shard, .epoch = epoch, .id = m->id, .attempt = m->attempt,
                  .published_ns = uv_hrtime()};
    /* The copy expires before the next one is made, and before the message's deadline (drover.lua
     * send_expiry; none for guarantee NO, which is never re-sent). */
    dr_mqttc_pub_opts_t po = {.qos = (int)d->node.cfg.mqtt_qos, .message_expiry_s = m->expiry_s};
    int rc = dr_mqttc_publish_ex(d->mqtt, topic, body, strlen(body), &po, on_published, s);
    free(body);
    if (rc == DR_EINVAL) {
        /* The device id is no valid topic level (stored before input was checked this strictly): no
         * broker would take the send, and trying would cost us the connection. The message fails. */
        free(s);
        dr_metrics_inc(DR_M_SEND_REFUSED);
        dr_log(DR_LOG_WARNING, "event=send_refused id=%lld reason=\"device id is not a valid topic level\" action=failed",
               (long long)m->id);
        if (dr_store_cancel(d->node.redis, &d->store, m->id, "", "refused", on_refused, d) != 0)
            dr_log(DR_LOG_WARNING, "event=refused_send_not_failed error=\"redis unavailable\" action=retry_at_next_send");
        return;
    }
    if (rc != 0) {
        dr_metrics_inc(DR_M_PUBLISH_FAILED);
        take_back(s);
        free(s);
        return;
    }
    dr_metrics_inc(m->attempt > 1 ? DR_M_RESENT : DR_M_SENT);
    dr_log(DR_LOG_VERBOSE, "event=%s id=%lld device=\"%s\" attempt=%lld expiry_s=%u",
           m->attempt > 1 ? "resent" : "sent", (long long)m->id, m->dev, (long long)m->attempt,
           dr_mqttc_protocol(d->mqtt) == 5 ? po.message_expiry_s : 0); /* 0: 3.1.1, no expiry */
}

/* ---- passes -------------------------------------------------------------------------------------- */

typedef struct {
    dispatcher_t *d;
    uint32_t shard;
    int64_t epoch;
} pass_t;

static void on_pass(void *data, int err, const char *errstr, const dr_store_pass_t *pass)
{
    pass_t *p = data;
    dispatcher_t *d = p->d;
    shard_t *s = &d->shards[p->shard];
    uint32_t shard = p->shard;
    int64_t epoch = p->epoch;
    free(p);
    s->dispatching = 0;
    d->active--;
    int64_t now = dr_mono_ms();
    if (err != 0) {
        /* A failed call answers every shard it carried: one line a second says how many. */
        static int64_t logged_at;
        static unsigned quiet;
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        if (now - logged_at >= 1000) {
            dr_log(DR_LOG_WARNING, "event=dispatch_failed shard=%u error=\"%s\" not_logged_since=%u", shard, errstr,
                   quiet);
            logged_at = now;
            quiet = 0;
        } else {
            quiet++;
        }
        s->due_at = now + d->node.cfg.tick_ms; /* try again soon */
        return;
    }
    if (pass->later) {
        /* The call spent its budget on the shards before this one: this one goes first in the next
         * call, ahead of a shard that used the budget and has more (fairness). */
        s->due_at = now;
        s->later = 1;
        dispatch_shard(d, shard);
        return;
    }
    if (pass->fenced) {
        dr_metrics_inc(DR_M_FENCED);
        dr_log(DR_LOG_NOTICE, "event=fenced shard=%u epoch=%lld action=dropping_shard", shard, (long long)epoch);
        if (s->epoch == epoch)
            s->epoch = 0;
        return;
    }
    dr_metrics_add(DR_M_EXPIRED, pass->expired);
    dr_metrics_add(DR_M_FAILED, pass->failed);
    /* Set before the sends go out: a publish that fails takes its send back and makes the shard due
     * at once (take_back), which must not be overwritten by the pass's own next time. */
    s->due_at = pass->next_in_ms >= 0 ? now + pass->next_in_ms : -1;
    if (now < d->lease_valid_until && s->epoch == epoch) {
        for (size_t i = 0; i < pass->nsends; i++)
            send_one(d, shard, epoch, &pass->sends[i]);
    } else if (pass->nsends > 0) {
        /* Our lease may have run out while the pass ran: a successor may already be sending. What was
         * recorded is re-sent at its retry time by whoever holds the shard then. */
        dr_log(DR_LOG_NOTICE, "event=sends_withheld shard=%u count=%zu reason=\"lease may have expired\"", shard,
               pass->nsends);
    }
    /* Counted here, where the change was made; reclaimed notes were counted by the node that made them. */
    dr_notes_publish(d->notes, pass->notes, pass->nnotes, 1);
    if (pass->more)
        s->again = 1;
    if (s->again && s->epoch != 0 && !d->node.stopping)
        dispatch_shard(d, shard);
}

static void on_kick(uv_idle_t *h)
{
    (void)h; /* only keeps the loop from blocking in poll while shards are pending */
}

void dispatch_shard(dispatcher_t *d, uint32_t shard)
{
    shard_t *s = &d->shards[shard];
    if (s->epoch == 0 || d->node.stopping || !dr_mqttc_connected(d->mqtt))
        return;
    if (s->dispatching) {
        s->again = 1;
        return;
    }
    if (s->queued)
        return;
    s->queued = 1;
    d->pending[d->npending++] = shard;
    uv_idle_start(&d->kick, on_kick);
}

/* Sends one call for reqs[0..n) (their passes are marked running); undoes the marks if it cannot. */
static void send_group(dispatcher_t *d, dr_store_pass_req_t *reqs, size_t n)
{
    if (n == 0)
        return;
    const dr_settings_t *cfg = &d->node.cfg;
    d->seed = d->seed * 6364136223846793005ULL + 1442695040888963407ULL;
    dr_store_policy_t pol = {
        .window = cfg->window,
        .interval_ms = cfg->interval_ms,
        .ack_timeout_ms = cfg->ack_timeout_ms,
        .retry_max_ms = cfg->retry_max_ms,
        .backoff = cfg->backoff,
        .jitter_pct = cfg->jitter_pct,
        .seed = d->seed,
    };
    if (dr_store_dispatch_many(d->node.redis, &d->store, reqs, n, cfg->batch, &pol, on_pass) == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        shard_t *s = &d->shards[reqs[i].shard];
        s->dispatching = 0;
        d->active--;
        free(reqs[i].data);
    }
}

/* Once per loop turn, after the poll phase: every shard that became due goes to Redis. */
static void on_flush(uv_check_t *h)
{
    dispatcher_t *d = h->data;
    uv_idle_stop(&d->kick);
    if (d->npending == 0)
        return;
    /* Hold the passes while the broker is behind: a send is recorded (its time is the device's pacing
     * clock) before it is published, so one that waits here behind a long queue reaches its device
     * late, and the next one, recorded an interval after it, close behind it. The shards stay pending;
     * every loop turn (a PUBACK, the cron's tick) looks again. */
    if (dr_mqttc_pending(d->mqtt) >= (size_t)d->node.cfg.send_hold)
        return;
    /* The order of this turn: shards the last call did not reach first, then the others. pending may
     * fill again while the calls go out, so the turn works on its own copy. */
    uint32_t count = 0;
    for (int later = 1; later >= 0; later--)
        for (uint32_t i = 0; i < d->npending; i++)
            if ((d->shards[d->pending[i]].later != 0) == later)
                d->flushing[count++] = d->pending[i];
    d->npending = 0;
    dr_store_pass_req_t reqs[DISPATCH_GROUP];
    size_t n = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t shard = d->flushing[i];
        shard_t *s = &d->shards[shard];
        s->queued = 0;
        s->later = 0;
        if (s->epoch == 0 || d->node.stopping || !dr_mqttc_connected(d->mqtt))
            continue;
        if (s->dispatching) {
            s->again = 1;
            continue;
        }
        s->again = 0;
        s->dispatching = 1;
        d->active++;
        pass_t *p = dr_malloc(sizeof(*p));
        *p = (pass_t){.d = d, .shard = shard, .epoch = s->epoch};
        reqs[n++] = (dr_store_pass_req_t){.shard = shard, .epoch = s->epoch, .data = p};
        if (n == DISPATCH_GROUP) {
            send_group(d, reqs, n);
            n = 0;
        }
    }
    send_group(d, reqs, n);
}

void dispatch_init(dispatcher_t *d)
{
    d->pending = dr_calloc(d->nshards ? d->nshards : 1, sizeof(*d->pending));
    d->flushing = dr_calloc(d->nshards ? d->nshards : 1, sizeof(*d->flushing));
    uv_check_init(d->node.loop.uv, &d->flush);
    d->flush.data = d;
    uv_check_start(&d->flush, on_flush);
    uv_idle_init(d->node.loop.uv, &d->kick);
    d->kick.data = d;
}

void dispatch_close(dispatcher_t *d)
{
    uv_check_stop(&d->flush);
    uv_idle_stop(&d->kick);
    uv_close((uv_handle_t *)&d->flush, NULL);
    uv_close((uv_handle_t *)&d->kick, NULL);
}

void dispatch_wake(dispatcher_t *d, uint32_t shard)
{
    if (shard >= d->nshards || d->shards[shard].epoch == 0)
        return;
    d->shards[shard].due_at = dr_mono_ms();
    dispatch_shard(d, shard);
}

/* ---- reconciliation, reclaim, trim ------------------------------------------------------------------ */

typedef struct {
    dispatcher_t *d;
    uint32_t *shards;
    size_t n;
} heads_t;

static void on_heads(void *data, int err, const char *errstr, const int64_t *due, size_t n)
{
    heads_t *h = data;
    dispatcher_t *d = h->d;
    d->heads_running--;
    if (err != 0) {
        dr_log(DR_LOG_VERBOSE, "event=reconcile_failed error=\"%s\"", errstr);
    } else {
        int64_t now = dr_mono_ms();
        for (size_t i = 0; i < n && i < h->n; i++) {
            shard_t *s = &d->shards[h->shards[i]];
            if (s->epoch == 0 || due[i] < 0)
                continue;
            if (s->due_at < 0 || now + due[i] < s->due_at)
                s->due_at = now + due[i];
        }
    }
    free(h->shards);
    free(h);
}

static void reconcile(dispatcher_t *d)
{
    heads_t *h = NULL;
    for (uint32_t sh = 0; sh < d->nshards; sh++) {
        if (d->shards[sh].epoch == 0)
            continue;
        if (h == NULL) {
            h = dr_calloc(1, sizeof(*h));
            h->d = d;
            h->shards = dr_calloc(HEADS_CHUNK, sizeof(uint32_t));
        }
        h->shards[h->n++] = sh;
        if (h->n == HEADS_CHUNK || sh + 1 == d->nshards) {
            if (dr_store_heads(d->node.redis, &d->store, h->shards, h->n, on_heads, h) == 0) {
                d->heads_running++;
            } else {
                free(h->shards);
                free(h);
            }
            h = NULL;
        }
    }
    if (h != NULL) {
        if (dr_store_heads(d->node.redis, &d->store, h->shards, h->n, on_heads, h) == 0) {
            d->heads_running++;
        } else {
            free(h->shards);
            free(h);
        }
    }
}

static void on_reclaimed(void *data, int err, const char *errstr, const dr_note_t *notes, size_t n, int64_t lost)
{
    dispatcher_t *d = data;
    if (err != 0) {
        dr_log(DR_LOG_VERBOSE, "event=reclaim_failed error=\"%s\"", errstr);
        return;
    }
    if (lost > 0)
        dr_log(DR_LOG_WARNING, "event=notifications_lost count=%lld reason=\"trimmed before anyone published them\"",
               (long long)lost);
    if (n > 0)
        dr_log(DR_LOG_VERBOSE, "event=notifications_reclaimed count=%zu", n);
    dr_notes_publish(d->notes, notes, n, 0);
}

static void reclaim_and_trim(dispatcher_t *d, int64_t now)
{
    int reclaim = now >= d->next_reclaim && dr_mqttc_connected(d->mqtt);
    int trim = now >= d->next_trim;
    if (reclaim)
        d->next_reclaim = now + RECLAIM_MS;
    if (trim)
        d->next_trim = now + TRIM_MS;
    if (!reclaim && !trim)
        return;
    for (uint32_t sh = 0; sh < d->nshards; sh++) {
        if (d->shards[sh].epoch == 0)
            continue;
        if (reclaim)
            dr_store_reclaim(d->node.redis, &d->store, sh, RECLAIM_IDLE_MS, RECLAIM_COUNT, on_reclaimed, d);
        if (trim)
            dr_store_trim_log(d->node.redis, &d->store, sh, LOG_KEEP_MS, NULL, NULL);
    }
}

void dispatch_cron(dispatcher_t *d)
{
    if (d->owned == 0 || !dr_redis_ready(d->node.redis) || !dr_mqttc_connected(d->mqtt))
        return;
    int64_t now = dr_mono_ms();
    for (uint32_t sh = 0; sh < d->nshards; sh++) {
        shard_t *s = &d->shards[sh];
        if (s->epoch != 0 && s->due_at >= 0 && s->due_at <= now && !s->dispatching)
            dispatch_shard(d, sh);
    }
    if (now >= d->next_reconcile && d->heads_running == 0) {
        d->next_reconcile = now + RECONCILE_MS;
        reconcile(d);
    }
    reclaim_and_trim(d, now);
}
