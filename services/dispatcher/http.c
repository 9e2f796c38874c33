/* The dispatcher's operational endpoints: /metrics (Prometheus text), /healthz and /readyz on a small
 * listener of its own (metrics.port, metrics.bind), and the backlog gauges behind /metrics.
 *
 * DESIGN
 * A scrape never waits for Redis: it reports what the process knows now (leases, connections, passes)
 * and the backlog figures of the last backlog round. A round is a series of read-only backlog calls,
 * one per BACKLOG_CHUNK owned shards, each looking at no more than BACKLOG_DEVICES devices per shard,
 * so its cost is bounded whatever the scrape rate. A round looks at every device with work (a few
 * Redis commands each), so with a large backlog it is real work for Redis: its calls go one after
 * another (each blocks Redis only for its own chunk, and the hot path's calls run in between), and
 * the next round starts BACKLOG_MS after the end of this one, or BACKLOG_COST times the round's
 * duration when that is longer, which keeps the gauges below about 1/BACKLOG_COST of Redis's time
 * whatever the backlog. The figures are published once every call of the round has answered; a failed
 * round keeps the previous figures (drover_backlog_age_seconds shows how old they are). A complete
 * round's figures also go into the node's metrics hash as gauges (dr_metrics_gauge_set), for
 * cluster-wide readers.
 */
#define DR_MODULE "dispatcher/http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/prom.h"
#include "dispatcher.h"

#define BACKLOG_MS 5000    /* least time between the end of a round and the start of the next */
#define BACKLOG_COST 20     /* ... and at least this many times the last round's duration */
#define BACKLOG_CHUNK 16    /* shards per call */
#define BACKLOG_DEVICES 200 /* devices per shard a round looks at */

/* ---- backlog rounds ------------------------------------------------------------------------------ */

typedef struct {
    dispatcher_t *d;
    uint32_t *shards; /* the shards held when the round started */
    uint32_t n, next; /* how many; the first not asked for yet */
    int64_t started;  /* monotonic ms */
    dr_store_backlog_t sum;
} round_t;

static void round_next(round_t *rd);

static void round_end(round_t *rd, int ok)
{
    dispatcher_t *d = rd->d;
    int64_t now = dr_mono_ms();
    d->backlog_running = 0;
    int64_t took = now - rd->started;
    int64_t wait = took * BACKLOG_COST > BACKLOG_MS ? took * BACKLOG_COST : BACKLOG_MS;
    d->next_backlog = now + wait;
    if (ok) {
        d->backlog = rd->sum;
        d->backlog_at = now;
        d->backlog_took_ms = took;
        d->backlog_wait_ms = wait;
        /* Also into this node's metrics hash (flushed by the node's cron), where GET /v1/stats on any
         * ingress sums them over the dispatchers whose flush is recent. */
        dr_metrics_gauge_set(DR_GAUGE_QUEUE_DEPTH, rd->sum.queued);
        dr_metrics_gauge_set(DR_GAUGE_IN_FLIGHT, rd->sum.in_flight);
        dr_metrics_gauge_set(DR_GAUGE_SCHEDULED, rd->sum.scheduled);
        dr_metrics_gauge_set(DR_GAUGE_OLDEST_PENDING_MS, rd->sum.oldest_age_ms);
        dr_metrics_gauge_set(DR_GAUGE_SHARDS_HELD, rd->n);
        dr_metrics_gauge_set(DR_GAUGE_BACKLOG_AT_MS, dr_now_ms());
    }
    free(rd->shards);
    free(rd);
}

static void on_backlog(void *data, int err, const char *errstr, const dr_store_backlog_t *res)
{
    round_t *rd = data;
    if (err != 0) {
        dr_log(DR_LOG_VERBOSE, "event=backlog_failed error=\"%s\"", errstr);
        round_end(rd, 0);
        return;
    }
    rd->sum.queued += res->queued;
    rd->sum.in_flight += res->in_flight;
    rd->sum.scheduled += res->scheduled;
    rd->sum.skipped += res->skipped;
    if (res->oldest_age_ms > rd->sum.oldest_age_ms)
        rd->sum.oldest_age_ms = res->oldest_age_ms;
    round_next(rd);
}

/* Asks for the next chunk of the round, or ends it when none is left. */
static void round_next(round_t *rd)
{
    if (rd->next >= rd->n) {
        round_end(rd, 1);
        return;
    }
    uint32_t n = rd->n - rd->next < BACKLOG_CHUNK ? rd->n - rd->next : BACKLOG_CHUNK;
    const uint32_t *chunk = rd->shards + rd->next;
    rd->next += n;
    if (dr_store_backlog(rd->d->node.redis, &rd->d->store, chunk, n, BACKLOG_DEVICES, on_backlog, rd) != 0)
        round_end(rd, 0);
}

static void backlog_round(dispatcher_t *d)
{
    round_t *rd = dr_calloc(1, sizeof(*rd));
    rd->d = d;
    rd->sum.oldest_age_ms = -1;
    rd->started = dr_mono_ms();
    rd->shards = dr_calloc(d->nshards ? d->nshards : 1, sizeof(*rd->shards));
    for (uint32_t sh = 0; sh < d->nshards; sh++)
        if (d->shards[sh].epoch != 0)
            rd->shards[rd->n++] = sh;
    d->backlog_running = 1;
    round_next(rd); /* a callback never runs inside dr_store_backlog */
}

void metrics_cron(dispatcher_t *d)
{
    int64_t now = dr_mono_ms();
    if (d->backlog_running || now < d->next_backlog || !dr_redis_ready(d->node.redis))
        return;
    backlog_round(d);
}

/* ---- endpoints ----------------------------------------------------------------------------------- */

