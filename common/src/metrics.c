/* Process counters and histograms (see dr/metrics.h). */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dr/loop.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "dr/store.h"

#define DR_METRIC_NAME(id, name) name,
static const char *names[DR_M_COUNT] = {DR_METRICS(DR_METRIC_NAME)};
static atomic_llong values[DR_M_COUNT];
static atomic_llong statuses[DR_ST_COUNT];
#define DR_GAUGE_NAME(id, name) name,
static const char *gauge_names[DR_GAUGE_COUNT] = {DR_GAUGES(DR_GAUGE_NAME)};
static atomic_llong gauges[DR_GAUGE_COUNT];
static atomic_int gauges_set;

/* ---- histograms ---------------------------------------------------------------------------------- */

/* Latencies from half a millisecond (a Redis call on the same host) to 30 s (a redelivery cycle). */
static const double seconds_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,   0.5,   1,      2.5,   5,    10,    30};
/* Batch sizes are at most the ingress's BATCH_MAX (a few hundred items). */
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

/* Static storage starts zeroed, which is a valid state for the atomics (C11 7.17.2.1), so the
 * histograms need no init call and may be observed before main wires anything. */
static dr_hist_t hists[DR_H_COUNT] = {
    [DR_H_REDIS_CALL] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
    [DR_H_INGEST_BATCH] = {.bounds = batch_bounds, .nbounds = NB(batch_bounds)},
    [DR_H_RECEIPT] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
    [DR_H_REST_ACCEPT] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
    [DR_H_SEND_CONFIRM] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
    [DR_H_ACCEPT_SEND] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
    [DR_H_ACCEPT_DELIVERED] = {.bounds = seconds_bounds, .nbounds = NB(seconds_bounds)},
};

static const struct {
    const char *name, *help;
} hist_meta[DR_H_COUNT] = {
    [DR_H_REDIS_CALL] = {"drover_redis_call_seconds", "Time from sending a Redis command to its reply."},
    [DR_H_INGEST_BATCH] = {"drover_ingest_batch_size", "Items (producer messages or acks) per Redis call."},
    [DR_H_RECEIPT] =
        {"drover_receipt_seconds",
         "Time from an MQTT producer message's arrival to the release of its receipt (durable)."},
    [DR_H_REST_ACCEPT] = {"drover_rest_accept_seconds",
                          "Time from queueing a REST message to its stored answer."},
    [DR_H_SEND_CONFIRM] = {"drover_send_confirm_seconds",
                           "Time from publishing a send to the broker's PUBACK."},
    [DR_H_ACCEPT_SEND] = {"drover_accept_to_send_seconds",
                          "Time from a message's acceptance to its first send (Redis's clock; pacing and "
                          "offline devices included)."},
    [DR_H_ACCEPT_DELIVERED] = {"drover_accept_to_delivered_seconds",
                               "Time from a message's acceptance to its first stored ack (DELIVERED or a completion; "
                               "Redis's clock)."},
};

void dr_metrics_observe(int id, double v)
{
    if (id >= 0 && id < DR_H_COUNT)
        dr_hist_observe(&hists[id], v);
}

/* ---- counters ------------------------------------------------------------------------------------ */

void dr_metrics_add(int id, int64_t n)
{
    if (id >= 0 && id < DR_M_COUNT)
        atomic_fetch_add(&values[id], n);
}

int64_t dr_metrics_get(int id)
{
    return (id >= 0 && id < DR_M_COUNT) ? atomic_load(&values[id]) : 0;
}

void dr_metrics_gauge_set(int id, int64_t v)
{
    if (id >= 0 && id < DR_GAUGE_COUNT) {
        atomic_store(&gauges[id], v);
        atomic_store(&gauges_set, 1);
    }
}

void dr_metrics_status(int st, int64_t n)
{
    if (st >= 0 && st < DR_ST_COUNT)
        atomic_fetch_add(&statuses[st], n);
}

/* ---- Prometheus exposition ----------------------------------------------------------------------- */

static double get(int id)
{
    return (double)dr_metrics_get(id);
}

/* A family split by transport: total in id, REST share in rest_id. */
static void by_transport(dr_prom_t *p, const char *name, const char *help, int id, int rest_id)
{
    double rest = get(rest_id), total = get(id);
    dr_prom_family(p, name, "counter", help);
    dr_prom_sample(p, name, (const char *[]){"transport", "mqtt", NULL}, total > rest ? total - rest : 0);
    dr_prom_sample(p, name, (const char *[]){"transport", "rest", NULL}, rest);
}

static void counter(dr_prom_t *p, const char *name, const char *help, int id)
{
    dr_prom_family(p, name, "counter", help);
    dr_prom_sample(p, name, NULL, get(id));
}

