/* Drover's Redis data layer: one typed wrapper per function of the library common/lua/drover.lua,
 * and the one place where key names are spelled in C.
 *
 * Every wrapper builds its FCALL (keys: <prefix>{<shard>} per shard involved, then the common
 * arguments prefix, shard count, retention and node), sends it on a dr_redis_t and parses the reply
 * into a struct. Strings in results point into the Redis reply: they are valid during the callback
 * only. Each callback is called exactly once for a call that returned 0 (err 0, or DR_EUNAVAIL,
 * DR_ETIMEDOUT, DR_ECLOSED, or DR_EREDIS with errstr holding Redis's message; a reply that does not
 * have the expected shape is DR_EREDIS with errstr "unexpected reply"). All functions run on the
 * loop thread that owns the dr_redis_t.
 *
 * The layout (keys, record fields, id scheme) is described in docs/architecture.md §3; its version
 * is DR_STORE_LAYOUT and is checked at start (dr_store_check_layout).
 */
#ifndef DR_STORE_H
#define DR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "dr/codec.h"
#include "dr/redis.h"

#define DR_STORE_LAYOUT 2

/* What every call needs to know; borrowed by the calls, owned by the service. */
typedef struct {
    const char *prefix;    /* redis.prefix */
    uint32_t shards;       /* cluster.shards */
    int64_t retention_s;   /* retention_s */
    const char *node;      /* node.id: consumer name for claimed notifications, lease owner */
} dr_store_t;

/* Registers the function library with r (loaded on every connection). Before r is first READY. */
void dr_store_register(dr_redis_t *r);

/* The generation of the function library this build carries (drover.lua GENERATION; 0 if it declares
 * none). A node does not replace a loaded library of a newer generation (dr_redis_add_library). */
long long dr_store_generation(void);

/* Completion of calls that answer with one number (see each call). */
typedef void dr_store_int_cb(void *data, int err, const char *errstr, int64_t result);

/* Checks (and on a new Redis records) the data layout version and shard count; cb gets err 0, or
 * DR_EREDIS with errstr saying what the Redis holds. A node must not serve on a mismatch. */
int dr_store_check_layout(dr_redis_t *r, const dr_store_t *st, dr_store_int_cb *cb, void *data);

/* A list of strings, valid during the call. */
typedef void dr_store_strs_cb(void *data, int err, const char *errstr, const char *const *v, size_t n);

/* Records the MQTT filters of the calling node's persistent session (<prefix>subs:<node>): beside
 * what is recorded (replace 0: before stale filters are confirmed unsubscribed) or instead of it
 * (replace 1). cb gets the filters recorded before the call. */
int dr_store_subs(dr_redis_t *r, const dr_store_t *st, int replace, const char *const *filters, size_t n,
                  dr_store_strs_cb *cb, void *data);

/* Moves shard's id counter forward by `by` ids (0: half the shard's id space under ids_max), so that
 * ids handed out after a restore from an older backup differ from those handed out after the backup
 * was taken. result: the shard's next id. docs/operations.md §"Restoring Redis". */
int dr_store_ids_advance(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t ids_max, int64_t by,
                         dr_store_int_cb *cb, void *data);

/* Writes "<prefix>{<shard>}<name>" into buf (at most size bytes, always terminated). Returns buf. */
char *dr_store_key(const dr_store_t *st, uint32_t shard, const char *name, char *buf, size_t size);

/* Shard of message id (its id scheme: id mod S). */
uint32_t dr_store_shard_of_id(const dr_store_t *st, int64_t id);

/* ---- key names ------------------------------------------------------------------------------------ */

/* The keys that services read with plain commands (beside the function calls above) are named here
 * and nowhere else. Each dr_store_key_* and dr_store_match_* writes into buf (at most size bytes,
 * always terminated) and returns buf; each *_of_key returns a pointer into key (borrowed from the
 * caller), or NULL when key is not a name of that kind. Any thread. */

/* "<prefix>{<shard>}log": the shard's status log, the stream that event streams read. */
char *dr_store_key_log(const dr_store_t *st, uint32_t shard, char *buf, size_t size);

