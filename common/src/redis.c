/* Asynchronous Redis client with timeouts, reconnection and script loading (see dr/redis.h).
 *
 * DESIGN
 * hiredis answers in request order, so pending commands form a FIFO list and only the head's deadline
 * needs checking: one repeating timer does that, the connect timeout and the reconnect back-off.
 * When the head is late the connection is considered dead and freed; hiredis then calls every pending
 * callback with a NULL reply, which we turn into DR_ETIMEDOUT for the caller. A command may have run
 * in Redis even though its caller saw a timeout: callers must be idempotent or accept that.
 */
#define DR_MODULE "common/redis"

#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/redis.h"

enum { ST_DISCONNECTED, ST_CONNECTING, ST_HANDSHAKE, ST_READY, ST_CLOSED };

struct dr_redis_script {
    const char *name;
    const char *body;
    int library;       /* a function library (FUNCTION LOAD), not a script */
    const char *gen_fn; /* library: the function returning its generation (NULL: none) */
    long long generation;
    char sha[41];
    dr_redis_script_t *next;
};

typedef struct cmd {
    dr_redis_t *r;
    dr_redis_cb *cb;
    void *data;
    int64_t deadline;
    uint64_t sent_ns;      /* uv_hrtime() when sent: drover_redis_call_seconds */
    struct cmd *prev, *next;
} cmd_t;

struct dr_redis {
    dr_loop_t *loop;
    char *host, *password;
    int port, timeout_ms;
    redisAsyncContext *ctx;
    int state;
    uv_timer_t timer;
    int64_t connect_deadline, reconnect_at;
    int backoff_ms;
    int drop_err;               /* error given to callbacks of commands dropped with the connection */
    int handshake_left;
    cmd_t *head, *tail;
    dr_redis_script_t *scripts;
    dr_redis_state_cb *state_cb;
    void *state_data;
};

static void start_connect(dr_redis_t *r);

/* ---- pending list ----------------------------------------------------------------------------- */

static void unlink_cmd(dr_redis_t *r, cmd_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    cmd_t *c = priv;
    dr_redis_t *r = c->r;
    redisReply *rep = reply;
    unlink_cmd(r, c);
    int err = 0;
    if (rep != NULL) /* a dropped command has no latency worth reporting */
        dr_metrics_observe(DR_H_REDIS_CALL, (double)(uv_hrtime() - c->sent_ns) / 1e9);
    if (rep == NULL)
        err = r->drop_err ? r->drop_err : DR_EUNAVAIL;
    else if (rep->type == REDIS_REPLY_ERROR)
        err = DR_EREDIS;
    c->cb(r, rep, err, c->data);
    free(c);
}

