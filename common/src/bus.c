/* NATS event bus (see dr/bus.h). nats.c runs its own I/O threads; message handlers copy the message
 * and post it to the loop, so bus users only ever run on the loop thread.
 *
 * DESIGN
 *
 * nats.c writes to its socket from whichever thread publishes: natsConnection_Publish() appends to the
 * connection's 32 KB write buffer and, when the buffer is full (or with natsOptions_SetSendAsap), writes
 * it in place while holding the connection lock. A server that stopped reading (SIGSTOP, partition)
 * lets the kernel buffers fill (about 4 MB on loopback) and then blocks that write in send() for as
 * long as the stall lasts, and every other publisher behind the connection lock. If that thread is the
 * loop, the node stops storing and delivering because of a shortcut channel.
 *
 * So the loop never calls into nats.c to publish. dr_bus_publish() copies the event into `queue`
 * (bounded by queue_max; the newest event is dropped when it is full) and signals the publisher thread
 * only when it is idle. The publisher takes the whole queue at once and publishes it without
 * SendAsap, so each publish is a copy into nats.c's buffer and nats.c's flusher thread writes what
 * accumulated within a millisecond, typically every event of one loop turn, in one write.
 *
 * nats.c 3.4 (Debian 12) has natsOptions_SetWriteDeadline(): the socket becomes non-blocking and each
 * write waits for space at most that long; on expiry nats.c shuts the socket down, which makes its read
 * loop fail and start reconnecting, and the publish returns an error. That bounds the time the publisher
 * (and nats.c's flusher, its PINGs and dr_bus_subscribe) can be held by a stalled server, so the
 * publisher recovers by itself and dr_bus_free() can bound its wait. While the connection is down the
 * publisher drops what it takes from the queue; natsOptions_SetReconnectBufSize() bounds what nats.c
 * itself keeps for the short time between the loss and our disconnected callback.
 */
#define DR_MODULE "common/bus"

#include <limits.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "dr/bus.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"

#define MAX_SUBS 8
#define RECONNECT_BUF_SIZE (256 * 1024) /* what nats.c may hold while it reconnects (default 8 MB) */

/* One queued event: subject and payload in one allocation. */
typedef struct event {
    STAILQ_ENTRY(event) link;
    char *subject; /* points into data, after the payload */
    int len;       /* payload length */
    char data[];   /* payload, then the NUL-terminated subject */
} event_t;

STAILQ_HEAD(event_list, event);

typedef struct {
    dr_bus_t *bus;
    natsSubscription *sub;
    dr_bus_msg_cb *cb;
    void *data;
} sub_t;

struct dr_bus {
    dr_loop_t *loop;
    natsOptions *opts;
    natsConnection *nc;
    sub_t subs[MAX_SUBS];
    int nsubs;
    atomic_int connected;
    atomic_int closed;    /* nats.c's last callback for this connection has run */
    int write_deadline_ms;

    /* publisher thread (DESIGN); mu guards the fields below */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* signalled when the idle publisher has work, or on stop */
    pthread_cond_t exited_cv; /* signalled when the publisher returns */
    struct event_list queue; /* events waiting for the publisher, oldest first */
    int queued;              /* length of queue */
    int queue_max;
    int idle;                /* the publisher waits on wake */
    int stop;                /* dr_bus_free() began: no new events, publisher drains and returns */
    int exited;              /* the publisher returned */
    int failing;             /* last publish failed; logged once per streak (publisher thread only) */
};

typedef struct {
    sub_t *sub;
    char *subject;
    char *payload;
    size_t len;
} posted_t;

static void deliver(void *arg)
{
    posted_t *p = arg;
    p->sub->cb(p->sub->data, p->subject, p->payload, p->len);
    free(p->subject);
    free(p->payload);
    free(p);
}

static void on_msg(natsConnection *nc, natsSubscription *s, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)s;
    sub_t *sub = closure;
    posted_t *p = dr_malloc(sizeof(*p));
    p->sub = sub;
    p->subject = dr_strdup(natsMsg_GetSubject(msg));
    p->len = (size_t)natsMsg_GetDataLength(msg);
    p->payload = dr_strndup(natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "", p->len);
    natsMsg_Destroy(msg);
    if (dr_loop_post(sub->bus->loop, deliver, p) != 0) {
        free(p->subject);
        free(p->payload);
        free(p);
    }
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    dr_bus_t *b = closure;
    atomic_store(&b->connected, 1);
    dr_log(DR_LOG_NOTICE, "event=nats_connected");
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    dr_bus_t *b = closure;
    atomic_store(&b->connected, 0);
    dr_log(DR_LOG_WARNING, "event=nats_disconnected");
}

