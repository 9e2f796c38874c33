/* Dispatch: finds shards with due work and runs the dispatch script for the ones we own, then
 * publishes what the script decided to send.
 *
 * DESIGN
 * The schedule lives in Redis (<prefix>due:<shard> per device, <prefix>dueidx per shard), so a pass
 * costs nothing for devices without work and any owner can pick up where another left off. The scan
 * of dueidx every dispatch.tick_ms is the reconciliation that makes lost NATS wake-ups harmless; the
 * wake-ups only make the next pass start at once. Passes of one shard never overlap.
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

typedef struct {
    dispatcher_t *d;
    uint32_t shard;
    int64_t epoch;
} pass_t;

static void on_published(void *data, int err)
{
    (void)data;
    if (err != 0)
        dr_metrics_inc(DR_M_PUBLISH_FAILED); /* the message is re-sent at its retry time */
}

static void on_refused(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    (void)data;
    if (err != 0)
        dr_log(DR_LOG_WARNING, "event=refused_send_not_failed error=\"%s\" action=retry_at_next_send",
               reply && reply->str ? reply->str : dr_strerror(err));
}

/* Ends a message whose send no broker would accept as FAILED (history event "refused"). */
static void refuse_send(dispatcher_t *d, const char *id)
{
    dr_metrics_inc(DR_M_SEND_REFUSED);
    dr_log(DR_LOG_WARNING, "event=send_refused id=%s reason=\"device id is not a valid topic level\" action=failed", id);
    const dr_settings_t *cfg = &d->node.cfg;
    char now_s[24], ret_s[24];
    dispatcher_base_args(d, now_s, ret_s);
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, id, "", "FAILED", "refused"};
    if (dr_redis_eval(d->node.redis, d->s_cancel, on_refused, NULL, 7, argv, NULL) != 0)
        dr_log(DR_LOG_WARNING, "event=refused_send_not_failed error=\"redis unavailable\" action=retry_at_next_send");
}

static void send_one(dispatcher_t *d, const redisReply *const *f)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "consumer/request/%s", f[0]->str);
    int g = dr_guarantee_parse(f[2]->str, f[2]->len);
    int64_t id = strtoll(f[1]->str, NULL, 10);
    long long att = f[5]->type == REDIS_REPLY_INTEGER ? f[5]->integer : strtoll(f[5]->str, NULL, 10);
    char *body = dr_codec_encode_consumer(id, g, f[3]->str, dr_now_ms(), f[4]->len ? f[4]->str : NULL);
    int rc = dr_mqtt_publish(d->mqtt, topic, body, strlen(body), (int)d->node.cfg.mqtt_qos, on_published, NULL);
    if (rc == DR_EINVAL) {
        /* The device id is no valid topic level (stored before input was checked this strictly): no
         * broker would take the send, and trying would cost us the connection. The message fails. */
        free(body);
        refuse_send(d, f[1]->str);
        return;
    }
    if (rc != 0)
        dr_metrics_inc(DR_M_PUBLISH_FAILED);
    dr_metrics_inc(att > 1 ? DR_M_RESENT : DR_M_SENT);
    dr_log(DR_LOG_VERBOSE, "event=%s id=%lld device=\"%s\" attempt=%lld", att > 1 ? "resent" : "sent", (long long)id,
           f[0]->str, att);
    free(body);
}