/* The shard of a shard's key "<prefix>{<shard>}...": returns 0 and sets *shard, or -1 when key does
 * not start with "<prefix>{". The shard is not checked against st->shards. */
int dr_store_shard_of_key(const dr_store_t *st, const char *key, uint32_t *shard);

/* "<prefix>ak:<id>": the hash of API key id (h, scope, dev, name, created, revoked; dr/apikey.h). */
char *dr_store_key_apikey(const dr_store_t *st, const char *id, char *buf, size_t size);

/* "<prefix>ak:*": the SCAN MATCH pattern of every API key hash. */
char *dr_store_match_apikeys(const dr_store_t *st, char *buf, size_t size);

/* The id part of an API key hash name "<prefix>ak:<id>" (not checked to be a well-formed id). */
const char *dr_store_apikey_of_key(const dr_store_t *st, const char *key);

/* "<prefix>metrics:<node>": the counters node flushes (dr_metrics_flush). */
char *dr_store_key_metrics(const dr_store_t *st, const char *node, char *buf, size_t size);

/* "<prefix>metrics:*": the SCAN MATCH pattern of every node's metrics hash. */
char *dr_store_match_metrics(const dr_store_t *st, char *buf, size_t size);

/* The node part of a metrics hash name "<prefix>metrics:<node>". */
const char *dr_store_node_of_metrics_key(const dr_store_t *st, const char *key);

/* ---- notifications ------------------------------------------------------------------------------ */

/* A status change claimed for publication by the calling node (see dr/notes.h). */
typedef struct {
    uint32_t shard;
    const char *log_id;    /* entry id in the shard's status log */
    int64_t id;
    const char *dev;
    int status;            /* dr_status_t */
    int has_tmp;           /* the producer gave a birth certificate: pd and tmp are set */
    int64_t tmp;
    const char *pd;        /* producerDeviseId, "" when none */
    int ext;               /* the producer used Drover-only fields */
    const char *after;     /* log id of the message's previous change that another node is still
                            * publishing: publish this one only after that one (dr_store_note_wait);
                            * "" when nothing to wait for */
} dr_note_t;

/* ---- accept --------------------------------------------------------------------------------------- */

enum { DR_STORE_OK, DR_STORE_DUP, DR_STORE_CONFLICT, DR_STORE_FULL, DR_STORE_TOO_LARGE };

typedef struct {
    const char *dev;
    const dr_producer_msg_t *msg;
    const char *key_id;    /* submitting API key id, "" over MQTT */
} dr_store_accept_t;

typedef struct {
    int code;              /* DR_STORE_OK, DUP (idempotent retry), CONFLICT (key reused), FULL (no id),
                            * TOO_LARGE (the device cannot take a message this big) */
    int64_t id;            /* new or original id (0 for FULL and TOO_LARGE) */
    int status;            /* status after the call (OK, DUP) */
    int cancelled;         /* ONLY_LAST: messages it superseded */
    int64_t limit;         /* TOO_LARGE: the device's largest message (bytes) */
} dr_store_accept_res_t;

typedef void dr_store_accept_cb(void *data, int err, const char *errstr, const dr_store_accept_res_t *res, size_t n,
                                const dr_note_t *notes, size_t nnotes);

/* Limits applied while accepting. */
typedef struct {
    int64_t ids_max;          /* ids.max */
    int64_t default_ttl_ms;   /* deliver-by given to messages without one (0: none) */
    int64_t max_message;      /* largest message a device takes, unless overridden per device (0: any) */
} dr_store_limits_t;

/* Bytes of the message a device receives for m (the largest id and timestamp assumed). */
size_t dr_store_device_message_size(const dr_producer_msg_t *m);

/* Stores n producer messages atomically, in order. token (32 hex characters, or "" for none) makes
 * a retry after a lost reply return the first call's answer instead of storing again; it is kept
 * token_ttl_s seconds. items and what they point to are copied before returning. */
int dr_store_accept(dr_redis_t *r, const dr_store_t *st, const dr_store_limits_t *lim, const char *token,
                    int64_t token_ttl_s, const dr_store_accept_t *items, size_t n, dr_store_accept_cb *cb,
                    void *data);

