/* Dispatcher service: owns shards through fenced leases and is the only sender, pacer and retrier for
 * its shards' devices. All its state lives in Redis; what it keeps in memory is only which shards it
 * holds (with their epochs) and which passes are running. */
#ifndef DR_DISPATCHER_H
#define DR_DISPATCHER_H

#include <stdint.h>

#include "dr/mqtt.h"
#include "dr/node.h"

typedef struct {
    int64_t epoch;   /* 0: not ours */
    int dispatching; /* a dispatch pass is running */
    int again;       /* run another pass when this one ends */
    int draining;    /* an outbox batch is being published */
} shard_t;

typedef struct {
    dr_node_t node;
    dr_mqtt_t *mqtt;
    dr_redis_script_t *s_dispatch, *s_lease, *s_outbox, *s_cancel;
    shard_t *shards;
    uint32_t nshards;
    uint32_t owned;
    int lease_running;
    int64_t next_lease;
    int scan_running;
    int outbox_scan_running;
    int active;          /* passes and batches in flight (for shutdown) */
    int releasing;
    int64_t stop_deadline;
    char status_subject[96];
    uint64_t seed;
} dispatcher_t;

/* lease.c */
void lease_cron(dispatcher_t *d);
void lease_release_all(dispatcher_t *d, void (*done)(dispatcher_t *d));

/* dispatch.c: the due-shard scan and one shard's dispatch pass. */
void dispatch_cron(dispatcher_t *d);
void dispatch_shard(dispatcher_t *d, uint32_t shard);

/* outbox.c: publishes a shard's queued status notifications. */
void outbox_cron(dispatcher_t *d);
void outbox_drain(dispatcher_t *d, uint32_t shard);

/* Formats the three arguments every script starts with. */
void dispatcher_base_args(dispatcher_t *d, char now_s[24], char ret_s[24]);

#endif