static void on_pass(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    pass_t *p = data;
    dispatcher_t *d = p->d;
    shard_t *s = &d->shards[p->shard];
    s->dispatching = 0;
    d->active--;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        dr_log(DR_LOG_WARNING, "event=dispatch_failed shard=%u error=\"%s\"", p->shard,
               reply && reply->str ? reply->str : dr_strerror(err));
        free(p);
        return;
    }
    if (strcmp(reply->element[0]->str, "FENCED") == 0) {
        dr_metrics_inc(DR_M_FENCED);
        dr_log(DR_LOG_NOTICE, "event=fenced shard=%u epoch=%lld action=dropping_shard", p->shard, (long long)p->epoch);
        if (s->epoch == p->epoch)
            s->epoch = 0;
        free(p);
        return;
    }
    if (reply->elements >= 5) {
        dr_metrics_add(DR_M_EXPIRED, reply->element[1]->integer);
        dr_metrics_add(DR_M_FAILED, reply->element[2]->integer);
        const redisReply *out = reply->element[4];
        for (size_t i = 0; out->type == REDIS_REPLY_ARRAY && i + 5 < out->elements; i += 6)
            send_one(d, (const redisReply *const *)&out->element[i]);
        if (reply->element[3]->integer)
            s->again = 1;
        if (reply->element[1]->integer || reply->element[2]->integer || (out->elements > 0))
            outbox_drain(d, p->shard);
    }
    uint32_t shard = p->shard;
    free(p);
    if (s->again && s->epoch != 0 && !d->node.stopping)
        dispatch_shard(d, shard);
}

void dispatch_shard(dispatcher_t *d, uint32_t shard)
{
    shard_t *s = &d->shards[shard];
    if (s->epoch == 0 || d->node.stopping || !dr_mqtt_connected(d->mqtt))
        return;
    if (s->dispatching) {
        s->again = 1;
        return;
    }
    s->again = 0;
    const dr_settings_t *cfg = &d->node.cfg;
    char now_s[24], ret_s[24], sh_s[16], ep_s[24], batch_s[16], win_s[16], iv_s[24], ack_s[24], rmax_s[24],
        bo_s[32], jit_s[16], seed_s[24];
    dispatcher_base_args(d, now_s, ret_s);
    snprintf(sh_s, sizeof(sh_s), "%u", shard);
    snprintf(ep_s, sizeof(ep_s), "%lld", (long long)s->epoch);
    snprintf(batch_s, sizeof(batch_s), "%lld", (long long)cfg->batch);
    snprintf(win_s, sizeof(win_s), "%lld", (long long)cfg->window);
    snprintf(iv_s, sizeof(iv_s), "%lld", (long long)cfg->interval_ms);
    snprintf(ack_s, sizeof(ack_s), "%lld", (long long)cfg->ack_timeout_ms);
    snprintf(rmax_s, sizeof(rmax_s), "%lld", (long long)cfg->retry_max_ms);
    snprintf(bo_s, sizeof(bo_s), "%.6f", cfg->backoff);
    snprintf(jit_s, sizeof(jit_s), "%lld", (long long)cfg->jitter_pct);
    d->seed = d->seed * 6364136223846793005ULL + 1442695040888963407ULL;
    snprintf(seed_s, sizeof(seed_s), "%llu", (unsigned long long)(d->seed >> 33));
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, sh_s, ep_s, cfg->node_id, batch_s, win_s,
                          iv_s, ack_s, rmax_s, bo_s, jit_s, seed_s};
    pass_t *p = dr_malloc(sizeof(*p));
    p->d = d;
    p->shard = shard;
    p->epoch = s->epoch;
    if (dr_redis_eval(d->node.redis, d->s_dispatch, on_pass, p, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL) != 0) {
        free(p);
        return;
    }
    s->dispatching = 1;
    d->active++;
}

static void on_due(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    dispatcher_t *d = data;
    d->scan_running = 0;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        uint32_t sh = (uint32_t)strtoul(reply->element[i]->str, NULL, 10);
        if (sh < d->nshards)
            dispatch_shard(d, sh);
    }
}

void dispatch_cron(dispatcher_t *d)
{
    if (d->scan_running || d->owned == 0 || !dr_redis_ready(d->node.redis) || !dr_mqtt_connected(d->mqtt))
        return;
    char key[128], now_s[24];
    snprintf(key, sizeof(key), "%sdueidx", d->node.cfg.redis_prefix);
    snprintf(now_s, sizeof(now_s), "%lld", (long long)dr_now_ms());
    const char *argv[] = {"ZRANGEBYSCORE", key, "-inf", now_s};
    if (dr_redis_cmd(d->node.redis, on_due, d, 4, argv, NULL) == 0)
        d->scan_running = 1;
}
