/* Simulated devices: one worker process holds up to device.per_proc devices, each its own MQTT
 * connection with client id = device id (as Duster firmware does), subscribed to
 * consumer/request/{id} at QoS 1.
 *
 * DESIGN
 * Every device of a worker is a dr_mqttc client on the worker's one libuv loop, so all device
 * callbacks run on one thread: per-device state (seen ids, pacing clock) needs no locks, and a
 * message costs a read, a decode and a write rather than a pass of a client library's thread over
 * thousands of sockets (paho's MQTTAsync did that, and took more CPU per command than Drover's
 * services together). A device de-duplicates by message id like well-behaved firmware: a re-sent id
 * is counted as a duplicate, answered again (its ack may have been lost) but not executed again.
 * Acks may be dropped on purpose (device.ack_loss_pct) to exercise Drover's re-sends, or delayed
 * (device.ack_delay_ms); delayed acks wait in one FIFO per worker served by one timer, which is exact
 * because every ack has the same delay. Connection set-up is windowed (device.connect_window) so
 * thousands of devices do not hit the broker's accept queue at once; a connection that drops is
 * re-established by dr_mqttc with back-off, as real devices would.
 * The coordinator steers the worker through the shared phase (lt_counters_t.phase), which a timer
 * reads every 10 ms.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <uv.h>

#include "dr/log.h"
#include "dr/mem.h"
#include "dr/mqttc.h"
#include "load.h"

enum { ST_IDLE, ST_CONNECTING, ST_UP, ST_DOWN, ST_STOPPING };

/* What the worker is doing (the coordinator's phase decides when it moves on). */
enum { W_CONNECT, W_PRIME_STOP, W_WAIT_RECONNECT, W_RECONNECT, W_RUN, W_STOP };

/* A connect round gives up on the devices not up after this long (they keep trying; counted failed). */
#define CONNECT_DEADLINE_US (60 * 1000000LL)
/* How long the worker lets its clients say goodbye at the end. */
#define STOP_DEADLINE_US (2 * 1000000LL)

typedef struct worker worker_t;

typedef struct {
    worker_t *w;
    dr_mqttc_t *cli;
    int64_t n;                  /* device number */
    char id[48];
    char topic[96];             /* consumer/request/{id} */
    char reply_topic[160];      /* consumer/response/{id} */
    int state;
    int settled;                /* the current connect round has heard from this device */
    int64_t last_new_us;        /* arrival of the previous new command */
    int64_t *seen;              /* id << 1 | completion-sent bit */
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
    uv_loop_t loop;
    uv_timer_t tick;            /* phase and connect window */
    uv_timer_t ack_timer;       /* delayed acks */
    device_t *devs;
    int ndev;
    int stage;
    int next;                   /* connect round: next device to start */
    int starting;               /* connect round: started, not heard from yet */
    int stopping;               /* clients asked to stop, not closed yet */
    int64_t deadline_us;
    uint64_t rng;
    ack_t *head, *tail;         /* delayed acks, in due order */
};

/* ---- connections ------------------------------------------------------------------------------ */

static void on_state(void *data, int connected, const char *reason)
{
    (void)reason;
    device_t *d = data;
    lt_counters_t *c = &d->w->s->c;
    if (connected) {
        atomic_fetch_add(&c->connected, 1);
        d->state = ST_UP;
    } else if (d->state == ST_UP) {
        atomic_fetch_add(&c->conn_lost, 1);
        atomic_fetch_sub(&c->connected, 1);
        d->state = ST_DOWN;
    }
    /* a failed attempt leaves the device to dr_mqttc's back-off; the round counts it as heard from */
    if (!d->settled && d->w->stage != W_RUN) {
        d->settled = 1;
        d->w->starting--;
    }
}

static void begin_round(worker_t *w, int stage)
{
    w->stage = stage;
    w->next = 0;
    w->starting = 0;
    w->deadline_us = lt_now_us() + CONNECT_DEADLINE_US;
    for (int i = 0; i < w->ndev; i++)
        w->devs[i].settled = 0;
}

