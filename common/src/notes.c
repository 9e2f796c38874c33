/* Publishing status changes (see dr/notes.h). */
#define DR_MODULE "common/notes"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/notes.h"
#include "dr/shard.h"
#include "dr/status.h"

/* Log entries this node handed to the broker recently (or queued for the window), each marked once the
 * broker confirmed it. A function that logs a change returns the message's previous change first when it is
 * still unconfirmed in Redis, and that may be one of ours:
 *  - still in flight: its own batch confirms it in a moment; publishing it again would only repeat it, so
 *    it is skipped;
 *  - published, but its confirmation never reached Redis (Redis restarted, or the XACK failed): it is
 *    confirmed again with the new change, never published again. Left unconfirmed, the shard owner's
 *    reclaim would publish it after the new change and the producer would see its status go backwards;
 *  - not here: never published (its call's reply was lost), or forgotten long ago: it goes out first. */
#define SEEN_SLOTS 32768
#define SEEN_DONE ((uint64_t)1 << 63) /* in a slot: the broker confirmed the publish */

/* MQTT publishes of notifications awaiting their PUBACK at once. The rest wait here, in order, with
 * no deadline: under a saturated broker a notification waits for a slot instead of timing out inside
 * the client (whose publish deadline counts from the call, queueing included) and then being
 * reclaimed and published a second time. Below dr_mqttc's default window, so a notification never
 * waits for a window slot inside the client. */
#define WINDOW_MAX 768

/* A node keeps the log entries it has claimed and not yet settled (waiting for a slot, in flight,
 * held) fresh in Redis: other nodes take over an entry unconfirmed for FRESH_MS (3 s, drover.lua)
 * and the shard's owner reclaims one idle for 5 s. Without this, a live node's slow publish would be
 * taken over and published twice. Touched once TOUCH_AFTER_MS passed since the claim or the last
 * touch, leaving a margin for the reply that carried the claim to arrive. */
#define TOUCH_TICK_MS 250
#define TOUCH_AFTER_MS 1000
#define TOUCH_NEVER_STALE ((int64_t)1 << 50) /* note_wait: never take over another node's entry */

typedef struct batch batch_t;

typedef struct ref {
    batch_t *b;
    size_t i;
    STAILQ_ENTRY(ref) link;
} ref_t;

struct dr_notes {
    dr_redis_t *redis;
    const dr_store_t *st;
    dr_bus_t *bus;
    char *subject;
    dr_notes_publish_fn *pub;
    void *pub_ctx;
    size_t in_flight;
    int refs;              /* 1 for the owner, 1 per unsettled batch */
    int closed;
    uv_loop_t *loop;
    LIST_HEAD(, hold) holds; /* notes waiting for another node's earlier note (dr_note_t.after) */
    LIST_HEAD(, batch) batches; /* unsettled batches, for touching their entries */
    STAILQ_HEAD(, ref) waiting; /* MQTT publishes waiting for a slot of the window, in order */
    size_t window;         /* MQTT publishes awaiting their PUBACK */
    size_t window_max;
    uv_timer_t touch_timer;
    uint64_t *seen;        /* open addressing, 0 = empty; SEEN_SLOTS entries */
    uint64_t *ring;        /* insertion order, for eviction */
    size_t ring_at, seen_n;
};

static uint64_t seen_key(const dr_note_t *n)
{
    uint64_t h = dr_fnv1a64(n->log_id, strlen(n->log_id), 0x9e3779b97f4a7c15ULL ^ n->shard) & ~SEEN_DONE;
    return h ? h : 1;
}

/* The slot holding k, or the empty slot where it would go. */
static size_t seen_find(const dr_notes_t *p, uint64_t k)
{
    size_t i = k & (SEEN_SLOTS * 2 - 1);
    while (p->seen[i] != 0 && (p->seen[i] & ~SEEN_DONE) != k)
        i = (i + 1) & (SEEN_SLOTS * 2 - 1);
    return i;
}

