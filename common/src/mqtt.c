/* MQTT client wrapper (see dr/mqtt.h).
 *
 * DESIGN
 * paho calls the message callback while holding its global lock, and the ingress callback waits for
 * the loop. So once a connection exists, the loop must not call into paho for connection management:
 * after the first successful connect, paho's own automatic reconnect takes over and subscriptions are
 * made from paho's connected callback (on paho's thread). The loop drives only the first connect (no
 * message callback can be running before there is a connection) and publish deadlines. Disconnect and
 * destroy run on a helper thread with a deadline, because they too wait for that lock.
 * Publishes are tracked in a list so each completion callback runs exactly once: on paho's answer, on
 * the deadline, or at close.
 */
#define DR_MODULE "common/mqtt"

#include <MQTTAsync.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/mqtt.h"
#include "dr/topic.h"

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
    int ever_connected;      /* paho reconnects by itself from then on */
    atomic_int sub_retries;
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

static void subscribe_all(dr_mqtt_t *m);

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    dr_mqtt_t *m = ctx;
    atomic_store(&m->connected, 1);
    atomic_store(&m->sub_retries, 0);
    subscribe_all(m); /* on paho's thread: the documented place for API calls in callbacks */
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
    if (atomic_fetch_add(&m->sub_retries, 1) < 5 && atomic_load(&m->connected))
        subscribe_all(m);
}

static void on_sub_success(void *ctx, MQTTAsync_successData *resp)
{
    dr_mqtt_t *m = ctx;
    /* A refused filter comes back as granted QoS 0x80. */
    int refused = m->nsubs == 1 && resp && resp->alt.qos == 0x80;
    for (int i = 0; m->nsubs > 1 && resp && resp->alt.qosList && i < m->nsubs; i++)
        refused |= resp->alt.qosList[i] == 0x80;
    if (refused) {
        post(m, EV_SUB_FAILED, NULL, 0x80);
        if (atomic_fetch_add(&m->sub_retries, 1) < 5 && atomic_load(&m->connected))
            subscribe_all(m);
    }
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
    co.automaticReconnect = 1;
    co.minRetryInterval = 1;
    co.maxRetryInterval = 5;
    co.connectTimeout = 5;
    co.maxInflight = 10000; /* callers bound their own windows below this */
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
        m->ever_connected = 1;
        m->backoff_ms = 250;
        dr_log(DR_LOG_NOTICE, "event=mqtt_connected client=%s", m->client_id);
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
        dr_log(DR_LOG_WARNING, "event=mqtt_subscribe_refused client=%s code=%d", m->client_id, e->rc);
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
    if (m->started && !m->closing && !m->connecting && !m->ever_connected && !atomic_load(&m->connected) &&
        now >= m->retry_at)
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
    if (dr_topic_check_name(topic, strlen(topic)) != 0)
        return DR_EINVAL; /* the broker would drop the whole connection for it */
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

int dr_mqtt_publish_now(dr_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos)
{
    if (dr_topic_check_name(topic, strlen(topic)) != 0)
        return DR_EINVAL;
    if (!atomic_load(&m->connected))
        return DR_EUNAVAIL;
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)len;
    msg.qos = qos;
    msg.retained = 0;
    return MQTTAsync_sendMessage(m->client, topic, &msg, NULL) == MQTTASYNC_SUCCESS ? 0 : DR_EUNAVAIL;
}

int dr_mqtt_connected(const dr_mqtt_t *m)
{
    return atomic_load(&((dr_mqtt_t *)m)->connected);
}

int dr_mqtt_pending(const dr_mqtt_t *m)
{
    return m->npending;
}

/* ---- stopping: paho waits for its lock, so it is done on a helper thread with a deadline ---------- */

typedef struct {
    dr_mqtt_t *m;
    int destroy;
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int abandoned;           /* the caller gave up waiting: the helper frees this */
} stopper_t;

static void *stop_thread(void *arg)
{
    stopper_t *st = arg;
    MQTTAsync client = st->m->client;
    if (MQTTAsync_isConnected(client)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = st->timeout_ms;
        MQTTAsync_disconnect(client, &d);
        for (int waited = 0; MQTTAsync_isConnected(client) && waited < st->timeout_ms; waited += 10)
            uv_sleep(10);
    }
    if (st->destroy)
        MQTTAsync_destroy(&client);
    pthread_mutex_lock(&st->mu);
    st->done = 1;
    int abandoned = st->abandoned;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (abandoned)
        free(st);
    return NULL;
}

/* Runs disconnect (and destroy) on a helper thread; returns 0 when it finished in time. */
static int stop_paho(dr_mqtt_t *m, int destroy, int timeout_ms)
{
    stopper_t *st = dr_calloc(1, sizeof(*st));
    st->m = m;
    st->destroy = destroy;
    st->timeout_ms = timeout_ms;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, stop_thread, st) != 0) {
        free(st);
        return DR_EIO;
    }
    pthread_detach(t);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    int64_t ns = deadline.tv_nsec + (int64_t)(timeout_ms + 1000) * 1000000;
    deadline.tv_sec += (time_t)(ns / 1000000000);
    deadline.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&st->mu);
    while (!st->done && pthread_cond_timedwait(&st->cv, &st->mu, &deadline) == 0)
        ;
    int done = st->done;
    st->abandoned = !done;
    pthread_mutex_unlock(&st->mu);
    if (done)
        free(st);
    return done ? 0 : DR_ETIMEDOUT;
}

int dr_mqtt_disconnect(dr_mqtt_t *m, int timeout_ms)
{
    m->closing = 1;
    int rc = stop_paho(m, 0, timeout_ms);
    if (rc == 0 && MQTTAsync_isConnected(m->client))
        rc = DR_ETIMEDOUT;
    if (rc == 0)
        atomic_store(&m->connected, 0);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

int dr_mqtt_free(dr_mqtt_t *m)
{
    if (m == NULL)
        return 0;
    m->closing = 1;
    if (stop_paho(m, 1, 1500) != 0) {
        dr_log(DR_LOG_WARNING, "event=mqtt_stop_timeout client=%s", m->client_id);
        return DR_ETIMEDOUT; /* paho is stuck (a callback holds its lock): leave everything as it is */
    }
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
    return 0;
}
