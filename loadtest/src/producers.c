/* Producers: MQTT clients that submit commands and collect what comes back.
 *
 * Against Drover a producer publishes to producer/request/{device} with a messageBirthCertificate
 * (tmpId = command number), so it hears NOT_DELIVERED (the durable receipt, counted as "accepted"),
 * then DELIVERED and COMPLETED on producer/response/{producer}; rejections come on producer/error/.
 * In the raw baseline it publishes the device message straight to consumer/request/{device}; the
 * broker's PUBACK counts as "accepted" and the device's answer arrives on the same status topic.
 *
 * With producer.transport=rest the commands go through rest.c instead (POST
 * /v1/devices/{id}/messages, accepted = the 201 answer), with the same birth certificate, so the MQTT
 * connection is still there for DELIVERED and COMPLETED. The NOT_DELIVERED receipt that follows over
 * MQTT is then only counted, and its id checked against the answer's. One transport (one libcurl
 * loop thread) serves all producers of a phase.
 *
 * DESIGN
 * Each producer keeps a window of unaccepted commands (producer.window), which is what makes "as fast
 * as accepted" mean something and also stays under paho's maxBufferedMessages. Over REST the window
 * holds the commands queued for a connection, on the wire or waiting to be retried.
 */
#include <MQTTAsync.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/mem.h"
#include "dr/status.h"
#include "load.h"

typedef struct {
    lt_producers_t *ps;
    MQTTAsync cli;
    char id[48];
    _Atomic int64_t inflight;   /* sent, not yet accepted or rejected */
    _Atomic int up;             /* 1 subscribed, -1 failed */
} producer_t;

struct lt_producers {
    const lt_opts_t *o;
    int mode;
    lt_shm_t *s;
    producer_t *p;
    int n;
    lt_rest_t *rest;            /* producer.transport=rest: one transport for all producers */
};

typedef struct {
    producer_t *p;
    int64_t k;
} pub_ctx_t;

/* ---- answers ------------------------------------------------------------------------------------ */

/* Records the message id Drover gave command k. Over REST both the answer and the MQTT receipt carry
 * it, in either order, and they must agree. */
static void note_id(lt_shm_t *s, lt_rec_t *r, int64_t id)
{
    int64_t seen = 0;
    if (!atomic_compare_exchange_strong(&r->rid, &seen, id) && seen != id)
        atomic_fetch_add(&s->c.id_mismatch, 1);
}

static void accepted(producer_t *p, int64_t k, int64_t id, int64_t now)
{
    lt_rec_t *r = &p->ps->s->rec[k];
    int64_t zero = 0;
    if (!atomic_compare_exchange_strong(&r->acc_us, &zero, now)) {
        atomic_fetch_add(&p->ps->s->c.notif_dups, 1);
        return;
    }
    note_id(p->ps->s, r, id);
    atomic_fetch_add(&p->ps->s->c.accepted, 1);
    atomic_fetch_sub(&p->inflight, 1);
}

static void on_rest_accepted(void *data, int64_t k, int64_t id, int64_t now_us)
{
    accepted(data, k, id, now_us);
}

static void on_rest_failed(void *data, int64_t k, int rejected)
{
    (void)k;
    producer_t *p = data;
    atomic_fetch_add(rejected ? &p->ps->s->c.rejected : &p->ps->s->c.send_errors, 1);
    atomic_fetch_sub(&p->inflight, 1);
}

