/* drover-ingress: argv -> config -> wiring -> loop -> teardown. */
#define DR_MODULE "ingress/main"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "http.h"
#include "ingress.h"

static ingress_t g;
static int64_t tls_failed_logged_at; /* last event=mqtt_tls_failed, 0: none since the last connection */

/* The filters our persistent session held under an older configuration (recorded in Redis, since
 * MQTT 3.1.1 cannot list them) are unsubscribed on connection, before ours are subscribed: otherwise
 * the broker would keep delivering, say, a former share group's messages to this session. */
static void on_subs(void *data, int err, const char *errstr, const char *const *before, size_t n)
{
    ingress_t *in = data;
    if (err != 0) {
        dr_log(DR_LOG_WARNING, "event=subscriptions_unknown error=\"%s\" action=retry_on_reconnect", errstr);
        in->layout_ok = 0;
        return;
    }
    if (in->mqtt_started || in->node.stopping)
        return;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(before[i], in->filters[0]) == 0 || strcmp(before[i], in->filters[1]) == 0)
            continue;
        dr_log(DR_LOG_NOTICE, "event=mqtt_stale_filter filter=\"%s\" action=unsubscribe", before[i]);
        dr_mqttc_unsubscribe_stale(in->mqtt, before[i]);
        in->stale_filters++;
    }
    in->filters_recorded = in->stale_filters == 0;
    in->mqtt_started = 1;
    dr_mqttc_start(in->mqtt);
}

static void on_subs_replaced(void *data, int err, const char *errstr, const char *const *before, size_t n)
{
    (void)before;
    (void)n;
    ingress_t *in = data;
    if (err != 0) {
        in->filters_recorded = 0; /* tried again on the next connection; unsubscribing twice is harmless */
        dr_log(DR_LOG_WARNING, "event=subscriptions_not_recorded error=\"%s\"", errstr);
    }
}

/* MQTT consumption starts only once Redis is usable, so nothing is taken from the broker that could
 * not be stored; later Redis outages leave messages unacknowledged until they are stored. */
static void on_layout(void *data, int err, const char *errstr, int64_t result)
{
    (void)result;
    ingress_t *in = data;
    if (err == DR_EREDIS) {
        /* Another layout or shard count: every write would go to the wrong keys. */
        dr_log(DR_LOG_WARNING, "event=layout_mismatch error=\"%s\" action=exit", errstr);
        fprintf(stderr, "drover-ingress: %s\n", errstr);
        _exit(1);
    }
    if (err != 0)
        return; /* checked again on the next connection */
    in->layout_ok = 1;
    rest_auth_bootstrap(in); /* the first operator, once per start (the registry keeps only one) */
    if (in->mqtt_started || in->node.stopping)
        return;
    const char *mine[2] = {in->filters[0], in->filters[1]};
    if (dr_store_subs(in->node.redis, &in->store, 0, mine, 2, on_subs, in) != 0)
        in->layout_ok = 0; /* Redis went away: again on the next connection */
}

static void on_redis_state(dr_redis_t *r, int ready, void *data)
{
    (void)r;
    ingress_t *in = data;
    if (!ready && in->ingest != NULL)
        ingest_forget_acks(in->ingest);
    if (ready && !in->layout_ok && !in->node.stopping)
        dr_store_check_layout(in->node.redis, &in->store, on_layout, in);
}

static void on_mqtt_state(void *data, int connected, const char *reason)
{
    ingress_t *in = data;
    if (connected) {
        tls_failed_logged_at = 0;
        /* Connected means the stale filters' UNSUBACK came: from now on only ours are recorded. */
        if (!in->filters_recorded && !in->node.stopping) {
            const char *mine[2] = {in->filters[0], in->filters[1]};
            in->filters_recorded = dr_store_subs(in->node.redis, &in->store, 1, mine, 2, on_subs_replaced, in) == 0;
        }
        return;
    }
    reason = reason ? reason : "";
    /* A TLS failure does not heal by retrying (wrong CA, expired or misnamed certificate): name it
     * as such, once a minute while it repeats, so the operator sees a configuration problem, not a
     * flaky network. */
    if (strncmp(reason, "certificate verify failed", 25) == 0 || strncmp(reason, "TLS ", 4) == 0) {
        int64_t now = dr_mono_ms();
        if (tls_failed_logged_at == 0 || now - tls_failed_logged_at >= 60000) {
            tls_failed_logged_at = now;
            dr_log(DR_LOG_WARNING, "event=mqtt_tls_failed url=%s reason=\"%s\" action=retrying",
                   in->node.cfg.mqtt_url, reason);
        }
        return;
    }
    dr_log(DR_LOG_WARNING, "event=mqtt_disconnected reason=\"%s\"", reason);
}

static int publish_note(void *ctx, const char *topic, const void *payload, size_t len, void (*done)(void *, int),
                        void *data)
{
    ingress_t *in = ctx;
    return dr_mqttc_publish(in->mqtt, topic, payload, len, (int)in->node.cfg.mqtt_qos, done, data);
}

static void on_mqtt_stopped(void *data)
{
    ingress_t *in = data;
    dr_notes_free(in->notes);
    in->notes = NULL;
    dr_mqttc_free(in->mqtt);
    in->mqtt = NULL;
    ingest_free(in->ingest);
    in->ingest = NULL;
    /* h2o's context is never disposed (h2o 2.2 asserts when that happens inside the loop); the node
     * closes its remaining handles at exit and its memory stays reachable. */
    dr_node_close(&in->node);
}

