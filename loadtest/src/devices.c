/* Simulated devices: one worker process holds up to device.per_proc devices, each its own MQTT
 * connection with client id = device id (as Duster firmware does), subscribed to
 * consumer/request/{id} at QoS 1.
 *
 * DESIGN
 * paho MQTTAsync runs one receive thread per process for all its clients, so every device callback of a
 * worker runs on that one thread: per-device state (seen ids, pacing clock) needs no locks. A device
 * de-duplicates by message id like well-behaved firmware: a re-sent id is counted as a duplicate,
 * answered again (its ack may have been lost) but not executed again. Acks may be dropped on purpose
 * (device.ack_loss_pct) to exercise Drover's re-sends, or delayed (device.ack_delay_ms); delayed acks
 * go through a FIFO served by one thread, which is exact because every ack has the same delay.
 * Connection set-up is windowed (device.connect_window) so thousands of devices do not hit the
 * broker's accept queue at once.
 */
#include <MQTTAsync.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "dr/mem.h"
#include "load.h"

enum { ST_IDLE, ST_CONNECTING, ST_UP, ST_DOWN, ST_FAILED };

#define MAX_ATTEMPTS 5

typedef struct worker worker_t;

typedef struct {
    worker_t *w;
    MQTTAsync cli;
    int64_t n;                  /* device number */
    char id[48];
    char topic[96];             /* consumer/request/{id} */
    _Atomic int state;
    int attempts;
    int64_t last_new_us;        /* arrival of the previous new command (receive thread only) */
    int64_t *seen;              /* id << 1 | completion-sent bit (receive thread only) */
    int nseen, cap;
} device_t;

typedef struct ack {
    device_t *d;
    int64_t due_us;
    char topic[160];
    char body[128];
    struct ack *next;
} ack_t;

struct worker {
    const lt_opts_t *o;
    int mode;
    lt_shm_t *s;
    device_t *devs;
    int ndev;
    _Atomic int inflight;       /* connects not yet settled */
    uint64_t rng;               /* receive thread only */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ack_t *head, *tail;         /* delayed acks, in due order */
    int stop;
};

/* ---- connection handling ---------------------------------------------------------------------- */

static void settle(device_t *d, int state)
{
    atomic_store(&d->state, state);
    atomic_fetch_sub(&d->w->inflight, 1);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    device_t *d = ctx;
    atomic_fetch_add(&d->w->s->c.connected, 1);
    settle(d, ST_UP);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    settle(ctx, ST_FAILED);
}

static void on_conn_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    device_t *d = ctx;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sub_ok;
    ro.onFailure = on_sub_fail;
    ro.context = d;
    if (MQTTAsync_subscribe(d->cli, d->topic, 1, &ro) != MQTTASYNC_SUCCESS)
        settle(d, ST_FAILED);
}

static void on_conn_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    settle(ctx, ST_FAILED);
}

static void on_lost(void *ctx, char *cause)
{
    (void)cause;
    device_t *d = ctx;
    atomic_fetch_add(&d->w->s->c.conn_lost, 1);
    atomic_fetch_sub(&d->w->s->c.connected, 1);
    atomic_store(&d->state, ST_DOWN);
}

static void start_connect(device_t *d)
{
    const lt_opts_t *o = d->w->o;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 60;
    co.cleansession = (int)o->clean;
    co.connectTimeout = 30;
    co.username = o->dev_user[0] ? o->dev_user : NULL;
    co.password = o->dev_password[0] ? o->dev_password : NULL;
    co.onSuccess = on_conn_ok;
    co.onFailure = on_conn_fail;
    co.context = d;
    d->attempts++;
    atomic_store(&d->state, ST_CONNECTING);
    atomic_fetch_add(&d->w->inflight, 1);
    if (MQTTAsync_connect(d->cli, &co) != MQTTASYNC_SUCCESS)
        settle(d, ST_FAILED);
}

/* Connects every device that is not up, keeping at most connect_window attempts in flight, and waits
 * until each one is up or out of attempts. */
static void connect_all(worker_t *w)
{
    for (int round = 0; round < MAX_ATTEMPTS; round++) {
        int pending = 0;
        for (int i = 0; i < w->ndev; i++) {
            device_t *d = &w->devs[i];
            int st = atomic_load(&d->state);
            if (st == ST_UP || d->attempts >= MAX_ATTEMPTS * (round + 1))
                continue;
            while (atomic_load(&w->inflight) >= w->o->connect_window)
                usleep(1000);
            if (atomic_load(&w->s->c.phase) == LT_PH_STOP)
                return;
            start_connect(d);
            pending++;
        }
        while (atomic_load(&w->inflight) > 0)
            usleep(2000);
        if (pending == 0)
            break;
        int failed = 0;
        for (int i = 0; i < w->ndev; i++)
            failed += atomic_load(&w->devs[i].state) != ST_UP;
        if (failed == 0)
            break;
        usleep(500000); /* let the broker's accept queue drain before retrying */
    }
    for (int i = 0; i < w->ndev; i++)
        if (atomic_load(&w->devs[i].state) != ST_UP)
            atomic_fetch_add(&w->s->c.connect_failed, 1);
    lt_nodelay_sockets();
}

