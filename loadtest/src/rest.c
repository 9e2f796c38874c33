/* REST producer transport: submits each command with POST /v1/devices/{id}/messages and reports the
 * answer (201, or 200 for a replay) as acceptance. HTTP is libcurl's: one multi handle, driven by
 * the multi-socket interface on a libuv loop (dr/loop.h) in a thread of its own.
 *
 * DESIGN
 * One lt_rest_t serves every producer of a phase. The producers' thread hands a command over with
 * dr_loop_post(); everything else happens on the loop thread: libcurl tells it which sockets to
 * watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t each) and when to call it back
 * (CURLMOPT_TIMERFUNCTION -> one uv_timer_t), and the loop reports socket readiness and time-outs
 * back through curl_multi_socket_action(). libcurl keeps the connections alive and reuses them, and
 * replaces one that the server closed while idle by itself.
 * Each producer has rest.conns request slots. A command takes a slot and holds it until its verdict,
 * including the pauses before retries (one uv_timer_t per command), so a producer has at most
 * rest.conns requests on the wire and about as many connections; commands without a slot wait in
 * the producer's FIFO. The producer's window (producers.c) bounds what waits plus what holds a slot.
 * Every request carries Idempotency-Key: <nonce>-<command number>, with a nonce fresh for each
 * transport, so a retry after 429, 503, a timeout or a broken connection can never store a command
 * twice: the ingress answers 200 with the original id instead. A final 4xx is a rejection; 500 is
 * not retried either (the ingress says nothing was stored, and a script error would only repeat).
 * Every request is bounded by rest.timeout_ms (CURLOPT_TIMEOUT_MS: connect, write and the whole
 * answer), and lt_rest_close() abandons what is left at once: a command abandoned that way stays
 * "sent but never accepted" in the report. libcurl never uses a proxy here and speaks only plain
 * http to the loopback address that opts.c accepted.
 * The body carries a messageBirthCertificate naming the producer, so DELIVERED and COMPLETED still
 * arrive over MQTT on producer/response/{producer}, matched by tmpId as for MQTT producers.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "load.h"

#define LOG_EACH 3           /* errors of one kind printed on stderr; the rest are only counted */
#define RETRY_AFTER_MAX_S 30 /* longest pause a Retry-After can ask for */
#define MAX_ANSWER (1024 * 1024)

typedef struct xfer xfer_t;

typedef struct {
    lt_rest_t *r;
    char id[48];
    lt_rest_cb_t cb;
    int active;                  /* commands holding a request slot */
    STAILQ_HEAD(, xfer) waiting; /* commands without a slot yet */
} producer_t;

/* One command from its slot to its verdict. Loop thread only. */
struct xfer {
    producer_t *p;
    int64_t k;
    int attempt;  /* 0 for the first request */
    int in_multi; /* added to the multi handle */
    int too_big;  /* the answer passed MAX_ANSWER */
    CURL *easy;
    struct curl_slist *headers;
    char *body;   /* request body, referenced by CURLOPT_POSTFIELDS */
    char *answer; /* answer body, NUL-terminated */
    size_t answer_len, answer_cap;
    uv_timer_t pause; /* before a retry; initialised when the command gets a slot */
    STAILQ_ENTRY(xfer) wait_link;
    LIST_ENTRY(xfer) live_link;
};

/* One socket libcurl asked us to watch. The poll handle comes first: the close callback frees it. */
typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    lt_rest_t *r;
} sock_t;

struct lt_rest {
    /* read-only after open */
    const lt_opts_t *o;
    lt_shm_t *s;
    int n;
    producer_t *p;
    char auth[320]; /* "Authorization: Bearer <key>" */
    char nonce[17]; /* hex; makes this transport's idempotency keys unique */
    pthread_t thread;
    /* start-up hand-shake */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready; /* 1 running, -1 failed */
    /* loop thread only */
    dr_loop_t loop;
    CURLM *multi;
    uv_timer_t timer; /* libcurl's own timeout */
    int stopping;
    LIST_HEAD(, xfer) live; /* commands holding a slot */
};

/* ---- errors ---------------------------------------------------------------------------------------- */

/* Counts one error of a kind and prints the first few of that kind. */
static void count_error(_Atomic int64_t *counter, const char *producer, int64_t k, const char *what,
                        const char *body, size_t body_len)
{
    if (atomic_fetch_add(counter, 1) >= LOG_EACH)
        return;
    int show = body_len > 200 ? 200 : (int)body_len;
    fprintf(stderr, "drover-load: REST producer %s, command %" PRId64 ": %s%s%.*s\n", producer, k, what,
            show ? ": " : "", show, body ? body : "");
}