static void on_stop_timer(uv_timer_t *t)
{
    ingress_t *in = t->data;
    /* Wait for batches being stored (their PUBACKs and REST answers), for notifications being
     * published and for HTTP clients; give up after the deadline. What was not stored is not
     * acknowledged: the broker delivers it again. */
    int64_t now = dr_mono_ms();
    int idle = ingest_pending(in->ingest) == 0 && (in->notes == NULL || dr_notes_in_flight(in->notes) == 0) &&
               http_idle(in);
    if (!idle && now < in->stop_deadline)
        return;
    uv_timer_stop(&in->stop_timer);
    uv_close((uv_handle_t *)&in->stop_timer, NULL);
    dr_mqttc_stop(in->mqtt, on_mqtt_stopped, in);
}

static void on_stop(dr_node_t *n, void *data)
{
    (void)n;
    ingress_t *in = data;
    http_stop(in);
    dynsec_stop(in);
    rollout_stop(in);
    in->stop_deadline = dr_mono_ms() + in->node.cfg.redis_timeout_ms;
    uv_timer_init(in->node.loop.uv, &in->stop_timer);
    in->stop_timer.data = in;
    uv_timer_start(&in->stop_timer, on_stop_timer, 0, 10);
}

static int open_mqtt(ingress_t *in, char *err)
{
    const dr_settings_t *cfg = &in->node.cfg;
    char client_id[160];
    snprintf(client_id, sizeof(client_id), "drover-in-%s", cfg->node_id);
    dr_mqttc_options_t mo = {
        .url = cfg->mqtt_url,
        .client_id = client_id,
        .username = cfg->mqtt_username,
        .password = cfg->mqtt_password[0] ? cfg->mqtt_password : NULL, /* "": none */
        .keepalive_s = (int)cfg->mqtt_keepalive_s,
        .clean_session = 0, /* the broker keeps our share of messages while we restart */
        /* Notifications wait for a window slot in dr_notes (no deadline there), and a node keeps the
         * entries it is publishing fresh in Redis, so a slow broker delays them without any being
         * reclaimed. The deadline is a last resort for a broker that keeps the connection but never
         * answers: such a notification is left to the shard's owner to publish. */
        .publish_timeout_ms = 30000,
    };
    if (cfg->mqtt_tls) { /* the URL is mqtts:// then (settings); "" means "not set" */
        mo.ca_file = cfg->mqtt_tls_ca[0] ? cfg->mqtt_tls_ca : NULL;
        mo.cert_file = cfg->mqtt_tls_cert[0] ? cfg->mqtt_tls_cert : NULL;
        mo.key_file = cfg->mqtt_tls_key[0] ? cfg->mqtt_tls_key : NULL;
        mo.tls_insecure = !cfg->mqtt_tls_verify;
    }
    if (dr_mqttc_open(in->node.loop.uv, &mo, &in->mqtt, err) != 0)
        return -1;
    snprintf(in->filters[0], sizeof(in->filters[0]), "$share/%s/producer/request/#", cfg->mqtt_share_group);
    snprintf(in->filters[1], sizeof(in->filters[1]), "$share/%s/consumer/response/#", cfg->mqtt_share_group);
    dr_mqttc_subscribe(in->mqtt, in->filters[0], 1);
    dr_mqttc_subscribe(in->mqtt, in->filters[1], 1);
    dr_mqttc_on_message(in->mqtt, mqtt_in_on_message, in);
    dr_mqttc_on_state(in->mqtt, on_mqtt_state, in);
    return 0;
}

int main(int argc, char **argv)
{
    ingress_t *in = &g;
    if (dr_node_init(&in->node, "ingress", argc, argv) != 0)
        return 1;
    const dr_settings_t *cfg = &in->node.cfg;
    snprintf(in->wake_subject, sizeof(in->wake_subject), "%swake", cfg->nats_subject_prefix);
    snprintf(in->status_subject, sizeof(in->status_subject), "%sstatus", cfg->nats_subject_prefix);
    in->store = (dr_store_t){.prefix = cfg->redis_prefix, .shards = (uint32_t)cfg->shards,
                             .retention_s = cfg->retention_s, .node = cfg->node_id};
    dr_store_register(in->node.redis);

    char err[DR_ERR_LEN];
    if (open_mqtt(in, err) != 0)
        goto fail;
    in->ingest = ingest_new(in);
    dr_loop_linger(&in->node.loop, (int)cfg->ingress_linger_us);
    in->notes = dr_notes_new(in->node.loop.uv, in->node.redis, &in->store, in->node.bus, in->status_subject, publish_note, in);
    dr_redis_on_state(in->node.redis, on_redis_state, in);
    dr_node_set_callbacks(&in->node, 100, NULL, on_stop, in);
    if (http_start(in, err) != 0 || dynsec_start(in, err) != 0)
        goto fail;
    rollout_start(in);

    dr_node_run(&in->node);
    dr_node_dispose(&in->node);
    auth_dispose(in);
    return 0;

fail:
    fprintf(stderr, "drover-ingress: %s\n", err);
    dr_notes_free(in->notes);
    dr_mqttc_free(in->mqtt);
    ingest_free(in->ingest);
    dr_node_close(&in->node);
    dr_node_run(&in->node);
    dr_node_dispose(&in->node);
    return 1;
}
