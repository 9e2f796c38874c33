/* drover-dispatcher: argv -> config -> wiring -> loop -> teardown. */
#define DR_MODULE "dispatcher/main"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/scripts.h"
#include "dispatcher.h"

static dispatcher_t g;

void dispatcher_base_args(dispatcher_t *d, char now_s[24], char ret_s[24])
{
    snprintf(now_s, 24, "%lld", (long long)dr_now_ms());
    snprintf(ret_s, 24, "%lld", (long long)d->node.cfg.retention_s);
}

/* NATS wake-up: "<shard>" has new work or a freed window slot. A shortcut only: the cron scan finds
 * the same work a tick later if this message is lost. */
static void on_wake(void *data, const char *subject, const char *payload, size_t len)
{
    (void)subject;
    dispatcher_t *d = data;
    char buf[16];
    if (len == 0 || len >= sizeof(buf))
        return;
    memcpy(buf, payload, len);
    buf[len] = '\0';
    char *end;
    unsigned long sh = strtoul(buf, &end, 10);
    if (*end != '\0' || sh >= d->nshards || d->shards[sh].epoch == 0)
        return;
    dispatch_shard(d, (uint32_t)sh);
    outbox_drain(d, (uint32_t)sh);
}

static void on_cron(dr_node_t *n, void *data)
{
    (void)n;
    dispatcher_t *d = data;
    if (d->node.stopping)
        return;
    lease_cron(d);
    dispatch_cron(d);
    outbox_cron(d);
}

static void finish_stop_now(void *arg)
{
    dispatcher_t *d = arg;
    dr_mqtt_free(d->mqtt);
    d->mqtt = NULL;
    dr_node_close(&d->node);
}

/* Called from the lease release's Redis callback: leave the callback before closing Redis. */
static void finish_stop(dispatcher_t *d)
{
    if (dr_loop_post(&d->node.loop, finish_stop_now, d) != 0)
        finish_stop_now(d);
}

static void on_stop_poll(uv_timer_t *t)
{
    dispatcher_t *d = t->data;
    if (d->releasing)
        return;
    /* Let running passes finish (their sends are recorded), then hand the shards over. */
    if (d->active == 0 || dr_mono_ms() >= d->stop_deadline) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        d->releasing = 1;
        lease_release_all(d, finish_stop);
    }
}

static uv_timer_t stop_timer;

static void on_stop(dr_node_t *n, void *data)
{
    dispatcher_t *d = data;
    d->stop_deadline = dr_mono_ms() + n->cfg.redis_timeout_ms;
    uv_timer_init(n->loop.uv, &stop_timer);
    stop_timer.data = d;
    uv_timer_start(&stop_timer, on_stop_poll, 0, 10);
}

int main(int argc, char **argv)
{
    dispatcher_t *d = &g;
    if (dr_node_init(&d->node, "dispatcher", argc, argv) != 0)
        return 1;
    const dr_settings_t *cfg = &d->node.cfg;
    d->nshards = (uint32_t)cfg->shards;
    d->shards = dr_calloc(d->nshards, sizeof(shard_t));
    d->seed = (uint64_t)dr_now_ms() ^ ((uint64_t)getpid() << 32);
    snprintf(d->status_subject, sizeof(d->status_subject), "%sstatus", cfg->nats_subject_prefix);
    d->s_dispatch = dr_redis_add_script(d->node.redis, "dispatch", dr_script_dispatch);
    d->s_lease = dr_redis_add_script(d->node.redis, "lease", dr_script_lease);
    d->s_outbox = dr_redis_add_script(d->node.redis, "outbox", dr_script_outbox);
    d->s_cancel = dr_redis_add_script(d->node.redis, "cancel", dr_script_cancel);

    char subject[128];
    /* Publishes only, so a clean session: everything to re-send is in Redis. */
    if (dr_node_mqtt_open(&d->node, "dp", 1, &d->mqtt) != 0) {
        dr_node_close(&d->node);
        dr_node_dispose(&d->node);
        free(d->shards);
        return 1;
    }
    snprintf(subject, sizeof(subject), "%swake", cfg->nats_subject_prefix);
    dr_bus_subscribe(d->node.bus, subject, on_wake, d);
    dr_mqtt_start(d->mqtt);
    dr_node_set_callbacks(&d->node, (int)cfg->tick_ms, on_cron, on_stop, d);

    dr_node_run(&d->node);
    dr_node_dispose(&d->node);
    free(d->shards);
    return 0;
}