/* Starts devices while fewer than connect_window are in their first attempt. Returns 1 once every
 * device is up, or the round's deadline passed (the others are counted failed and keep trying). */
static int connect_round(worker_t *w)
{
    while (w->next < w->ndev && w->starting < w->o->connect_window) {
        device_t *d = &w->devs[w->next++];
        d->state = ST_CONNECTING;
        w->starting++;
        dr_mqttc_start(d->cli);
    }
    int up = 0;
    for (int i = 0; i < w->ndev; i++)
        up += w->devs[i].state == ST_UP;
    if (up == w->ndev)
        return 1;
    if (lt_now_us() < w->deadline_us)
        return 0;
    atomic_fetch_add(&w->s->c.connect_failed, w->ndev - up);
    return 1;
}

static void on_stopped(void *data)
{
    device_t *d = data;
    d->state = ST_IDLE;
    d->w->stopping--;
}

/* Disconnects every device (DISCONNECT, so a persistent session keeps its subscription). */
static void stop_all(worker_t *w)
{
    for (int i = 0; i < w->ndev; i++) {
        device_t *d = &w->devs[i];
        if (d->state == ST_IDLE || d->state == ST_STOPPING)
            continue;
        if (d->state == ST_UP)
            atomic_fetch_sub(&w->s->c.connected, 1);
        d->state = ST_STOPPING;
        w->stopping++;
        dr_mqttc_stop(d->cli, on_stopped, d);
    }
}

/* ---- acks ------------------------------------------------------------------------------------- */

static void on_published(void *data, int err)
{
    device_t *d = data;
    if (err != 0)
        atomic_fetch_add(&d->w->s->c.ack_errors, 1);
}

static void publish(device_t *d, const char *topic, const char *body)
{
    if (dr_mqttc_publish(d->cli, topic, body, strlen(body), 1, on_published, d) != 0)
        atomic_fetch_add(&d->w->s->c.ack_errors, 1);
}

static void on_ack_timer(uv_timer_t *t)
{
    worker_t *w = t->data;
    int64_t now = lt_now_us();
    while (w->head != NULL && w->head->due_us <= now) {
        ack_t *a = w->head;
        w->head = a->next;
        if (w->head == NULL)
            w->tail = NULL;
        publish(a->d, a->topic, a->body);
        free(a);
    }
    if (w->head != NULL) {
        int64_t wait_ms = (w->head->due_us - now + 999) / 1000;
        uv_timer_start(&w->ack_timer, on_ack_timer, (uint64_t)(wait_ms > 0 ? wait_ms : 0), 0);
    }
}

/* Sends now, or queues the answer when the device is configured to be slow. */
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
    int was_empty = w->head == NULL;
    if (w->tail)
        w->tail->next = a;
    else
        w->head = a;
    w->tail = a;
    if (was_empty)
        uv_timer_start(&w->ack_timer, on_ack_timer, (uint64_t)w->o->ack_delay_ms, 0);
}

/* Sends the device's answer for message id (command k): DELIVERED, then COMPLETED once for the share
 * of commands that device.complete_pct selects. Drover gets acks on consumer/response/{device}; the raw
 * baseline answers the producer directly on its status topic with the same shape Drover would use. */