static int seen_has(const dr_notes_t *p, uint64_t k)
{
    return p->seen[seen_find(p, k)] != 0;
}

static int seen_done(const dr_notes_t *p, uint64_t k)
{
    return (p->seen[seen_find(p, k)] & SEEN_DONE) != 0;
}

static void seen_mark_done(dr_notes_t *p, uint64_t k)
{
    size_t i = seen_find(p, k);
    if (p->seen[i] != 0)
        p->seen[i] |= SEEN_DONE;
}

static void seen_del(dr_notes_t *p, uint64_t k)
{
    /* backward-shift deletion keeps probe chains intact */
    size_t mask = SEEN_SLOTS * 2 - 1, i = seen_find(p, k);
    if (p->seen[i] == 0)
        return;
    p->seen[i] = 0;
    for (size_t j = (i + 1) & mask; p->seen[j] != 0; j = (j + 1) & mask) {
        size_t home = p->seen[j] & mask;
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            p->seen[i] = p->seen[j];
            p->seen[j] = 0;
            i = j;
        }
    }
}

static void seen_add(dr_notes_t *p, uint64_t k)
{
    if (seen_has(p, k))
        return;
    if (p->seen_n == SEEN_SLOTS) {
        seen_del(p, p->ring[p->ring_at]);
        p->seen_n--;
    }
    p->seen[seen_find(p, k)] = k;
    p->ring[p->ring_at] = k;
    p->ring_at = (p->ring_at + 1) % SEEN_SLOTS;
    p->seen_n++;
}

struct batch {
    dr_notes_t *p;
    size_t n, pending;
    dr_note_t *notes;      /* strings owned (copied) */
    char *ok;              /* per note: published or skipped, may be acknowledged */
    char *open;            /* per note: ours and not settled yet: kept fresh in Redis until the batch
                            * settles, so nobody reclaims a note that went out before its confirmation */
    int64_t touched_at;    /* dr_mono_ms() of the claim (approximately) or the last touch */
    LIST_ENTRY(batch) link; /* in p->batches */
};

/* A note that waits until the message's earlier change, which another node is publishing, is
 * confirmed (or has gone stale and is taken over): published after it, never before. */
#define HOLD_POLL_MS 20
#define HOLD_STALE_MS 3000

struct hold {
    batch_t *b;
    size_t i;
    uv_timer_t timer;
    int checking;          /* a note_wait call is running */
    LIST_ENTRY(hold) link;
};

static void unref(dr_notes_t *p)
{
    if (--p->refs == 0) {
        free(p->subject);
        free(p->seen);
        free(p->ring);
        free(p);
    }
}

static void batch_free(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->notes[i].log_id);
        free((char *)b->notes[i].dev);
        free((char *)b->notes[i].pd);
        free((char *)b->notes[i].after);
    }
    free(b->notes);
    free(b->ok);
    free(b->open);
    free(b);
}

static void settle(batch_t *b)
{
    dr_notes_t *p = b->p;
    /* Acknowledge what went out (or can never go out); the rest stays claimed for the owner's reclaim. */
    dr_note_t *done = dr_calloc(b->n, sizeof(*done));
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->ok[i])
            done[k++] = b->notes[i]; /* shallow: dr_store_notes_done copies what it sends */
    if (k > 0 && !p->closed && dr_redis_ready(p->redis))
        dr_store_notes_done(p->redis, p->st, done, k, NULL, NULL);
    free(done);
    p->in_flight -= b->n;
    LIST_REMOVE(b, link);
    batch_free(b);
    unref(p);
}

static void pump(dr_notes_t *p);