/* What a failed transfer means, in the words of HTTP rather than of libcurl where they differ. */
static const char *failure_text(CURLcode rc, int too_big)
{
    if (too_big)
        return "answer too large";
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return "cannot connect";
    case CURLE_OPERATION_TIMEDOUT:
        return "no whole answer within rest.timeout_ms";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return "connection reset or closed before a whole answer";
    default:
        return curl_easy_strerror(rc);
    }
}

/* ---- one transfer ---------------------------------------------------------------------------------- */

static size_t on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * nmemb;
    if (x->answer_len + len > MAX_ANSWER) {
        x->too_big = 1;
        return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
    }
    if (x->answer_len + len + 1 > x->answer_cap) {
        x->answer_cap = (x->answer_len + len + 1) * 2;
        x->answer = dr_realloc(x->answer, x->answer_cap);
    }
    memcpy(x->answer + x->answer_len, data, len);
    x->answer_len += len;
    x->answer[x->answer_len] = '\0';
    return len;
}

/* Options every request of the tool shares, also the start-up check's: no proxy from the
 * environment, plain http only, no redirects, one limit on the whole request. */
static void common_options(CURL *easy, const lt_opts_t *o)
{
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)o->rest_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)o->rest_timeout_ms);
}

/* Builds the request of command k. Returns 0, or -1 when libcurl cannot. */
static int prepare(lt_rest_t *r, xfer_t *x)
{
    const lt_opts_t *o = r->o;
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        return -1;
    char dev[48], url[512], key[96];
    lt_device_id(o, lt_device_of(o, x->k), dev, sizeof(dev));
    char *seg = curl_easy_escape(x->easy, dev, 0);
    if (seg == NULL)
        return -1;
    snprintf(url, sizeof(url), "%s%s/v1/devices/%s/messages", o->rest_origin, o->rest_base, seg);
    curl_free(seg);
    snprintf(key, sizeof(key), "Idempotency-Key: %s-%" PRId64, r->nonce, x->k);
    /* "Expect:" keeps libcurl from waiting for a 100 Continue before larger bodies. */
    const char *lines[] = {r->auth, "Content-Type: application/json", key, "Expect:"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct curl_slist *h = curl_slist_append(x->headers, lines[i]);
        if (h == NULL)
            return -1;
        x->headers = h;
    }
    x->body = lt_wire_command(o, LT_MODE_DROVER, x->k, x->p->id);
    common_options(x->easy, o);
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body));
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    return 0;
}

static void on_xfer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Releases what a command holds, its slot included; the memory goes with the timer's close. */
static void release(xfer_t *x)
{
    lt_rest_t *r = x->p->r;
    if (x->in_multi)
        curl_multi_remove_handle(r->multi, x->easy);
    x->in_multi = 0;
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->body);
    free(x->answer);
    LIST_REMOVE(x, live_link);
    x->p->active--;
    uv_timer_stop(&x->pause);
    x->pause.data = x;
    uv_close((uv_handle_t *)&x->pause, on_xfer_closed);
}

static void start(lt_rest_t *r, xfer_t *x);

/* The command's verdict is out: frees it and gives its slot to the next waiting command. */
static void finish(xfer_t *x)
{
    producer_t *p = x->p;
    release(x);
    xfer_t *next = STAILQ_FIRST(&p->waiting);
    if (next != NULL && !p->r->stopping) {
        STAILQ_REMOVE_HEAD(&p->waiting, wait_link);
        start(p->r, next);
    }
}

/* Puts one request of the command on the wire (the first, or a retry). */
static void send_request(xfer_t *x)
{
    lt_rest_t *r = x->p->r;
    lt_counters_t *c = &r->s->c;
    if (x->attempt > 0)
        atomic_fetch_add(&c->http_retries, 1);
    atomic_fetch_add(&c->http_requests, 1);
    x->answer_len = 0;
    x->too_big = 0;
    if (curl_multi_add_handle(r->multi, x->easy) != CURLM_OK) {
        count_error(&c->http_net_errors, x->p->id, x->k, "libcurl refused the request", NULL, 0);
        x->p->cb.failed(x->p->cb.data, x->k, 0);
        finish(x);
        return;
    }
    x->in_multi = 1;
}

