/* Cross-thread post queue for the libuv loop (see dr/loop.h). */
#include <time.h>

#include "dr/err.h"
#include "dr/loop.h"
#include "dr/mem.h"

struct dr_loop_item {
    dr_loop_fn *fn;
    void *arg;
    dr_loop_item_t *next;
};

static void on_async(uv_async_t *h)
{
    dr_loop_drain(h->data);
}

int dr_loop_init(dr_loop_t *l)
{
    l->uv = uv_default_loop();
    l->head = l->tail = NULL;
    l->closed = 0;
    l->linger_on = l->linger_us = l->linger_turns = l->linger_busy = 0;
    l->linger_window = 0;
    pthread_mutex_init(&l->mu, NULL);
    if (uv_async_init(l->uv, &l->async, on_async) != 0)
        return DR_EIO;
    l->async.data = l;
    return 0;
}

int dr_loop_post(dr_loop_t *l, dr_loop_fn *fn, void *arg)
{
    dr_loop_item_t *it = dr_malloc(sizeof(*it));
    it->fn = fn;
    it->arg = arg;
    it->next = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        free(it);
        return DR_ECLOSED;
    }
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    uv_async_send(&l->async);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void dr_loop_drain(dr_loop_t *l)
{
    for (;;) {
        pthread_mutex_lock(&l->mu);
        dr_loop_item_t *it = l->head;
        l->head = l->tail = NULL;
        pthread_mutex_unlock(&l->mu);
        if (it == NULL)
            return;
        while (it) {
            dr_loop_item_t *next = it->next;
            it->fn(it->arg);
            free(it);
            it = next;
        }
    }
}

void dr_loop_close(dr_loop_t *l)
{
    pthread_mutex_lock(&l->mu);
    l->closed = 1;
    pthread_mutex_unlock(&l->mu);
    dr_loop_drain(l);
    uv_close((uv_handle_t *)&l->async, NULL);
    if (l->linger_on) {
        l->linger_on = 0;
        uv_close((uv_handle_t *)&l->linger, NULL);
    }
}

/* The wait is the last thing a turn does before it polls (a uv_prepare handle: libuv runs the prepare
 * handles started last first, so what other modules flush in that phase, such as the Redis client's
 * commands of the turn, is written before the wait; what they flush earlier, in the idle phase, too).
 * Each turn counts; the window of DR_LOOP_WINDOW_MS that ended decides whether the turns of the next
 * one wait. A turn that waited is slower, so a loop kept busy by a steady stream of input keeps
 * waiting (at most about 1000 / us * DR_LOOP_WINDOW_MS turns fit a window), and one whose input stops
 * finds its next poll blocking and falls below the threshold. The wait is a plain sleep of the loop
 * thread: nothing else runs on it meanwhile, and the kernel keeps what arrives for the next poll. */
static void on_linger(uv_prepare_t *h)
{
    dr_loop_t *l = h->data;
    uint64_t window = uv_now(l->uv) / DR_LOOP_WINDOW_MS;
    if (window != l->linger_window) {
        l->linger_busy = window == l->linger_window + 1 && l->linger_turns >= DR_LOOP_BUSY_TURNS;
        l->linger_turns = 0;
        l->linger_window = window;
    }
    l->linger_turns++;
    if (l->linger_busy) {
        struct timespec ts = {0, (long)l->linger_us * 1000};
        nanosleep(&ts, NULL);
    }
}

void dr_loop_linger(dr_loop_t *l, int us)
{
    if (!l->linger_on) {
        uv_prepare_init(l->uv, &l->linger);
        l->linger.data = l;
        uv_unref((uv_handle_t *)&l->linger);
        l->linger_on = 1;
    }
    l->linger_us = us;
    if (us > 0)
        uv_prepare_start(&l->linger, on_linger);
    else
        uv_prepare_stop(&l->linger);
}

int64_t dr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dr_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
