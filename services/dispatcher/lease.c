/* Shard leases: membership heartbeat, renewal, hand-over and take-over (common/lua/lease.lua). */
#define DR_MODULE "dispatcher/lease"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/scripts.h"
#include "dispatcher.h"

static void on_lease(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    dispatcher_t *d = data;
    d->lease_running = 0;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        dr_log(DR_LOG_WARNING, "event=lease_failed error=\"%s\"", reply ? reply->str : dr_strerror(err));
        return;
    }
    /* Everything not in the reply is no longer ours. */
    char *held = dr_calloc(d->nshards, 1);
    uint32_t owned = 0;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        uint32_t sh = (uint32_t)strtoul(reply->element[i]->str, NULL, 10);
        int64_t ep = strtoll(reply->element[i + 1]->str, NULL, 10);
        if (sh >= d->nshards)
            continue;
        held[sh] = 1;
        owned++;
        if (d->shards[sh].epoch != ep) {
            dr_log(DR_LOG_VERBOSE, "event=shard_acquired shard=%u epoch=%lld", sh, (long long)ep);
            d->shards[sh].epoch = ep;
            dispatch_shard(d, sh);
            outbox_drain(d, sh);
        }
    }
    for (uint32_t sh = 0; sh < d->nshards; sh++) {
        if (!held[sh] && d->shards[sh].epoch != 0) {
            dr_log(DR_LOG_VERBOSE, "event=shard_released shard=%u", sh);
            d->shards[sh].epoch = 0;
        }
    }
    free(held);
    if (owned != d->owned)
        dr_log(DR_LOG_NOTICE, "event=shards_owned count=%u of=%u", owned, d->nshards);
    d->owned = owned;
}

static void run_lease(dispatcher_t *d, int release, dr_redis_cb *cb, void *data)
{
    const dr_settings_t *cfg = &d->node.cfg;
    char now_s[24], ret_s[24], ttl_s[24], n_s[24];
    dispatcher_base_args(d, now_s, ret_s);
    snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)cfg->lease_ttl_ms);
    snprintf(n_s, sizeof(n_s), "%u", d->nshards);
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, cfg->node_id, ttl_s, n_s, release ? "1" : "0"};
    if (dr_redis_eval(d->node.redis, d->s_lease, cb, data, 7, argv, NULL) == 0)
        d->lease_running = 1;
}

void lease_cron(dispatcher_t *d)
{
    int64_t now = dr_mono_ms();
    if (d->lease_running || now < d->next_lease || !dr_redis_ready(d->node.redis))
        return;
    d->next_lease = now + d->node.cfg.lease_renew_ms;
    run_lease(d, 0, on_lease, d);
}

typedef struct {
    dispatcher_t *d;
    void (*done)(dispatcher_t *d);
} release_t;

static void on_released(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    (void)reply;
    release_t *rel = data;
    rel->d->lease_running = 0;
    if (err != 0)
        dr_log(DR_LOG_WARNING, "event=lease_release_failed error=\"%s\" effect=\"successors wait for expiry\"",
               dr_strerror(err));
    else
        dr_log(DR_LOG_NOTICE, "event=shards_released count=%u", rel->d->owned);
    for (uint32_t sh = 0; sh < rel->d->nshards; sh++)
        rel->d->shards[sh].epoch = 0;
    rel->done(rel->d);
    free(rel);
}

void lease_release_all(dispatcher_t *d, void (*done)(dispatcher_t *d))
{
    release_t *rel = dr_malloc(sizeof(*rel));
    rel->d = d;
    rel->done = done;
    if (!dr_redis_ready(d->node.redis)) {
        free(rel);
        done(d);
        return;
    }
    d->lease_running = 0;
    run_lease(d, 1, on_released, rel);
    if (!d->lease_running) {
        free(rel);
        done(d);
    }
}
