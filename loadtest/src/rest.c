/* REST producer transport: submits each command with POST /v1/devices/{id}/messages over HTTP/1.1
 * keep-alive connections and reports the answer (201, or 200 for a replay) as acceptance.
 *
 * DESIGN
 * Each producer owns one lt_rest_t: a queue of command numbers and rest.conns connection threads.
 * A thread takes a command, sends it and waits for the whole answer (no pipelining), so a producer
 * has at most rest.conns requests on the wire; the producer's window (producers.c) bounds what is
 * queued plus in flight. Blocking calls are bounded by rest.timeout_ms (http.c), and every wait,
 * including the pauses before a retry, also watches one eventfd, so lt_rest_close() ends everything
 * at once. A command abandoned that way stays "sent but never accepted" in the report.
 * Every request carries Idempotency-Key: <nonce>-<command number>, with a nonce fresh for each
 * transport, so a retry after 429, 503, a timeout or a broken connection can never store a command
 * twice: the ingress answers 200 with the original id instead. A final 4xx is a rejection; 500 is
 * not retried either (the ingress says nothing was stored, and a script error would only repeat).
 * The body carries a messageBirthCertificate naming the producer, so DELIVERED and COMPLETED still
 * arrive over MQTT on producer/response/{producer}, matched by tmpId as for MQTT producers.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/mem.h"
#include "http.h"
#include "load.h"

#define LOG_EACH 3            /* errors of one kind printed on stderr; the rest are only counted */
#define RETRY_AFTER_MAX_S 30  /* longest pause a Retry-After can ask for */
#define THREAD_STACK (256 * 1024)

struct lt_rest {
    const lt_opts_t *o;
    lt_shm_t *s;
    lt_rest_cb_t cb;
    char producer_id[48];
    char headers[400];         /* Authorization and Content-Type lines */
    char nonce[17];            /* hex; makes this transport's idempotency keys unique */
    int stop_fd;               /* eventfd, readable once stopping */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t *q;                /* ring of command numbers waiting for a connection */
    size_t qcap, qhead, qlen;
    int stopping;
    int nthreads;
    pthread_t *threads;
};

/* ---- errors ---------------------------------------------------------------------------------------- */

/* Counts one error of a kind and prints the first few of that kind. */
static void count_error(_Atomic int64_t *counter, const char *producer, int64_t k, const char *what, const char *body,
                        size_t body_len)
{
    if (atomic_fetch_add(counter, 1) >= LOG_EACH)
        return;
    int show = body_len > 200 ? 200 : (int)body_len;
    fprintf(stderr, "drover-load: REST producer %s, command %" PRId64 ": %s%s%.*s\n", producer, k, what,
            show ? ": " : "", show, body ? body : "");
}

/* What a failed lt_http_request() means, in the words of HTTP rather than of dr_strerror(). */
static const char *failure_text(int rc)
{
    switch (rc) {
    case DR_EUNAVAIL: return "cannot connect";
    case DR_EIO: return "connection reset or closed before a whole answer";
    case DR_ETIMEDOUT: return "no whole answer within rest.timeout_ms";
    case DR_EINVAL: return "not an HTTP/1.x answer";
    case DR_ETOOBIG: return "answer too large";
    }
    return dr_strerror(rc);
}

static void count_failure(lt_rest_t *r, int64_t k, int rc)
{
    lt_counters_t *c = &r->s->c;
    count_error(rc == DR_ETIMEDOUT ? &c->http_timeouts : &c->http_net_errors, r->producer_id, k, failure_text(rc),
                NULL, 0);
}

/* Pauses ms milliseconds; returns -1 at once when the transport stops. */
static int pause_ms(lt_rest_t *r, int64_t ms)
{
    struct pollfd p = {.fd = r->stop_fd, .events = POLLIN};
    int64_t until = lt_now_us() + ms * 1000;
    for (;;) {
        int64_t left = (until - lt_now_us()) / 1000;
        if (left <= 0)
            return 0;
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return -1;
        if (n < 0 && errno != EINTR)
            return 0;
    }
}

/* ---- one command ----------------------------------------------------------------------------------- */

/* Sends command k until it is accepted, finally refused, out of retries or the transport stops. */
static void submit(lt_rest_t *r, lt_http_conn_t *conn, int64_t k)
{
    const lt_opts_t *o = r->o;
    lt_counters_t *c = &r->s->c;
    char dev[48], seg[160], path[200], headers[sizeof(r->headers) + 64];
    lt_device_id(o, lt_device_of(o, k), dev, sizeof(dev));
    lt_http_path_segment(dev, seg, sizeof(seg)); /* fits: every byte of dev expands to at most 3 */
    snprintf(path, sizeof(path), "/v1/devices/%s/messages", seg);
    snprintf(headers, sizeof(headers), "%sIdempotency-Key: %s-%" PRId64 "\r\n", r->headers, r->nonce, k);
    char *body = lt_wire_command(o, LT_MODE_DROVER, k, r->producer_id);
    size_t body_len = strlen(body);
    /* Latency counts from the first write, not from the wait for a free connection. */
    atomic_store(&r->s->rec[k].sent_us, lt_now_us());
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            atomic_fetch_add(&c->http_retries, 1);
        atomic_fetch_add(&c->http_requests, 1);
        int64_t opened = conn->opened;
        lt_http_resp_t resp;
        int rc = lt_http_request(conn, "POST", path, headers, body, body_len, o->rest_timeout_ms, &resp);
        atomic_fetch_add(&c->http_conns, conn->opened - opened);
        if (rc == DR_ECLOSED)
            break;
        int64_t delay_ms;
        if (rc != 0) {
            count_failure(r, k, rc);
            delay_ms = attempt < 5 ? 50LL << attempt : 2000; /* the server may be restarting */
        } else if (resp.status == 201 || resp.status == 200) {
            int64_t id;
            if (lt_wire_int(resp.body, resp.body_len, "id", &id) != 0 || id <= 0) {
                count_error(&c->http_bad, r->producer_id, k, "2xx answer without an id", resp.body, resp.body_len);
                r->cb.failed(r->cb.data, k, 0);
                break;
            }
            atomic_fetch_add(resp.status == 201 ? &c->http_created : &c->http_replayed, 1);
            r->cb.accepted(r->cb.data, k, id, lt_now_us());
            break;
        } else if (resp.status == 429 || resp.status == 503) {
            count_error(resp.status == 429 ? &c->http_429 : &c->http_503, r->producer_id, k,
                        resp.status == 429 ? "429" : "503", resp.body, resp.body_len);
            int64_t ra = resp.retry_after_s < 0 ? 1 : resp.retry_after_s;
            delay_ms = (ra > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : ra) * 1000;
        } else {
            char what[32];
            snprintf(what, sizeof(what), "%d", resp.status);
            int rejected = resp.status >= 400 && resp.status < 500;
            count_error(rejected ? &c->http_4xx : &c->http_other, r->producer_id, k, what, resp.body, resp.body_len);
            r->cb.failed(r->cb.data, k, rejected);
            break;
        }
        if (attempt >= o->rest_retries) {
            r->cb.failed(r->cb.data, k, 0);
            break;
        }
        if (pause_ms(r, delay_ms) != 0)
            break;
    }
    free(body);
}

