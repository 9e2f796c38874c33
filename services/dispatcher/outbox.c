/* Outbox: publishes the status changes queued by the scripts (<prefix>nt:<shard>) for the shards we
 * own: every change on NATS (<subject_prefix>status), and on producer/response/{producerDeviseId}
 * when the producer gave a birth certificate. Entries are removed only after the broker acknowledged
 * every MQTT publish of their batch, so a crash repeats notifications but never loses one.
 */
#define DR_MODULE "dispatcher/outbox"

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

/* Outbox publishes the dispatcher may have waiting for the broker, over all shards. Without a bound,
 * hundreds of shards each start a batch, paho refuses publishes beyond its in-flight limit, and whole
 * batches get published again and again. */
#define MAX_PENDING 2000
#define BATCH "100"

typedef struct {
    dispatcher_t *d;
    uint32_t shard;
    int pending;   /* MQTT publishes not yet confirmed */
    int failed;
    int nids;
    char **ids;
    int *ok;       /* per entry: 1 published (or nothing to publish), 0 failed, -1 waiting */
    int cap;       /* entries allocated in ids */
} batch_t;

static void batch_free(batch_t *b)
{
    for (int i = 0; i < b->cap; i++)
        free(b->ids[i]);
    free(b->ids);
    free(b->ok);
    free(b);
}

static void on_removed(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    batch_t *b = data;
    dispatcher_t *d = b->d;
    d->shards[b->shard].draining = 0;
    d->active--;
    int more = err == 0 && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
    uint32_t shard = b->shard;
    batch_free(b);
    if (more)
        outbox_drain(d, shard);
}

/* All publishes of the batch are settled: remove the entries, or keep them for the next attempt. */
static void batch_settled(batch_t *b)
{
    dispatcher_t *d = b->d;
    /* Remove the entries published before the first failure: the rest goes out again, in order. */
    int done = 0;
    while (done < b->nids && b->ok[done] == 1)
        done++;
    b->nids = done; /* ids beyond stay allocated in b->ids until batch_free (it frees by capacity) */
    if (done == 0 || !dr_redis_ready(d->node.redis)) {
        d->shards[b->shard].draining = 0;
        d->active--;
        batch_free(b);
        return;
    }
    /* The published entries are the oldest of the outbox, so the last id names them all: one
     * argument, whatever the batch size (a script takes a bounded number of arguments). */
    const dr_settings_t *cfg = &d->node.cfg;
    char now_s[24], ret_s[24], sh_s[16];
    dispatcher_base_args(d, now_s, ret_s);
    snprintf(sh_s, sizeof(sh_s), "%u", b->shard);
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, sh_s, b->ids[b->nids - 1]};
    int rc = dr_redis_eval(d->node.redis, d->s_outbox, on_removed, b, (int)(sizeof(argv) / sizeof(argv[0])), argv,
                           NULL);
    if (rc != 0) {
        dr_log(DR_LOG_WARNING, "event=outbox_trim_not_sent shard=%u error=\"%s\" action=publish_again", b->shard,
               dr_strerror(rc));
        d->shards[b->shard].draining = 0;
        d->active--;
        batch_free(b);
    }
}

typedef struct {
    batch_t *b;
    int i;
} entry_ref_t;

static void on_notified(void *data, int err)
{
    entry_ref_t *ref = data;
    batch_t *b = ref->b;
    b->ok[ref->i] = err == 0;
    free(ref);
    if (err != 0) {
        b->failed = 1;
        dr_metrics_inc(DR_M_PUBLISH_FAILED);
    } else {
        dr_metrics_inc(DR_M_NOTIFIED);
    }
    if (--b->pending == 0)
        batch_settled(b);
}

static const char *field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return "";
}

