/* MQTT client wrapper (see dr/mqtt.h).
 *
 * DESIGN
 * paho's automatic reconnect is not used: it does not cover the first connection, and two retry
 * mechanisms would race. Instead every paho callback that changes state posts to the loop, and one
 * loop timer drives connect attempts with back-off and publish deadlines. Publishes are tracked in a
 * list so each completion callback runs exactly once: on paho's answer, on the deadline, or at close.
 */
#define DR_MODULE "common/mqtt"

#include <MQTTAsync.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/mqtt.h"

#define MAX_SUBS 8

typedef struct pub {
    dr_mqtt_t *m;
    dr_mqtt_pub_cb *cb;
    void *data;
    int64_t deadline;
    int done;                /* cb already called (deadline passed); waiting for paho to let go */
    struct pub *prev, *next;
} pub_t;

struct dr_mqtt {
    dr_loop_t *loop;
    MQTTAsync client;
    char *url, *client_id, *username, *password;
    int keepalive_s, clean_session, publish_timeout_ms;
    char *subs[MAX_SUBS];
    int sub_qos[MAX_SUBS];
    int nsubs;
    dr_mqtt_msg_cb *msg_cb;
    void *msg_data;
    dr_mqtt_state_cb *state_cb;
    void *state_data;
    atomic_int connected;
    int connecting, started, closing;
    int64_t retry_at;
    int backoff_ms;
    uv_timer_t timer;
    pub_t *head, *tail;
    int npending;
};

/* ---- paho-thread callbacks: post to the loop -------------------------------------------------- */

typedef struct {
    dr_mqtt_t *m;
    int kind;                /* EV_* */
    pub_t *pub;
    int rc;
} event_t;

enum { EV_CONNECTED, EV_CONNECT_FAILED, EV_LOST, EV_PUB_DONE, EV_SUB_FAILED };

static void handle_event(void *arg);

static void post(dr_mqtt_t *m, int kind, pub_t *pub, int rc)
{
    event_t *e = dr_malloc(sizeof(*e));
    e->m = m;
    e->kind = kind;
    e->pub = pub;
    e->rc = rc;
    if (dr_loop_post(m->loop, handle_event, e) != 0)
        free(e);
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    dr_mqtt_t *m = ctx;
    atomic_store(&m->connected, 1);
    post(m, EV_CONNECTED, NULL, 0);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp)
{
    dr_mqtt_t *m = ctx;
    post(m, EV_CONNECT_FAILED, NULL, resp ? resp->code : -1);
}

