/* Ingress service: takes producer messages and device acks from MQTT shared subscriptions and REST,
 * validates them and stores them in Redis in batches (group commit). Holds no state of its own.
 * One process is one loop thread. */
#ifndef DR_INGRESS_H
#define DR_INGRESS_H

#include <stdint.h>

#include "dr/codec.h"
#include "dr/mqttc.h"
#include "dr/node.h"
#include "dr/notes.h"
#include "dr/store.h"

struct ingest;

typedef struct {
    dr_node_t node;
    dr_mqttc_t *mqtt;          /* our own client: PUBACKs only after the batch is durable */
    dr_store_t store;          /* the Redis data layer (dr/store.h) */
    dr_notes_t *notes;         /* publishes the status changes our calls made (dr/notes.h) */
    struct ingest *ingest;     /* the batcher (ingest.c) */
    struct http_server *http;  /* REST API (http_api.c); NULL when http.port is 0 */
    struct auth_cache *auth;   /* verified API keys and rate buckets (auth.c) */
    struct dynsec *dynsec;     /* broker provisioning connection (rest_admin.c); NULL unless registry.dynsec */
    struct rollouts *rollouts; /* the timer advancing running rollouts (rest_rollout.c); NULL when stopped */
    int sse_streams;           /* open event streams (sse.c) */
    int mqtt_started;
    int layout_ok;             /* Redis holds our data layout and shard count (dr_store_check_layout) */
    char filters[2][192];      /* the MQTT filters we subscribe (producer messages, acks) */
    int stale_filters;         /* filters of an older configuration unsubscribed on connection */
    int filters_recorded;      /* the session's filters are recorded as exactly ours (dr_store_subs) */
    char wake_subject[96];
    char status_subject[96];
    uv_timer_t stop_timer;
    int64_t stop_deadline;
} ingress_t;

/* Outcome of storing a producer message or an ack, interpreted once for every transport. */
enum { RES_PENDING, RES_STORED, RES_DUPLICATE, RES_CONFLICT, RES_IGNORED, RES_UNKNOWN_ID, RES_WRONG_DEVICE, RES_FAILED,
       RES_TOO_LARGE /* the device cannot take it: id holds the device's limit */ };

typedef struct {
    int err;               /* 0, or a transient DR_E* code: nothing happened (REST answers 503) */
    int result;            /* RES_* */
    char id[24];           /* message id (accept: the new or original id) */
    char status[32];       /* status after the operation */
    const char *notify;    /* error code the producer should be told, or NULL */
} store_result_t;

typedef void store_cb(void *data, const store_result_t *res);

/* An accept request. Strings are borrowed until ingest_accept returns (they are copied). */
typedef struct {
    const char *dev;
    size_t dev_len;
    const dr_producer_msg_t *msg;
    const char *key_id;    /* submitting API key id, or "" */
    int hold;              /* MQTT: retried until stored, never answered with a transient error */
} accept_req_t;

/* ingest.c: queue a producer message or an ack for the next batch (one Redis call per kind per loop
 * turn). Loop thread. cb is called exactly once, after the batch is durable, or with res->err set
 * when it could not be stored within ingress.store_timeout_ms (REST) — MQTT items are retried until
 * stored and never time out. Permanent errors (a bug in the function library) become RES_FAILED with
 * notify "INTERNAL" and err 0. */
void ingest_accept(ingress_t *in, const accept_req_t *a, store_cb *cb, void *data);
/* hold (MQTT): retried until stored, like accept_req_t's hold; REST passes 0. */
void ingest_ack(ingress_t *in, const char *dev, int64_t id, int status, int hold, store_cb *cb, void *data);

/* ingest.c: creates and frees the batcher. */
struct ingest *ingest_new(ingress_t *in);
void ingest_free(struct ingest *ig);

/* ingest.c: forgets the settled receipt acks it remembers. Called whenever the Redis connection is
 * lost: a Redis restored from an older backup hands out ids again, and a remembered (device, id) must
 * then not swallow the ack of a new message that reuses the id. */
void ingest_forget_acks(struct ingest *ig);

/* ingest.c: items queued or in a Redis call. */
size_t ingest_pending(const struct ingest *ig);

/* ingest.c: the send policy of the configuration (REST pull uses it). */
void ingest_policy(ingress_t *in, dr_store_policy_t *pol);

/* ingest.c: publishes the status changes a store call claimed (callers wake shard owners themselves). */
void ingest_after_commit(ingress_t *in, const dr_note_t *notes, size_t n);

/* ingest.c: wakes the owner of a shard (NATS, at most once). */
void ingest_wake(ingress_t *in, uint32_t shard);

/* mqtt_in.c: the MQTT message callback (loop thread). */
void mqtt_in_on_message(void *data, const dr_mqttc_msg_t *msg);

/* mqtt_in.c: tells a producer about rejected input on producer/error/{producerDeviseId}. */
void mqtt_in_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code,
                          const char *message);

/* ingest.c: the message sent with a store_result_t's notify code. */
const char *ingest_notify_text(const char *code);

#endif