static void status_seen(producer_t *p, _Atomic int64_t *field, _Atomic int64_t *counter, int64_t now)
{
    int64_t zero = 0;
    if (atomic_compare_exchange_strong(field, &zero, now))
        atomic_fetch_add(counter, 1);
    else
        atomic_fetch_add(&p->ps->s->c.notif_dups, 1);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    (void)topic_len;
    producer_t *p = ctx;
    lt_shm_t *s = p->ps->s;
    const char *b = msg->payload;
    size_t len = (size_t)msg->payloadlen;
    int64_t now = lt_now_us(), k = -1, id = 0;
    char st[32] = "";
    if (lt_wire_int(b, len, "tmpId", &k) != 0 || k < 0 || k >= s->ncmd) {
        atomic_fetch_add(&s->c.notif_other, 1);
        goto out;
    }
    if (strncmp(topic, "producer/error/", 15) == 0) {
        /* Over REST a refusal is the HTTP answer; nothing should come here. */
        atomic_fetch_add(p->ps->o->rest ? &s->c.notif_other : &s->c.rejected, 1);
        if (!p->ps->o->rest)
            atomic_fetch_sub(&p->inflight, 1);
        goto out;
    }
    lt_wire_int(b, len, "id", &id);
    lt_wire_str(b, len, "deliveryStatus", st, sizeof(st));
    lt_rec_t *r = &s->rec[k];
    switch (dr_status_parse(st, strlen(st))) {
    case DR_ST_NOT_DELIVERED:
        if (p->ps->o->rest) {
            atomic_fetch_add(&s->c.rest_receipts, 1);
            note_id(s, r, id);
        } else {
            accepted(p, k, id, now);
        }
        break;
    case DR_ST_DELIVERED:
        status_seen(p, &r->notif_us, &s->c.notif_delivered, now);
        break;
    case DR_ST_COMPLETED:
        status_seen(p, &r->done_us, &s->c.notif_completed, now);
        break;
    default:
        atomic_fetch_add(&s->c.notif_other, 1);
        break;
    }
out:
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_puback(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    pub_ctx_t *c = ctx;
    /* The broker's PUBACK is acceptance only for the baseline; Drover's is the receipt. */
    if (c->p->ps->mode == LT_MODE_RAW)
        accepted(c->p, c->k, c->k, lt_now_us());
    free(c);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    pub_ctx_t *c = ctx;
    atomic_fetch_add(&c->p->ps->s->c.send_errors, 1);
    atomic_fetch_sub(&c->p->inflight, 1);
    free(c);
}

/* ---- connection ---------------------------------------------------------------------------------- */

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    atomic_store(&((producer_t *)ctx)->up, 1);
}

static void on_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    atomic_store(&((producer_t *)ctx)->up, -1);
}

static void on_conn_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    producer_t *p = ctx;
    char t1[96], t2[96];
    snprintf(t1, sizeof(t1), "producer/response/%s", p->id);
    snprintf(t2, sizeof(t2), "producer/error/%s", p->id);
    char *topics[] = {t1, t2};
    int qos[] = {1, 1};
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sub_ok;
    ro.onFailure = on_fail;
    ro.context = p;
    if (MQTTAsync_subscribeMany(p->cli, 2, topics, qos, &ro) != MQTTASYNC_SUCCESS)
        atomic_store(&p->up, -1);
}

static void on_lost(void *ctx, char *cause)
{
    producer_t *p = ctx;
    fprintf(stderr, "drover-load: producer %s lost its connection (%s)\n", p->id, cause ? cause : "?");
    atomic_store(&p->up, -1);
}

lt_producers_t *lt_producers_open(const lt_opts_t *o, int mode, lt_shm_t *s)
{
    lt_producers_t *ps = dr_calloc(1, sizeof(*ps));
    ps->o = o;
    ps->mode = mode;
    ps->s = s;
    ps->n = (int)o->producers;
    ps->p = dr_calloc((size_t)ps->n, sizeof(producer_t));
    for (int i = 0; i < ps->n; i++) {
        producer_t *p = &ps->p[i];
        p->ps = ps;
        snprintf(p->id, sizeof(p->id), "%s-p%d", o->prefix, i);
        MQTTAsync_createOptions cr = MQTTAsync_createOptions_initializer;
        cr.maxBufferedMessages = (int)o->window + 100;
        if (MQTTAsync_createWithOptions(&p->cli, o->mqtt_url, p->id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cr) !=
                MQTTASYNC_SUCCESS ||
            MQTTAsync_setCallbacks(p->cli, p, on_lost, on_message, NULL) != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "drover-load: cannot create producer %s\n", p->id);
            goto err;
        }
        MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
        co.keepAliveInterval = 60;
        co.cleansession = 1;
        co.maxInflight = (int)o->window + 10;
        co.username = o->prod_user[0] ? o->prod_user : NULL;
        co.password = o->prod_password[0] ? o->prod_password : NULL;
        co.onSuccess = on_conn_ok;
        co.onFailure = on_fail;
        co.context = p;
        if (MQTTAsync_connect(p->cli, &co) != MQTTASYNC_SUCCESS)
            atomic_store(&p->up, -1);
    }
    for (int waited = 0;; waited++) {
        int up = 0, bad = 0;
        for (int i = 0; i < ps->n; i++) {
            up += atomic_load(&ps->p[i].up) == 1;
            bad += atomic_load(&ps->p[i].up) == -1;
        }
        if (bad) {
            fprintf(stderr, "drover-load: %d producer(s) could not connect to %s\n", bad, o->mqtt_url);
            goto err;
        }
        if (up == ps->n)
            break;
        if (waited == 1000) {
            fprintf(stderr, "drover-load: producers did not connect within 10 s\n");
            goto err;
        }
        usleep(10000);
    }
    lt_nodelay_sockets();
    /* Subscribed first, so no status of an early command can be missed. */
    if (o->rest) {
        char **ids = dr_calloc((size_t)ps->n, sizeof(char *));
        lt_rest_cb_t *cbs = dr_calloc((size_t)ps->n, sizeof(lt_rest_cb_t));
        for (int i = 0; i < ps->n; i++) {
            ids[i] = ps->p[i].id;
            cbs[i] = (lt_rest_cb_t){.accepted = on_rest_accepted, .failed = on_rest_failed, .data = &ps->p[i]};
        }
        ps->rest = lt_rest_open(o, s, ps->n, ids, cbs);
        free(ids);
        free(cbs);
        if (ps->rest == NULL)
            goto err;
    }
    return ps;
