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
    dr_redis_script_t *s_accept, *s_ack;
    int mqtt_started;
    char wake_subject[96];
    /* Shutdown hand-shake with callbacks running on paho's receive thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stopping;  /* new messages are parked instead of processed */
    atomic_int busy;      /* callbacks processing a message right now */
    atomic_int parked;    /* callbacks holding a message that must not be acknowledged */
    int released;         /* parked callbacks may return: MQTT is disconnected */
    uv_timer_t stop_timer;
    int64_t stop_deadline;
} ingress_t;

/* What a paho callback asks the loop to do, and the answer it waits for. */
enum { JOB_ACCEPT, JOB_ACK };
enum { RES_PENDING, RES_STORED, RES_DUPLICATE, RES_CONFLICT, RES_IGNORED, RES_UNKNOWN_ID, RES_WRONG_DEVICE, RES_FAILED };

typedef struct {
    ingress_t *in;
    int kind;
    char *dev;             /* owned */
    uint32_t shard;
    dr_producer_msg_t msg; /* JOB_ACCEPT, owned */
    uint64_t fingerprint;
    char token[33];        /* random request token: makes our own retries idempotent */
    dr_ack_t ack;          /* JOB_ACK */
    /* answer, guarded by in->mu */
    int done;
    int err;               /* 0, or a DR_E* code for transient failures: retry */
    int result;            /* RES_* */
    char id[24];
    char status[32];
} job_t;

/* mqtt_in.c: the paho message callback. */
void ingress_on_message(void *data, const char *topic, size_t topic_len, const char *payload, size_t len, int dup);

/* store.c: runs a job on the loop (posted from the paho thread). */
void ingress_run_job(void *arg);

/* store.c: tells a producer about rejected input on producer/error/{producerDeviseId}. Loop thread. */
void ingress_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code, const char *message);

/* Posts an error notification from any thread (copies its arguments). */
void ingress_post_error(ingress_t *in, const dr_codec_err_t *err);

#endif
