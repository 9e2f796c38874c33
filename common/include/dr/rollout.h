/* Rollouts: one command sent to many devices at a bounded rate, as a job kept in Redis.
 *
 * Typed wrappers of the ro_* functions at the end of common/lua/drover.lua, which own the key names
 * (all under the hash tag <prefix>{ro}; ro_count reads message records in their shards). Same
 * contract as dr/store.h: each callback is called exactly once for a call that returned 0; strings in
 * results point into the Redis reply and are valid during the callback only; loop thread of the
 * dr_redis_t.
 */
#ifndef DR_ROLLOUT_H
#define DR_ROLLOUT_H

#include <stdint.h>

#include "dr/store.h"

#define DR_RO_MAX_DEVICES 10000 /* devices of one rollout */
#define DR_RO_MAX_RATE 1000     /* devices per second */
#define DR_RO_COUNT_MAX 2000    /* message ids one ro_count call reads */

typedef struct {
    int64_t id;
    const char *state; /* running, paused, cancelled or done */
    const char *command;
    const char *guarantee; /* NO, RECEIPT_CONFIRMATION or ONLY_LAST */
    const char *owner;     /* creating API key id, "" for an operator */
    const char *data;      /* JSON object text, or NULL for null */
    int64_t ttl_ms;        /* 0: none */
    int64_t rate, total, enqueued, created_ms, updated_ms;
} dr_ro_t;

/* What a new rollout holds; the strings are copied. data NULL: null. */
typedef struct {
    const char *owner, *command, *data, *guarantee;
    int64_t ttl_ms, rate, burst;
    int64_t keep_s; /* how long it is kept once finished (its messages' deadline + retention); 0: for ever */
    const char *const *devs;
    size_t ndevs; /* 1..DR_RO_MAX_DEVICES */
} dr_ro_new_t;

enum { DR_RO_OK = 0, DR_RO_NOT_FOUND, DR_RO_NOT_RUNNING, DR_RO_NOT_PAUSED, DR_RO_FINISHED };

/* result: DR_RO_*; ro is set unless DR_RO_NOT_FOUND. ids: the rollout's message ids (get with ids,
 * cancel), "-" for a device whose message the store refused. */
typedef void dr_ro_cb(void *data, int err, const char *errstr, int result, const dr_ro_t *ro,
                      const char *const *ids, size_t nids);

/* Creates a running rollout. */
int dr_ro_create(dr_redis_t *r, const dr_store_t *st, const dr_ro_new_t *n, dr_ro_cb *cb, void *data);

/* Rollout id, if owner ("" any) may see it; with_ids 1 also returns its message ids. */
int dr_ro_get(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *owner, int with_ids, dr_ro_cb *cb,
              void *data);

/* op: "pause", "resume" or "cancel" (which also returns every message id enqueued so far). */
int dr_ro_control(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *owner, const char *op,
                  dr_ro_cb *cb, void *data);

/* A page of rollouts, newest first: those of owner ("" all) with an id below after (0: from the
 * newest); more is 1 when older ones follow. */
typedef void dr_ro_list_cb(void *data, int err, const char *errstr, const dr_ro_t *v, size_t n, int more);
int dr_ro_list(dr_redis_t *r, const dr_store_t *st, const char *owner, int64_t after, int64_t limit,
               dr_ro_list_cb *cb, void *data);

/* Devices first..first+n-1 of a rollout, to be accepted now; ro carries id, command, guarantee,
 * data, ttl_ms and owner only. */
typedef struct {
    dr_ro_t ro;
    int64_t first;
    const char *const *devs;
    size_t n;
} dr_ro_batch_t;

typedef void dr_ro_take_cb(void *data, int err, const char *errstr, const dr_ro_batch_t *b, size_t n);

/* Claims (or keeps) the lease of up to most running rollouts for holder (unique per process) for
 * lease_ms and takes what their rate allows now, at most per devices each. */
int dr_ro_take(dr_redis_t *r, const dr_store_t *st, const char *holder, int64_t lease_ms, int64_t per,
               int64_t most, dr_ro_take_cb *cb, void *data);

/* Records the outcome of devices first..first+n-1: per device the message id, "-" (refused by the
 * store) or "" (not stored: handed out again). cb's strs: one string, the rollout's state. */
int dr_ro_done(dr_redis_t *r, const dr_store_t *st, int64_t id, int64_t first, const char *const *ids,
               size_t n, dr_store_strs_cb *cb, void *data);

typedef struct {
    int64_t queued, sent, delivered, completed, completed_with_error, failed, expired, cancelled, gone;
} dr_ro_counts_t;

typedef void dr_ro_count_cb(void *data, int err, const char *errstr, const dr_ro_counts_t *c);

/* Counts the outcomes of messages ids[0..n-1] (1..DR_RO_COUNT_MAX; their shards lie in one call's
 * slots: on a cluster the caller groups them). */
int dr_ro_count(dr_redis_t *r, const dr_store_t *st, const int64_t *ids, size_t n, dr_ro_count_cb *cb,
                void *data);

#endif