static void publish_entry(dispatcher_t *d, batch_t *b, int idx, const redisReply *fields)
{
    const char *id = field(fields, "id"), *dev = field(fields, "dev"), *st = field(fields, "st");
    const char *pd = field(fields, "pd"), *tmp = field(fields, "tmp"), *ext = field(fields, "ext");
    int status = dr_status_parse(st, strlen(st));

    /* Every change goes to NATS, for other nodes and tools (at most once). */
    char ev[768];
    char *qdev = dr_codec_json_string(dev);
    int n = snprintf(ev, sizeof(ev), "{\"id\":%s,\"device\":%s,\"status\":\"%s\",\"ts\":%s}", id, qdev, st,
                     field(fields, "ts"));
    free(qdev);
    if (n > 0 && (size_t)n < sizeof(ev) && dr_bus_publish(d->node.bus, d->status_subject, ev, (size_t)n) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);

    /* Producers that asked for notifications; Drover-only outcomes only to producers that used
     * Drover-only fields, so a Duster-era producer never meets an unknown status. */
    if (pd[0] == '\0' || status < 0)
        return;
    if (strcmp(ext, "1") != 0) {
        status = dr_status_for_duster(status);
        if (dr_status_is_extended(status))
            return; /* cannot happen: only messages with Drover-only fields expire or fail */
    }
    char topic[256];
    snprintf(topic, sizeof(topic), "producer/response/%s", pd);
    char *body = dr_codec_encode_producer(strtoll(id, NULL, 10), 1, strtoll(tmp, NULL, 10), status);
    entry_ref_t *ref = dr_malloc(sizeof(*ref));
    ref->b = b;
    ref->i = idx;
    b->ok[idx] = -1;
    b->pending++;
    int rc = dr_mqtt_publish(d->mqtt, topic, body, strlen(body), (int)d->node.cfg.mqtt_qos, on_notified, ref);
    if (rc == DR_EINVAL) {
        /* A producer id no broker accepts in a topic (stored before input was checked this strictly):
         * publishing it would cost us the connection, and keeping it would stall the shard. */
        free(ref);
        b->ok[idx] = 1;
        b->pending--;
        dr_metrics_inc(DR_M_NOTIFY_REFUSED);
        dr_log(DR_LOG_WARNING, "event=notification_refused id=%s shard=%u reason=\"producer id is not a valid topic level\" action=skipped",
               id, b->shard);
    } else if (rc != 0) {
        free(ref);
        b->ok[idx] = 0;
        b->pending--;
        b->failed = 1;
        dr_metrics_inc(DR_M_PUBLISH_FAILED);
    }
    free(body);
}

static void on_range(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    batch_t *b = data;
    dispatcher_t *d = b->d;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 || d->shards[b->shard].epoch == 0) {
        d->shards[b->shard].draining = 0;
        d->active--;
        batch_free(b);
        return;
    }
    b->ids = dr_calloc(reply->elements, sizeof(char *));
    b->ok = dr_calloc(reply->elements, sizeof(int));
    b->cap = (int)reply->elements;
    b->pending = 1; /* held until every entry was handed to MQTT */
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2)
            continue;
        int idx = b->nids++;
        b->ids[idx] = dr_strdup(e->element[0]->str);
        b->ok[idx] = 1;
        if (b->failed)
            b->ok[idx] = 0; /* after a failure nothing more: order per message must hold */
        else
            publish_entry(d, b, idx, e->element[1]);
    }
    if (--b->pending == 0)
        batch_settled(b);
}

void outbox_drain(dispatcher_t *d, uint32_t shard)
{
    shard_t *s = &d->shards[shard];
    if (s->epoch == 0 || s->draining || d->node.stopping || !dr_mqtt_connected(d->mqtt) ||
        dr_mqtt_pending(d->mqtt) > MAX_PENDING)
        return; /* the next tick's scan of ntidx comes back to it */
    char key[128];
    snprintf(key, sizeof(key), "%snt:%u", d->node.cfg.redis_prefix, shard);
    const char *argv[] = {"XRANGE", key, "-", "+", "COUNT", BATCH};
    batch_t *b = dr_calloc(1, sizeof(*b));
    b->d = d;
    b->shard = shard;
    if (dr_redis_cmd(d->node.redis, on_range, b, 6, argv, NULL) != 0) {
        free(b);
        return;
    }
    s->draining = 1;
    d->active++;
}

static void on_members(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    dispatcher_t *d = data;
    d->outbox_scan_running = 0;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        uint32_t sh = (uint32_t)strtoul(reply->element[i]->str, NULL, 10);
        if (sh < d->nshards)
            outbox_drain(d, sh);
    }
}

void outbox_cron(dispatcher_t *d)
{
    if (d->outbox_scan_running || d->owned == 0 || !dr_redis_ready(d->node.redis) || !dr_mqtt_connected(d->mqtt))
        return;
    char key[128];
    snprintf(key, sizeof(key), "%sntidx", d->node.cfg.redis_prefix);
    const char *argv[] = {"SMEMBERS", key};
    if (dr_redis_cmd(d->node.redis, on_members, d, 2, argv, NULL) == 0)
        d->outbox_scan_running = 1;
}
