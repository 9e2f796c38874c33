/* Event bus between nodes over core NATS.
 *
 * Core NATS is at-most-once, so everything sent here is a shortcut ("shard 12 has work"); the same
 * information is always recoverable from Redis by the periodic scan. The bus therefore never blocks the
 * caller and never reports delivery: publishing while disconnected is simply dropped and counted.
 * The connection is retried forever in the background (nats.c's own threads).
 */
#ifndef DR_BUS_H
#define DR_BUS_H

#include <stddef.h>

#include "dr/loop.h"

typedef struct dr_bus dr_bus_t;

/* Message callback: runs on the loop thread; subject and data are valid during the call only. */
typedef void dr_bus_msg_cb(void *data, const char *subject, const char *payload, size_t len);

typedef struct {
    const char *url;      /* one URL or a comma-separated list */
    const char *user;     /* empty: none */
    const char *password;
    const char *name;     /* connection name shown by the server */
} dr_bus_options_t;

/* Starts connecting (never fails because the server is down: it keeps retrying). Returns 0 and sets
 * *out, or DR_EINVAL with err filled on bad options. */
int dr_bus_open(dr_loop_t *loop, const dr_bus_options_t *opt, dr_bus_t **out, char *err);

/* Publishes; any thread. Returns 0, or DR_EUNAVAIL when not connected (the event is dropped). */
int dr_bus_publish(dr_bus_t *b, const char *subject, const void *payload, size_t len);

/* Subscribes; cb runs on the loop thread. Returns 0 or DR_EUNAVAIL. Loop thread. */
int dr_bus_subscribe(dr_bus_t *b, const char *subject, dr_bus_msg_cb *cb, void *data);

/* 1 while connected. */
int dr_bus_connected(dr_bus_t *b);

/* Closes the connection and frees b; no callback runs after it returns. Loop thread. */
void dr_bus_free(dr_bus_t *b);

#endif
