/* Service process scaffolding (see dr/node.h). */
#define DR_MODULE "common/node"

#include <nats/nats.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/metrics.h"
#include "dr/node.h"

static void on_signal(uv_signal_t *h, int signum)
{
    dr_node_t *n = h->data;
    if (n->stopping) {
        dr_log(DR_LOG_WARNING, "event=second_signal signal=%d action=exit_now", signum);
        _exit(1);
    }
    n->stopping = 1;
    dr_log(DR_LOG_NOTICE, "event=stopping signal=%d", signum);
    if (n->on_stop)
        n->on_stop(n, n->cb_data);
    else
        dr_node_close(n);
}

/* SIGHUP: the configuration (file, environment, flags, as at start) is read again; what a running
 * node reads on every use takes effect now, the rest is named as needing a restart. */
static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    dr_node_t *n = h->data;
    dr_settings_t fresh;
    char err[DR_ERR_LEN], restart[512];
    int level = dr_log_level; /* loading sets the level: keep ours if the file turns out bad */
    if (dr_settings_load(&fresh, n->service, n->argc, n->argv, err) != 0) {
        dr_log_level = level;
        dr_log(DR_LOG_WARNING, "event=reload_failed error=\"%s\" action=keep_running_configuration", err);
        dr_settings_dispose(&fresh);
        return;
    }
    int applied = dr_settings_reload(&n->cfg, &fresh, restart, sizeof(restart));
    dr_settings_dispose(&fresh);
    dr_log(DR_LOG_NOTICE, "event=reloaded applied=%d needs_restart=\"%s\"", applied, restart);
}

static void on_cron(uv_timer_t *t)
{
    dr_node_t *n = t->data;
    int64_t now = dr_mono_ms();
    if (now - n->last_flush >= n->cfg.metrics_flush_ms && dr_redis_ready(n->redis)) {
        n->last_flush = now;
        dr_metrics_flush(n->redis, n->cfg.redis_prefix, n->cfg.node_id);
    }
    if (n->on_cron && !n->closed)
        n->on_cron(n, n->cb_data);
}

int dr_node_init(dr_node_t *n, const char *service, int argc, char **argv)
{
    char err[DR_ERR_LEN];
    memset(n, 0, sizeof(*n));
    n->service = service;
    dr_log_set_service(service);
    if (dr_settings_load(&n->cfg, service, argc, argv, err) != 0) {
        fprintf(stderr, "drover-%s: %s\n", service, err);
        dr_settings_dispose(&n->cfg);
        return 1;
    }
    if (dr_loop_init(&n->loop) != 0) {
        fprintf(stderr, "drover-%s: cannot create the event loop\n", service);
        dr_settings_dispose(&n->cfg);
        return 1;
    }
    dr_redis_options_t ro = {
        .host = n->cfg.redis_host,
        .port = (int)n->cfg.redis_port,
        .password = n->cfg.redis_password,
        .timeout_ms = (int)n->cfg.redis_timeout_ms,
    };
    n->redis = dr_redis_new(&n->loop, &ro);
    dr_bus_options_t bo = {
        .url = n->cfg.nats_url,
        .user = n->cfg.nats_user,
        .password = n->cfg.nats_password,
        .name = n->cfg.node_id,
        .tls = (int)n->cfg.nats_tls,
        .tls_ca = n->cfg.nats_tls_ca,
        .tls_cert = n->cfg.nats_tls_cert,
        .tls_key = n->cfg.nats_tls_key,
        .tls_server_name = n->cfg.nats_tls_server_name,
        .tls_skip_verify = !n->cfg.nats_tls_verify,
    };
    if (dr_bus_open(&n->loop, &bo, &n->bus, err) != 0) {
        fprintf(stderr, "drover-%s: %s\n", service, err);
        dr_redis_free(n->redis);
        dr_loop_close(&n->loop);
        uv_run(n->loop.uv, UV_RUN_DEFAULT);
        uv_loop_close(n->loop.uv);
        dr_settings_dispose(&n->cfg);
        return 1;
    }
    uv_signal_init(n->loop.uv, &n->sigterm);
    uv_signal_init(n->loop.uv, &n->sigint);
    n->sigterm.data = n->sigint.data = n;
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);
    uv_signal_start(&n->sigint, on_signal, SIGINT);
    n->argc = argc;
    n->argv = argv;
    uv_signal_init(n->loop.uv, &n->sighup);
    n->sighup.data = n;
    uv_signal_start(&n->sighup, on_sighup, SIGHUP);
    uv_timer_init(n->loop.uv, &n->cron);
    n->cron.data = n;
    dr_log(DR_LOG_NOTICE, "event=starting node=%s version=%s redis=%s:%lld nats=%s mqtt=%s shards=%lld", n->cfg.node_id,
           "0.1.0", n->cfg.redis_host, (long long)n->cfg.redis_port, n->cfg.nats_url, n->cfg.mqtt_url,
           (long long)n->cfg.shards);
    return 0;
}