/* ---- acks ------------------------------------------------------------------------------------------- */

enum { DR_STORE_ACK_OK, DR_STORE_ACK_IGNORED, DR_STORE_ACK_WRONG_DEVICE, DR_STORE_ACK_UNKNOWN_ID };

typedef struct {
    const char *dev;
    int64_t id;
    int status;            /* DELIVERED, COMPLETED or COMPLETED_WITH_ERROR */
} dr_store_ack_t;

typedef struct {
    int code;              /* DR_STORE_ACK_* */
    int status;            /* new status (OK) or the current one (IGNORED); -1 otherwise */
    int64_t age_ms;        /* OK and the first ack confirming delivery: ms since the message's acceptance
                              (Redis's clock); -1 otherwise */
} dr_store_ack_res_t;

typedef void dr_store_ack_cb(void *data, int err, const char *errstr, const dr_store_ack_res_t *res, size_t n,
                             const dr_note_t *notes, size_t nnotes);

/* Applies n acks in order, atomically. items are copied before returning. */
int dr_store_ack(dr_redis_t *r, const dr_store_t *st, const dr_store_ack_t *items, size_t n, dr_store_ack_cb *cb,
                 void *data);

/* ---- sending ---------------------------------------------------------------------------------------- */

/* The send policy (defaults for devices without overrides). */
typedef struct {
    int64_t window, interval_ms, ack_timeout_ms, retry_max_ms;
    double backoff;
    int64_t jitter_pct;
    uint64_t seed;         /* jitter seed; vary it between calls */
} dr_store_policy_t;

typedef struct {
    int64_t id;
    const char *dev;
    int guarantee;
    const char *command;
    const char *data;      /* JSON object text, or NULL */
    int64_t attempt;
    int64_t sent_ms;       /* when the send was recorded (Redis's clock): its currentTimestamp */
    int64_t accepted_ms;   /* when the message was accepted (Redis's clock) */
    uint32_t expiry_s;     /* MQTT 5 Message Expiry Interval for this copy, 0 for none (drover.lua send_expiry) */
} dr_store_send_t;

typedef struct {
    int fenced;            /* the caller does not hold the shard's lease (nothing else is set) */
    int64_t expired, failed;
    int later;             /* dispatch_many did not run this shard (the call's budget was spent):
                            * run it again now (nothing else is set) */
    int more;              /* the pass stopped at its batch size: run another */
    int64_t next_in_ms;    /* ms until the shard next needs a pass (0: now); -1: nothing scheduled */
    const dr_store_send_t *sends;
    size_t nsends;
    const dr_note_t *notes;
    size_t nnotes;
} dr_store_pass_t;

typedef void dr_store_pass_cb(void *data, int err, const char *errstr, const dr_store_pass_t *pass);

/* One dispatch pass over a shard the caller holds with epoch. */
int dr_store_dispatch(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t epoch, int64_t batch,
                      const dr_store_policy_t *pol, dr_store_pass_cb *cb, void *data);

/* Passes over several shards in one call: one clock read and one round trip for all of them, each
 * shard fenced on its own. cb is called once per request, in order, with that request's data (err
 * set for every request when the call failed). A call visits at most batch devices and deadlines
 * in all (at least one shard's pass): the shards it did not reach come back with later set. On
 * Redis Cluster a caller groups shards of one slot per call. Returns 0, or an error when the call
 * could not be sent (cb not called). */
typedef struct {
    uint32_t shard;
    int64_t epoch;
    void *data;
} dr_store_pass_req_t;

int dr_store_dispatch_many(dr_redis_t *r, const dr_store_t *st, const dr_store_pass_req_t *reqs, size_t n,
                           int64_t batch, const dr_store_policy_t *pol, dr_store_pass_cb *cb);

/* Takes back a recorded send that could not be published. result: 1 undone, 0 moved on, -1 fenced. */
int dr_store_unsend(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t epoch, int64_t id, int64_t attempt,
                    dr_store_int_cb *cb, void *data);

/* Ms until each of n shards needs a pass (-1: nothing scheduled), in the order given. */
typedef void dr_store_heads_cb(void *data, int err, const char *errstr, const int64_t *due, size_t n);
int dr_store_heads(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, dr_store_heads_cb *cb,
                   void *data);

