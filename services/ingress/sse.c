/* GET /v1/events: live status changes as Server-Sent Events.
 *
 * DESIGN
 * The source is the per-shard status log <prefix>{<shard>}log that every Redis function appends to
 * (common/lua/drover.lua), not NATS: a client that reconnects with Last-Event-ID resumes where it left
 * off, as long as the log still holds that point (dispatchers trim it by age).
 *
 * A stream keeps, per shard, the id of the last log entry it has read, and reads every shard at once
 * with one `XREAD COUNT n STREAMS <every shard's log> <every cursor>` per poll: one command per client
 * every POLL_MS whatever the shard count, and a reply that is empty when nothing happened. When a
 * poll brings a full page of some shard the next one follows as soon as the client took the bytes, so
 * a backlog drains at the client's pace (h2o's proceed callback paces the writes) and one slow client
 * only slows itself. Events of one poll are sent in log-id (Redis time) order; the events of one
 * message all live in its shard's log, so they always arrive in the order they happened.
 *
 * Event ids are "<shard>:<ms>-<seq>". Resuming from one restarts that shard right after it and every
 * other shard from <ms>-0, since its position there is not known: events of other shards from that
 * millisecond on may come again, never fewer (clients de-duplicate by message id and status, see
 * docs/rest.md). An id without a shard (the single log of data layout 1) restarts every shard from
 * its millisecond. A new stream starts at Redis's current time (TIME), not the ingress clock: a
 * non-blocking XREAD with "$" would never return anything, and clocks of two hosts may differ.
 *
 * Filters: device, producer (producerDeviseId); a device key sees only its device and a producer key
 * only the messages it submitted.
 */
#define DR_MODULE "ingress/sse"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/status.h"
#include "http.h"
#include "rest.h"

#define POLL_MS 200
#define KEEPALIVE_MS 15000
#define READ_BUDGET 4096       /* log entries one poll may bring, spread over the shards */
#define COUNT_MIN 16
#define COUNT_MAX 200
#define ID_LEN 44              /* "<ms>-<seq>": two 64-bit numbers, a dash and the NUL */

/* A position in a shard's log (a stream entry id). */
typedef struct {
    uint64_t ms, seq;
} log_pos_t;

typedef struct sse {
    h2o_generator_t gen;
    hreq_t *hr;
    ingress_t *in;
    uv_timer_t timer;
    uint32_t shards;
    log_pos_t *pos;            /* per shard: the last entry read; the next read starts after it */
    int started;               /* pos is set (a new stream first asks Redis for the time) */
    int count;                 /* XREAD COUNT per shard */
    char count_s[16];
    const char **argv;         /* XREAD COUNT n STREAMS keys... ids...: keys built once, ids per poll */
    char **keys;
    char *ids;                 /* shards x ID_LEN */
    char device[256];
    char producer[130];
    char key[DR_APIKEY_ID_LEN + 1];
    int sending;               /* h2o_send outstanding: wait for proceed */
    int polling;               /* TIME or XREAD outstanding */
    int more;                  /* the last poll filled a page of some shard: poll again at once */
    int closed;                /* client gone or stream finished: no more h2o_send */
    int finishing;             /* shutdown: send the final chunk when allowed */
    int timer_open;
    char *out;                 /* bytes handed to h2o, kept until proceed */
    int64_t last_write;
    struct sse *prev, *next;
} sse_t;

static sse_t *streams; /* open streams of this process, for shutdown */

/* ---- life cycle ---------------------------------------------------------------------------------- */

/* Frees a stream that is not (or no longer) linked, and drops the handler's reference to hr. */
static void sse_free(sse_t *s)
{
    for (uint32_t i = 0; i < s->shards; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->argv);
    free(s->ids);
    free(s->pos);
    free(s->out);
    hreq_t *hr = s->hr;
    free(s);
    hreq_release(hr);
}