static void gauge(dr_prom_t *p, const char *name, const char *help, double v)
{
    dr_prom_family(p, name, "gauge", help);
    dr_prom_sample(p, name, NULL, v);
}

static void expose(dispatcher_t *d, dr_prom_t *p)
{
    dr_metrics_expose(p, DR_BUILD_VERSION);
    gauge(p, "drover_shards", "Shard count of the cluster (cluster.shards).", d->nshards);
    gauge(p, "drover_shard_leases_held", "Shards whose lease this dispatcher holds.", d->owned);
    gauge(p, "drover_dispatch_passes_running", "Dispatch passes waiting for Redis.", d->active);
    gauge(p, "drover_mqtt_connected", "1 while the broker connection is ready.", dr_mqttc_connected(d->mqtt));
    gauge(p, "drover_mqtt_publishes_pending", "QoS 1 publishes waiting for their PUBACK.",
          (double)dr_mqttc_pending(d->mqtt));
    gauge(p, "drover_redis_connected", "1 while the Redis connection is ready.",
          dr_redis_ready(d->node.redis));
    gauge(p, "drover_nats_connected", "1 while the NATS connection is up.", dr_bus_connected(d->node.bus));
    gauge(p, "drover_notifications_in_flight", "Status notifications being published.",
          (double)dr_notes_in_flight(d->notes));
    const dr_store_backlog_t *b = &d->backlog;
    gauge(p, "drover_queue_depth",
          "Messages queued for delivery in the shards this node holds (in flight included).",
          (double)b->queued);
    gauge(p, "drover_in_flight", "Messages sent and not yet acknowledged, in the shards this node holds.",
          (double)b->in_flight);
    gauge(p, "drover_scheduled", "Messages waiting for their not-before time, in the shards this node holds.",
          (double)b->scheduled);
    gauge(p, "drover_oldest_pending_seconds",
          "Age of the oldest queued message in the shards this node holds (0: none).",
          b->oldest_age_ms > 0 ? (double)b->oldest_age_ms / 1000.0 : 0);
    gauge(p, "drover_backlog_devices_skipped",
          "Schedule entries (devices, deadlines) the last backlog round did not look at (sums too low).", (double)b->skipped);
    gauge(p, "drover_backlog_age_seconds", "Time since the backlog gauges were last computed (-1: never).",
          d->backlog_at > 0 ? (double)(dr_mono_ms() - d->backlog_at) / 1000.0 : -1);
    gauge(p, "drover_backlog_round_seconds", "How long the last complete backlog round took.",
          (double)d->backlog_took_ms / 1000.0);
    gauge(p, "drover_backlog_interval_seconds",
          "Wait after the last complete backlog round before the next (5 s, longer when rounds are slow).",
          (double)d->backlog_wait_ms / 1000.0);
}

static int ready(dispatcher_t *d)
{
    return dr_redis_ready(d->node.redis) && dr_mqttc_connected(d->mqtt) && dr_bus_connected(d->node.bus) &&
           d->layout_ok;
}

static void on_request(void *data, const char *method, const char *path, dr_httpmini_res_t *res)
{
    (void)method;
    dispatcher_t *d = data;
    if (strcmp(path, "/metrics") == 0) {
        dr_prom_t p;
        dr_prom_init(&p);
        expose(d, &p);
        res->status = 200;
        res->content_type = DR_PROM_CONTENT_TYPE;
        res->body = p.buf; /* taken over by the responder */
        res->len = p.len;
        return;
    }
    char body[160];
    int n;
    if (strcmp(path, "/healthz") == 0) {
        n = snprintf(body, sizeof(body), "{\"status\":\"ok\"}");
        res->status = 200;
    } else if (strcmp(path, "/readyz") == 0) {
        int ok = ready(d);
        n = snprintf(body, sizeof(body),
                     "{\"ready\":%s,\"redis\":%s,\"nats\":%s,\"mqtt\":%s,\"shards_held\":%u}",
                     ok ? "true" : "false", dr_redis_ready(d->node.redis) ? "true" : "false",
                     dr_bus_connected(d->node.bus) ? "true" : "false",
                     dr_mqttc_connected(d->mqtt) ? "true" : "false", d->owned);
        res->status = ok ? 200 : 503;
    } else {
        n = snprintf(body, sizeof(body), "{\"error\":\"NOT_FOUND\",\"message\":\"no such endpoint\"}");
        res->status = 404;
    }
    res->content_type = "application/json";
    res->body = dr_strndup(body, (size_t)n);
    res->len = (size_t)n;
}

int metrics_start(dispatcher_t *d, char *err)
{
    const dr_settings_t *cfg = &d->node.cfg;
    if (cfg->metrics_port == 0)
        return 0;
    int rc = dr_httpmini_open(d->node.loop.uv, cfg->metrics_bind, (int)cfg->metrics_port, on_request, d,
                              &d->http, err);
    if (rc == DR_EINVAL) {
        snprintf(err, DR_ERR_LEN, "option 'metrics.bind': '%s' is not an IPv4 or IPv6 address",
                 cfg->metrics_bind);
        return DR_ECONFIG;
    }
    if (rc != 0) {
        /* Delivery does not depend on the endpoint: a taken port is reported, not fatal. */
        dr_log(DR_LOG_WARNING, "event=metrics_listen_failed error=\"%s\" effect=\"no /metrics on this node\"",
               err);
        d->http = NULL;
        return 0;
    }
    dr_log(DR_LOG_NOTICE, "event=metrics_listening bind=%s port=%d", cfg->metrics_bind,
           dr_httpmini_port(d->http));
    return 0;
}

void metrics_stop(dispatcher_t *d)
{
    dr_httpmini_close(d->http);
    d->http = NULL;
}