void dr_metrics_expose(dr_prom_t *p, const char *version)
{
    by_transport(p, "drover_commands_accepted_total", "Producer commands stored (new messages).",
                 DR_M_PRODUCER_ACCEPTED, DR_M_PRODUCER_ACCEPTED_REST);
    by_transport(p, "drover_commands_duplicate_total",
                 "Idempotent retries answered with the original message.", DR_M_PRODUCER_DUPLICATE,
                 DR_M_PRODUCER_DUPLICATE_REST);
    by_transport(p, "drover_commands_rejected_total",
                 "Producer commands refused as invalid (nothing stored).", DR_M_PRODUCER_REJECTED,
                 DR_M_PRODUCER_REJECTED_REST);
    counter(p, "drover_commands_conflict_total", "Idempotency keys reused for another command.",
            DR_M_PRODUCER_CONFLICT);
    counter(p, "drover_sends_total", "First sends of messages to their devices.", DR_M_SENT);
    counter(p, "drover_resends_total", "Re-sends of a message with the same id.", DR_M_RESENT);
    counter(p, "drover_sends_refused_total", "Sends to a topic no broker accepts (message FAILED).",
            DR_M_SEND_REFUSED);

    static const struct {
        const char *outcome;
        int id;
    } acks[] = {{"applied", DR_M_ACK_APPLIED},
                {"ignored", DR_M_ACK_IGNORED},
                {"unknown_id", DR_M_ACK_UNKNOWN_ID},
                {"wrong_device", DR_M_ACK_WRONG_DEVICE},
                {"rejected", DR_M_ACK_REJECTED}};
    dr_prom_family(p, "drover_acks_total", "counter", "Device acks by outcome.");
    for (size_t i = 0; i < NB(acks); i++)
        dr_prom_sample(p, "drover_acks_total", (const char *[]){"outcome", acks[i].outcome, NULL},
                       get(acks[i].id));
    counter(p, "drover_acks_dropped_total", "Receipt acks lost to an outage (the device gets a re-send).",
            DR_M_ACK_DROPPED);

    dr_prom_family(p, "drover_status_changes_total", "counter",
                   "Message status changes made by this node, by new status.");
    for (int st = 0; st < DR_ST_COUNT; st++)
        dr_prom_sample(p, "drover_status_changes_total", (const char *[]){"status", dr_status_name(st), NULL},
                       (double)atomic_load(&statuses[st]));

    counter(p, "drover_notifications_published_total", "Status notifications published to producers.",
            DR_M_NOTIFIED);
    counter(p, "drover_notifications_refused_total", "Notifications to a topic no broker accepts (skipped).",
            DR_M_NOTIFY_REFUSED);
    counter(p, "drover_mqtt_publish_failures_total",
            "MQTT publishes (sends or notifications) that failed or timed out.", DR_M_PUBLISH_FAILED);
    counter(p, "drover_redis_errors_total", "Redis calls that failed (unreachable, timed out or refused).",
            DR_M_REDIS_ERRORS);
    counter(p, "drover_nats_dropped_total", "NATS events not sent because the bus was down.",
            DR_M_BUS_DROPPED);
    counter(p, "drover_fenced_total",
            "Dispatch calls refused because this node no longer held the shard lease.", DR_M_FENCED);

    for (int h = 0; h < DR_H_COUNT; h++) {
        dr_hist_snap_t s;
        dr_hist_snapshot(&hists[h], &s);
        dr_prom_histogram(p, hist_meta[h].name, hist_meta[h].help, NULL, &s);
    }

    dr_prom_family(p, "drover_build_info", "gauge", "Always 1; the label carries the build's version.");
    dr_prom_sample(p, "drover_build_info", (const char *[]){"version", version, NULL}, 1);
}

/* ---- Redis flush --------------------------------------------------------------------------------- */

static void on_flushed(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    (void)reply;
    (void)err;
    (void)data;
}

/* Seconds a node's counters outlive its last flush. */
#define METRICS_KEEP_S "604800"

void dr_metrics_flush(dr_redis_t *r, const char *prefix, const char *node)
{
    enum { NFIELDS = DR_M_COUNT + DR_ST_COUNT + DR_GAUGE_COUNT + 1 };
    const char *argv[2 + 2 * NFIELDS];
    char key[256], vals[NFIELDS][24], stnames[DR_ST_COUNT][40];
    const dr_store_t store = {.prefix = prefix, .node = node};
    dr_store_key_metrics(&store, node, key, sizeof(key));
    int n = 0;
    argv[n++] = "HSET";
    argv[n++] = key;
    for (int i = 0; i < DR_M_COUNT; i++) {
        snprintf(vals[i], sizeof(vals[i]), "%lld", (long long)atomic_load(&values[i]));
        argv[n++] = names[i];
        argv[n++] = vals[i];
    }
    /* Status changes as status_<name>, so drover-ctl metrics shows them beside the counters. */
    for (int st = 0; st < DR_ST_COUNT; st++) {
        int len = snprintf(stnames[st], sizeof(stnames[st]), "status_%s", dr_status_name(st));
        for (int k = 7; k < len; k++)
            stnames[st][k] = (char)tolower((unsigned char)stnames[st][k]);
        snprintf(vals[DR_M_COUNT + st], sizeof(vals[0]), "%lld", (long long)atomic_load(&statuses[st]));
        argv[n++] = stnames[st];
        argv[n++] = vals[DR_M_COUNT + st];
    }
    /* Gauges go out in the same HSET as the flush time, so a reader that checks flushed_at_ms never
     * pairs a fresh time with old gauges. */
    int v = DR_M_COUNT + DR_ST_COUNT;
    if (atomic_load(&gauges_set)) {
        for (int g = 0; g < DR_GAUGE_COUNT; g++, v++) {
            snprintf(vals[v], sizeof(vals[v]), "%lld", (long long)atomic_load(&gauges[g]));
            argv[n++] = gauge_names[g];
            argv[n++] = vals[v];
        }
    }
    snprintf(vals[v], sizeof(vals[v]), "%lld", (long long)dr_now_ms());
    argv[n++] = DR_METRICS_FLUSHED_AT;
    argv[n++] = vals[v];
    dr_redis_cmd(r, on_flushed, NULL, n, argv, NULL);
    /* A node that is gone for good leaves its counters for a week, not forever. */
    const char *ex[] = {"EXPIRE", key, METRICS_KEEP_S};
    dr_redis_cmd(r, on_flushed, NULL, 3, ex, NULL);
}
