/* Shard leases: membership heartbeat, renewal, hand-over and take-over (the library's lease function). */
#define DR_MODULE "dispatcher/lease"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dispatcher.h"

typedef struct {
    dispatcher_t *d;
    int64_t sent_at;      /* monotonic ms when the call left: the leases run from no earlier than this */
} lease_call_t;

static void on_lease(void *data, int err, const char *errstr, const dr_store_lease_t *held, size_t n)
{
    lease_call_t *lc = data;
    dispatcher_t *d = lc->d;
    d->lease_running = 0;
    if (err != 0) {
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        dr_log(DR_LOG_WARNING, "event=lease_failed error=\"%s\"", errstr);
        free(lc);
        return;
    }
    /* Renewed leases last ttl from when Redis ran the call, which was after we sent it; keep a margin
     * for clock rates and scheduling so a send is never published after the lease may be gone. */
    d->lease_valid_until = lc->sent_at + d->node.cfg.lease_ttl_ms * 3 / 4;
    free(lc);
    /* Everything not in the reply is no longer ours. */
    char *mine = dr_calloc(d->nshards, 1);
    uint32_t owned = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t sh = held[i].shard;
        if (sh >= d->nshards)
            continue;
        mine[sh] = 1;
        owned++;
        if (d->shards[sh].epoch != held[i].epoch) {
            dr_log(DR_LOG_VERBOSE, "event=shard_acquired shard=%u epoch=%lld", sh, (long long)held[i].epoch);
            d->shards[sh].epoch = held[i].epoch;
            dispatch_wake(d, sh); /* what the predecessor left is found by the first pass */
        }
    }
    for (uint32_t sh = 0; sh < d->nshards; sh++) {
        if (!mine[sh] && d->shards[sh].epoch != 0) {
            dr_log(DR_LOG_VERBOSE, "event=shard_released shard=%u", sh);
            d->shards[sh].epoch = 0;
        }
    }
    free(mine);
    if (owned != d->owned)
        dr_log(DR_LOG_NOTICE, "event=shards_owned count=%u of=%u", owned, d->nshards);
    d->owned = owned;
}

static void gave_up(dispatcher_t *d)
{
    dr_log(DR_LOG_WARNING, "event=shards_given_up reason=\"no broker connection\" effect=\"other dispatchers take them\"");
    d->owned = 0;
}

static void on_layout(void *data, int err, const char *errstr, int64_t result)
{
    (void)result;
    dispatcher_t *d = data;
    d->layout_running = 0;
    if (err == DR_EREDIS) {
        /* Another layout or shard count: every pass would go to the wrong keys. */
        dr_log(DR_LOG_WARNING, "event=layout_mismatch error=\"%s\" action=exit", errstr);
        fprintf(stderr, "drover-dispatcher: %s\n", errstr);
        _exit(1);
    }
    if (err == 0)
        d->layout_ok = 1;
}

void lease_cron(dispatcher_t *d)
{
    int64_t now = dr_mono_ms();
    if (!d->layout_ok) {
        if (!d->layout_running && dr_redis_ready(d->node.redis) &&
            dr_store_check_layout(d->node.redis, &d->store, on_layout, d) == 0)
            d->layout_running = 1;
        return;
    }
    /* A node that reaches Redis but not the broker cannot deliver anything: it gives its shards up
     * within BROKER_GRACE_MS and takes none until the broker is back, so a dispatcher that can
     * deliver serves them meanwhile. */
    if (!dr_mqttc_connected(d->mqtt)) {
        if (d->broker_down_since == 0)
            d->broker_down_since = now;
        if (now - d->broker_down_since >= BROKER_GRACE_MS && d->owned > 0 && !d->lease_running &&
            dr_redis_ready(d->node.redis))
            lease_release_all(d, gave_up);
        return;
    }
    d->broker_down_since = 0;
    if (d->lease_running || now < d->next_lease || !dr_redis_ready(d->node.redis))
        return;
    d->next_lease = now + d->node.cfg.lease_renew_ms;
    lease_call_t *lc = dr_malloc(sizeof(*lc));
    lc->d = d;
    lc->sent_at = now;
    if (dr_store_lease(d->node.redis, &d->store, d->node.cfg.lease_ttl_ms, 0, on_lease, lc) == 0)
        d->lease_running = 1;
    else
        free(lc);
}

typedef struct {
    dispatcher_t *d;
    void (*done)(dispatcher_t *d);
} release_t;

static void on_released(void *data, int err, const char *errstr, const dr_store_lease_t *held, size_t n)
{
    (void)held;
    (void)n;
    release_t *rel = data;
    dispatcher_t *d = rel->d;
    d->lease_running = 0;
    if (err != 0)
        dr_log(DR_LOG_WARNING, "event=lease_release_failed error=\"%s\" effect=\"successors wait for expiry\"",
               errstr);
    else
        dr_log(DR_LOG_NOTICE, "event=shards_released count=%u", d->owned);
    for (uint32_t sh = 0; sh < d->nshards; sh++)
        d->shards[sh].epoch = 0;
    d->lease_valid_until = 0;
    rel->done(d);
    free(rel);
}

void lease_release_all(dispatcher_t *d, void (*done)(dispatcher_t *d))
{
    release_t *rel = dr_malloc(sizeof(*rel));
    rel->d = d;
    rel->done = done;
    d->lease_valid_until = 0; /* nothing more is published */
    if (!dr_redis_ready(d->node.redis) ||
        dr_store_lease(d->node.redis, &d->store, d->node.cfg.lease_ttl_ms, 1, on_released, rel) != 0) {
        free(rel);
        done(d);
        return;
    }
    d->lease_running = 1;
}
