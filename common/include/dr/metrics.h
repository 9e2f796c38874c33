/* Process counters.
 *
 * Counters are incremented from any thread (atomics) and flushed periodically, as absolute values,
 * into the Redis hash <prefix>metrics:<node.id> so operators and tests can read every node's figures
 * in one place. Counter names are part of the operator interface (docs/operations.md).
 */
#ifndef DR_METRICS_H
#define DR_METRICS_H

#include <stdint.h>

#include "dr/redis.h"

#define DR_METRICS(X)                                                                                        \
    X(PRODUCER_ACCEPTED, "producer_accepted")   /* new message stored */                                  \
    X(PRODUCER_DUPLICATE, "producer_duplicate") /* idempotent retry answered with the original */         \
    X(PRODUCER_REJECTED, "producer_rejected")   /* invalid producer input */                              \
    X(PRODUCER_CONFLICT, "producer_conflict")   /* idempotency key reused for another command */          \
    X(ACK_APPLIED, "ack_applied")               /* ack moved a status forward */                          \
    X(ACK_IGNORED, "ack_ignored")               /* duplicate, stale or regressing ack */                  \
    X(ACK_UNKNOWN_ID, "ack_unknown_id")                                                                   \
    X(ACK_WRONG_DEVICE, "ack_wrong_device")     /* ack for a message addressed to another device */       \
    X(ACK_REJECTED, "ack_rejected")             /* malformed ack */                                       \
    X(ACK_DROPPED, "ack_dropped")               /* receipt ack lost to an outage: re-sent */              \
    X(SENT, "sent")                             /* first send of a message to its device */               \
    X(RESENT, "resent")                         /* re-send with the same id */                            \
    X(EXPIRED, "expired")                                                                                 \
    X(FAILED, "failed")                                                                                   \
    X(NOTIFIED, "notified")                     /* status notifications published */                      \
    X(PUBLISH_FAILED, "publish_failed")         /* MQTT publishes that failed or timed out */             \
    X(NOTIFY_REFUSED, "notify_refused")         /* notification to a topic no broker accepts: skipped */  \
    X(SEND_REFUSED, "send_refused")             /* send to a topic no broker accepts: message FAILED */   \
    X(REDIS_ERRORS, "redis_errors")                                                                       \
    X(FENCED, "fenced")                         /* script refused: lease lost */                          \
    X(BUS_DROPPED, "bus_dropped")               /* NATS events not sent (bus down) */

#define DR_METRIC_ENUM(id, name) DR_M_##id,
enum { DR_METRICS(DR_METRIC_ENUM) DR_M_COUNT };
#undef DR_METRIC_ENUM

/* Adds n to counter id. Any thread. */
void dr_metrics_add(int id, int64_t n);
static inline void dr_metrics_inc(int id)
{
    dr_metrics_add(id, 1);
}

/* Current value of counter id. */
int64_t dr_metrics_get(int id);

/* Writes all counters to <prefix>metrics:<node>, which expires a week after the last flush (a node
 * gone for good does not leave it forever). Loop thread; errors are ignored (next flush). */
void dr_metrics_flush(dr_redis_t *r, const char *prefix, const char *node);

#endif
