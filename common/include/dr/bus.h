/* Event bus between nodes over core NATS.
 *
 * Core NATS is at-most-once, so everything sent here is a shortcut ("shard 12 has work"); the same
 * information is always recoverable from Redis by the periodic scan. The bus therefore never blocks the
 * caller and never reports delivery: an event that cannot be sent at once is dropped and counted.
 * The connection is retried forever in the background (nats.c's own threads).
 *
 * Publishing never touches the socket on the caller's thread. dr_bus_publish() copies the event into a
 * bounded queue and returns; one publisher thread per bus hands the queue to nats.c, whose flusher
 * thread writes everything published within about a millisecond (in practice, all the events of one
 * loop turn) in one socket write. Every write to the server has a deadline
 * (dr_bus_options_t.write_deadline_ms): a server that stops reading (SIGSTOP, a partition, a full
 * socket buffer) costs the publisher thread at most that long, after which nats.c drops the connection
 * and reconnects. Meanwhile the queue fills and further events are dropped.
 *
 * Dropping rule: an event is dropped, and dr_bus_publish() returns an error, when the bus is not
 * connected (DR_EUNAVAIL), when DR_BUS_QUEUE_MAX (or dr_bus_options_t.queue_max) events are already
 * waiting (DR_EBUSY: the newest event is the one dropped) or when the bus is closing (DR_ECLOSED). The
 * caller counts those in the `bus_dropped` metric. Events dropped after they were queued (the write
 * failed, or the connection was lost before their turn) are counted in `bus_dropped` by the bus itself.
 */
#ifndef DR_BUS_H
#define DR_BUS_H

#include <stddef.h>

#include "dr/loop.h"

/* Default bound of the publish queue, in events. Events are at most a few hundred bytes (a shard
 * number, a status event), so a full queue holds about 1 MB; at 1,000 events/s it covers the four
 * seconds a stalled server can hold the publisher (two write deadlines) before events are dropped. */
#define DR_BUS_QUEUE_MAX 4096

/* Default write deadline in milliseconds: how long one write to the server may wait for socket space. */
#define DR_BUS_WRITE_DEADLINE_MS 2000

typedef struct dr_bus dr_bus_t;

/* Message callback: runs on the loop thread; subject and data are valid during the call only. */
typedef void dr_bus_msg_cb(void *data, const char *subject, const char *payload, size_t len);

typedef struct {
    const char *url;       /* one URL or a comma-separated list */
    const char *user;      /* empty: none */
    const char *password;
    const char *name;      /* connection name shown by the server */
    int queue_max;         /* events waiting for the publisher thread; 0: DR_BUS_QUEUE_MAX */
    int write_deadline_ms; /* deadline of one socket write; 0: DR_BUS_WRITE_DEADLINE_MS */
    /* TLS: used when tls is set (the URLs are then tls://). Files are loaded by dr_bus_open. */
    int tls;
    const char *tls_ca;          /* PEM CA bundle; NULL or "": the system store */
    const char *tls_cert;        /* client certificate chain (PEM); NULL or "": none */
    const char *tls_key;         /* its private key (PEM); required with tls_cert */
    const char *tls_server_name; /* name the server certificate must carry; NULL or "": host of the first URL */
    int tls_skip_verify;         /* 1: no server certificate check at all (tests only) */
} dr_bus_options_t;

/* Starts connecting (never fails because the server is down: it keeps retrying) and starts the
 * publisher thread. opt and its strings are borrowed for the call only. Returns 0 and sets *out, or
 * DR_EINVAL with err filled on bad options (including unreadable TLS files), or DR_EIO with err filled
 * when the thread cannot start. Loop thread. */
int dr_bus_open(dr_loop_t *loop, const dr_bus_options_t *opt, dr_bus_t **out, char *err);

/* Queues one event for publishing and returns at once, without waiting for the network; any thread
 * (Drover calls it from the loop). subject and payload are borrowed for the call only (copied).
 * Returns 0 when queued (sending it is still at most once), or, with the event dropped: DR_EUNAVAIL when
 * not connected, DR_EBUSY when the queue is full, DR_ECLOSED once dr_bus_free() began, DR_ETOOBIG
 * when len does not fit nats.c's int. */
int dr_bus_publish(dr_bus_t *b, const char *subject, const void *payload, size_t len);

/* Subscribes; cb runs on the loop thread. Returns 0 or DR_EUNAVAIL. Loop thread, at start-up: it
 * queues the SUB in nats.c's buffer and may wait up to one write deadline for a stalled server. */
int dr_bus_subscribe(dr_bus_t *b, const char *subject, dr_bus_msg_cb *cb, void *data);

/* 1 while connected. Any thread. */
int dr_bus_connected(dr_bus_t *b);

/* Stops the publisher thread (events still queued are given to nats.c while the connection is up and
 * the first failure drops the rest), closes the connection and frees b; no callback runs after it
 * returns. Bounded even when the server is stopped: about two write deadlines for the publisher, plus
 * nats.c's close (a 500 ms flush, one write deadline) and at most 3 s for its last callback. If the
 * publisher thread has not returned by then, b is abandoned (logged) rather than freed under it.
 * Accepts NULL. Loop thread. */
void dr_bus_free(dr_bus_t *b);

#endif
