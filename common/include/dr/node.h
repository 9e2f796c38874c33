/* What every Drover service process has: settings, the loop, a Redis client, the NATS bus, signal
 * handling, one cron timer and the periodic metrics flush.
 *
 * Life cycle: dr_node_init -> service wiring -> dr_node_run (returns when everything is closed) ->
 * dr_node_dispose. SIGTERM/SIGINT call the service's stop callback, which finishes its own work
 * (possibly asynchronously) and then calls dr_node_close. A second signal exits at once. SIGHUP
 * reloads the configuration (dr_settings_reload: what can change at run time does; the log names the
 * rest).
 */
#ifndef DR_NODE_H
#define DR_NODE_H

#include <uv.h>

#include "dr/bus.h"
#include "dr/loop.h"
#include "dr/redis.h"
#include "dr/settings.h"

typedef struct dr_node dr_node_t;
typedef void dr_node_cb(dr_node_t *n, void *data);

struct dr_node {
    /* public, read-only after init */
    dr_settings_t cfg;
    dr_loop_t loop;
    dr_redis_t *redis;
    dr_bus_t *bus;
    const char *service;
    int stopping;
    /* private */
    uv_signal_t sigterm, sigint, sighup;
    int argc;             /* as given to dr_node_init: SIGHUP loads the configuration again */
    char **argv;
    uv_timer_t cron;
    uv_timer_t reaper;    /* closes library handles left open, shortly after dr_node_close */
    uv_timer_t watchdog;  /* ends the loop if a handle still outlives the reaper */
    int watchdog_started;
    int64_t last_flush;
    dr_node_cb *on_cron, *on_stop;
    void *cb_data;
    int closed;
};

/* Loads settings and opens loop, Redis (not yet connected) and the bus. On failure prints the reason
 * to stderr and returns 1 (bad configuration); n is then disposed already. */
int dr_node_init(dr_node_t *n, const char *service, int argc, char **argv);

/* on_cron runs every period_ms on the loop; on_stop runs once on the first SIGTERM/SIGINT. */
void dr_node_set_callbacks(dr_node_t *n, int period_ms, dr_node_cb *on_cron, dr_node_cb *on_stop, void *data);

/* Runs the loop until dr_node_close() has closed everything. */
void dr_node_run(dr_node_t *n);

/* Closes Redis, the bus, signals and the cron timer. Loop thread. */
void dr_node_close(dr_node_t *n);

/* Frees what init allocated. After dr_node_run returned. */
void dr_node_dispose(dr_node_t *n);

#endif
