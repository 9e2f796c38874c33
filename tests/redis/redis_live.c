/* Live-test driver for dr_redis: one client on a libuv loop that issues a single command far larger than a
 * socket's buffers, for tests/redis/test_redis_client.py. Reports on stdout, one line per event; logs go
 * to stderr.
 *
 * Usage: redis_live port=N [host=127.0.0.1] [pass=SECRET] [key=NAME] [size=BYTES] [timeout=MS]
 * Lines out: "ready" once the client is READY; then, after the line "go" on stdin, "sent SIZE" once
 * SET KEY VALUE is issued (VALUE is SIZE bytes: 16-byte records "%015zx\n" of their own offset, the last
 * one cut short), and "reply OK" when Redis answered, after which the program exits 0. A failure prints
 * "error ..." and exits non-zero.
 *
 * DESIGN
 * The program exists to show that dr_redis writes the rest of a command the socket did not take by
 * itself, once Redis reads again. Nothing else may do it that favour: after "go" the program issues no
 * further command and starts no timer until the answer is in, and dr_redis issues none of its own (no
 * health pings: its 50 ms timer only checks the oldest command's deadline and reconnects, though it
 * does wake the loop; see the test's docstring for what that hides). timeout
 * defaults to ten minutes so that a command stuck in the client shows as a missing reply, not as a
 * timeout that the client's deadline turned into an error. The test sends "go" while Redis is stopped,
 * which makes sure the buffers fill before anything is read.
 */
#define DR_MODULE "tests/redis_live"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "dr/redis.h"

typedef struct {
    dr_loop_t loop;
    dr_redis_t *r;
    uv_pipe_t in;      /* stdin: the test's "go" */
    uv_timer_t closer; /* the deferred close, started once the answer is in */
    const char *key;
    size_t size; /* of the SET's value */
    char line[64];
    size_t len;
    int ready_seen; /* "ready" was printed */
    int sent;       /* the SET was issued */
    int finished;   /* the outcome was printed: close everything */
    int rc;         /* exit code */
} drv_t;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- shutdown ---------------------------------------------------------------------------------- */

static void on_closer_closed(uv_handle_t *h)
{
    drv_t *d = h->data;
    dr_loop_close(&d->loop);
}

/* Frees the client outside its callbacks: finish() may be called from the reply callback, and the
 * callback's command is still on the stack there. */
static void on_closer(uv_timer_t *t)
{
    drv_t *d = t->data;
    dr_redis_free(d->r);
    d->r = NULL;
    if (!uv_is_closing((uv_handle_t *)&d->in))
        uv_close((uv_handle_t *)&d->in, NULL);
    uv_close((uv_handle_t *)&d->closer, on_closer_closed);
}

static void finish(drv_t *d, int rc)
{
    if (d->finished)
        return;
    d->finished = 1;
    d->rc = rc;
    uv_timer_start(&d->closer, on_closer, 0, 0);
}

/* ---- the command ------------------------------------------------------------------------------- */

static void on_set(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    drv_t *d = data;
    if (err != 0) {
        out("error %s: %s", dr_strerror(err), reply && reply->str ? reply->str : "no reply");
        finish(d, 2);
    } else if (reply->type != REDIS_REPLY_STATUS) {
        out("error unexpected reply type %d", reply->type);
        finish(d, 2);
    } else {
        out("reply %s", reply->str);
        finish(d, 0);
    }
}

/* The value: records of 16 bytes, each its own offset in hex, so that a part written twice, left out or
 * written out of order changes what Redis stores. */
static char *make_value(size_t size)
{
    char *v = dr_malloc(size > 0 ? size : 1);
    char rec[17];
    for (size_t off = 0; off < size; off += 16) {
        snprintf(rec, sizeof(rec), "%015zx\n", off);
        memcpy(v + off, rec, size - off < 16 ? size - off : 16);
    }
    return v;
}