static void on_published(void *data, int err)
{
    ref_t *r = data;
    batch_t *b = r->b;
    dr_notes_t *p = b->p;
    p->refs++; /* settling the batch may drop the last other reference */
    p->window--;
    if (err == 0) {
        b->ok[r->i] = 1; /* stays open: kept fresh until the batch confirms it */
        if (!p->closed)
            seen_mark_done(p, seen_key(&b->notes[r->i]));
        dr_metrics_inc(DR_M_NOTIFIED);
    } else {
        b->open[r->i] = 0;
        dr_metrics_inc(DR_M_PUBLISH_FAILED); /* stays claimed: the shard owner publishes it later */
        if (!p->closed)
            seen_del(p, seen_key(&b->notes[r->i])); /* not published: a takeover must publish it */
    }
    free(r);
    if (--b->pending == 0)
        settle(b);
    pump(p);
    unref(p);
}

/* Hands waiting notes to the broker while the window has room. A note the client refuses now (no
 * connection) is left claimed for the shard's owner, as one whose publish failed. */
static void pump(dr_notes_t *p)
{
    while (!p->closed && p->window < p->window_max && !STAILQ_EMPTY(&p->waiting)) {
        ref_t *r = STAILQ_FIRST(&p->waiting);
        STAILQ_REMOVE_HEAD(&p->waiting, link);
        batch_t *b = r->b;
        const dr_note_t *n = &b->notes[r->i];
        int status = n->ext ? n->status : dr_status_for_duster(n->status);
        char topic[256];
        snprintf(topic, sizeof(topic), "producer/response/%s", n->pd);
        dr_log(DR_LOG_DEBUG, "event=notify id=%lld status=%s log=%u:%s", (long long)n->id, dr_status_name(status),
               n->shard, n->log_id);
        char *body = dr_codec_encode_producer(n->id, 1, n->tmp, status);
        int rc = p->pub(p->pub_ctx, topic, body, strlen(body), on_published, r);
        free(body);
        if (rc == 0) {
            p->window++;
            continue;
        }
        b->open[r->i] = 0;
        if (rc == DR_EINVAL) {
            b->ok[r->i] = 1;
            dr_metrics_inc(DR_M_NOTIFY_REFUSED);
            dr_log(DR_LOG_WARNING,
                   "event=notification_refused id=%lld reason=\"producer id is not a valid topic level\" "
                   "action=skipped",
                   (long long)n->id);
        } else {
            dr_metrics_inc(DR_M_PUBLISH_FAILED); /* stays claimed: the shard owner publishes it later */
            seen_del(p, seen_key(n));
        }
        free(r);
        if (--b->pending == 0)
            settle(b);
    }
}

static void publish_one(dr_notes_t *p, batch_t *b, size_t i)
{
    const dr_note_t *n = &b->notes[i];
    uint64_t k = seen_key(n);
    if (seen_has(p, k)) {
        /* Ours (see SEEN_SLOTS). Published: confirmed again with this batch. On its way: the first copy's
         * batch confirms it once the broker did; confirming it here could lose it if that publish fails. */
        if (seen_done(p, k))
            b->ok[i] = 1; /* stays open: kept fresh until this batch confirms it */
        else
            b->open[i] = 0;
        return;
    }
    char ev[512];
    char *qdev = dr_codec_json_string(n->dev);
    const char *ms_end = strchr(n->log_id, '-');
    int len = snprintf(ev, sizeof(ev), "{\"id\":%lld,\"device\":%s,\"status\":\"%s\",\"ts\":%.*s}", (long long)n->id,
                       qdev, dr_status_name(n->status), ms_end ? (int)(ms_end - n->log_id) : 1,
                       ms_end ? n->log_id : "0");
    free(qdev);
    if (len > 0 && (size_t)len < sizeof(ev) && dr_bus_publish(p->bus, p->subject, ev, (size_t)len) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);

    if (!n->has_tmp || n->pd[0] == '\0' || n->status < 0 ||
        (!n->ext && dr_status_is_extended(dr_status_for_duster(n->status)))) {
        /* Nothing to publish over MQTT (Drover-only outcomes go only to producers that used
         * Drover-only fields). */
        b->ok[i] = 1;
        b->open[i] = 0;
        return;
    }
    /* In line behind every earlier note of this node, so one message's changes leave in order. */
    seen_add(p, k);
    ref_t *r = dr_malloc(sizeof(*r));
    r->b = b;
    r->i = i;
    b->pending++;
    STAILQ_INSERT_TAIL(&p->waiting, r, link);
    pump(p);
}