err:
    lt_producers_close(ps);
    return NULL;
}

/* Undoes the bookkeeping of a command that could not be handed to its transport. Returns -2. */
static int send_failed(lt_producers_t *ps, producer_t *p, int64_t k)
{
    atomic_fetch_sub(&p->inflight, 1);
    atomic_store(&ps->s->rec[k].sent_us, 0);
    atomic_fetch_add(&ps->s->c.send_errors, 1);
    return -2;
}

int lt_producers_send(lt_producers_t *ps, int64_t k)
{
    producer_t *p = &ps->p[k % ps->n];
    if (atomic_load(&p->inflight) >= ps->o->window)
        return -1;
    if (ps->rest != NULL) {
        /* Counted before the hand-over: the answer may come before lt_rest_submit() returns. */
        atomic_fetch_add(&p->inflight, 1);
        atomic_store(&ps->s->rec[k].sent_us, lt_now_us());
        if (lt_rest_submit(ps->rest, (int)(k % ps->n), k) != 0)
            return send_failed(ps, p, k);
        atomic_fetch_add(&ps->s->c.sent, 1);
        return 0;
    }
    char dev[48], topic[96];
    lt_device_id(ps->o, lt_device_of(ps->o, k), dev, sizeof(dev));
    snprintf(topic, sizeof(topic), "%s/%s", ps->mode == LT_MODE_RAW ? "consumer/request" : "producer/request", dev);
    char *body = lt_wire_command(ps->o, ps->mode, k, p->id);
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = body;
    m.payloadlen = (int)strlen(body);
    m.qos = 1;
    pub_ctx_t *c = dr_malloc(sizeof(*c));
    c->p = p;
    c->k = k;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_puback;
    ro.onFailure = on_pub_fail;
    ro.context = c;
    atomic_fetch_add(&p->inflight, 1);
    atomic_store(&ps->s->rec[k].sent_us, lt_now_us());
    int rc = MQTTAsync_sendMessage(p->cli, topic, &m, &ro);
    free(body); /* paho copied it */
    if (rc != MQTTASYNC_SUCCESS) {
        free(c);
        return send_failed(ps, p, k);
    }
    atomic_fetch_add(&ps->s->c.sent, 1);
    return 0;
}

void lt_producers_close(lt_producers_t *ps)
{
    if (ps == NULL)
        return;
    /* REST first: its thread reports into the producers freed below. */
    lt_rest_close(ps->rest);
    for (int i = 0; i < ps->n; i++) {
        producer_t *p = &ps->p[i];
        if (p->cli == NULL)
            continue;
        if (MQTTAsync_isConnected(p->cli)) {
            MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
            d.timeout = 1000;
            MQTTAsync_disconnect(p->cli, &d);
            for (int w = 0; w < 100 && MQTTAsync_isConnected(p->cli); w++)
                usleep(10000);
        }
        MQTTAsync_destroy(&p->cli);
    }
    free(ps->p);
    free(ps);
}