static void reply(device_t *d, int64_t id, int64_t k, const char *pid, int64_t *seen_slot)
{
    worker_t *w = d->w;
    char ptopic[160], body[128];
    const char *topic = d->reply_topic;
    int complete = (uint64_t)k * 2654435761u % 100 < (uint64_t)w->o->complete_pct && !(*seen_slot & 1);
    if (w->mode == LT_MODE_RAW) {
        snprintf(ptopic, sizeof(ptopic), "producer/response/%s", pid);
        topic = ptopic;
        snprintf(body, sizeof(body), "{\"id\":%" PRId64 ",\"tmpId\":%" PRId64 ",\"deliveryStatus\":\"DELIVERED\"}", id, k);
    } else {
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

static void on_message(void *data, const dr_mqttc_msg_t *msg)
{
    device_t *d = data;
    worker_t *w = d->w;
    lt_counters_t *c = &w->s->c;
    /* the device has the message: acknowledge it to the broker at once, as firmware does */
    dr_mqttc_ack(d->cli, msg->token);
    const char *p = msg->payload;
    size_t len = msg->len;
    int64_t id, k;
    char pid[64] = "";
    if (lt_wire_int(p, len, "id", &id) != 0 || lt_wire_int(p, len, "k", &k) != 0 || k < 0 || k >= w->s->ncmd ||
        (w->mode == LT_MODE_RAW && lt_wire_str(p, len, "p", pid, sizeof(pid)) != 0)) {
        atomic_fetch_add(&c->dev_foreign, 1);
        return;
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
}

/* ---- the worker process ----------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    worker_t *w = t->data;
    lt_counters_t *c = &w->s->c;
    int phase = atomic_load(&c->phase);
    if (phase == LT_PH_STOP && w->stage != W_STOP) {
        w->stage = W_STOP;
        w->deadline_us = lt_now_us() + STOP_DEADLINE_US;
        stop_all(w);
    }
    switch (w->stage) {
    case W_CONNECT:
        if (!connect_round(w))
            return;
        if (w->o->backlog) {
            /* Prime persistent sessions (the broker keeps the subscription), then go offline. */
            w->stage = W_PRIME_STOP;
            stop_all(w);
            return;
        }
        w->stage = W_RUN;
        atomic_fetch_add(&c->workers_ready, 1);
        return;
    case W_PRIME_STOP:
        if (w->stopping > 0)
            return;
        w->stage = W_WAIT_RECONNECT;
        atomic_fetch_add(&c->workers_ready, 1);
        return;
    case W_WAIT_RECONNECT:
        if (phase == LT_PH_RECONNECT)
            begin_round(w, W_RECONNECT);
        return;
    case W_RECONNECT:
        if (connect_round(w))
            w->stage = W_RUN;
        return;
    case W_RUN:
        return;
    case W_STOP:
        if (w->stopping == 0 || lt_now_us() >= w->deadline_us)
            uv_stop(&w->loop);
        return;
    }
}

void lt_devices_run(const lt_opts_t *o, int mode, int wi, lt_shm_t *s)
{
    /* A worker must not outlive its coordinator, whatever kills it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    /* thousands of connections: the client's per-connection notices would flood the run's output */
    dr_log_level = DR_LOG_WARNING;
    dr_log_set_service("drover-load");
    static worker_t w; /* one per process */
    w.o = o;
    w.mode = mode;
    w.s = s;
    w.rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(wi + 1) * 0x2545F4914F6CDD1DULL;
    if (uv_loop_init(&w.loop) != 0) {
        fprintf(stderr, "drover-load: worker %d: no event loop\n", wi);
        _exit(1);
    }
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
        snprintf(d->reply_topic, sizeof(d->reply_topic), "consumer/response/%s", d->id);
        dr_mqttc_options_t mo = {
            .url = o->mqtt_url,
            .client_id = d->id,
            .username = o->dev_user[0] ? o->dev_user : NULL,
            .password = o->dev_password[0] ? o->dev_password : NULL,
            .keepalive_s = 60,
            .clean_session = (int)o->clean,
            .connect_timeout_ms = 30000,
            .max_queued = 10000,
        };
        char err[DR_ERR_LEN];
        if (dr_mqttc_open(&w.loop, &mo, &d->cli, err) != 0) {
            fprintf(stderr, "drover-load: worker %d: cannot create client %s: %s\n", wi, d->id, err);
            _exit(1);
        }
        dr_mqttc_subscribe(d->cli, d->topic, 1);
        dr_mqttc_on_message(d->cli, on_message, d);
        dr_mqttc_on_state(d->cli, on_state, d);
    }
    uv_timer_init(&w.loop, &w.tick);
    uv_timer_init(&w.loop, &w.ack_timer);
    w.tick.data = &w;
    w.ack_timer.data = &w;
    begin_round(&w, W_CONNECT);
    uv_timer_start(&w.tick, on_tick, 0, 10);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    /* Exit without freeing 2,500 clients one by one: the process is going away and the kernel closes
     * the sockets; the records are already in shared memory. */
    _exit(0);
}