/* nats.c calls this last, on its own thread, after natsConnection_Close: from then on nothing of
 * nats.c refers to b any more. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    dr_bus_t *b = closure;
    atomic_store(&b->closed, 1);
}

/* Gives nats.c the server list. natsOptions_SetURL takes a single URL (a comma-separated list there
 * becomes one unusable URL), so a list is split at the commas, blanks trimmed, and passed to
 * natsOptions_SetServers. */
static natsStatus set_servers(natsOptions *o, const char *list)
{
    if (strchr(list, ',') == NULL)
        return natsOptions_SetURL(o, list);
    char *copy = dr_strdup(list);
    const char *urls[64];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok != NULL && n < 64;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (*tok != '\0')
            urls[n++] = tok;
    }
    natsStatus s = n > 0 ? natsOptions_SetServers(o, urls, n) : NATS_INVALID_ARG;
    free(copy);
    return s;
}

/* Secure mode, trusted CAs, client certificate and server name check. nats.c loads the files here, so
 * an unreadable or malformed file fails dr_bus_open() instead of every later connection attempt.
 * nats.c checks the server name only when one is given (natsOptions_SetExpectedHostname), so we always
 * give one: nats.tls_server_name, or else the host of the first URL, which covers the usual single
 * server or a cluster whose certificates all carry the same name. */
static natsStatus set_tls(natsOptions *o, const dr_bus_options_t *opt)
{
    natsStatus s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK && opt->tls_ca && opt->tls_ca[0])
        s = natsOptions_LoadCATrustedCertificates(o, opt->tls_ca);
    if (s == NATS_OK && opt->tls_cert && opt->tls_cert[0])
        s = natsOptions_LoadCertificatesChain(o, opt->tls_cert, opt->tls_key);
    if (s == NATS_OK && opt->tls_skip_verify) {
        s = natsOptions_SkipServerVerification(o, true);
        dr_log(DR_LOG_WARNING,
               "event=nats_tls_insecure note=\"server certificate NOT verified: tests only\"");
        return s;
    }
    char host[256] = "";
    if (opt->tls_server_name && opt->tls_server_name[0]) {
        snprintf(host, sizeof(host), "%s", opt->tls_server_name);
    } else {
        /* "tls://[user:pass@]host[:port][,...]": the host of the first URL, without IPv6 brackets. */
        const char *p = strstr(opt->url, "://");
        p = p ? p + 3 : opt->url;
        const char *at = strchr(p, '@'), *comma = strchr(p, ',');
        if (at && (comma == NULL || at < comma))
            p = at + 1;
        size_t n = *p == '[' ? strcspn(++p, "]") : strcspn(p, ":,/ ");
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
    }
    if (s == NATS_OK && host[0])
        s = natsOptions_SetExpectedHostname(o, host);
    return s;
}

/* ---- Publisher thread ------------------------------------------------------------------------- */

/* Hands one batch to nats.c, oldest first, and frees it. After a failure (write deadline expired,
 * connection lost) the rest of the batch is dropped: the connection is going down and a stalled server
 * must not hold the thread once per event. Returns the number of events dropped. */
static int publish_batch(dr_bus_t *b, struct event_list *batch)
{
    int dropped = 0;
    natsStatus s = NATS_OK;
    event_t *e;
    while ((e = STAILQ_FIRST(batch)) != NULL) {
        STAILQ_REMOVE_HEAD(batch, link);
        if (s == NATS_OK && atomic_load(&b->connected))
            s = natsConnection_Publish(b->nc, e->subject, e->data, e->len);
        else if (s == NATS_OK)
            s = NATS_CONNECTION_DISCONNECTED;
        if (s != NATS_OK)
            dropped++;
        free(e);
    }
    if (s != NATS_OK && !b->failing)
        dr_log(DR_LOG_WARNING, "event=nats_publish_failed error=\"%s\" action=dropping", natsStatus_GetText(s));
    else if (s == NATS_OK && b->failing)
        dr_log(DR_LOG_NOTICE, "event=nats_publish_recovered");
    b->failing = s != NATS_OK;
    return dropped;
}

