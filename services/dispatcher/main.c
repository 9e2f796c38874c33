/* drover-dispatcher: argv -> config -> wiring -> loop -> teardown. */
#define DR_MODULE "dispatcher/main"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dispatcher.h"

static dispatcher_t g;

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
    if (*end != '\0' || sh >= d->nshards)
        return;
    dispatch_wake(d, (uint32_t)sh);
}

static int publish_note(void *ctx, const char *topic, const void *payload, size_t len, void (*done)(void *, int),
                        void *data)
{
    dispatcher_t *d = ctx;
    return dr_mqttc_publish(d->mqtt, topic, payload, len, (int)d->node.cfg.mqtt_qos, done, data);
}

static int64_t tls_failed_logged_at; /* last event=mqtt_tls_failed, 0: none since the last connection */

/* A TLS failure does not heal by retrying (wrong CA, expired or misnamed certificate): name it as such,
 * once a minute while it repeats. Other failures are logged by dr_mqttc itself. */
static void on_mqtt_state(void *data, int connected, const char *reason)
{
    dispatcher_t *d = data;
    if (connected) {
        tls_failed_logged_at = 0;
        return;
    }
    reason = reason ? reason : "";
    if (strncmp(reason, "certificate verify failed", 25) != 0 && strncmp(reason, "TLS ", 4) != 0)
        return;
    int64_t now = dr_mono_ms();
    if (tls_failed_logged_at == 0 || now - tls_failed_logged_at >= 60000) {
        tls_failed_logged_at = now;
        dr_log(DR_LOG_WARNING, "event=mqtt_tls_failed url=%s reason=\"%s\" action=retrying",
               d->node.cfg.mqtt_url, reason);
    }
}

static void on_cron(dr_node_t *n, void *data)
{
    (void)n;
    dispatcher_t *d = data;
    if (d->node.stopping)
        return;
    lease_cron(d);
    dispatch_cron(d);
    metrics_cron(d);
}

static void on_mqtt_stopped(void *data)
{
    dispatcher_t *d = data;
    metrics_stop(d);
    dr_notes_free(d->notes);
    d->notes = NULL;
    dispatch_close(d);
    dr_mqttc_free(d->mqtt);
    d->mqtt = NULL;
    dr_node_close(&d->node);
}

static void finish_stop_now(void *arg)
{
    dispatcher_t *d = arg;
    dr_mqttc_stop(d->mqtt, on_mqtt_stopped, d);
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
    /* Let running passes finish (their sends are recorded) and their notifications go out, then hand
     * the shards over; what is still unpublished at the deadline is published by the successors. */
    int idle = d->active == 0 && dr_notes_in_flight(d->notes) == 0 && dr_mqttc_pending(d->mqtt) == 0;
    if (idle || dr_mono_ms() >= d->stop_deadline) {
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
    d->store = (dr_store_t){.prefix = cfg->redis_prefix, .shards = d->nshards, .retention_s = cfg->retention_s,
                            .node = cfg->node_id};
    dr_store_register(d->node.redis);
    for (uint32_t sh = 0; sh < d->nshards; sh++)
        d->shards[sh].due_at = -1;

    char subject[128], client_id[160], err[DR_ERR_LEN];
    if (metrics_start(d, err) != 0) {
        fprintf(stderr, "drover-dispatcher: %s\n", err);
        dr_node_close(&d->node);
        dr_node_run(&d->node);
        dr_node_dispose(&d->node);
        free(d->shards);
        return 1;
    }
    snprintf(client_id, sizeof(client_id), "drover-dp-%s", cfg->node_id);
    /* Publishes only, so a clean session: everything to re-send is in Redis. */
    dr_mqttc_options_t mo = {
        .url = cfg->mqtt_url,
        .client_id = client_id,
        .username = cfg->mqtt_username,
        .password = cfg->mqtt_password[0] ? cfg->mqtt_password : NULL, /* "": none */
        /* Publishes only: a short keepalive costs two small packets and finds a silently dead link
         * within seconds, so the node gives its shards up (BROKER_GRACE_MS) instead of holding them. */
        .keepalive_s = (int)(cfg->mqtt_keepalive_s < DISPATCHER_KEEPALIVE_S ? cfg->mqtt_keepalive_s
                                                                             : DISPATCHER_KEEPALIVE_S),
        .clean_session = 1,
        /* MQTT 5 lets device sends expire in an offline device's session before they are re-sent
         * (drover.lua send_expiry); a broker without it gets 3.1.1 and the old behaviour. */
        .protocol = (int)cfg->mqtt_protocol,
        .protocol_fallback = 1,
    };
    if (cfg->mqtt_tls) { /* the URL is mqtts:// then (settings); "" means "not set" */
        mo.ca_file = cfg->mqtt_tls_ca[0] ? cfg->mqtt_tls_ca : NULL;
        mo.cert_file = cfg->mqtt_tls_cert[0] ? cfg->mqtt_tls_cert : NULL;
        mo.key_file = cfg->mqtt_tls_key[0] ? cfg->mqtt_tls_key : NULL;
        mo.tls_insecure = !cfg->mqtt_tls_verify;
    }
    if (dr_mqttc_open(d->node.loop.uv, &mo, &d->mqtt, err) != 0) {
        fprintf(stderr, "drover-dispatcher: %s\n", err);
        metrics_stop(d);
        dr_node_close(&d->node);
        dr_node_run(&d->node);
        dr_node_dispose(&d->node);
        free(d->shards);
        return 1;
    }
    snprintf(subject, sizeof(subject), "%swake", cfg->nats_subject_prefix);
    dr_mqttc_on_state(d->mqtt, on_mqtt_state, d);
    dr_bus_subscribe(d->node.bus, subject, on_wake, d);
    d->notes = dr_notes_new(d->node.loop.uv, d->node.redis, &d->store, d->node.bus, d->status_subject, publish_note, d);
    dispatch_init(d);
    dr_mqttc_start(d->mqtt);
    dr_node_set_callbacks(&d->node, (int)cfg->tick_ms, on_cron, on_stop, d);

    dr_node_run(&d->node);
    dr_node_dispose(&d->node);
    free(d->pending);
    free(d->flushing);
    free(d->shards);
    return 0;
}
