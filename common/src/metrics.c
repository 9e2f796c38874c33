/* Process counters (see dr/metrics.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dr/metrics.h"

#define DR_METRIC_NAME(id, name) name,
static const char *names[DR_M_COUNT] = {DR_METRICS(DR_METRIC_NAME)};
static atomic_llong values[DR_M_COUNT];

void dr_metrics_add(int id, int64_t n)
{
    if (id >= 0 && id < DR_M_COUNT)
        atomic_fetch_add(&values[id], n);
}

int64_t dr_metrics_get(int id)
{
    return (id >= 0 && id < DR_M_COUNT) ? atomic_load(&values[id]) : 0;
}

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
    const char *argv[2 + 2 * DR_M_COUNT];
    char key[256], vals[DR_M_COUNT][24];
    snprintf(key, sizeof(key), "%smetrics:%s", prefix, node);
    int n = 0;
    argv[n++] = "HSET";
    argv[n++] = key;
    for (int i = 0; i < DR_M_COUNT; i++) {
        snprintf(vals[i], sizeof(vals[i]), "%lld", (long long)atomic_load(&values[i]));
        argv[n++] = names[i];
        argv[n++] = vals[i];
    }
    dr_redis_cmd(r, on_flushed, NULL, n, argv, NULL);
    /* A node that is gone for good leaves its counters for a week, not forever. */
    const char *ex[] = {"EXPIRE", key, METRICS_KEEP_S};
    dr_redis_cmd(r, on_flushed, NULL, 3, ex, NULL);
}
