/* drover-ingress: argv -> config -> wiring -> loop -> teardown. */
#define DR_MODULE "ingress/main"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/scripts.h"
#include "http.h"
#include "ingress.h"

static ingress_t g;

/* How long after its own stop deadline lane 0 still waits for its lanes to exit. */
#define LANE_EXIT_GRACE_MS 3000

/* MQTT consumption starts only once Redis is usable, so nothing is taken from the broker that could
 * not be stored; later Redis outages are absorbed by the blocking callback. */
static void on_redis_state(dr_redis_t *r, int ready, void *data)
{
    (void)r;
    ingress_t *in = data;
    if (ready && !in->mqtt_started && !in->node.stopping) {
        in->mqtt_started = 1;
        dr_mqtt_start(in->mqtt);
    }
}

/* Ends the process at once without acknowledging the messages callbacks hold: the broker keeps them
 * in our persistent session and delivers them when a node with this id connects again. */
static void exit_holding(ingress_t *in, const char *why)
{
    dr_log(DR_LOG_WARNING, "event=exit_holding_messages held=%d reason=\"%s\"", atomic_load(&in->parked), why);
    _exit(0);
}

static void finish_stop(ingress_t *in)
{
    uv_timer_stop(&in->stop_timer);
    uv_close((uv_handle_t *)&in->stop_timer, NULL);
    /* A parked callback holds paho's lock, so no clean disconnect is possible. */
    if (atomic_load(&in->parked) > 0)
        exit_holding(in, "messages arrived during shutdown");
    if (dr_mqtt_disconnect(in->mqtt, 2000) != 0)
        exit_holding(in, "the broker did not confirm the disconnect");
    /* Disconnected: a callback that parked meanwhile may return, its PUBACK cannot reach the broker. */
    pthread_mutex_lock(&in->mu);
    in->released = 1;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    for (int i = 0; i < 200 && atomic_load(&in->parked) > 0; i++)
        usleep(5000);
    if (dr_mqtt_free(in->mqtt) != 0)
        exit_holding(in, "the MQTT client could not be stopped");
    in->mqtt = NULL;
    lanes_close(in);
    /* h2o's context is never disposed (h2o 2.2 asserts when that happens inside the loop); the node
     * closes its remaining handles at exit and its memory stays reachable. */
    dr_node_close(&in->node);
}

static void on_stop_timer(uv_timer_t *t)
{
    ingress_t *in = t->data;
    /* Wait for callbacks that are storing a message, for queued receipt acks and for HTTP clients to
     * finish; give up after the deadline (callbacks then park, connections are cut at exit, receipt
     * acks not stored are repaired by re-sends). */
    int64_t now = dr_mono_ms();
    int own_done = atomic_load(&in->busy) == 0 && atomic_load(&in->deferred) == 0 && http_idle(in);
    /* Lanes get the same deadline for their own work, plus a little to exit after it. */
    int lanes_done = in->lanes_running == 0 || now >= in->stop_deadline + LANE_EXIT_GRACE_MS;
    if (lanes_done && (own_done || now >= in->stop_deadline))
        finish_stop(in);
}

static void on_stop(dr_node_t *n, void *data)
{
    (void)n;
    ingress_t *in = data;
    atomic_store(&in->stopping, 1);
    http_stop(in);
    lanes_stop(in);
    in->stop_deadline = dr_mono_ms() + in->node.cfg.redis_timeout_ms;
    uv_timer_init(in->node.loop.uv, &in->stop_timer);
    in->stop_timer.data = in;
    uv_timer_start(&in->stop_timer, on_stop_timer, 0, 10);
}

int main(int argc, char **argv)
{
    ingress_t *in = &g;
    if (dr_node_init(&in->node, "ingress", argc, argv) != 0)
        return 1;
    const dr_settings_t *cfg = &in->node.cfg;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    snprintf(in->wake_subject, sizeof(in->wake_subject), "%swake", cfg->nats_subject_prefix);
    in->s_accept = dr_redis_add_script(in->node.redis, "accept", dr_script_accept);
    in->s_ack = dr_redis_add_script(in->node.redis, "ack", dr_script_ack);
    in->s_pull = dr_redis_add_script(in->node.redis, "pull", dr_script_pull);
    in->s_peek = dr_redis_add_script(in->node.redis, "peek", dr_script_peek);
    in->s_cancel = dr_redis_add_script(in->node.redis, "cancel", dr_script_cancel);
    in->s_purge = dr_redis_add_script(in->node.redis, "purge", dr_script_purge);
    in->s_devinfo = dr_redis_add_script(in->node.redis, "devinfo", dr_script_devinfo);

    char filter[192];
    /* A persistent session: the broker keeps our share of messages while we restart. */
    if (dr_node_mqtt_open(&in->node, "in", 0, &in->mqtt) != 0) {
        dr_node_close(&in->node);
        dr_node_dispose(&in->node);
        return 1;
    }
    /* One lane takes both; with several, lane 0 takes the acks and the others producer messages
     * (lanes.c), so acks never wait behind the storing of producer messages. */
    int single = cfg->ingress_mqtt_lanes <= 1;
    if (single || cfg->ingress_lane > 0) {
        snprintf(filter, sizeof(filter), "$share/%s/producer/request/#", cfg->mqtt_share_group);
        dr_mqtt_add_subscription(in->mqtt, filter, 1);
    }
    if (single || cfg->ingress_lane == 0) {
        snprintf(filter, sizeof(filter), "$share/%s/consumer/response/#", cfg->mqtt_share_group);
        dr_mqtt_add_subscription(in->mqtt, filter, 1);
    }
    dr_mqtt_on_message(in->mqtt, ingress_on_message, in);
    dr_redis_on_state(in->node.redis, on_redis_state, in);
    dr_node_set_callbacks(&in->node, 100, NULL, on_stop, in);
    char err[DR_ERR_LEN];
    in->argc = argc;
    in->argv = argv;
    /* HTTP first: a port that cannot be bound must not leave lanes behind. */
    if (http_start(in, err) != 0 || lanes_start(in, err) != 0)
        goto fail;

    dr_node_run(&in->node);
    ingress_free_deferred(in);
    lanes_dispose(in);
    dr_node_dispose(&in->node);
    auth_dispose(in);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    return 0;

fail:
    fprintf(stderr, "drover-ingress: %s\n", err);
    dr_mqtt_free(in->mqtt);
    dr_node_close(&in->node);
    dr_node_dispose(&in->node);
    return 1;
}
