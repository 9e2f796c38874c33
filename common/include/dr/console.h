/* The web console's data layer: saved commands (Duster's saved messages), the fleet-wide message
 * search and the list of devices with work.
 *
 * Typed wrappers of the sm_* and con_* functions at the end of common/lua/drover.lua, which own the
 * key names: saved commands live under the registry's hash tag <prefix>{reg}; the search reads each
 * shard's records and its time index <prefix>{<shard>}ix. Same contract as dr/store.h: each callback
 * is called exactly once for a call that returned 0; strings in results point into the Redis reply
 * and are valid during the callback only; loop thread of the dr_redis_t.
 */
#ifndef DR_CONSOLE_H
#define DR_CONSOLE_H

#include <stdint.h>

#include "dr/store.h"

#define DR_CON_SAVED_MAX 200    /* saved commands per device */
#define DR_CON_MAX_TEXT 1024    /* longest description and command of a saved command (bytes) */
#define DR_CON_SHARDS_PER_CALL 64 /* shards one search or device call covers */

/* ---- saved commands ----------------------------------------------------------------------------- */

typedef struct {
    int64_t id;
    int64_t client_id;       /* owner client (role DEVISE) */
    const char *dev;         /* owner deviseId: the device a send goes to */
    const char *description;
    const char *command;
    const char *guarantee;   /* NO, RECEIPT_CONFIRMATION or ONLY_LAST */
    const char *data;        /* JSON object text, or NULL for null */
} dr_con_saved_t;

enum { DR_CON_OK = 0, DR_CON_NOT_FOUND, DR_CON_NO_CLIENT, DR_CON_NOT_DEVISE, DR_CON_FULL };

/* result: DR_CON_* (put), DR_CON_OK otherwise; v: n saved commands (put: one when DR_CON_OK). */
typedef void dr_con_saved_cb(void *data, int err, const char *errstr, int result, const dr_con_saved_t *v,
                             size_t n);

/* What a put writes: NULL strings and client_id 0 leave a field as it is (an update); a new saved
 * command needs client_id, description, command and guarantee. data_null 1 stores null data. The
 * strings are copied. */
typedef struct {
    int64_t client_id;
    const char *description, *command, *guarantee, *data;
    int data_null;
} dr_con_saved_change_t;

/* Creates (id 0) or updates saved command id. The owner must be a client of role DEVISE with fewer
 * than DR_CON_SAVED_MAX saved commands. */
int dr_con_saved_put(dr_redis_t *r, const dr_store_t *st, int64_t id, const dr_con_saved_change_t *ch,
                     dr_con_saved_cb *cb, void *data);

/* Saved commands, id descending: all (by NULL), or by "id", "cid" (owner client id) or "dev" (owner
 * deviseId) equal to value; at most limit (1..10000). */
int dr_con_saved_list(dr_redis_t *r, const dr_store_t *st, const char *by, const char *value, int64_t limit,
                      dr_con_saved_cb *cb, void *data);

/* Deletes saved command id; result 1 when it existed, else 0. */
int dr_con_saved_delete(dr_redis_t *r, const dr_store_t *st, int64_t id, dr_store_int_cb *cb, void *data);

/* ---- fleet search ------------------------------------------------------------------------------- */

typedef struct {
    int64_t cursor_ts, cursor_id;  /* strictly older than this (0, 0: from the newest) */
    int64_t from, to;              /* acceptance time bounds, inclusive (0: none) */
    const char *dev;               /* "" any; else the shards given must be the device's one shard */
    const char *status;            /* status name, "" any */
    const char *command;           /* exact command, "" any */
    const char *owner;             /* API key id: its messages and those without a key; "" all */
    int64_t limit;                 /* matches wanted, 1..500 */
    int64_t budget;                /* records examined at most */
    int64_t ids_max;               /* ids.max */
} dr_con_query_t;

typedef struct {
    int64_t id;
    const char *dev, *command, *status, *guarantee;
    int64_t accepted_ms, changed_ms, attempts;
} dr_con_hit_t;

/* done 1: nothing older is left in these shards. Else every message at or after (resume_ts,
 * resume_id) was examined, and the listing continues strictly below it. hits are newest first. */
typedef void dr_con_search_cb(void *data, int err, const char *errstr, int done, int64_t resume_ts,
                              int64_t resume_id, const dr_con_hit_t *hits, size_t n);

/* Searches shards (1..DR_CON_SHARDS_PER_CALL of them; a cluster caller groups them by slot). */
int dr_con_search(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, const dr_con_query_t *q,
                  dr_con_search_cb *cb, void *data);

/* ---- device list --------------------------------------------------------------------------------- */

/* cut: "" when every matching name of the shards was examined, else the last name up to which they
 * were (names are only returned up to it, so a listing continues after it). names in name order. */
typedef void dr_con_names_cb(void *data, int err, const char *errstr, const char *cut, const char *const *names,
                             size_t n);

/* Names in the device index of shards (1..DR_CON_SHARDS_PER_CALL) starting with prefix, after after
 * ("" from the start), examining at most limit names per shard. Removes names whose device has neither
 * work nor state left. */
int dr_con_devices(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, const char *prefix,
                   const char *after, int64_t limit, dr_con_names_cb *cb, void *data);

/* info: n entries, one per device, in the order given (as dr_store_devinfo). */
typedef void dr_con_devinfo_cb(void *data, int err, const char *errstr, const dr_store_devinfo_t *info, size_t n);

/* Queue and pacing state of devs[0..n-1] (1..DR_CON_DEVINFO_MAX devices, whose shards lie in one
 * call's slots: on a cluster the caller groups them). The strings are copied. */
#define DR_CON_DEVINFO_MAX 500
int dr_con_devinfo(dr_redis_t *r, const dr_store_t *st, const char *const *devs, size_t n, dr_con_devinfo_cb *cb,
                   void *data);

#endif