static void maybe_free(sse_t *s)
{
    if (s->timer_open || s->polling || !s->closed)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else if (streams == s)
        streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->in->sse_streams--;
    sse_free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    sse_t *s = h->data;
    s->timer_open = 0;
    maybe_free(s);
}

static void close_stream(sse_t *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static void on_tick(uv_timer_t *t);

/* Polls again on the next loop turn instead of waiting for the next tick. */
static void poll_soon(sse_t *s)
{
    if (!s->closed)
        uv_timer_start(&s->timer, on_tick, 0, POLL_MS);
}

static void send_bytes(sse_t *s, char *bytes, size_t len)
{
    free(s->out);
    s->out = bytes;
    s->sending = 1;
    s->last_write = dr_mono_ms();
    h2o_iovec_t iov = h2o_iovec_init(bytes, len);
    h2o_send(s->hr->req, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void send_final(sse_t *s)
{
    s->sending = 1;
    h2o_send(s->hr->req, NULL, 0, H2O_SEND_STATE_FINAL);
    close_stream(s);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    sse_t *s = (sse_t *)gen;
    s->sending = 0;
    if (s->finishing && !s->closed)
        send_final(s);
    else if (s->more)
        poll_soon(s);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    close_stream((sse_t *)gen);
}

/* ---- log positions ------------------------------------------------------------------------------- */

/* Parses "<ms>-<seq>" (decimal, nothing else) of at most len bytes. Returns 0 or -1. */
static int parse_pos(const char *p, size_t len, log_pos_t *out)
{
    const char *dash = memchr(p, '-', len);
    if (dash == NULL || dash == p || (size_t)(dash - p) + 1 >= len || len > 41)
        return -1;
    uint64_t v[2] = {0, 0};
    const char *end = p + len;
    for (int k = 0; k < 2; k++) {
        const char *q = k == 0 ? p : dash + 1, *e = k == 0 ? dash : end;
        for (; q < e; q++) {
            if (*q < '0' || *q > '9' || v[k] > (UINT64_MAX - 9) / 10)
                return -1;
            v[k] = v[k] * 10 + (uint64_t)(*q - '0');
        }
    }
    out->ms = v[0];
    out->seq = v[1];
    return 0;
}

/* The position just before <ms>-0, so that a read after it includes that entry. */
static log_pos_t before_ms(uint64_t ms)
{
    return ms > 0 ? (log_pos_t){ms - 1, UINT64_MAX} : (log_pos_t){0, 0};
}

static void start_all(sse_t *s, uint64_t ms)
{
    for (uint32_t i = 0; i < s->shards; i++)
        s->pos[i] = before_ms(ms);
    s->started = 1;
}

/* Sets the positions from a Last-Event-ID: "<shard>:<ms>-<seq>", or "<ms>-<seq>" of data layout 1.
 * Returns 0, or -1 when id is neither. */
static int start_from(sse_t *s, const char *id)
{
    const char *colon = strchr(id, ':');
    log_pos_t at;
    if (colon == NULL) {
        if (parse_pos(id, strlen(id), &at) != 0)
            return -1;
        start_all(s, at.ms);
        return 0;
    }
    char *end;
    unsigned long shard = strtoul(id, &end, 10);
    if (end != colon || colon == id || id[0] < '0' || id[0] > '9' || parse_pos(colon + 1, strlen(colon + 1), &at) != 0)
        return -1;
    start_all(s, at.ms);
    if (shard < s->shards) /* else the shard count changed: every shard restarts from that millisecond */
        s->pos[shard] = at;
    return 0;
}

/* ---- polling -------------------------------------------------------------------------------------- */

static void on_time(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    sse_t *s = data;
    s->polling = 0;
    if (err == 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING) {
        uint64_t sec = strtoull(reply->element[0]->str, NULL, 10), usec = strtoull(reply->element[1]->str, NULL, 10);
        start_all(s, sec * 1000 + usec / 1000);
        poll_soon(s);
    }
    maybe_free(s); /* a failed TIME is asked again at the next tick */
}

static const char *field(const redisReply *f, const char *name)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && strcmp(f->element[i]->str, name) == 0 &&
            f->element[i + 1]->type == REDIS_REPLY_STRING)
            return f->element[i + 1]->str;
    return "";
}

/* The values of a status log entry (common/lua/drover.lua, note_value). The library writes them in
 * one field "n", each as <length>:<bytes>; libraries of generation 2 and before wrote the pairs
 * i d s t p x k a. Both forms are read. */
enum { NOTE_ID, NOTE_DEV, NOTE_ST, NOTE_TMP, NOTE_PD, NOTE_EXT, NOTE_KEY, NOTE_AFTER, NOTE_VALUES };

typedef struct {
    const char *v[NOTE_VALUES]; /* NUL-terminated: in buf, in the reply, or "" */
    char *buf;
} note_t;

/* Fills n from an entry's field list f; returns 0, or -1 (every value "") for a malformed "n". */
static int note_read(const redisReply *f, note_t *n)
{
    static const char *const pair_names[NOTE_VALUES] = {"i", "d", "s", "t", "p", "x", "k", "a"};
    n->buf = NULL;
    for (int k = 0; k < NOTE_VALUES; k++)
        n->v[k] = "";
    if (f->elements != 2 || f->element[0]->type != REDIS_REPLY_STRING || strcmp(f->element[0]->str, "n") != 0 ||
        f->element[1]->type != REDIS_REPLY_STRING) {
        for (int k = 0; k < NOTE_VALUES; k++)
            n->v[k] = field(f, pair_names[k]);
        return 0;
    }
    const char *p = f->element[1]->str, *end = p + f->element[1]->len;
    /* every value has a prefix of at least two bytes ("0:"), so values and their NULs fit */
    char *out = n->buf = dr_malloc(f->element[1]->len + NOTE_VALUES);
    for (int k = 0; k < NOTE_VALUES; k++) {
        const char *q = p;
        size_t len = 0;
        while (q < end && *q >= '0' && *q <= '9' && len <= (size_t)(end - p))
            len = len * 10 + (size_t)(*q++ - '0');
        if (q == p || q == end || *q != ':' || len > (size_t)(end - q - 1)) {
            free(n->buf);
            n->buf = NULL;
            for (int j = 0; j < NOTE_VALUES; j++)
                n->v[j] = "";
            return -1;
        }
        memcpy(out, q + 1, len);
        out[len] = '\0';
        n->v[k] = out;
        out += len + 1;
        p = q + 1 + len;
    }
    return 0;
}

/* One formatted event, sorted by log position before sending. */
typedef struct {
    log_pos_t at;
    uint32_t shard;
    char *text;
    size_t len;
} event_t;

static int event_cmp(const void *a, const void *b)
{
    const event_t *x = a, *y = b;
    if (x->at.ms != y->at.ms)
        return x->at.ms < y->at.ms ? -1 : 1;
    if (x->at.seq != y->at.seq)
        return x->at.seq < y->at.seq ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* An unreadable entry is logged where every open stream meets it: at most MALFORMED_LOGS lines a
 * second for the process, then one line that says how many were left out. */
#define MALFORMED_LOGS 10

static void log_malformed(uint32_t shard, const char *entry_id)
{
    static dr_log_limit_t limit;
    if (dr_log_limit_ok(&limit, MALFORMED_LOGS, DR_LOG_WARNING, DR_MODULE, "sse_entries_malformed_not_logged"))
        dr_log(DR_LOG_WARNING, "event=sse_entry_malformed shard=%u entry=%s", shard, entry_id);
}

/* Formats the entry of shard when it passes the stream's filters; returns the text or NULL. */
static char *format_event(const sse_t *s, uint32_t shard, const char *entry_id, const log_pos_t *at,
                          const redisReply *f, size_t *len)
{
    note_t nt;
    if (note_read(f, &nt) != 0) {
        log_malformed(shard, entry_id);
        return NULL;
    }
    const char *dev = nt.v[NOTE_DEV];
    const char *name = nt.v[NOTE_ST];
    int st = dr_status_parse(name, strlen(name));
    if ((s->device[0] && strcmp(dev, s->device) != 0) ||
        (s->producer[0] && strcmp(nt.v[NOTE_PD], s->producer) != 0) ||
        (s->key[0] && strcmp(nt.v[NOTE_KEY], s->key) != 0) || st < 0) {
        free(nt.buf);
        return NULL;
    }
    char *qdev = dr_codec_json_string(dev);
    char *text = NULL;
    int n = asprintf(&text,
                     "id: %u:%s\nevent: status\ndata: {\"id\":%lld,\"device\":%s,\"status\":\"%s\",\"ts\":%llu}\n\n",
                     shard, entry_id, strtoll(nt.v[NOTE_ID], NULL, 10), qdev,
                     rest_status_name(st, strcmp(nt.v[NOTE_EXT], "1") == 0, 1), (unsigned long long)at->ms);
    free(qdev);
    free(nt.buf);
    if (n < 0)
        dr_mem_oom(0);
    *len = (size_t)n;
    return text;
}

/* Reads the entries of one shard's reply: advances its position, appends what passes the filters. */
static void read_shard(sse_t *s, const redisReply *stream, event_t **ev, size_t *nev, size_t *cap)
{
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 || stream->element[0]->type != REDIS_REPLY_STRING ||
        stream->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    uint32_t shard;
    if (dr_store_shard_of_key(&s->in->store, stream->element[0]->str, &shard) != 0 || shard >= s->shards)
        return;
    const redisReply *entries = stream->element[1];
    if (entries->elements >= (size_t)s->count)
        s->more = 1;
    for (size_t j = 0; j < entries->elements; j++) {
        const redisReply *e = entries->element[j];
        log_pos_t at;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY || parse_pos(e->element[0]->str, e->element[0]->len, &at) != 0)
            continue;
        s->pos[shard] = at;
        size_t len;
        char *text = format_event(s, shard, e->element[0]->str, &at, e->element[1], &len);
        if (text == NULL)
            continue;
        if (*nev == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *ev = dr_realloc(*ev, *cap * sizeof(**ev));
        }
        (*ev)[(*nev)++] = (event_t){at, shard, text, len};
    }
}

static void on_poll(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    sse_t *s = data;
    s->polling = 0;
    s->more = 0;
    if (s->closed || s->hr->req == NULL || err != 0) {
        maybe_free(s);
        return;
    }
    event_t *ev = NULL;
    size_t nev = 0, cap = 0;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
        read_shard(s, reply->element[i], &ev, &nev, &cap);
    if (nev > 1)
        qsort(ev, nev, sizeof(*ev), event_cmp);
    size_t len = 0;
    for (size_t i = 0; i < nev; i++)
        len += ev[i].len;
    char *buf = dr_malloc(len + 16);
    len = 0;
    for (size_t i = 0; i < nev; i++) {
        memcpy(buf + len, ev[i].text, ev[i].len);
        len += ev[i].len;
        free(ev[i].text);
    }
    free(ev);
    if (len > 0) {
        send_bytes(s, buf, len);
    } else if (dr_mono_ms() - s->last_write >= KEEPALIVE_MS) {
        memcpy(buf, ": keepalive\n\n", 13);
        send_bytes(s, buf, 13);
    } else {
        free(buf);
        if (s->more)
            poll_soon(s); /* a full page that the filters dropped entirely */
    }
}

static void on_tick(uv_timer_t *t)
{
    sse_t *s = t->data;
    if (s->closed || s->sending || s->polling || s->hr->req == NULL)
        return;
    dr_redis_t *redis = s->in->node.redis;
    if (!s->started) {
        const char *argv[] = {"TIME"};
        if (dr_redis_cmd(redis, on_time, s, 1, argv, NULL) == 0)
            s->polling = 1;
        return;
    }
    for (uint32_t i = 0; i < s->shards; i++) {
        char *id = s->ids + (size_t)i * ID_LEN;
        snprintf(id, ID_LEN, "%llu-%llu", (unsigned long long)s->pos[i].ms, (unsigned long long)s->pos[i].seq);
        s->argv[4 + s->shards + i] = id;
    }
    if (dr_redis_cmd(redis, on_poll, s, 4 + 2 * (int)s->shards, s->argv, NULL) == 0)
        s->polling = 1;
}

/* ---- GET /v1/events ------------------------------------------------------------------------------- */

static sse_t *sse_new(hreq_t *hr)
{
    sse_t *s = dr_calloc(1, sizeof(*s));
    s->hr = hr;
    s->in = hr->in;
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    s->shards = hr->in->store.shards;
    s->pos = dr_calloc(s->shards, sizeof(*s->pos));
    s->keys = dr_calloc(s->shards, sizeof(*s->keys));
    s->ids = dr_calloc(s->shards, ID_LEN);
    s->argv = dr_calloc(4 + 2 * (size_t)s->shards, sizeof(*s->argv));
    uint32_t count = READ_BUDGET / s->shards;
    count = count < COUNT_MIN ? COUNT_MIN : count > COUNT_MAX ? COUNT_MAX : count;
    s->count = (int)count;
    snprintf(s->count_s, sizeof(s->count_s), "%u", count);
    s->argv[0] = "XREAD";
    s->argv[1] = "COUNT";
    s->argv[2] = s->count_s;
    s->argv[3] = "STREAMS";
    for (uint32_t i = 0; i < s->shards; i++) {
        char key[256];
        s->keys[i] = dr_strdup(dr_store_key_log(&hr->in->store, i, key, sizeof(key)));
        s->argv[4 + i] = s->keys[i];
    }
    return s;
}

void v1_events(hreq_t *hr)
{
    char since[64] = "";
    size_t hl;
    const char *last = http_header(hr, "last-event-id", &hl);
    if (last != NULL && hl < sizeof(since))
        snprintf(since, sizeof(since), "%.*s", (int)hl, last);
    else
        http_query(hr, "since", since, sizeof(since));
    sse_t *s = sse_new(hr);
    if (since[0] && start_from(s, since) != 0) {
        http_error(hr, 400, "BAD_FIELD", "Last-Event-ID / since must be an event id received earlier");
        sse_free(s);
        return;
    }
    http_query(hr, "device", s->device, sizeof(s->device));
    http_query(hr, "producer", s->producer, sizeof(s->producer));
    if (hr->who.scope == DR_SCOPE_DEVICE)
        snprintf(s->device, sizeof(s->device), "%s", hr->who.device);
    else if (hr->who.scope == DR_SCOPE_PRODUCER)
        snprintf(s->key, sizeof(s->key), "%s", hr->who.key_id);

    h2o_req_t *req = hr->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_start_response(req, &s->gen);

    uv_timer_init(hr->in->node.loop.uv, &s->timer);
    s->timer.data = s;
    s->timer_open = 1;
    uv_timer_start(&s->timer, on_tick, POLL_MS, POLL_MS);
    s->next = streams;
    if (streams)
        streams->prev = s;
    streams = s;
    hr->in->sse_streams++;
    /* A new stream asks Redis for the time before the client learns it is connected: whatever the
     * client causes after that reaches Redis after the TIME and is streamed. */
    on_tick(&s->timer);
    char *hello = dr_strdup(": connected\n\n");
    send_bytes(s, hello, strlen(hello));
}

void sse_close_all(void)
{
    for (sse_t *s = streams; s; s = s->next) {
        if (s->closed || s->hr->req == NULL)
            continue;
        s->finishing = 1;
        if (!s->sending)
            send_final(s);
    }
}