/* ---- connection threads ---------------------------------------------------------------------------- */

/* Takes the next command; returns -1 once the transport stops. */
static int next(lt_rest_t *r, int64_t *k)
{
    pthread_mutex_lock(&r->mu);
    while (r->qlen == 0 && !r->stopping)
        pthread_cond_wait(&r->cv, &r->mu);
    int rc = -1;
    if (!r->stopping) {
        *k = r->q[r->qhead];
        r->qhead = (r->qhead + 1) % r->qcap;
        r->qlen--;
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void *conn_main(void *arg)
{
    lt_rest_t *r = arg;
    lt_http_conn_t conn;
    lt_http_init(&conn, &r->o->rest_target, r->stop_fd);
    int64_t k;
    while (next(r, &k) == 0)
        submit(r, &conn, k);
    lt_http_dispose(&conn);
    return NULL;
}

lt_rest_t *lt_rest_open(const lt_opts_t *o, lt_shm_t *s, const char *producer_id, lt_rest_cb_t cb)
{
    lt_rest_t *r = dr_calloc(1, sizeof(*r));
    r->o = o;
    r->s = s;
    r->cb = cb;
    snprintf(r->producer_id, sizeof(r->producer_id), "%s", producer_id);
    snprintf(r->headers, sizeof(r->headers), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
             o->rest_bearer);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)lt_now_us() ^ ((uint64_t)getpid() << 40);
    snprintf(r->nonce, sizeof(r->nonce), "%016" PRIx64, rnd);
    r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->stop_fd < 0) {
        perror("drover-load: eventfd");
        abort();
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->qcap = (size_t)o->window;
    r->q = dr_calloc(r->qcap, sizeof(int64_t));
    r->threads = dr_calloc((size_t)o->rest_conns, sizeof(pthread_t));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (int i = 0; i < o->rest_conns; i++) {
        if (pthread_create(&r->threads[i], &attr, conn_main, r) != 0) {
            fprintf(stderr, "drover-load: REST producer %s: only %d of %" PRId64 " connection threads started\n",
                    producer_id, i, o->rest_conns);
            break;
        }
        r->nthreads++;
    }
    pthread_attr_destroy(&attr);
    return r;
}

int lt_rest_submit(lt_rest_t *r, int64_t k)
{
    int rc = -1;
    pthread_mutex_lock(&r->mu);
    if (r->qlen < r->qcap && r->nthreads > 0) {
        r->q[(r->qhead + r->qlen) % r->qcap] = k;
        r->qlen++;
        pthread_cond_signal(&r->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void lt_rest_close(lt_rest_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    uint64_t one = 1;
    if (write(r->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        perror("drover-load: eventfd write");
    for (int i = 0; i < r->nthreads; i++)
        pthread_join(r->threads[i], NULL);
    close(r->stop_fd);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->threads);
    free(r->q);
    free(r);
}

/* ---- start-up check -------------------------------------------------------------------------------- */

int lt_rest_check(const lt_opts_t *o)
{
    lt_http_conn_t conn;
    lt_http_init(&conn, &o->rest_target, -1);
    char headers[400];
    snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\n", o->rest_bearer);
    lt_http_resp_t resp;
    /* Reading a message needs a valid key of any scope and changes nothing; 404 is the usual answer. */
    int rc = lt_http_request(&conn, "GET", "/v1/messages/1", headers, NULL, 0, o->rest_timeout_ms, &resp);
    int ok = -1;
    if (rc != 0)
        fprintf(stderr, "drover-load: the REST API at %s does not answer: %s\n", o->rest_url, failure_text(rc));
    else if (resp.status == 401)
        fprintf(stderr, "drover-load: the REST API refused rest.key (401); create one with "
                        "'drover-ctl key create producer NAME'\n");
    else if (resp.status != 200 && resp.status != 404 && resp.status != 429)
        fprintf(stderr, "drover-load: the REST API at %s answered %d: %.*s\n", o->rest_url, resp.status,
                resp.body_len > 200 ? 200 : (int)resp.body_len, resp.body);
    else
        ok = 0;
    lt_http_dispose(&conn);
    return ok;
}