/* ---- keeping claimed entries fresh ------------------------------------------------------------------ */

static void on_touched(void *data, int err, const char *errstr, int result, const dr_note_t *taken)
{
    (void)err;
    (void)errstr;
    (void)result;
    (void)taken; /* our own entry, claimed again: it is published by the batch that holds it */
    unref(data);
}

/* Claims again, for this node, every entry it has not settled for TOUCH_AFTER_MS, which resets the
 * entry's idle time. note_wait with a stale time that never passes does exactly that, and leaves an
 * entry alone that another node took over meanwhile. */
static void on_touch_tick(uv_timer_t *t)
{
    dr_notes_t *p = t->data;
    if (p->closed || !dr_redis_ready(p->redis))
        return;
    int64_t now = dr_mono_ms();
    batch_t *b;
    LIST_FOREACH(b, &p->batches, link)
    {
        if (now - b->touched_at < TOUCH_AFTER_MS)
            continue;
        b->touched_at = now;
        for (size_t i = 0; i < b->n; i++) {
            if (!b->open[i])
                continue;
            dr_note_t probe = b->notes[i];
            probe.after = probe.log_id;
            if (dr_store_note_wait(p->redis, p->st, &probe, TOUCH_NEVER_STALE, on_touched, p) == 0)
                p->refs++;
        }
    }
}

/* ---- notes that wait for another node's earlier one ------------------------------------------------ */

static void hold_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The hold is over (its note published, or dropped while closing): settle its share of the batch. */
static void hold_end(struct hold *hd)
{
    batch_t *b = hd->b;
    LIST_REMOVE(hd, link);
    hd->timer.data = hd;
    uv_close((uv_handle_t *)&hd->timer, hold_closed);
    if (--b->pending == 0)
        settle(b);
}

static void hold_check(uv_timer_t *t);

static void on_hold_state(void *data, int err, const char *errstr, int result, const dr_note_t *taken)
{
    (void)errstr;
    struct hold *hd = data;
    dr_notes_t *p = hd->b->p;
    hd->checking = 0;
    if (p->closed) {
        hold_end(hd); /* stays claimed: the shard owner publishes it later */
        return;
    }
    if (err == 0 && result == 2 && taken != NULL)
        dr_notes_publish(p, taken, 1, 0); /* the earlier change first: its node died or lost it */
    if (err == 0 && result != 0) {
        publish_one(p, hd->b, hd->i);
        hold_end(hd);
        return;
    }
    uv_timer_start(&hd->timer, hold_check, HOLD_POLL_MS, 0);
}

static void hold_check(uv_timer_t *t)
{
    struct hold *hd = t->data;
    dr_notes_t *p = hd->b->p;
    dr_note_t probe = hd->b->notes[hd->i];
    if (!p->closed && dr_store_note_wait(p->redis, p->st, &probe, HOLD_STALE_MS, on_hold_state, hd) == 0) {
        hd->checking = 1;
        return;
    }
    if (p->closed) {
        hold_end(hd);
        return;
    }
    uv_timer_start(&hd->timer, hold_check, HOLD_POLL_MS, 0); /* Redis unavailable: try again */
}

static void hold_start(dr_notes_t *p, batch_t *b, size_t i)
{
    struct hold *hd = dr_calloc(1, sizeof(*hd));
    hd->b = b;
    hd->i = i;
    b->pending++;
    uv_timer_init(p->loop, &hd->timer);
    hd->timer.data = hd;
    LIST_INSERT_HEAD(&p->holds, hd, link);
    hold_check(&hd->timer);
}