static void *publisher(void *arg)
{
    dr_bus_t *b = arg;
    struct event_list batch;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (STAILQ_EMPTY(&b->queue) && !b->stop) {
            b->idle = 1;
            pthread_cond_wait(&b->wake, &b->mu);
        }
        b->idle = 0;
        int stopping = b->stop;
        STAILQ_INIT(&batch);
        STAILQ_CONCAT(&batch, &b->queue);
        b->queued = 0;
        pthread_mutex_unlock(&b->mu);
        int dropped = publish_batch(b, &batch);
        if (dropped > 0)
            dr_metrics_add(DR_M_BUS_DROPPED, dropped);
        pthread_mutex_lock(&b->mu);
        if (stopping && STAILQ_EMPTY(&b->queue))
            break;
    }
    b->exited = 1;
    pthread_cond_signal(&b->exited_cv);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    int64_t ns = ts->tv_nsec + (int64_t)ms * 1000000;
    ts->tv_sec += (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

/* Stops the publisher and waits for it, bounded: it is inside nats.c at most for one publish, which
 * may wait for the connection lock (held by nats.c's flusher for up to one write deadline) and then
 * write itself (one more). Returns 0 when it returned and was joined, DR_ETIMEDOUT otherwise. */
static int stop_publisher(dr_bus_t *b)
{
    if (!b->thread_started)
        return 0;
    struct timespec deadline;
    deadline_after(&deadline, 2 * b->write_deadline_ms + 1000);
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_signal(&b->wake);
    while (!b->exited && pthread_cond_timedwait(&b->exited_cv, &b->mu, &deadline) == 0)
        ;
    int exited = b->exited;
    pthread_mutex_unlock(&b->mu);
    if (!exited)
        return DR_ETIMEDOUT;
    pthread_join(b->thread, NULL);
    return 0;
}

static int start_publisher(dr_bus_t *b, char *err)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->wake, NULL);
    pthread_cond_init(&b->exited_cv, &ca);
    pthread_condattr_destroy(&ca);
    STAILQ_INIT(&b->queue);
    int rc = pthread_create(&b->thread, NULL, publisher, b);
    if (rc != 0) {
        snprintf(err, DR_ERR_LEN, "nats publisher thread: %s", strerror(rc));
        return DR_EIO;
    }
    pthread_setname_np(b->thread, "dr-bus-pub");
    b->thread_started = 1;
    return 0;
}

static void dispose_publisher(dr_bus_t *b)
{
    event_t *e;
    while ((e = STAILQ_FIRST(&b->queue)) != NULL) {
        STAILQ_REMOVE_HEAD(&b->queue, link);
        free(e);
    }
    pthread_cond_destroy(&b->exited_cv);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->mu);
}

/* With RetryOnFailedConnect, nats.c reports a failed first attempt only as "not yet connected" and its
 * reconnect thread retries silently, so a wrong CA or certificate would never be named in the log. A
 * TLS bus therefore makes one attempt without retrying first (at startup, before the loop runs; at most
 * the 2 s connect timeout) and logs why it failed; the real connection follows right after. */
static void probe_tls(dr_bus_t *b, const char *url)
{
    natsConnection *nc = NULL;
    /* The probe must not reach b's callbacks: its close would mark b's real connection closed. */
    natsStatus s = natsOptions_SetRetryOnFailedConnect(b->opts, false, NULL, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, NULL, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(b->opts, NULL, NULL);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&nc, b->opts);
        if (s != NATS_OK) {
            const char *why = nats_GetLastError(NULL);
            dr_log(DR_LOG_WARNING, "event=nats_tls_failed url=%s reason=\"%s\" action=retrying", url,
                   why && why[0] ? why : natsStatus_GetText(s));
        }
        if (nc != NULL) {
            natsConnection_Close(nc);
            natsConnection_Destroy(nc);
        }
    }
    natsOptions_SetRetryOnFailedConnect(b->opts, true, on_connected, b);
    natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    natsOptions_SetClosedCB(b->opts, on_closed, b);
}

/* ---- Public API --------------------------------------------------------------------------------- */