static void on_pause_done(uv_timer_t *t)
{
    send_request(t->data);
}

/* Gives the command a slot and sends its first request. */
static void start(lt_rest_t *r, xfer_t *x)
{
    x->p->active++;
    LIST_INSERT_HEAD(&r->live, x, live_link);
    uv_timer_init(r->loop.uv, &x->pause);
    x->pause.data = x;
    if (prepare(r, x) != 0) {
        count_error(&r->s->c.http_net_errors, x->p->id, x->k, "libcurl cannot build the request", NULL, 0);
        x->p->cb.failed(x->p->cb.data, x->k, 0);
        finish(x);
        return;
    }
    /* Latency counts from the first request, not from the wait for a free slot. */
    atomic_store(&r->s->rec[x->k].sent_us, lt_now_us());
    send_request(x);
}

/* A request ended (answer or failure): accepts, rejects, or pauses the command before a retry. */
static void on_done(lt_rest_t *r, xfer_t *x, CURLcode rc)
{
    const lt_opts_t *o = r->o;
    lt_counters_t *c = &r->s->c;
    producer_t *p = x->p;
    curl_multi_remove_handle(r->multi, x->easy);
    x->in_multi = 0;
    long conns = 0, status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns);
    atomic_fetch_add(&c->http_conns, conns);
    int64_t delay_ms;
    if (rc != CURLE_OK) {
        count_error(rc == CURLE_OPERATION_TIMEDOUT ? &c->http_timeouts : &c->http_net_errors, p->id, x->k,
                    failure_text(rc, x->too_big), NULL, 0);
        delay_ms = x->attempt < 5 ? 50LL << x->attempt : 2000; /* the server may be restarting */
    } else {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        const char *body = x->answer ? x->answer : "";
        if (status == 201 || status == 200) {
            int64_t id;
            if (lt_wire_int(body, x->answer_len, "id", &id) != 0 || id <= 0) {
                count_error(&c->http_bad, p->id, x->k, "2xx answer without an id", body, x->answer_len);
                p->cb.failed(p->cb.data, x->k, 0);
            } else {
                atomic_fetch_add(status == 201 ? &c->http_created : &c->http_replayed, 1);
                p->cb.accepted(p->cb.data, x->k, id, lt_now_us());
            }
            finish(x);
            return;
        }
        if (status == 429 || status == 503) {
            count_error(status == 429 ? &c->http_429 : &c->http_503, p->id, x->k,
                        status == 429 ? "429" : "503", body, x->answer_len);
            curl_off_t ra = 0; /* libcurl: 0 when the header is absent or unreadable */
            curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &ra);
            int64_t s = ra > 0 ? (int64_t)ra : 1;
            delay_ms = (s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s) * 1000;
        } else {
            char what[32];
            snprintf(what, sizeof(what), "%ld", status);
            int rejected = status >= 400 && status < 500;
            count_error(rejected ? &c->http_4xx : &c->http_other, p->id, x->k, what, body, x->answer_len);
            p->cb.failed(p->cb.data, x->k, rejected);
            finish(x);
            return;
        }
    }
    if (x->attempt >= o->rest_retries) {
        p->cb.failed(p->cb.data, x->k, 0);
        finish(x);
        return;
    }
    x->attempt++;
    uv_timer_start(&x->pause, on_pause_done, (uint64_t)delay_ms, 0);
}

/* ---- libcurl on the loop --------------------------------------------------------------------------- */

static void check_done(lt_rest_t *r)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(r->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        xfer_t *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        on_done(r, x, m->data.result);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *sk = h->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) | (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(sk->r->multi, sk->fd, flags, &running);
    check_done(sk->r);
}

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_sock(sock_t *sk)
{
    uv_poll_stop(&sk->poll);
    uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
}

/* CURLMOPT_SOCKETFUNCTION: which events to watch on fd, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *data, void *sockp)
{
    (void)easy;
    lt_rest_t *r = data;
    sock_t *sk = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            close_sock(sk);
            if (!r->stopping)
                curl_multi_assign(r->multi, fd, NULL);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = dr_calloc(1, sizeof(*sk));
        sk->fd = fd;
        sk->r = r;
        sk->poll.data = sk;
        if (uv_poll_init_socket(r->loop.uv, &sk->poll, fd) != 0) {
            free(sk);
            return -1;
        }
        curl_multi_assign(r->multi, fd, sk);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&sk->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    lt_rest_t *r = t->data;
    int running;
    curl_multi_socket_action(r->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(r);
}

/* CURLMOPT_TIMERFUNCTION: call libcurl back after ms milliseconds (-1: never). */
static int on_curl_timer(CURLM *multi, long ms, void *data)
{
    (void)multi;
    lt_rest_t *r = data;
    if (ms < 0)
        uv_timer_stop(&r->timer);
    else
        uv_timer_start(&r->timer, on_timeout, (uint64_t)ms, 0);
    return 0;
}

