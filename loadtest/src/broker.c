/* Broker message counts of a phase, read from Mosquitto's $SYS tree.
 *
 * DESIGN
 * Mosquitto publishes its counters every sys_interval seconds, and only those that changed:
 * $SYS/broker/publish/messages/{received,sent} (PUBLISH packets) and $SYS/broker/messages/{received,
 * sent} (packets of any type, PUBACKs and pings included). One client subscribes to them at QoS 0.
 * The broker sends that client its own $SYS messages, which change publish/messages/sent every
 * interval; so an update arrives every interval, and those messages are subtracted: the counters of
 * one update include every $SYS message of earlier updates, and none of its own.
 * A sample is the first update computed after the call, so everything the broker did before the
 * call is in it. The phase samples once before the first send (nothing of the run is in flight
 * then) and once after the last answer arrived, which makes the difference the broker's work for
 * the commands of the phase (plus the keep-alive pings of that time, in the packet count only).
 * The paho callbacks run on paho's thread; the values pass through atomics.
 */
#include <MQTTAsync.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/mem.h"
#include "load.h"

#define GAP_US 200000 /* messages further apart than this belong to different updates */

enum { C_PUB_IN, C_PUB_OUT, C_PKT_IN, C_PKT_OUT, C_COUNT };

static const char *const topics[C_COUNT] = {"$SYS/broker/publish/messages/received",
                                            "$SYS/broker/publish/messages/sent",
                                            "$SYS/broker/messages/received", "$SYS/broker/messages/sent"};

struct lt_broker {
    const lt_opts_t *o;
    MQTTAsync cli;
    _Atomic int up;                 /* 1 subscribed, -1 failed */
    _Atomic int64_t value[C_COUNT]; /* latest value of each counter */
    _Atomic int64_t own;            /* $SYS messages received, before the current update */
    _Atomic int64_t update_us;      /* arrival of the latest publish/messages/sent */
    _Atomic int64_t own_at_update;  /* own when that arrived */
    int64_t seen, last_us;          /* paho thread only */
};

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    (void)topic_len;
    lt_broker_t *b = ctx;
    int64_t now = lt_now_us();
    /* The first message of an update: everything received before it was sent before it. */
    if (now - b->last_us > GAP_US)
        atomic_store(&b->own, b->seen);
    b->last_us = now;
    b->seen++;
    char buf[32];
    int len = msg->payloadlen < (int)sizeof(buf) - 1 ? msg->payloadlen : (int)sizeof(buf) - 1;
    memcpy(buf, msg->payload, (size_t)len);
    buf[len] = '\0';
    for (int i = 0; i < C_COUNT; i++) {
        if (strcmp(topic, topics[i]) != 0)
            continue;
        atomic_store(&b->value[i], strtoll(buf, NULL, 10));
        /* publish/messages/sent is the last of ours in each update and changes in every one. */
        if (i == C_PUB_OUT) {
            atomic_store(&b->own_at_update, atomic_load(&b->own));
            atomic_store(&b->update_us, now);
        }
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    atomic_store(&((lt_broker_t *)ctx)->up, 1);
}

static void on_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    atomic_store(&((lt_broker_t *)ctx)->up, -1);
}

static void on_conn_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    lt_broker_t *b = ctx;
    int qos[C_COUNT] = {0, 0, 0, 0};
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sub_ok;
    ro.onFailure = on_fail;
    ro.context = b;
    if (MQTTAsync_subscribeMany(b->cli, C_COUNT, (char *const *)topics, qos, &ro) != MQTTASYNC_SUCCESS)
        atomic_store(&b->up, -1);
}

lt_broker_t *lt_broker_open(const lt_opts_t *o, const char *client_id)
{
    if (o->sys_interval_s <= 0)
        return NULL;
    lt_broker_t *b = dr_calloc(1, sizeof(*b));
    b->o = o;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 60;
    co.cleansession = 1;
    co.username = o->prod_user[0] ? o->prod_user : NULL;
    co.password = o->prod_password[0] ? o->prod_password : NULL;
    co.onSuccess = on_conn_ok;
    co.onFailure = on_fail;
    co.context = b;
    if (MQTTAsync_create(&b->cli, o->mqtt_url, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
        MQTTASYNC_SUCCESS) {
        free(b);
        fprintf(stderr, "drover-load: cannot create the $SYS client\n");
        return NULL;
    }
    if (MQTTAsync_setCallbacks(b->cli, b, NULL, on_message, NULL) != MQTTASYNC_SUCCESS ||
        MQTTAsync_connect(b->cli, &co) != MQTTASYNC_SUCCESS)
        atomic_store(&b->up, -1);
    for (int waited = 0; atomic_load(&b->up) == 0 && waited < 1000; waited++)
        usleep(10000);
    if (atomic_load(&b->up) != 1) {
        fprintf(stderr,
                "drover-load: cannot subscribe to the broker's $SYS counters; broker messages are not "
                "counted\n");
        lt_broker_close(b);
        return NULL;
    }
    return b;
}

int lt_broker_sample(lt_broker_t *b, lt_broker_count_t *out)
{
    /* An update whose first message arrived after this point was computed after it. */
    int64_t from = lt_now_us() + GAP_US / 4, limit = from + 3 * b->o->sys_interval_s * 1000000 + 500000;
    while (atomic_load(&b->update_us) < from) {
        if (lt_now_us() > limit)
            return -1;
        usleep(20000);
    }
    int64_t own = atomic_load(&b->own_at_update);
    out->pub_in = atomic_load(&b->value[C_PUB_IN]);
    out->pub_out = atomic_load(&b->value[C_PUB_OUT]) - own;
    out->pkt_in = atomic_load(&b->value[C_PKT_IN]);
    out->pkt_out = atomic_load(&b->value[C_PKT_OUT]) - own;
    return 0;
}

void lt_broker_close(lt_broker_t *b)
{
    if (b == NULL)
        return;
    if (MQTTAsync_isConnected(b->cli)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 1000;
        MQTTAsync_disconnect(b->cli, &d);
        for (int w = 0; w < 100 && MQTTAsync_isConnected(b->cli); w++)
            usleep(10000);
    }
    MQTTAsync_destroy(&b->cli);
    free(b);
}