/* Moves notifications of shard that other consumers claimed longer than min_idle_ms ago to us.
 * lost counts entries trimmed before anyone published them. */
typedef void dr_store_notes_cb(void *data, int err, const char *errstr, const dr_note_t *notes, size_t n,
                               int64_t lost);
int dr_store_reclaim(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t min_idle_ms, int64_t count,
                     dr_store_notes_cb *cb, void *data);

/* Trims the shard's status log to keep_ms, never past an unpublished entry. cb may be NULL. */
int dr_store_trim_log(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t keep_ms, dr_store_int_cb *cb,
                      void *data);

/* State of the log entry a note waits for (note->after): result 1 when it is confirmed (publish the
 * note), 0 while its node may still be publishing it, or 2 when it went stale and was taken over: then
 * taken (valid during the callback) holds it, to publish before the note. */
typedef void dr_store_wait_cb(void *data, int err, const char *errstr, int result, const dr_note_t *taken);
int dr_store_note_wait(dr_redis_t *r, const dr_store_t *st, const dr_note_t *note, int64_t stale_ms,
                       dr_store_wait_cb *cb, void *data);

/* Marks n published notifications as done (XACK per shard). cb may be NULL. */
int dr_store_notes_done(dr_redis_t *r, const dr_store_t *st, const dr_note_t *notes, size_t n, dr_store_int_cb *cb,
                        void *data);

/* ---- leases ------------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t shard;
    int64_t epoch;
} dr_store_lease_t;

typedef void dr_store_lease_cb(void *data, int err, const char *errstr, const dr_store_lease_t *held, size_t n);

/* Heartbeat, renew, rebalance and take leases (release 0), or give everything back (release 1). */
int dr_store_lease(dr_redis_t *r, const dr_store_t *st, int64_t ttl_ms, int release, dr_store_lease_cb *cb,
                   void *data);

/* ---- REST and operator calls --------------------------------------------------------------------------- */

enum { DR_STORE_CANCEL_OK, DR_STORE_CANCEL_CONFLICT, DR_STORE_CANCEL_NOT_FOUND };

typedef struct {
    int code;              /* DR_STORE_CANCEL_* */
    int status;            /* CONFLICT: the current status */
    uint32_t shard;        /* OK */
    const char *dev;       /* OK */
} dr_store_cancel_res_t;

typedef void dr_store_cancel_cb(void *data, int err, const char *errstr, const dr_store_cancel_res_t *res,
                                const dr_note_t *notes, size_t nnotes);

/* Cancels (or, with fail_event non-NULL, fails with that history event) a pending message. caller:
 * the API key id that may cancel only its own messages, or "" for an operator. */
int dr_store_cancel(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *caller, const char *fail_event,
                    dr_store_cancel_cb *cb, void *data);

typedef void dr_store_purge_cb(void *data, int err, const char *errstr, int64_t purged, int more,
                               const char *cursor, const dr_note_t *notes, size_t nnotes);

/* One step of a purge of dev's pending messages (only caller's own unless caller is ""): scans up to
 * step queue entries after cursor ("" to start). Repeat with the returned cursor while more. */
int dr_store_purge(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t step, const char *caller,
                   const char *cursor, dr_store_purge_cb *cb, void *data);

/* A device's next message over REST: msg NULL and due_in_ms (ms until something is due, or -1) when
 * there is none now. */
typedef void dr_store_pull_cb(void *data, int err, const char *errstr, const dr_store_send_t *msg,
                              int64_t due_in_ms, const dr_note_t *notes, size_t nnotes);
int dr_store_pull(dr_redis_t *r, const dr_store_t *st, const char *dev, const dr_store_policy_t *pol,
                  dr_store_pull_cb *cb, void *data);

/* Duster's getLastMessage: msg NULL when the device has nothing pending. */
typedef void dr_store_peek_cb(void *data, int err, const char *errstr, const dr_store_send_t *msg);
int dr_store_peek(dr_redis_t *r, const dr_store_t *st, const char *dev, dr_store_peek_cb *cb, void *data);