/* ---- the loop thread ------------------------------------------------------------------------------- */

/* Posted by lt_rest_submit(): the command takes a free slot of its producer or waits for one. */
static void on_submit(void *arg)
{
    xfer_t *x = arg;
    producer_t *p = x->p;
    if (p->r->stopping) {
        free(x);
        return;
    }
    if (p->active < p->r->o->rest_conns)
        start(p->r, x);
    else
        STAILQ_INSERT_TAIL(&p->waiting, x, wait_link);
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_POLL && !uv_is_closing(h))
        close_sock(h->data);
}

/* Posted by lt_rest_close(): abandons every command, then closes every handle so uv_run returns. */
static void on_stop(void *arg)
{
    lt_rest_t *r = arg;
    r->stopping = 1;
    while (!LIST_EMPTY(&r->live))
        release(LIST_FIRST(&r->live));
    for (int i = 0; i < r->n; i++) {
        while (!STAILQ_EMPTY(&r->p[i].waiting)) {
            xfer_t *x = STAILQ_FIRST(&r->p[i].waiting);
            STAILQ_REMOVE_HEAD(&r->p[i].waiting, wait_link);
            free(x);
        }
    }
    curl_multi_cleanup(r->multi); /* closes the cached connections, telling on_socket */
    r->multi = NULL;
    uv_close((uv_handle_t *)&r->timer, NULL);
    uv_walk(r->loop.uv, close_leftover, NULL);
    dr_loop_close(&r->loop);
}

static void set_ready(lt_rest_t *r, int v)
{
    pthread_mutex_lock(&r->mu);
    r->ready = v;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void *loop_main(void *arg)
{
    lt_rest_t *r = arg;
    if (dr_loop_init(&r->loop) != 0) {
        set_ready(r, -1);
        return NULL;
    }
    uv_timer_init(r->loop.uv, &r->timer);
    r->timer.data = r;
    r->multi = curl_multi_init();
    if (r->multi == NULL) {
        uv_close((uv_handle_t *)&r->timer, NULL);
        dr_loop_close(&r->loop);
        uv_run(r->loop.uv, UV_RUN_DEFAULT);
        set_ready(r, -1);
        return NULL;
    }
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETDATA, r);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERDATA, r);
    /* Keep a connection for every slot, so none is closed and opened again between requests. */
    curl_multi_setopt(r->multi, CURLMOPT_MAXCONNECTS, (long)(r->n * r->o->rest_conns));
    set_ready(r, 1);
    uv_run(r->loop.uv, UV_RUN_DEFAULT);
    uv_loop_close(r->loop.uv);
    return NULL;
}

lt_rest_t *lt_rest_open(const lt_opts_t *o, lt_shm_t *s, int n, char *const *ids, const lt_rest_cb_t *cbs)
{
    lt_rest_t *r = dr_calloc(1, sizeof(*r));
    r->o = o;
    r->s = s;
    r->n = n;
    r->p = dr_calloc((size_t)n, sizeof(producer_t));
    for (int i = 0; i < n; i++) {
        r->p[i].r = r;
        snprintf(r->p[i].id, sizeof(r->p[i].id), "%s", ids[i]);
        r->p[i].cb = cbs[i];
        STAILQ_INIT(&r->p[i].waiting);
    }
    LIST_INIT(&r->live);
    snprintf(r->auth, sizeof(r->auth), "Authorization: Bearer %s", o->rest_bearer);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)lt_now_us() ^ ((uint64_t)getpid() << 40);
    snprintf(r->nonce, sizeof(r->nonce), "%016" PRIx64, rnd);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->thread, NULL, loop_main, r) != 0) {
        fprintf(stderr, "drover-load: cannot start the REST thread\n");
        goto err;
    }
    pthread_mutex_lock(&r->mu);
    while (r->ready == 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    if (r->ready < 0) {
        pthread_join(r->thread, NULL);
        fprintf(stderr, "drover-load: cannot start the REST loop or libcurl\n");
        goto err;
    }
    return r;
err:
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->p);
    free(r);
    return NULL;
}