int dr_bus_open(dr_loop_t *loop, const dr_bus_options_t *opt, dr_bus_t **out, char *err)
{
    if (opt->queue_max < 0 || opt->write_deadline_ms < 0) {
        snprintf(err, DR_ERR_LEN, "nats options: queue_max and write_deadline_ms must not be negative");
        return DR_EINVAL;
    }
    dr_bus_t *b = dr_calloc(1, sizeof(*b));
    b->loop = loop;
    b->queue_max = opt->queue_max > 0 ? opt->queue_max : DR_BUS_QUEUE_MAX;
    b->write_deadline_ms = opt->write_deadline_ms > 0 ? opt->write_deadline_ms : DR_BUS_WRITE_DEADLINE_MS;
    natsStatus s = natsOptions_Create(&b->opts);
    if (s == NATS_OK)
        s = set_servers(b->opts, opt->url);
    if (s == NATS_OK && opt->user && opt->user[0])
        s = natsOptions_SetUserInfo(b->opts, opt->user, opt->password ? opt->password : "");
    if (s == NATS_OK && opt->name)
        s = natsOptions_SetName(b->opts, opt->name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(b->opts, 250);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(b->opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(b->opts, true, on_connected, b);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(b->opts, on_connected, b);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(b->opts, on_closed, b);
    /* Not SendAsap: publishes only fill nats.c's buffer and its flusher thread coalesces the writes. */
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(b->opts, false);
    if (s == NATS_OK)
        s = natsOptions_SetWriteDeadline(b->opts, b->write_deadline_ms);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(b->opts, RECONNECT_BUF_SIZE);
    if (s == NATS_OK && opt->tls)
        s = set_tls(b->opts, opt);
    if (s != NATS_OK) {
        const char *detail = nats_GetLastError(NULL);
        snprintf(err, DR_ERR_LEN, "nats options: %s", detail && detail[0] ? detail : natsStatus_GetText(s));
        natsOptions_Destroy(b->opts);
        free(b);
        return DR_EINVAL;
    }
    /* Before connecting, so that a failure here has no connection to undo. The publisher reads b->nc
     * only for queued events, and events are queued only after this function returned. */
    int rc = start_publisher(b, err);
    if (rc != 0) {
        dispose_publisher(b);
        natsOptions_Destroy(b->opts);
        free(b);
        return rc;
    }
    if (opt->tls)
        probe_tls(b, opt->url);
    s = natsConnection_Connect(&b->nc, b->opts);
    if (s == NATS_OK) {
        atomic_store(&b->connected, 1);
        dr_log(DR_LOG_NOTICE, "event=nats_connected");
    } else if (s != NATS_NOT_YET_CONNECTED) {
        snprintf(err, DR_ERR_LEN, "nats connect: %s", natsStatus_GetText(s));
        stop_publisher(b); /* idle, with an empty queue: returns at once */
        dispose_publisher(b);
        if (b->nc)
            natsConnection_Destroy(b->nc);
        natsOptions_Destroy(b->opts);
        free(b);
        return DR_EINVAL;
    } else {
        dr_log(DR_LOG_WARNING, "event=nats_not_yet_connected url=%s action=retrying", opt->url);
    }
    *out = b;
    return 0;
}

int dr_bus_publish(dr_bus_t *b, const char *subject, const void *payload, size_t len)
{
    if (!atomic_load(&b->connected))
        return DR_EUNAVAIL;
    size_t slen = strlen(subject);
    if (len > INT_MAX || slen > INT_MAX - len - 1)
        return DR_ETOOBIG;
    event_t *e = dr_malloc(sizeof(*e) + len + slen + 1);
    if (len > 0)
        memcpy(e->data, payload, len);
    e->len = (int)len;
    e->subject = e->data + len;
    memcpy(e->subject, subject, slen + 1);
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (b->stop) {
        rc = DR_ECLOSED;
    } else if (b->queued >= b->queue_max) {
        rc = DR_EBUSY;
    } else {
        STAILQ_INSERT_TAIL(&b->queue, e, link);
        b->queued++;
        if (b->idle) {
            b->idle = 0; /* one signal per wake-up of the publisher, however many events follow */
            pthread_cond_signal(&b->wake);
        }
    }
    pthread_mutex_unlock(&b->mu);
    if (rc != 0)
        free(e);
    return rc;
}

int dr_bus_subscribe(dr_bus_t *b, const char *subject, dr_bus_msg_cb *cb, void *data)
{
    if (b->nsubs >= MAX_SUBS)
        return DR_EINVAL;
    sub_t *sub = &b->subs[b->nsubs];
    sub->bus = b;
    sub->cb = cb;
    sub->data = data;
    natsStatus s = natsConnection_Subscribe(&sub->sub, b->nc, subject, on_msg, sub);
    if (s != NATS_OK) {
        dr_log(DR_LOG_WARNING, "event=nats_subscribe_failed subject=%s error=\"%s\"", subject, natsStatus_GetText(s));
        return DR_EUNAVAIL;
    }
    natsSubscription_SetPendingLimits(sub->sub, 1000000, 256 * 1024 * 1024);
    b->nsubs++;
    return 0;
}

int dr_bus_connected(dr_bus_t *b)
{
    return atomic_load(&b->connected);
}

void dr_bus_free(dr_bus_t *b)
{
    if (b == NULL)
        return;
    if (stop_publisher(b) != 0) {
        /* Cannot happen while nats.c honours the write deadline. Freeing b under a running thread
         * would be worse than leaving it to the exiting process. */
        dr_log(DR_LOG_WARNING, "event=nats_publisher_stuck waited_ms=%d action=abandoning",
               2 * b->write_deadline_ms + 1000);
        return;
    }
    for (int i = 0; i < b->nsubs; i++) {
        natsSubscription_Unsubscribe(b->subs[i].sub);
        natsSubscription_Destroy(b->subs[i].sub);
    }
    natsConnection_Close(b->nc);
    /* Callbacks (disconnected, closed) run on nats.c's thread after Close returns: b must outlive them. */
    for (int i = 0; i < 300 && !atomic_load(&b->closed); i++)
        uv_sleep(10);
    natsConnection_Destroy(b->nc);
    natsOptions_Destroy(b->opts);
    /* Handlers may have posted messages before the subscriptions closed: run them now. */
    dr_loop_drain(b->loop);
    dispose_publisher(b);
    free(b);
}
