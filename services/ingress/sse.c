/* GET /v1/events: live status changes as Server-Sent Events.
 *
 * DESIGN
 * The source is the status log stream <prefix>log that every script appends to, not NATS: a client
 * that reconnects with Last-Event-ID (a log entry id) resumes exactly where it left off, as long as
 * the log still holds that entry (about the newest 100,000 changes). Each stream polls the log from
 * its own cursor every 200 ms while nothing is being written, so a slow client only slows itself
 * (h2o's proceed callback paces the writes). Filters: device, producer (producerDeviseId); a device
 * key sees only its device and a producer key only the messages it submitted.
 */
#define DR_MODULE "ingress/sse"

#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "http.h"

#define POLL_MS 200
#define KEEPALIVE_MS 15000
#define BATCH "200"

typedef struct sse {
    h2o_generator_t gen;
    hreq_t *hr;
    ingress_t *in;
    uv_timer_t timer;
    char cursor[48];
    char device[256];
    char producer[130];
    char key[DR_APIKEY_ID_LEN + 1];
    int sending;     /* h2o_send outstanding: wait for proceed */
    int polling;     /* XRANGE outstanding */
    int closed;      /* client gone or stream finished: no more h2o_send */
    int finishing;   /* shutdown: send the final chunk when allowed */
    int timer_open;
    char *out;       /* bytes handed to h2o, kept until proceed */
    int64_t last_write;
    struct sse *prev, *next;
} sse_t;

static sse_t *streams; /* open streams of this process, for shutdown */

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
    free(s->out);
    hreq_t *hr = s->hr;
    free(s);
    hreq_release(hr);
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
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    close_stream((sse_t *)gen);
}

static const char *field(const redisReply *f, const char *name)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, name) == 0)
            return f->element[i + 1]->str;
    return "";
}

static void on_poll(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    sse_t *s = data;
    s->polling = 0;
    if (s->closed || s->hr->req == NULL || err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        maybe_free(s);
        return;
    }
    size_t cap = 256, len = 0;
    char *buf = dr_malloc(cap);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2)
            continue;
        snprintf(s->cursor, sizeof(s->cursor), "%s", e->element[0]->str);
        const redisReply *f = e->element[1];
        const char *dev = field(f, "dev");
        if ((s->device[0] && strcmp(dev, s->device) != 0) || (s->producer[0] && strcmp(field(f, "pd"), s->producer) != 0) ||
            (s->key[0] && strcmp(field(f, "key"), s->key) != 0))
            continue;
        char *qdev = dr_codec_json_string(dev);
        char ev[1024];
        int n = snprintf(ev, sizeof(ev), "id: %s\nevent: status\ndata: {\"id\":%s,\"device\":%s,\"status\":\"%s\",\"ts\":%s}\n\n",
                         e->element[0]->str, field(f, "id"), qdev, field(f, "st"), field(f, "ts"));
        free(qdev);
        if (n <= 0 || (size_t)n >= sizeof(ev))
            continue;
        if (len + (size_t)n + 1 > cap) {
            cap = (len + (size_t)n + 1) * 2;
            buf = dr_realloc(buf, cap);
        }
        memcpy(buf + len, ev, (size_t)n);
        len += (size_t)n;
    }
    if (len > 0) {
        send_bytes(s, buf, len);
    } else if (dr_mono_ms() - s->last_write >= KEEPALIVE_MS) {
        memcpy(buf, ": keepalive\n\n", 13);
        send_bytes(s, buf, 13);
    } else {
        free(buf);
    }
}

static void on_tick(uv_timer_t *t)
{
    sse_t *s = t->data;
    if (s->closed || s->sending || s->polling || s->hr->req == NULL)
        return;
    char key[128], from[56];
    snprintf(key, sizeof(key), "%slog", s->in->node.cfg.redis_prefix);
    snprintf(from, sizeof(from), "(%s", s->cursor);
    const char *argv[] = {"XRANGE", key, from, "+", "COUNT", BATCH};
    if (dr_redis_cmd(s->in->node.redis, on_poll, s, 6, argv, NULL) == 0)
        s->polling = 1;
}

/* A stream id is "<ms>-<seq>" with decimal parts. */
static int valid_stream_id(const char *id)
{
    const char *dash = strchr(id, '-');
    if (dash == NULL || dash == id || dash[1] == '\0' || strlen(id) > 40)
        return 0;
    for (const char *p = id; *p; p++)
        if (p != dash && (*p < '0' || *p > '9'))
            return 0;
    return 1;
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
    if (since[0] && !valid_stream_id(since)) {
        http_error(hr, 400, "BAD_FIELD", "Last-Event-ID / since must be an event id received earlier");
        hreq_release(hr);
        return;
    }
    sse_t *s = dr_calloc(1, sizeof(*s));
    s->hr = hr;
    s->in = hr->in;
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    if (since[0])
        snprintf(s->cursor, sizeof(s->cursor), "%s", since);
    else
        snprintf(s->cursor, sizeof(s->cursor), "%lld-0", (long long)dr_now_ms());
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