void dr_node_set_callbacks(dr_node_t *n, int period_ms, dr_node_cb *cron, dr_node_cb *stop, void *data)
{
    n->on_cron = cron;
    n->on_stop = stop;
    n->cb_data = data;
    uv_timer_start(&n->cron, on_cron, (uint64_t)period_ms, (uint64_t)period_ms);
}

void dr_node_run(dr_node_t *n)
{
    uv_run(n->loop.uv, UV_RUN_DEFAULT);
}

static void on_watchdog(uv_timer_t *t)
{
    dr_log(DR_LOG_WARNING, "event=exit_with_open_handles reason=\"handles still open after the shutdown grace period\"");
    uv_stop(t->loop);
}

static void close_foreign(uv_handle_t *h, void *arg)
{
    dr_node_t *n = arg;
    if (!uv_is_closing(h) && h != (uv_handle_t *)&n->watchdog && h != (uv_handle_t *)&n->reaper)
        uv_close(h, NULL);
}

/* Runs one moment after dr_node_close, so libraries that close their handles late (hiredis frees its
 * context after the callback that asked for it returns) have done so: what is left now belongs to
 * libraries that cannot shut down on their own (h2o's timers, client sockets that did not go away). */
static void on_reap(uv_timer_t *t)
{
    dr_node_t *n = t->data;
    uv_walk(n->loop.uv, close_foreign, n);
    uv_close((uv_handle_t *)&n->reaper, NULL);
    uv_timer_init(n->loop.uv, &n->watchdog);
    uv_timer_start(&n->watchdog, on_watchdog, 3000, 0);
    uv_unref((uv_handle_t *)&n->watchdog);
    n->watchdog_started = 1;
}

void dr_node_close(dr_node_t *n)
{
    if (n->closed)
        return;
    n->closed = 1;
    uv_timer_stop(&n->cron);
    uv_close((uv_handle_t *)&n->cron, NULL);
    uv_close((uv_handle_t *)&n->sigterm, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    uv_close((uv_handle_t *)&n->sighup, NULL);
    dr_bus_free(n->bus);
    n->bus = NULL;
    dr_redis_free(n->redis);
    n->redis = NULL;
    dr_loop_close(&n->loop);
    uv_timer_init(n->loop.uv, &n->reaper);
    n->reaper.data = n;
    uv_timer_start(&n->reaper, on_reap, 50, 0);
}

void dr_node_dispose(dr_node_t *n)
{
    if (n->watchdog_started)
        uv_close((uv_handle_t *)&n->watchdog, NULL);
    uv_run(n->loop.uv, UV_RUN_NOWAIT);
    uv_loop_close(n->loop.uv);
    nats_Close();
    dr_log(DR_LOG_NOTICE, "event=stopped node=%s", n->cfg.node_id);
    dr_settings_dispose(&n->cfg);
}