static void on_connection_lost(void *ctx, char *cause)
{
    (void)cause;
    dr_mqtt_t *m = ctx;
    atomic_store(&m->connected, 0);
    post(m, EV_LOST, NULL, 0);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    dr_mqtt_t *m = ctx;
    size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    if (m->msg_cb)
        m->msg_cb(m->msg_data, topic, tl, msg->payload, (size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0), msg->dup);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_pub_success(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    pub_t *p = ctx;
    post(p->m, EV_PUB_DONE, p, 0);
}

static void on_pub_failure(void *ctx, MQTTAsync_failureData *resp)
{
    (void)resp;
    pub_t *p = ctx;
    post(p->m, EV_PUB_DONE, p, DR_EUNAVAIL);
}

static void on_sub_failure(void *ctx, MQTTAsync_failureData *resp)
{
    dr_mqtt_t *m = ctx;
    post(m, EV_SUB_FAILED, NULL, resp ? resp->code : -1);
}

static void on_sub_success(void *ctx, MQTTAsync_successData *resp)
{
    dr_mqtt_t *m = ctx;
    /* A refused filter comes back as granted QoS 0x80. */
    if (m->nsubs == 1 && resp && resp->alt.qos == 0x80)
        post(m, EV_SUB_FAILED, NULL, 0x80);
    for (int i = 0; m->nsubs > 1 && resp && resp->alt.qosList && i < m->nsubs; i++)
        if (resp->alt.qosList[i] == 0x80)
            post(m, EV_SUB_FAILED, NULL, 0x80);
}

/* ---- loop side -------------------------------------------------------------------------------- */

static void unlink_pub(dr_mqtt_t *m, pub_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        m->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        m->tail = p->prev;
}

static void subscribe_all(dr_mqtt_t *m)
{
    if (m->nsubs == 0)
        return;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sub_success;
    ro.onFailure = on_sub_failure;
    ro.context = m;
    int rc = MQTTAsync_subscribeMany(m->client, m->nsubs, m->subs, m->sub_qos, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        dr_log(DR_LOG_WARNING, "event=mqtt_subscribe_failed client=%s rc=%d", m->client_id, rc);
}

static void try_connect(dr_mqtt_t *m)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = m->keepalive_s;
    co.cleansession = m->clean_session;
    co.automaticReconnect = 0;
    co.connectTimeout = 5;
    co.maxInflight = 1000;
    if (m->username[0]) {
        co.username = m->username;
        co.password = m->password;
    }
    co.onFailure = on_connect_failure;
    co.context = m;
    int rc = MQTTAsync_connect(m->client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        dr_log(DR_LOG_WARNING, "event=mqtt_connect_error client=%s rc=%d", m->client_id, rc);
        m->retry_at = dr_mono_ms() + m->backoff_ms;
        return;
    }
    m->connecting = 1;
}

static void backoff(dr_mqtt_t *m)
{
    m->retry_at = dr_mono_ms() + m->backoff_ms;
    m->backoff_ms = m->backoff_ms * 2 > 5000 ? 5000 : m->backoff_ms * 2;
}

static void handle_event(void *arg)
{
    event_t *e = arg;
    dr_mqtt_t *m = e->m;
    switch (e->kind) {
    case EV_CONNECTED:
        m->connecting = 0;
        m->backoff_ms = 250;
        dr_log(DR_LOG_NOTICE, "event=mqtt_connected client=%s", m->client_id);
        subscribe_all(m);
        if (m->state_cb)
            m->state_cb(m->state_data, 1);
        break;
    case EV_CONNECT_FAILED:
        m->connecting = 0;
        dr_log(DR_LOG_WARNING, "event=mqtt_connect_failed client=%s code=%d", m->client_id, e->rc);
        backoff(m);
        break;
    case EV_LOST:
        m->connecting = 0;
        dr_log(DR_LOG_WARNING, "event=mqtt_connection_lost client=%s", m->client_id);
        backoff(m);
        if (m->state_cb)
            m->state_cb(m->state_data, 0);
        break;
    case EV_SUB_FAILED:
        dr_log(DR_LOG_WARNING, "event=mqtt_subscribe_refused client=%s code=%d action=retry", m->client_id, e->rc);
        if (atomic_load(&m->connected))
            subscribe_all(m);
        break;
    case EV_PUB_DONE: {
        pub_t *p = e->pub;
        unlink_pub(m, p);
        m->npending--;
        if (!p->done && p->cb)
            p->cb(p->data, e->rc);
        free(p);
        break;
    }
    }
    free(e);
}

static void on_timer(uv_timer_t *t)
{
    dr_mqtt_t *m = t->data;
    int64_t now = dr_mono_ms();
    if (m->started && !m->closing && !m->connecting && !atomic_load(&m->connected) && now >= m->retry_at)
        try_connect(m);
    for (pub_t *p = m->head; p; p = p->next) {
        if (!p->done && now >= p->deadline) {
            p->done = 1;
            if (p->cb)
                p->cb(p->data, DR_ETIMEDOUT);
        }
    }
}

/* ---- public API ------------------------------------------------------------------------------- */

int dr_mqtt_open(dr_loop_t *loop, const dr_mqtt_options_t *opt, dr_mqtt_t **out, char *err)
{
    dr_mqtt_t *m = dr_calloc(1, sizeof(*m));
    m->loop = loop;
    m->url = dr_strdup(opt->url);
    m->client_id = dr_strdup(opt->client_id);
    m->username = dr_strdup(opt->username ? opt->username : "");
    m->password = dr_strdup(opt->password ? opt->password : "");
    m->keepalive_s = opt->keepalive_s;
    m->clean_session = opt->clean_session;
    m->publish_timeout_ms = opt->publish_timeout_ms > 0 ? opt->publish_timeout_ms : 10000;
    m->backoff_ms = 250;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 0;
    co.maxBufferedMessages = 100000;
    int rc = MQTTAsync_createWithOptions(&m->client, m->url, m->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, DR_ERR_LEN, "mqtt client for '%s' could not be created (paho rc %d): check mqtt.url", m->url, rc);
        free(m->url);
        free(m->client_id);
        free(m->username);
        free(m->password);
        free(m);
        return DR_EINVAL;
    }
    MQTTAsync_setCallbacks(m->client, m, on_connection_lost, on_message, NULL);
    MQTTAsync_setConnected(m->client, m, on_connected);
    uv_timer_init(loop->uv, &m->timer);
    m->timer.data = m;
    *out = m;
    return 0;
}

