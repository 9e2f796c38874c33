/* Ingress service: takes producer messages and device acks from MQTT shared subscriptions, validates
 * them and stores them in Redis with one atomic script each. Holds no state of its own. */
#ifndef DR_INGRESS_H
#define DR_INGRESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dr/codec.h"
#include "dr/mqtt.h"
#include "dr/node.h"

typedef struct {
    dr_node_t node;
    dr_mqtt_t *mqtt;
    dr_redis_script_t *s_accept, *s_ack, *s_pull, *s_peek, *s_cancel, *s_purge, *s_devinfo;
    struct http_server *http;  /* REST API (http_api.c); NULL when http.port is 0 */
    struct auth_cache *auth;   /* verified API keys and rate buckets (auth.c) */
    int sse_streams;           /* open event streams (sse.c) */
    int mqtt_started;
    char wake_subject[96];
    /* Shutdown hand-shake with callbacks running on paho's receive thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stopping;  /* new messages are parked instead of processed */
    atomic_int busy;      /* callbacks processing a message right now */
    atomic_int parked;    /* callbacks holding a message that must not be acknowledged */
    atomic_int deferred;  /* receipt acks queued for the loop and not yet stored */
    struct deferred_ack *acks_waiting, *acks_waiting_tail; /* loop thread: receipt acks without a slot */
    int acks_in_flight;   /* loop thread: receipt acks sent to Redis and not yet answered */
    int acks_pumping;     /* loop thread: pump_deferred is running */
    struct recent_ack *recent_acks; /* loop thread: receipt acks seen recently (store.c) */
    int released;         /* parked callbacks may return: MQTT is disconnected */
    uv_timer_t stop_timer;
    int64_t stop_deadline;
    /* Lanes (lanes.c): MQTT consumer processes started by lane 0. */
    int argc;                  /* the arguments lane 0 was started with, borrowed from main */
    char **argv;
    struct lane **lanes;
    int nlanes;
    int lanes_running;
} ingress_t;

/* Outcome of an accept or ack script, interpreted once for every transport. */
typedef struct {
    int err;               /* 0, or a transient DR_E* code: nothing happened, retry */
    int result;            /* RES_* */
    char id[24];           /* message id (accept: the new or original id) */
    char status[32];       /* status after the operation */
    const char *notify;    /* error code the producer should be told (MQTT only), or NULL */
} store_result_t;

/* What a paho callback asks the loop to do, and the answer it waits for. */
enum { JOB_ACCEPT, JOB_ACK };
enum { RES_PENDING, RES_STORED, RES_DUPLICATE, RES_CONFLICT, RES_IGNORED, RES_UNKNOWN_ID, RES_WRONG_DEVICE, RES_FAILED };

typedef struct {
    ingress_t *in;
    int kind;
    char *dev;             /* owned */
    dr_producer_msg_t msg; /* JOB_ACCEPT, owned */
    char token[33];        /* random request token: makes our own retries idempotent */
    dr_ack_t ack;          /* JOB_ACK */
    /* answer, guarded by in->mu */
    int done;
    store_result_t res;
} job_t;

typedef void store_cb(void *data, const store_result_t *res);

/* An accept request: everything the accept script needs. Strings are borrowed until the callback. */
typedef struct {
    const char *dev;
    size_t dev_len;
    const dr_producer_msg_t *msg;
    const char *token;     /* request token, 32 hex characters */
    const char *key_id;    /* submitting API key id, or "" */
} accept_req_t;

/* store.c: runs the accept or ack script. Loop thread. cb is called exactly once (also when Redis is
 * unavailable: res->err set). Permanent script errors become RES_FAILED with err 0. */
void store_accept(ingress_t *in, const accept_req_t *a, store_cb *cb, void *data);
void store_ack(ingress_t *in, const char *dev, int64_t id, int status, store_cb *cb, void *data);

/* Fills token[33] with a random request token. */
void store_new_token(char token[33]);

/* mqtt_in.c: the paho message callback. */
void ingress_on_message(void *data, const char *topic, size_t topic_len, const char *payload, size_t len, int dup);

/* store.c: runs a job on the loop (posted from the paho thread). */
void ingress_run_job(void *arg);

/* store.c: queues a receipt ack for the loop without waiting for Redis. Any thread. Returns 0 when
 * queued, or DR_EBUSY when too many are already waiting or the loop is closing (then the caller
 * stores it synchronously). dev and ack are copied. A queued ack that cannot be stored is dropped
 * and counted (ack_dropped): the message stays in flight and is re-sent. */
int ingress_defer_ack(ingress_t *in, const char *dev, size_t dev_len, const dr_ack_t *ack);

/* store.c: frees receipt acks still waiting after the loop ended (counted as ack_dropped) and the
 * cache of recent ones. */
void ingress_free_deferred(ingress_t *in);

/* mqtt_in.c: tells a producer about rejected input on producer/error/{producerDeviseId}. Only from
 * the MQTT message callback: the loop never calls into paho while that callback may be blocked. */
void ingress_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code, const char *message);

/* lanes.c: in lane 0 with ingress.mqtt_lanes > 1, starts the other lanes (and restarts any that
 * exits on its own); in a lane, arranges to stop when lane 0 dies. Loop thread, after the node is
 * initialised. Returns 0, or -1 with err filled. */
int lanes_start(ingress_t *in, char *err);

/* lanes.c: sends SIGTERM to every running lane (they finish what they are storing and exit). */
void lanes_stop(ingress_t *in);

/* lanes.c: closes the lanes' handles; lanes still running stop by themselves. Before dr_node_close. */
void lanes_close(ingress_t *in);

/* lanes.c: frees the lanes after the loop has ended. */
void lanes_dispose(ingress_t *in);

/* store.c: the message sent with a store_result_t's notify code. */
const char *store_notify_text(const char *code);

#endif