static void go(drv_t *d)
{
    if (d->sent) {
        out("error go given twice");
        return;
    }
    d->sent = 1;
    char *value = make_value(d->size);
    const char *argv[] = {"SET", d->key, value};
    const size_t lens[] = {3, strlen(d->key), d->size};
    int rc = dr_redis_cmd(d->r, on_set, d, 3, argv, lens);
    free(value);   /* dr_redis_cmd copied it into the client's output buffer */
    if (rc != 0) { /* on_set will not be called */
        out("error cannot issue SET: %s", dr_strerror(rc));
        finish(d, 2);
        return;
    }
    out("sent %zu", d->size);
}

/* ---- events ------------------------------------------------------------------------------------ */

static void on_state(dr_redis_t *r, int ready, void *data)
{
    (void)r;
    drv_t *d = data;
    /* A connection lost after "go" fails the pending SET through on_set; before it, dr_redis
     * reconnects by itself. Either way the line tells the test what happened. */
    if (ready && !d->ready_seen) {
        d->ready_seen = 1;
        out("ready");
    } else if (!ready) {
        out("unready");
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char chunk[256];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_stdin(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    drv_t *d = s->data;
    if (n < 0) { /* EOF: the test went away before the answer came */
        uv_close((uv_handle_t *)&d->in, NULL);
        if (!d->finished)
            out("error stdin closed before the reply");
        finish(d, 3);
        return;
    }
    for (ssize_t i = 0; i < n && !d->finished; i++) {
        char ch = buf->base[i];
        if (ch != '\n') {
            if (d->len < sizeof(d->line) - 1)
                d->line[d->len++] = ch;
            continue;
        }
        d->line[d->len] = '\0';
        d->len = 0;
        if (strcmp(d->line, "go") == 0)
            go(d);
        else
            out("error unknown command %s", d->line);
    }
}

/* ---- main -------------------------------------------------------------------------------------- */

static const char *opt(int argc, char **argv, const char *key, const char *def)
{
    size_t k = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, k) == 0 && argv[i][k] == '=')
            return argv[i] + k + 1;
    return def;
}

int main(int argc, char **argv)
{
    static drv_t d;
    dr_log_level = DR_LOG_VERBOSE;
    dr_log_set_service("redis_live");
    int port = atoi(opt(argc, argv, "port", "0"));
    long long size = atoll(opt(argc, argv, "size", "33554432"));
    int timeout_ms = atoi(opt(argc, argv, "timeout", "600000"));
    if (port <= 0 || port > 65535 || size <= 0 || timeout_ms <= 0) {
        out("error usage: redis_live port=N [host=H] [pass=P] [key=K] [size=BYTES] [timeout=MS]");
        return 2;
    }
    d.key = opt(argc, argv, "key", "redis_live");
    d.size = (size_t)size;
    if (dr_loop_init(&d.loop) != 0) {
        out("error cannot create an event loop");
        return 2;
    }
    uv_timer_init(d.loop.uv, &d.closer);
    d.closer.data = &d;
    uv_pipe_init(d.loop.uv, &d.in, 0);
    d.in.data = &d;
    if (uv_pipe_open(&d.in, 0) != 0 || uv_read_start((uv_stream_t *)&d.in, on_alloc, on_stdin) != 0) {
        out("error stdin is not a pipe");
        return 2;
    }
    dr_redis_options_t o = {.host = opt(argc, argv, "host", "127.0.0.1"),
                            .port = port,
                            .password = opt(argc, argv, "pass", NULL),
                            .timeout_ms = timeout_ms};
    d.r = dr_redis_new(&d.loop, &o);
    dr_redis_on_state(d.r, on_state, &d);
    uv_run(d.loop.uv, UV_RUN_DEFAULT);
    int rc = uv_loop_close(d.loop.uv);
    if (rc != 0) {
        out("error loop_close %s", uv_strerror(rc));
        return 3;
    }
    return d.rc;
}