void dr_mqtt_add_subscription(dr_mqtt_t *m, const char *filter, int qos)
{
    if (m->nsubs >= MAX_SUBS)
        return;
    m->subs[m->nsubs] = dr_strdup(filter);
    m->sub_qos[m->nsubs++] = qos;
}

void dr_mqtt_on_message(dr_mqtt_t *m, dr_mqtt_msg_cb *cb, void *data)
{
    m->msg_cb = cb;
    m->msg_data = data;
}

void dr_mqtt_on_state(dr_mqtt_t *m, dr_mqtt_state_cb *cb, void *data)
{
    m->state_cb = cb;
    m->state_data = data;
}

void dr_mqtt_start(dr_mqtt_t *m)
{
    if (m->started)
        return;
    m->started = 1;
    m->retry_at = 0;
    uv_timer_start(&m->timer, on_timer, 0, 50);
}

int dr_mqtt_publish(dr_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos, dr_mqtt_pub_cb *cb,
                    void *data)
{
    if (!atomic_load(&m->connected) || m->closing)
        return DR_EUNAVAIL;
    pub_t *p = dr_calloc(1, sizeof(*p));
    p->m = m;
    p->cb = cb;
    p->data = data;
    p->deadline = dr_mono_ms() + m->publish_timeout_ms;
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)len;
    msg.qos = qos;
    msg.retained = 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_pub_success;
    ro.onFailure = on_pub_failure;
    ro.context = p;
    /* Link before sending: paho may answer on its thread before sendMessage returns. */
    p->prev = m->tail;
    if (m->tail)
        m->tail->next = p;
    else
        m->head = p;
    m->tail = p;
    m->npending++;
    int rc = MQTTAsync_sendMessage(m->client, topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        unlink_pub(m, p);
        m->npending--;
        free(p);
        return DR_EUNAVAIL;
    }
    return 0;
}

int dr_mqtt_connected(const dr_mqtt_t *m)
{
    return atomic_load(&((dr_mqtt_t *)m)->connected);
}

int dr_mqtt_pending(const dr_mqtt_t *m)
{
    return m->npending;
}

int dr_mqtt_disconnect(dr_mqtt_t *m, int timeout_ms)
{
    m->closing = 1;
    if (MQTTAsync_isConnected(m->client)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = timeout_ms;
        MQTTAsync_disconnect(m->client, &d);
    }
    for (int waited = 0; MQTTAsync_isConnected(m->client); waited += 10) {
        if (waited >= timeout_ms)
            return DR_ETIMEDOUT;
        uv_sleep(10);
    }
    atomic_store(&m->connected, 0);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void dr_mqtt_free(dr_mqtt_t *m)
{
    if (m == NULL)
        return;
    dr_mqtt_disconnect(m, 1500);
    MQTTAsync_destroy(&m->client);
    dr_loop_drain(m->loop); /* completions paho posted before it stopped */
    while (m->head) {
        pub_t *p = m->head;
        unlink_pub(m, p);
        if (!p->done && p->cb)
            p->cb(p->data, DR_ECLOSED);
        free(p);
    }
    for (int i = 0; i < m->nsubs; i++)
        free(m->subs[i]);
    free(m->url);
    free(m->client_id);
    free(m->username);
    free(m->password);
    uv_timer_stop(&m->timer);
    m->timer.data = m;
    uv_close((uv_handle_t *)&m->timer, on_timer_closed);
}
