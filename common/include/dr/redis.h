/* Asynchronous Redis client on the service's libuv loop (hiredis 0.14 + its libuv adapter).
 *
 * hiredis 0.14 has no async timeouts, no reconnection and no script cache handling, so this wrapper
 * adds them: state CONNECTING -> (AUTH, SCRIPT LOAD) -> READY -> DISCONNECTED -> CONNECTING ...,
 * a per-command timeout that drops the connection when Redis stops answering, automatic reconnection
 * with back-off, and scripts loaded on every connection before the client reports READY.
 * Everything here runs on the loop thread.
 */
#ifndef DR_REDIS_H
#define DR_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "dr/loop.h"

typedef struct dr_redis dr_redis_t;
typedef struct dr_redis_script dr_redis_script_t;

/* Reply callback. reply is borrowed for the duration of the call (NULL when err is DR_EUNAVAIL,
 * DR_ETIMEDOUT or DR_ECLOSED); err is 0, or DR_EREDIS with reply->str holding Redis's message.
 * Called exactly once for every command that was accepted. */
typedef void dr_redis_cb(dr_redis_t *r, redisReply *reply, int err, void *data);

/* Called when the client becomes READY (ready=1) or loses the connection (ready=0). */
typedef void dr_redis_state_cb(dr_redis_t *r, int ready, void *data);

typedef struct {
    const char *host;
    int port;
    const char *password;   /* empty or NULL: no AUTH */
    int timeout_ms;         /* connect and command timeout */
} dr_redis_options_t;

/* Creates a client and starts connecting. Strings in opt are copied. */
dr_redis_t *dr_redis_new(dr_loop_t *loop, const dr_redis_options_t *opt);

/* Registers a Redis function library (body borrowed; must outlive r), loaded with FUNCTION LOAD
 * REPLACE on every connection before the client reports READY. Call before the first READY.
 * gen_fn (NULL: none) names a function of the library that returns its generation, an integer raised
 * whenever the data a library writes would be misread by older ones, and generation is this body's.
 * Before loading, the client calls gen_fn: when the library Redis holds is of a newer generation it is
 * left in place, the handshake fails (logged as event=redis_library_newer) and the client retries
 * with back-off, never reporting READY, so an older node cannot put an older library over newer data.
 * A library without gen_fn (older, or none) is replaced. */
void dr_redis_add_library(dr_redis_t *r, const char *name, const char *body, const char *gen_fn,
                          long long generation);

void dr_redis_on_state(dr_redis_t *r, dr_redis_state_cb *cb, void *data);

/* 1 when connected, authenticated and scripts loaded. */
int dr_redis_ready(const dr_redis_t *r);

/* Sends a command given as argv (binary safe). Returns 0 (cb will be called once) or DR_EUNAVAIL when
 * not READY (cb not called). argv is copied before returning. */
int dr_redis_cmd(dr_redis_t *r, dr_redis_cb *cb, void *data, int argc, const char **argv, const size_t *lens);

/* FCALL fn nkeys keys... args... (args binary safe when arglens is given). Same contract as
 * dr_redis_cmd. A "Function not found" reply (the library was flushed behind our back) makes the
 * client reconnect and reload it; the caller sees DR_EREDIS and retries. */
int dr_redis_fcall(dr_redis_t *r, dr_redis_cb *cb, void *data, const char *fn, int nkeys, const char **keys, int nargs,
                   const char **args, const size_t *arglens);

/* Closes the connection; pending callbacks get DR_ECLOSED. Frees r. */
void dr_redis_free(dr_redis_t *r);

#endif