static int send_argv(dr_redis_t *r, dr_redis_cb *cb, void *data, int argc, const char **argv, const size_t *lens)
{
    cmd_t *c = dr_malloc(sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->data = data;
    c->deadline = dr_mono_ms() + r->timeout_ms;
    c->sent_ns = uv_hrtime();
    c->next = NULL;
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (redisAsyncCommandArgv(r->ctx, on_reply, c, argc, argv, lens) != REDIS_OK) {
        unlink_cmd(r, c);
        free(c);
        return DR_EUNAVAIL;
    }
    return 0;
}

/* ---- connection life cycle -------------------------------------------------------------------- */

static void set_state(dr_redis_t *r, int st)
{
    int was_ready = r->state == ST_READY;
    r->state = st;
    if (st == ST_READY && !was_ready) {
        r->backoff_ms = 100;
        dr_log(DR_LOG_NOTICE, "event=redis_ready host=%s port=%d", r->host, r->port);
        if (r->state_cb)
            r->state_cb(r, 1, r->state_data);
    } else if (st != ST_READY && was_ready) {
        if (r->state_cb)
            r->state_cb(r, 0, r->state_data);
    }
}

static void schedule_reconnect(dr_redis_t *r)
{
    r->reconnect_at = dr_mono_ms() + r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > 2000 ? 2000 : r->backoff_ms * 2;
}

/* Drops the connection (loop thread, never from inside a hiredis callback). */
static void drop(dr_redis_t *r, int err, const char *why)
{
    if (r->ctx == NULL)
        return;
    dr_log(DR_LOG_WARNING, "event=redis_drop reason=\"%s\" host=%s port=%d", why, r->host, r->port);
    redisAsyncContext *ac = r->ctx;
    r->ctx = NULL;
    r->drop_err = err;
    ac->data = NULL; /* on_disconnect must not touch r after this */
    redisAsyncFree(ac);
    r->drop_err = 0;
    if (r->state != ST_CLOSED) {
        set_state(r, ST_DISCONNECTED);
        schedule_reconnect(r);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    dr_redis_t *r = ac->data;
    if (r == NULL)
        return; /* we dropped it ourselves */
    r->ctx = NULL;
    if (r->state == ST_CLOSED)
        return;
    dr_log(DR_LOG_WARNING, "event=redis_disconnected status=%d error=\"%s\"", status, ac->errstr);
    set_state(r, ST_DISCONNECTED);
    schedule_reconnect(r);
}

static void handshake_step(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    dr_redis_script_t *s = data;
    if (r->state != ST_HANDSHAKE)
        return;
    if (err != 0) {
        dr_log(DR_LOG_WARNING, "event=redis_handshake_failed step=%s error=\"%s\"", s ? s->name : "auth",
               reply ? reply->str : dr_strerror(err));
        /* Cannot drop from inside a hiredis callback: let the timer do it. */
        r->connect_deadline = 0;
        return;
    }
    if (s != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(s->sha, reply->str, 41);
    if (--r->handshake_left == 0)
        set_state(r, ST_READY);
}

static void send_load(dr_redis_t *r, dr_redis_script_t *s)
{
    if (s->library) {
        const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", s->body};
        send_argv(r, handshake_step, s, 4, argv, NULL);
    } else {
        const char *argv[] = {"SCRIPT", "LOAD", s->body};
        send_argv(r, handshake_step, s, 3, argv, NULL);
    }
}

/* The generation of the library Redis holds, asked before loading ours: a newer one stays. */
static void generation_step(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    dr_redis_script_t *s = data;
    if (r->state != ST_HANDSHAKE)
        return;
    /* "Function not found": an older library (or none) is loaded; it is replaced. Any other error
     * (Redis still loading its data, say) fails this attempt. */
    if (err != 0 && (reply == NULL || reply->type != REDIS_REPLY_ERROR || strstr(reply->str, "not found") == NULL)) {
        dr_log(DR_LOG_WARNING, "event=redis_handshake_failed step=%s error=\"%s\"", s->gen_fn,
               reply ? reply->str : dr_strerror(err));
        r->connect_deadline = 0;
        return;
    }
    if (err == 0 && (reply->type != REDIS_REPLY_INTEGER || reply->integer > s->generation)) {
        dr_log(DR_LOG_WARNING,
               "event=redis_library_newer library=%s loaded_generation=%lld this_generation=%lld "
               "action=\"not replacing it; this node stays unready until it runs a release of that generation\"",
               s->name, reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL, s->generation);
        r->connect_deadline = 0;
        return;
    }
    send_load(r, s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    dr_redis_t *r = ac->data;
    if (r == NULL)
        return;
    if (status != REDIS_OK) {
        dr_log(DR_LOG_VERBOSE, "event=redis_connect_failed host=%s port=%d error=\"%s\"", r->host, r->port, ac->errstr);
        r->ctx = NULL; /* hiredis frees it after we return */
        set_state(r, ST_DISCONNECTED);
        schedule_reconnect(r);
        return;
    }
    set_state(r, ST_HANDSHAKE);
    r->handshake_left = 0;
    if (r->password[0] != '\0') {
        const char *argv[] = {"AUTH", r->password};
        r->handshake_left++;
        send_argv(r, handshake_step, NULL, 2, argv, NULL);
    }
    for (dr_redis_script_t *s = r->scripts; s; s = s->next) {
        r->handshake_left++;
        if (s->library && s->gen_fn != NULL) {
            const char *argv[] = {"FCALL", s->gen_fn, "0"};
            send_argv(r, generation_step, s, 3, argv, NULL);
        } else {
            send_load(r, s);
        }
    }
    if (r->handshake_left == 0) {
        const char *argv[] = {"PING"};
        r->handshake_left++;
        send_argv(r, handshake_step, NULL, 1, argv, NULL);
    }
}

/* ---- event adapter -----------------------------------------------------------------------------
 * hiredis's own libuv adapter calls uv_poll_start() for every read (hiredis 0.14 re-arms reading after
 * each one) and twice per burst of commands (writable on, then off once written); libuv answers each
 * call with an epoll_ctl(DEL) at once and an epoll_ctl(ADD) at the next poll, and the writable event
 * costs a loop iteration of its own. Under load that made epoll_ctl the ingress's most frequent system
 * call (5,600 a second at 2,400 commands/s, docs/benchmarks.md). This adapter changes the poll only when
 * the set of events changes, and writes a burst of commands itself just before the loop next polls (a
 * uv_prepare handle), so all commands issued in one loop turn leave in one write. It watches for
 * writability only when the socket did not take everything, and while connecting: hiredis learns from
 * the first writable event that the connection is up. (A command issued from a uv_prepare callback
 * that runs after this one would wait for the loop's next event; no code issues commands there.) */
typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis let go of the context */
    uv_poll_t poll;
    uv_prepare_t prepare;
    int events;     /* what poll watches (UV_READABLE | UV_WRITABLE) */
    int flushing;   /* inside ev_on_prepare's redisAsyncHandleWrite */
    int handles;    /* open handles; freed when both are closed */
} uvev_t;

static void ev_on_poll(uv_poll_t *h, int status, int events)
{
    uvev_t *e = h->data;
    if (status != 0 || e->ac == NULL)
        return;
    if (events & UV_READABLE)
        redisAsyncHandleRead(e->ac);
    if (e->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_set(uvev_t *e, int events)
{
    if (events == e->events)
        return;
    e->events = events;
    if (events)
        uv_poll_start(&e->poll, events, ev_on_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_on_prepare(uv_prepare_t *h)
{
    uvev_t *e = h->data;
    uv_prepare_stop(h);
    if (e->ac == NULL)
        return;
    e->flushing = 1;
    redisAsyncHandleWrite(e->ac); /* calls ev_del_write when all is written, else ev_add_write */
    e->flushing = 0;
}

static void ev_add_read(void *data)
{
    uvev_t *e = data;
    ev_set(e, e->events | UV_READABLE);
}

static void ev_del_read(void *data)
{
    uvev_t *e = data;
    ev_set(e, e->events & ~UV_READABLE);
}

static void ev_add_write(void *data)
{
    uvev_t *e = data;
    if (e->flushing || !(e->ac->c.flags & REDIS_CONNECTED))
        ev_set(e, e->events | UV_WRITABLE); /* the socket is full, or the connection not up yet */
    else if (!(e->events & UV_WRITABLE))
        uv_prepare_start(&e->prepare, ev_on_prepare);
}

static void ev_del_write(void *data)
{
    uvev_t *e = data;
    uv_prepare_stop(&e->prepare);
    ev_set(e, e->events & ~UV_WRITABLE);
}

static void ev_on_close(uv_handle_t *h)
{
    uvev_t *e = h->data;
    if (--e->handles == 0)
        free(e);
}

static void ev_cleanup(void *data)
{
    uvev_t *e = data;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_on_close);
    uv_close((uv_handle_t *)&e->prepare, ev_on_close);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    uvev_t *e = dr_calloc(1, sizeof(*e));
    if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return -1;
    }
    uv_prepare_init(loop, &e->prepare);
    e->poll.data = e->prepare.data = e;
    e->ac = ac;
    e->handles = 2;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

static void start_connect(dr_redis_t *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL || ac->err) {
        dr_log(DR_LOG_WARNING, "event=redis_connect_failed error=\"%s\"", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    if (ev_attach(ac, r->loop->uv) != 0) {
        dr_log(DR_LOG_WARNING, "event=redis_connect_failed error=\"cannot watch the socket\"");
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ctx = ac;
    r->connect_deadline = dr_mono_ms() + r->timeout_ms;
    set_state(r, ST_CONNECTING);
}

static void on_timer(uv_timer_t *t)
{
    dr_redis_t *r = t->data;
    int64_t now = dr_mono_ms();
    switch (r->state) {
    case ST_DISCONNECTED:
        if (now >= r->reconnect_at)
            start_connect(r);
        break;
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        if (now >= r->connect_deadline)
            drop(r, DR_EUNAVAIL, r->connect_deadline == 0 ? "handshake failed" : "connect timeout");
        break;
    case ST_READY:
        if (r->head && now >= r->head->deadline)
            drop(r, DR_ETIMEDOUT, "command timeout");
        break;
    }
}

/* ---- public API ------------------------------------------------------------------------------- */

dr_redis_t *dr_redis_new(dr_loop_t *loop, const dr_redis_options_t *opt)
{
    dr_redis_t *r = dr_calloc(1, sizeof(*r));
    r->loop = loop;
    r->host = dr_strdup(opt->host);
    r->port = opt->port;
    r->password = dr_strdup(opt->password ? opt->password : "");
    r->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : 5000;
    r->backoff_ms = 100;
    r->state = ST_DISCONNECTED;
    r->reconnect_at = 0;
    uv_timer_init(loop->uv, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, 0, 50);
    return r;
}

void dr_redis_on_state(dr_redis_t *r, dr_redis_state_cb *cb, void *data)
{
    r->state_cb = cb;
    r->state_data = data;
}

int dr_redis_ready(const dr_redis_t *r)
{
    return r->state == ST_READY;
}

int dr_redis_cmd(dr_redis_t *r, dr_redis_cb *cb, void *data, int argc, const char **argv, const size_t *lens)
{
    if (r->state != ST_READY || r->ctx == NULL)
        return DR_EUNAVAIL;
    return send_argv(r, cb, data, argc, argv, lens);
}

typedef struct {
    dr_redis_cb *cb;
    void *data;
} eval_ctx_t;

static void on_eval(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    eval_ctx_t *e = data;
    if (err == DR_EREDIS && reply &&
        (strncmp(reply->str, "NOSCRIPT", 8) == 0 || strncmp(reply->str, "ERR Function not found", 22) == 0)) {
        dr_log(DR_LOG_WARNING, "event=redis_noscript action=reconnect_and_reload");
        if (r->state == ST_READY) {
            set_state(r, ST_HANDSHAKE);
            r->connect_deadline = 0; /* the timer drops the connection; reconnecting reloads scripts */
        }
    }
    e->cb(r, reply, err, e->data);
    free(e);
}

void dr_redis_add_library(dr_redis_t *r, const char *name, const char *body, const char *gen_fn,
                          long long generation)
{
    dr_redis_script_t *s = dr_calloc(1, sizeof(*s));
    s->name = name;
    s->body = body;
    s->library = 1;
    s->gen_fn = gen_fn;
    s->generation = generation;
    s->next = r->scripts;
    r->scripts = s;
}

int dr_redis_fcall(dr_redis_t *r, dr_redis_cb *cb, void *data, const char *fn, int nkeys, const char **keys, int nargs,
                   const char **args, const size_t *arglens)
{
    if (r->state != ST_READY || r->ctx == NULL)
        return DR_EUNAVAIL;
    if (nkeys < 0 || nargs < 0)
        return DR_EINVAL;
    int argc = 3 + nkeys + nargs;
    const char **av = dr_malloc((size_t)argc * sizeof(*av));
    size_t *al = dr_malloc((size_t)argc * sizeof(*al));
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "FCALL";
    av[1] = fn;
    av[2] = nk;
    for (int i = 0; i < 3; i++)
        al[i] = strlen(av[i]);
    for (int i = 0; i < nkeys; i++) {
        av[3 + i] = keys[i];
        al[3 + i] = strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        av[3 + nkeys + i] = args[i];
        al[3 + nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    eval_ctx_t *e = dr_malloc(sizeof(*e));
    e->cb = cb;
    e->data = data;
    int rc = send_argv(r, on_eval, e, argc, av, al);
    if (rc != 0)
        free(e);
    free(av);
    free(al);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    dr_redis_t *r = h->data;
    while (r->scripts) {
        dr_redis_script_t *s = r->scripts;
        r->scripts = s->next;
        free(s);
    }
    free(r->host);
    free(r->password);
    free(r);
}

void dr_redis_free(dr_redis_t *r)
{
    if (r == NULL)
        return;
    r->state = ST_CLOSED;
    if (r->ctx) {
        redisAsyncContext *ac = r->ctx;
        r->ctx = NULL;
        r->drop_err = DR_ECLOSED;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