static void disconnect_all(worker_t *w)
{
    for (int i = 0; i < w->ndev; i++) {
        device_t *d = &w->devs[i];
        if (atomic_load(&d->state) != ST_UP)
            continue;
        MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
        dopt.timeout = 1000;
        if (MQTTAsync_disconnect(d->cli, &dopt) == MQTTASYNC_SUCCESS)
            atomic_fetch_sub(&w->s->c.connected, 1);
        atomic_store(&d->state, ST_IDLE);
    }
    for (int i = 0, spins = 0; i < w->ndev && spins < 500; i++)
        while (MQTTAsync_isConnected(w->devs[i].cli) && spins++ < 500)
            usleep(10000);
}

/* ---- acks ------------------------------------------------------------------------------------- */

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    device_t *d = ctx;
    atomic_fetch_add(&d->w->s->c.ack_errors, 1);
}

static void publish(device_t *d, const char *topic, const char *body)
{
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)body;
    m.payloadlen = (int)strlen(body);
    m.qos = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onFailure = on_pub_fail;
    ro.context = d;
    if (MQTTAsync_sendMessage(d->cli, topic, &m, &ro) != MQTTASYNC_SUCCESS)
        atomic_fetch_add(&d->w->s->c.ack_errors, 1);
}

/* Sends now, or queues for the ack thread when the device is configured to be slow. */
static void answer(device_t *d, const char *topic, const char *body)
{
    worker_t *w = d->w;
    if (w->o->ack_delay_ms == 0) {
        publish(d, topic, body);
        return;
    }
    ack_t *a = dr_malloc(sizeof(*a));
    a->d = d;
    a->due_us = lt_now_us() + w->o->ack_delay_ms * 1000;
    snprintf(a->topic, sizeof(a->topic), "%s", topic);
    snprintf(a->body, sizeof(a->body), "%s", body);
    a->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = a;
    else
        w->head = a;
    w->tail = a;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *ack_thread(void *arg)
{
    worker_t *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->head == NULL) {
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        int64_t wait = w->head->due_us - lt_now_us();
        if (wait > 0) {
            pthread_mutex_unlock(&w->mu);
            usleep((useconds_t)(wait > 20000 ? 20000 : wait));
            pthread_mutex_lock(&w->mu);
            continue;
        }
        ack_t *a = w->head;
        w->head = a->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        publish(a->d, a->topic, a->body);
        free(a);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Sends the device's answer for message id (command k): DELIVERED, then COMPLETED once for the share
 * of commands that device.complete_pct selects. Drover gets acks on consumer/response/{device}; the raw
 * baseline answers the producer directly on its status topic with the same shape Drover would use. */
static void reply(device_t *d, int64_t id, int64_t k, const char *pid, int64_t *seen_slot)
{
    worker_t *w = d->w;
    char topic[160], body[128];
    int complete = (uint64_t)k * 2654435761u % 100 < (uint64_t)w->o->complete_pct && !(*seen_slot & 1);
    if (w->mode == LT_MODE_RAW) {
        snprintf(topic, sizeof(topic), "producer/response/%s", pid);
        snprintf(body, sizeof(body), "{\"id\":%" PRId64 ",\"tmpId\":%" PRId64 ",\"deliveryStatus\":\"DELIVERED\"}", id, k);
    } else {
        snprintf(topic, sizeof(topic), "consumer/response/%s", d->id);
        snprintf(body, sizeof(body), "{\"id\":%" PRId64 "}", id);
    }
    answer(d, topic, body);
    atomic_fetch_add(&w->s->c.acks_sent, 1);
    if (!complete)
        return;
    if (w->mode == LT_MODE_RAW)
        snprintf(body, sizeof(body), "{\"id\":%" PRId64 ",\"tmpId\":%" PRId64 ",\"deliveryStatus\":\"COMPLETED\"}", id, k);
    else
        snprintf(body, sizeof(body), "{\"id\":%" PRId64 ",\"deliveryStatus\":\"COMPLETED\"}", id);
    answer(d, topic, body);
    *seen_slot |= 1;
    atomic_fetch_add(&w->s->c.completes_sent, 1);
}

/* ---- incoming commands ------------------------------------------------------------------------ */

static int64_t *find_seen(device_t *d, int64_t id)
{
    /* Newest first: a re-send is almost always of the latest command. */
    for (int i = d->nseen - 1; i >= 0; i--)
        if ((d->seen[i] >> 1) == id)
            return &d->seen[i];
    return NULL;
}

static int64_t *add_seen(device_t *d, int64_t id)
{
    if (d->nseen == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 8;
        d->seen = dr_realloc(d->seen, sizeof(int64_t) * (size_t)d->cap);
    }
    d->seen[d->nseen] = id << 1;
    return &d->seen[d->nseen++];
}

static uint64_t rnd(worker_t *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    (void)topic_len;
    device_t *d = ctx;
    worker_t *w = d->w;
    lt_counters_t *c = &w->s->c;
    const char *p = msg->payload;
    size_t len = (size_t)msg->payloadlen;
    int64_t id, k;
    char pid[64] = "";
    if (lt_wire_int(p, len, "id", &id) != 0 || lt_wire_int(p, len, "k", &k) != 0 || k < 0 || k >= w->s->ncmd ||
        (w->mode == LT_MODE_RAW && lt_wire_str(p, len, "p", pid, sizeof(pid)) != 0)) {
        atomic_fetch_add(&c->dev_foreign, 1);
        goto out;
    }
    int64_t now = lt_now_us();
    int64_t *slot = find_seen(d, id);
    if (slot == NULL) {
        slot = add_seen(d, id);
        int64_t zero = 0;
        lt_rec_t *r = &w->s->rec[k];
        atomic_compare_exchange_strong(&r->dev_us, &zero, now);
        atomic_store(&r->did, id);
        atomic_fetch_add(&c->dev_first, 1);
        if (d->last_new_us != 0) {
            int64_t i = atomic_fetch_add(&c->nintervals, 1);
            if (i < w->s->ncmd)
                w->s->intervals[i] = (int32_t)((now - d->last_new_us) / 1000);
        }
        d->last_new_us = now;
    } else {
        atomic_fetch_add(&c->dev_dups, 1);
    }
    if (rnd(w) % 100 < (uint64_t)w->o->ack_loss_pct)
        atomic_fetch_add(&c->acks_lost, 1);
    else
        reply(d, id, k, pid, slot);
out:
    /* paho: the callback owns both and must free them; returning 1 lets paho send the PUBACK. */
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

/* ---- the worker process ----------------------------------------------------------------------- */

static void wait_phase(worker_t *w, int phase)
{
    while (atomic_load(&w->s->c.phase) < phase)
        usleep(10000);
}

/* Re-connects devices whose connection dropped during the run, as real devices would. */
static void repair(worker_t *w)
{
    for (int i = 0; i < w->ndev; i++) {
        device_t *d = &w->devs[i];
        int st = atomic_load(&d->state);
        if ((st == ST_DOWN || st == ST_FAILED) && d->attempts < 10 * MAX_ATTEMPTS &&
            atomic_load(&w->inflight) < w->o->connect_window)
            start_connect(d);
    }
}

void lt_devices_run(const lt_opts_t *o, int mode, int wi, lt_shm_t *s)
{
    /* A worker must not outlive its coordinator, whatever kills it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    static worker_t w; /* one per process; static so paho callbacks never see a dead stack */
    w.o = o;
    w.mode = mode;
    w.s = s;
    w.rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(wi + 1) * 0x2545F4914F6CDD1DULL;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int64_t cap = o->devices / o->workers + 2;
    w.devs = dr_calloc((size_t)cap, sizeof(device_t));
    for (int64_t n = wi; n < o->devices; n += o->workers) {
        if (!lt_device_online(o, n))
            continue;
        device_t *d = &w.devs[w.ndev++];
        d->w = &w;
        d->n = n;
        lt_device_id(o, n, d->id, sizeof(d->id));
        snprintf(d->topic, sizeof(d->topic), "consumer/request/%s", d->id);
        MQTTAsync_createOptions cr = MQTTAsync_createOptions_initializer;
        cr.maxBufferedMessages = 10000;
        if (MQTTAsync_createWithOptions(&d->cli, o->mqtt_url, d->id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cr) !=
                MQTTASYNC_SUCCESS ||
            MQTTAsync_setCallbacks(d->cli, d, on_lost, on_message, NULL) != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "drover-load: worker %d: cannot create client %s\n", wi, d->id);
            _exit(1);
        }
    }
    pthread_t th;
    pthread_create(&th, NULL, ack_thread, &w);

    connect_all(&w);
    if (o->backlog) {
        /* Prime persistent sessions (subscription kept by the broker), then go offline. */
        disconnect_all(&w);
        for (int i = 0; i < w.ndev; i++)
            w.devs[i].attempts = 0;
    }
    atomic_fetch_add(&s->c.workers_ready, 1);
    if (o->backlog) {
        wait_phase(&w, LT_PH_RECONNECT);
        if (atomic_load(&s->c.phase) == LT_PH_RECONNECT)
            connect_all(&w);
    }
    while (atomic_load(&s->c.phase) != LT_PH_STOP) {
        repair(&w);
        usleep(100000);
    }
    pthread_mutex_lock(&w.mu);
    w.stop = 1;
    pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(th, NULL);
    disconnect_all(&w);
    /* Exit without destroying 2,500 clients one by one: the process is going away and the kernel
     * closes the sockets; the records are already in shared memory. */
    _exit(0);
}