typedef struct {
    int64_t queued, in_flight, scheduled;
    int64_t next_ms, last_send_ms, last_ack_ms;   /* -1: never */
    int64_t interval_ms, window;                  /* -1: the default */
    const char *mode;                             /* "" or "pull" */
    int64_t max_message;                          /* -1: the default */
} dr_store_devinfo_t;

typedef void dr_store_devinfo_cb(void *data, int err, const char *errstr, const dr_store_devinfo_t *info);
int dr_store_devinfo(dr_redis_t *r, const dr_store_t *st, const char *dev, dr_store_devinfo_cb *cb, void *data);

/* Operator overrides: interval/window/max_message < 0 leave the value, DR_STORE_UNSET removes it;
 * mode NULL leaves it, "" removes it. */
#define DR_STORE_UNSET (-2)
int dr_store_devset(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t interval_ms, int64_t window,
                    const char *mode, int64_t max_message, dr_store_int_cb *cb, void *data);

typedef struct {
    const char *event;     /* accepted, sent, resent, ack, superseded, deadline, ... */
    int status;
    int64_t ts;
    int64_t attempt;
} dr_store_hist_t;

typedef struct {
    int found;
    int64_t id;
    const char *dev;
    int guarantee;
    const char *command;
    const char *data;      /* NULL: null */
    int status;
    int64_t accepted_ms, changed_ms, attempts;
    int has_tmp;
    int64_t tmp;
    const char *pd;
    int64_t deliver_by, max_attempts, not_before;   /* 0: none */
    int ext;
    const char *idem_key, *key_id;                  /* "" when none */
    int64_t last_send_ms, next_retry_ms;            /* 0: never */
    const dr_store_hist_t *history;
    size_t nhistory;
} dr_store_msg_t;

typedef void dr_store_get_cb(void *data, int err, const char *errstr, const dr_store_msg_t *msgs, size_t n);

/* Loads n messages by id (found 0 for unknown ids), in the order given. */
int dr_store_get(dr_redis_t *r, const dr_store_t *st, const int64_t *ids, size_t n, dr_store_get_cb *cb, void *data);

typedef void dr_store_ids_cb(void *data, int err, const char *errstr, const int64_t *ids, size_t n);

/* Ids of dev's messages, newest first, below cursor (0: from the newest), at most limit. */
int dr_store_list(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t cursor, int64_t limit,
                  dr_store_ids_cb *cb, void *data);

/* ---- API keys ---------------------------------------------------------------------------------------- */

/* Creates the hash of API key id (dr_store_key_apikey) holding hash (the key's hex SHA-256), scope
 * (its dr_scope_name), dev ("" unless a device key) and name ("" for none), unless the id is taken.
 * result: the creation time (ms, Redis's clock), or 0 when a key with this id exists (draw another
 * key). Strings are copied before returning. */
int dr_store_apikey_create(dr_redis_t *r, const dr_store_t *st, const char *id, const char *hash,
                           const char *scope, const char *dev, const char *name, dr_store_int_cb *cb,
                           void *data);

/* Revokes API key id. result: 1 when the key exists (it is revoked now), 0 when there is none. */
int dr_store_apikey_revoke(dr_redis_t *r, const dr_store_t *st, const char *id, dr_store_int_cb *cb,
                           void *data);

/* ---- backlog gauges --------------------------------------------------------------------------------- */

typedef struct {
    int64_t queued;        /* messages in device queues (in flight included) */
    int64_t in_flight;     /* sent and not yet acknowledged */
    int64_t scheduled;     /* waiting for their not-before time */
    int64_t oldest_age_ms; /* age of the oldest queued message (Redis's clock); -1: none */
    int64_t skipped;       /* devices not looked at (over max_devices): the sums are then too low */
} dr_store_backlog_t;

typedef void dr_store_backlog_cb(void *data, int err, const char *errstr, const dr_store_backlog_t *res);

/* Sums what waits for delivery over n shards, looking at no more than max_devices devices per shard.
 * Read-only. shards is copied before returning. */
int dr_store_backlog(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, int64_t max_devices,
                     dr_store_backlog_cb *cb, void *data);

#endif
