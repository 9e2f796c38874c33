/* Process counters and histograms.
 *
 * Counters are incremented from any thread (atomics) and flushed periodically, as absolute values,
 * into the Redis hash <prefix>metrics:<node.id> so operators and tests can read every node's figures
 * in one place. Counter names are part of the operator interface (docs/operations.md).
 *
 * The same counters, per-status counts and the histograms below are also written in the Prometheus
 * text format by dr_metrics_expose (families drover_*, docs/operations.md "Metrics"); each service
 * adds its own gauges after them. Counters that have a transport label keep the total in the
 * original counter (its hash name is unchanged) and the REST share in a *_REST twin that is
 * incremented right after it; MQTT is the difference. Both are touched on the ingress loop thread,
 * which is also the thread that answers scrapes there, so a scrape never sees one without the other.
 */
#ifndef DR_METRICS_H
#define DR_METRICS_H

#include <stdint.h>

#include "dr/prom.h"
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
    X(BUS_DROPPED, "bus_dropped")               /* NATS events not sent (bus down) */                     \
    X(PRODUCER_ACCEPTED_REST, "producer_accepted_rest")   /* REST share of producer_accepted */           \
    X(PRODUCER_DUPLICATE_REST, "producer_duplicate_rest") /* REST share of producer_duplicate */          \
    X(PRODUCER_REJECTED_REST, "producer_rejected_rest")   /* REST share of producer_rejected */

/* Version reported as drover_build_info{version=...} (the project version in CMakeLists.txt). */
#define DR_BUILD_VERSION "0.1.0"

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

/* Histograms, in seconds or items (the family name says which). */
enum {
    DR_H_REDIS_CALL,      /* drover_redis_call_seconds: command sent -> reply (dr_redis_t) */
    DR_H_INGEST_BATCH,    /* drover_ingest_batch_size: items per accept or ack call */
    DR_H_RECEIPT,         /* drover_receipt_seconds: MQTT producer message arrived -> receipt released */
    DR_H_REST_ACCEPT,     /* drover_rest_accept_seconds: REST message queued -> stored (answered) */
    DR_H_SEND_CONFIRM,    /* drover_send_confirm_seconds: send published -> broker PUBACK */
    DR_H_ACCEPT_SEND,     /* drover_accept_to_send_seconds: accepted -> first send recorded (Redis clock) */
    DR_H_ACCEPT_DELIVERED, /* drover_accept_to_delivered_seconds: accepted -> first ack stored */
    DR_H_COUNT
};

/* Counts one observation v into histogram id. Any thread. */
void dr_metrics_observe(int id, double v);

/* Counts n status changes to status st (dr_status_t), for drover_status_changes_total. Count each
 * change once, where the call that made it replied. Any thread. */
void dr_metrics_status(int st, int64_t n);

/* Appends every common family (counters, status changes, histograms, build info) to p. version is the
 * build's version string. Any thread, though transport splits are exact only on the loop thread. */
void dr_metrics_expose(dr_prom_t *p, const char *version);

/* Gauges a service publishes beside its counters (the dispatcher: the figures of its last backlog
 * round), flushed as gauge_<name> so any node can read the cluster's figures from Redis. Unlike the
 * counters they describe "now": a reader sums them only over hashes whose flushed_at_ms is recent. */
#define DR_GAUGES(X)                                                                                         \
    X(QUEUE_DEPTH, "gauge_queue_depth")             /* queued messages of the shards held (in flight too) */ \
    X(IN_FLIGHT, "gauge_in_flight")                 /* sent, not yet acknowledged */                         \
    X(SCHEDULED, "gauge_scheduled")                 /* waiting for their not-before time */                  \
    X(OLDEST_PENDING_MS, "gauge_oldest_pending_ms") /* age of the oldest queued message; -1: none */         \
    X(SHARDS_HELD, "gauge_shards_held")             /* shard leases held when the round started */           \
    X(BACKLOG_AT_MS, "gauge_backlog_at_ms")         /* wall-clock ms when the round finished */

#define DR_GAUGE_ENUM(id, name) DR_GAUGE_##id,
enum { DR_GAUGES(DR_GAUGE_ENUM) DR_GAUGE_COUNT };
#undef DR_GAUGE_ENUM

/* Field of every metrics hash: the writer's wall clock (ms since the epoch) at the flush. */
#define DR_METRICS_FLUSHED_AT "flushed_at_ms"

/* Sets gauge id to v. Gauges are flushed only once a process has set one, so services without any
 * (the ingress) write no gauge fields. Any thread. */
void dr_metrics_gauge_set(int id, int64_t v);

/* Writes all counters, the gauges once set and flushed_at_ms to <prefix>metrics:<node>, which
 * expires a week after the last flush (a node gone for good does not leave it forever). Loop thread;
 * errors are ignored (next flush). */
void dr_metrics_flush(dr_redis_t *r, const char *prefix, const char *node);

#endif