dr_notes_t *dr_notes_new(uv_loop_t *loop, dr_redis_t *r, const dr_store_t *st, dr_bus_t *bus,
                         const char *status_subject, dr_notes_publish_fn *pub, void *pub_ctx)
{
    dr_notes_t *p = dr_calloc(1, sizeof(*p));
    p->loop = loop;
    LIST_INIT(&p->holds);
    LIST_INIT(&p->batches);
    STAILQ_INIT(&p->waiting);
    p->window_max = WINDOW_MAX;
    p->redis = r;
    p->st = st;
    p->bus = bus;
    p->subject = dr_strdup(status_subject);
    p->pub = pub;
    p->pub_ctx = pub_ctx;
    p->refs = 1;
    p->seen = dr_calloc(SEEN_SLOTS * 2, sizeof(uint64_t));
    p->ring = dr_calloc(SEEN_SLOTS, sizeof(uint64_t));
    uv_timer_init(loop, &p->touch_timer);
    p->touch_timer.data = p;
    uv_timer_start(&p->touch_timer, on_touch_tick, TOUCH_TICK_MS, TOUCH_TICK_MS);
    uv_unref((uv_handle_t *)&p->touch_timer);
    p->refs++; /* released when the timer is closed */
    return p;
}

void dr_notes_publish(dr_notes_t *p, const dr_note_t *notes, size_t n, int count)
{
    if (n == 0 || p->closed)
        return;
    for (size_t i = 0; count && i < n; i++)
        if (!seen_has(p, seen_key(&notes[i])))
            dr_metrics_status(notes[i].status, 1);
    batch_t *b = dr_calloc(1, sizeof(*b));
    b->p = p;
    b->n = n;
    b->notes = dr_calloc(n, sizeof(*b->notes));
    b->ok = dr_calloc(n, 1);
    b->open = dr_calloc(n, 1);
    memset(b->open, 1, n);
    b->touched_at = dr_mono_ms();
    LIST_INSERT_HEAD(&p->batches, b, link);
    for (size_t i = 0; i < n; i++) {
        b->notes[i] = notes[i];
        b->notes[i].log_id = dr_strdup(notes[i].log_id);
        b->notes[i].dev = dr_strdup(notes[i].dev);
        b->notes[i].pd = dr_strdup(notes[i].pd);
        b->notes[i].after = dr_strdup(notes[i].after ? notes[i].after : "");
    }
    p->refs++;
    p->in_flight += n;
    b->pending = 1; /* held while publishing */
    for (size_t i = 0; i < n; i++) {
        if (b->notes[i].after[0] != '\0')
            hold_start(p, b, i);
        else
            publish_one(p, b, i);
    }
    if (--b->pending == 0)
        settle(b);
}

size_t dr_notes_in_flight(const dr_notes_t *p)
{
    return p->in_flight;
}

static void on_touch_timer_closed(uv_handle_t *h)
{
    unref(h->data);
}

void dr_notes_free(dr_notes_t *p)
{
    if (p == NULL)
        return;
    p->closed = 1;
    uv_close((uv_handle_t *)&p->touch_timer, on_touch_timer_closed);
    /* Notes still waiting for the window are dropped the same way (they stay claimed). */
    while (!STAILQ_EMPTY(&p->waiting)) {
        ref_t *r = STAILQ_FIRST(&p->waiting);
        STAILQ_REMOVE_HEAD(&p->waiting, link);
        batch_t *b = r->b;
        free(r);
        if (--b->pending == 0)
            settle(b);
    }
    /* Held notes are dropped (they stay claimed: the shard owner publishes them); a check still
     * running ends its hold when it answers. */
    struct hold *hd = LIST_FIRST(&p->holds), *next;
    for (; hd != NULL; hd = next) {
        next = LIST_NEXT(hd, link);
        if (!hd->checking) {
            uv_timer_stop(&hd->timer);
            hold_end(hd);
        }
    }
    unref(p);
}