int lt_rest_submit(lt_rest_t *r, int i, int64_t k)
{
    xfer_t *x = dr_calloc(1, sizeof(*x));
    x->p = &r->p[i];
    x->k = k;
    if (dr_loop_post(&r->loop, on_submit, x) != 0) {
        free(x);
        return -1;
    }
    return 0;
}

void lt_rest_close(lt_rest_t *r)
{
    if (r == NULL)
        return;
    if (dr_loop_post(&r->loop, on_stop, r) != 0)
        fprintf(stderr, "drover-load: the REST loop was already closed\n");
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->p);
    free(r);
}

/* ---- rest.url and the start-up check --------------------------------------------------------------- */

int lt_rest_url_parse(lt_opts_t *o, char *err, size_t errlen)
{
    static const struct {
        const char *name, *addr;
    } hosts[] = {{"127.0.0.1", "127.0.0.1"}, {"localhost", "127.0.0.1"}, {"[::1]", "[::1]"}};
    const char *url = o->rest_url;
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "'%s' is not an http:// URL (https is not supported)", url);
        return -1;
    }
    const char *h = url + 7, *p = NULL;
    size_t hi = 0;
    for (; hi < sizeof(hosts) / sizeof(hosts[0]); hi++) {
        size_t l = strlen(hosts[hi].name);
        if (strncmp(h, hosts[hi].name, l) == 0 && (h[l] == ':' || h[l] == '/' || h[l] == '\0')) {
            p = h + l;
            break;
        }
    }
    if (p == NULL) {
        snprintf(err, errlen, "only http://127.0.0.1, localhost or [::1] are allowed");
        return -1;
    }
    long port = 80;
    if (*p == ':') {
        char *e;
        p++;
        if (*p < '0' || *p > '9') {
            snprintf(err, errlen, "'%s': the port is not a number", url);
            return -1;
        }
        port = strtol(p, &e, 10);
        if (port < 1 || port > 65535 || (*e != '\0' && *e != '/')) {
            snprintf(err, errlen, "'%s': the port must be 1..65535", url);
            return -1;
        }
        p = e;
    }
    size_t bl = strlen(p);
    while (bl > 0 && p[bl - 1] == '/')
        bl--;
    if (bl >= sizeof(o->rest_base)) {
        snprintf(err, errlen, "'%s': the path is longer than %zu bytes", url, sizeof(o->rest_base) - 1);
        return -1;
    }
    for (size_t i = 0; i < bl; i++) {
        if (p[i] <= ' ' || p[i] > '~' || p[i] == '?' || p[i] == '#' || p[i] == '%') {
            snprintf(err, errlen, "'%s': the path may hold only visible ASCII without '?', '#' or '%%'", url);
            return -1;
        }
    }
    memcpy(o->rest_base, p, bl);
    o->rest_base[bl] = '\0';
    /* The address itself, so that no name is ever resolved. */
    snprintf(o->rest_origin, sizeof(o->rest_origin), "http://%s:%ld", hosts[hi].addr, port);
    return 0;
}

int lt_rest_check(const lt_opts_t *o)
{
    CURL *easy = curl_easy_init();
    if (easy == NULL) {
        fprintf(stderr, "drover-load: curl_easy_init failed\n");
        return -1;
    }
    char url[512], auth[320];
    /* Reading a message needs a valid key of any scope and changes nothing; 404 is the usual answer. */
    snprintf(url, sizeof(url), "%s%s/v1/messages/1", o->rest_origin, o->rest_base);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", o->rest_bearer);
    struct curl_slist *headers = curl_slist_append(NULL, auth);
    xfer_t answer = {0};
    common_options(easy, o);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &answer);
    CURLcode rc = curl_easy_perform(easy);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    int ok = -1;
    if (rc != CURLE_OK)
        fprintf(stderr, "drover-load: the REST API at %s does not answer: %s\n", o->rest_url,
                failure_text(rc, answer.too_big));
    else if (status == 401)
        fprintf(stderr, "drover-load: the REST API refused rest.key (401); create one with "
                        "'drover-ctl key create producer NAME'\n");
    else if (status != 200 && status != 404 && status != 429)
        fprintf(stderr, "drover-load: the REST API at %s answered %ld: %.*s\n", o->rest_url, status,
                answer.answer_len > 200 ? 200 : (int)answer.answer_len, answer.answer ? answer.answer : "");
    else
        ok = 0;
    free(answer.answer);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return ok;
}
