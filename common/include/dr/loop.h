/* The service event loop and its cross-thread post queue.
 *
 * paho.mqtt.c and nats.c call back on their own threads. Such callbacks copy what they need and call
 * dr_loop_post(), which queues a function for the loop thread and wakes it with uv_async_send()
 * (coalesced: the loop drains the whole queue each wake-up).
 */
#ifndef DR_LOOP_H
#define DR_LOOP_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

typedef void dr_loop_fn(void *arg);

typedef struct dr_loop_item dr_loop_item_t;

typedef struct {
    uv_loop_t *uv;          /* public, read-only: the libuv loop */
    /* private */
    uv_async_t async;
    pthread_mutex_t mu;
    dr_loop_item_t *head, *tail;
    int closed;
    uv_prepare_t linger;    /* see dr_loop_linger */
    int linger_us, linger_turns, linger_busy, linger_on;
    uint64_t linger_window;
} dr_loop_t;

/* Initialises l on the default libuv loop. Returns 0 or DR_EIO. Loop thread only. */
int dr_loop_init(dr_loop_t *l);

/* Queues fn(arg) to run on the loop thread. Any thread. Returns 0, or DR_ECLOSED after
 * dr_loop_close() began (fn is then not called and arg stays the caller's). */
int dr_loop_post(dr_loop_t *l, dr_loop_fn *fn, void *arg);

/* Runs everything queued so far, on the calling (loop) thread. */
void dr_loop_drain(dr_loop_t *l);

/* Refuses further posts, runs what is queued, closes the async handle. Loop thread only. */
void dr_loop_close(dr_loop_t *l);

/* While the loop is busy (DR_LOOP_BUSY_TURNS or more turns in the last DR_LOOP_WINDOW_MS), it waits us
 * microseconds at the end of each turn, just before it polls again, so that what arrives meanwhile is read
 * and handled in one turn: fewer wake-ups of the process and larger batches, for at most us of
 * added delay per turn. A quiet loop never waits. 0 turns it off (the default). Loop thread only. */
#define DR_LOOP_BUSY_TURNS 8
#define DR_LOOP_WINDOW_MS 10
void dr_loop_linger(dr_loop_t *l, int us);

/* Milliseconds since the epoch (wall clock) and monotonic milliseconds. */
int64_t dr_now_ms(void);
int64_t dr_mono_ms(void);

#endif
