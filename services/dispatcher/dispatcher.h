/* Dispatcher service: owns shards through fenced leases and is the only sender, pacer and retrier for
 * its shards' devices. All its state lives in Redis; what it keeps in memory is which shards it holds
 * (with their epochs), when each needs its next pass, and which passes are running. */
#ifndef DR_DISPATCHER_H
#define DR_DISPATCHER_H

#include <stdint.h>

#include "dr/httpmini.h"
#include "dr/mqttc.h"
#include "dr/node.h"
#include "dr/notes.h"
#include "dr/store.h"

typedef struct {
    int64_t epoch;        /* 0: not ours */
    int64_t due_at;       /* monotonic ms of the next pass; -1: nothing scheduled */
    int dispatching;      /* a dispatch pass is running */
    int again;            /* run another pass when this one ends */
    int queued;           /* waits in pending for this loop turn's dispatch call */
    int later;            /* the last call did not reach it: it goes first in the next one */
} shard_t;

typedef struct {
    dr_node_t node;
    dr_mqttc_t *mqtt;          /* our own MQTT client on the loop: publishes only */
    dr_store_t store;
    dr_notes_t *notes;
    shard_t *shards;
    uint32_t nshards;
    uint32_t owned;
    int lease_running;
    int layout_ok;        /* Redis holds our data layout and shard count (dr_store_check_layout) */
    int layout_running;
    int64_t next_lease;
    int64_t lease_valid_until;  /* monotonic ms: our leases hold at least until then */
    int64_t next_reconcile, next_reclaim, next_trim;
    int64_t broker_down_since;  /* monotonic ms the broker connection was first seen down; 0: up */
    int heads_running;
    int active;           /* passes in flight (for shutdown) */
    uint32_t *pending;    /* shards to pass this loop turn, in one call per DISPATCH_GROUP */
    uint32_t npending;
    uint32_t *flushing;   /* on_flush's copy of pending, in the order it sends them */
    uv_check_t flush;     /* after the poll phase: sends what is pending */
    uv_idle_t kick;       /* keeps the poll phase from blocking while shards are pending */
    int releasing;
    int64_t stop_deadline;
    char status_subject[96];
    uint64_t seed;
    /* metrics (http.c) */
    dr_httpmini_t *http;        /* /metrics, /healthz, /readyz; NULL when metrics.port is 0 */
    dr_store_backlog_t backlog; /* gauges of the last complete backlog round */
    int64_t backlog_at;         /* monotonic ms of that round; 0: none yet */
    int64_t backlog_took_ms;    /* how long that round took */
    int64_t backlog_wait_ms;    /* the wait it set before the next round */
    int64_t next_backlog;
    int backlog_running;
} dispatcher_t;

/* lease.c. Without a broker connection for BROKER_GRACE_MS a dispatcher gives its shards up. */
#define BROKER_GRACE_MS 2000
/* Longest MQTT keepalive of a dispatcher's connection (mqtt.keepalive_s applies when shorter). */
#define DISPATCHER_KEEPALIVE_S 5
void lease_cron(dispatcher_t *d);
void lease_release_all(dispatcher_t *d, void (*done)(dispatcher_t *d));

/* dispatch.c: the in-memory schedule of owned shards, their passes, reconciliation. */
void dispatch_init(dispatcher_t *d);
void dispatch_close(dispatcher_t *d);
void dispatch_cron(dispatcher_t *d);
void dispatch_shard(dispatcher_t *d, uint32_t shard);
void dispatch_wake(dispatcher_t *d, uint32_t shard);

/* http.c: the metrics listener and the backlog gauges. metrics_start returns DR_ECONFIG with err
 * (DR_ERR_LEN bytes) filled for a bad metrics.bind; a port in use is logged, not fatal (returns 0). */
int metrics_start(dispatcher_t *d, char *err);
void metrics_stop(dispatcher_t *d);
void metrics_cron(dispatcher_t *d);

#endif
