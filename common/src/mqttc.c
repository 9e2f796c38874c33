/* dr_mqttc: MQTT 3.1.1 and MQTT 5 client on libuv with application-controlled PUBACKs (see dr/mqttc.h).
 *
 * DESIGN
 * One dr_mqttc_t lives as long as the application wants the connection; each TCP connection is a
 * separate conn_t that is detached from the client the moment it fails and freed by its own uv_close
 * callback. Whatever the old connection's libuv requests report later therefore never reaches the
 * client, and a new connection can start while the old one is still closing.
 *
 * The client is a state machine (see the enum) driven by libuv callbacks and one repeating timer, the
 * "tick", which checks every deadline: connect, reconnect back-off, keepalive, publish timeouts and the
 * stop deadline. A tick of TICK_MS bounds how late a deadline can fire; nothing depends on it firing on
 * time.
 *
 * Outgoing packets are encoded into the connection's plaintext buffer and written with one uv_write per
 * loop turn: a uv_idle handle flushes the buffer, and the read callback flushes at its end so that the
 * PUBACKs released by acks made inside message callbacks leave together. With TLS the plaintext goes
 * through SSL_write into a memory BIO whose output is what we uv_write; received bytes go into the other
 * memory BIO and SSL_read gives the plaintext to the decoder.
 *
 * Received QoS 1 messages enter a dr_mqttc_ackq_t (pure, unit-tested), which releases PUBACKs in arrival
 * order. Keepalive is driven by what we sent and what we received, never by the application's acks:
 * PINGREQ goes out when we sent nothing for a keepalive interval or heard nothing for one, and the
 * connection is declared dead when nothing at all arrived for 1.5 intervals.
 *
 * Our QoS 1 publishes wait in `waiting` (FIFO) until the in-flight window has room, then move to
 * `inflight` (send order, so deadlines are ordered too). A publish whose deadline passes while in flight
 * gets DR_ETIMEDOUT but keeps its packet id (and window slot) until the PUBACK comes or the connection
 * ends, so an id is never reused while the broker may still answer for it.
 *
 * MQTT 5 is a property of each connection (conn_t.version): the codec encodes and decodes by it. What
 * the broker announces in its CONNACK (Receive Maximum, Server Keep Alive, Maximum Packet Size) applies
 * to that connection only. A broker that refuses version 5 answers with a 3.1.1 CONNACK "unacceptable
 * protocol version" (or v5 reason 0x84); with protocol_fallback the next attempt uses 3.1.1.
 *
 * Re-entrancy: any callback may call any function, including stop and free. Memory is only released
 * from uv_close callbacks, so the objects on our stack stay valid; after every user callback the code
 * checks whether its connection is still the live one before it goes on.
 */
#define DR_MODULE "common/mqttc"

#include <assert.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "dr/mqttc.h"
#include "dr/mqttc_packet.h"
#include "dr/topic.h"

enum {
    TICK_MS = 100,              /* deadline resolution */
    READ_CHUNK = 65536,         /* bytes asked from libuv or SSL_read at once */
    LOG_REPEAT_MS = 60000,      /* the same failure is logged at most once a minute */
    WRITE_HIGH_WATER = 4 << 20, /* bytes queued towards the socket beyond which publishes wait in `waiting` */
};

enum {
    ST_IDLE,        /* opened, not started */
    ST_RESOLVING,   /* uv_getaddrinfo running */
    ST_CONNECTING,  /* TCP connect running */
    ST_TLS,         /* TLS handshake */
    ST_CONNACK,     /* CONNECT sent, waiting for CONNACK */
    ST_SUBSCRIBING, /* session up, UNSUBACK/SUBACK outstanding */
    ST_READY,       /* connected and subscribed */
    ST_BACKOFF,     /* waiting to reconnect */
    ST_STOPPING,    /* DISCONNECT written, waiting for the write to finish */
    ST_STOPPED,     /* stopped by the application */
    ST_FREED,       /* dr_mqttc_free called; handles closing */
};

static const char *const state_names[] = {"idle",     "resolving",   "connecting", "tls handshake",
                                          "connack",  "subscribing", "ready",      "backoff",
                                          "stopping", "stopped",     "freed"};

/* ---- types ------------------------------------------------------------------------------------ */

typedef struct pub {
    struct pub *prev, *next;
    dr_mqttc_pub_cb *cb; /* may be NULL */
    void *data;
    int done; /* completed (timed out): the entry only holds its packet id until the PUBACK */
    int64_t deadline;
    int64_t accepted;  /* dr_mono_ms() of the publish call: the message expiry counts from it */
    uint32_t expiry_s; /* MQTT 5 Message Expiry Interval asked for, 0: none */
    int qos;
    uint16_t id;
    size_t topic_len, len;
    char bytes[]; /* topic then payload */
} pub_t;

typedef struct {
    pub_t *head, *tail;
    size_t n;
} pub_list_t;

typedef struct conn conn_t;

typedef struct {
    uv_write_t req;
    conn_t *c;
    char *base;
    size_t len;
    size_t nqos0;    /* QoS 0 publishes completed by this write */
    int close_after; /* the write carries DISCONNECT: close the connection when it is done */
} wreq_t;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    dr_mqttc_t *m;            /* NULL once detached (closing) */
    void (*done)(void *data); /* a stop's completion, called from the close callback */
    void *done_data;
    SSL *ssl;         /* NULL for plain TCP */
    BIO *rbio, *wbio; /* network -> SSL, SSL -> network (owned by ssl) */
    int tls_done;
    uint8_t *rbuf; /* received plaintext not decoded yet */
    size_t rlen, rcap;
    uint8_t *wbuf; /* encoded packets not written yet */
    size_t wlen, wcap;
    pub_list_t written0; /* QoS 0 publishes in wbuf or in libuv's write queue, in order */
    size_t wbuf_qos0;    /* how many of written0 are still in wbuf */
    int version;         /* DR_MQTTC_V311 or DR_MQTTC_V5: fixed for the connection's life */
    char inbuf[READ_CHUNK];
};

typedef struct {
    uv_getaddrinfo_t req;
    dr_mqttc_t *m; /* NULL: orphaned, the callback only frees */
} resolve_t;

typedef struct {
    char *filter;
    int qos;
} sub_t;

struct dr_mqttc {
    uv_loop_t *loop;

    /* configuration (owned copies) */
    char *url, *host, *port_str, *client_id, *username, *password;
    int port, tls, tls_insecure;
    struct sockaddr_storage addr; /* when host is numeric */
    int numeric;
    int keepalive_ms, clean_session, connect_timeout_ms, publish_timeout_ms;
    size_t max_inflight, max_queued, max_packet;
    int reconnect_min_ms, reconnect_max_ms;
    int protocol, protocol_fallback; /* the level the next connection asks for; fall back to 3.1.1 */
    uint32_t session_expiry_s;       /* MQTT 5 Session Expiry Interval sent with clean_session 0 */
    int keepalive_cfg_ms;            /* keepalive asked for; keepalive_ms is the connection's */
    size_t inflight_cap;             /* min(max_inflight, the broker's Receive Maximum) */
    uint32_t server_max_packet;      /* the broker's Maximum Packet Size, 0: none announced */
    SSL_CTX *ssl_ctx;
    sub_t *subs, *stale;
    size_t nsubs, nstale;

    dr_mqttc_msg_cb *msg_cb;
    void *msg_data;
    dr_mqttc_state_cb *state_cb;
    void *state_data;

    /* connection */
    int state;
    conn_t *conn;
    resolve_t *resolving;
    int64_t deadline; /* connect or stop deadline */
    int64_t reconnect_at;
    int backoff_ms;
    uint64_t rng;
    int64_t last_sent, last_recv;
    int ping_out;              /* a PINGREQ awaits its PINGRESP */
    uint16_t sub_id, unsub_id; /* outstanding SUBSCRIBE/UNSUBSCRIBE ids, 0: none */
    int session_present;

    /* our publishes */
    pub_list_t waiting, inflight;
    size_t npending; /* accepted publishes whose callback has not run */
    uint16_t next_id;
    uint8_t ids[8192]; /* bitmap of packet ids in flight */

    /* received QoS 1 messages */
    dr_mqttc_ackq_t ackq;

    /* handles and stop */
    uv_timer_t tick;
    uv_idle_t idle;
    int handles_open;
    void (*stop_done)(void *data);
    void *stop_data;
    int done_pending; /* stop_done runs from the next idle callback */

    /* errors */
    char err[DR_ERR_LEN];    /* last failure reason */
    char logged[DR_ERR_LEN]; /* last failure logged, for rate limiting */
    int64_t logged_at;
    int suppressed;
};

static void begin_connect(dr_mqttc_t *m);
static void conn_flush(conn_t *c, int close_after);
static void pump(dr_mqttc_t *m);
static void drop(dr_mqttc_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- small helpers ---------------------------------------------------------------------------- */

static int in_session(const dr_mqttc_t *m)
{
    return m->state == ST_CONNACK || m->state == ST_SUBSCRIBING || m->state == ST_READY;
}

/* True while c is the client's connection and the session is open: checked after every user callback. */
static int conn_live(const dr_mqttc_t *m, const conn_t *c)
{
    return c->m == m && m->conn == c && in_session(m);
}

static void list_push(pub_list_t *l, pub_t *p)
{
    p->next = NULL;
    p->prev = l->tail;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    l->n++;
}

static void list_unlink(pub_list_t *l, pub_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    l->n--;
}

static pub_t *list_pop(pub_list_t *l)
{
    pub_t *p = l->head;
    if (p)
        list_unlink(l, p);
    return p;
}

static void id_set(dr_mqttc_t *m, uint16_t id, int on)
{
    if (on)
        m->ids[id >> 3] |= (uint8_t)(1u << (id & 7));
    else
        m->ids[id >> 3] &= (uint8_t) ~(1u << (id & 7));
}

static int id_used(const dr_mqttc_t *m, uint16_t id)
{
    return (m->ids[id >> 3] >> (id & 7)) & 1;
}

/* The next free packet id; one exists because at most max_inflight (<= 65535) ids are used at once,
 * plus the SUBSCRIBE and UNSUBSCRIBE ids, which are only used before any publish is accepted. */
static uint16_t alloc_id(dr_mqttc_t *m)
{
    do {
        m->next_id = (uint16_t)(m->next_id == 65535 ? 1 : m->next_id + 1);
    } while (id_used(m, m->next_id));
    id_set(m, m->next_id, 1);
    return m->next_id;
}

/* Completes a publish that was not completed yet (runs its callback) and frees it. */
static void complete(dr_mqttc_t *m, pub_t *p, int err)
{
    dr_mqttc_pub_cb *cb = p->done ? NULL : p->cb;
    void *data = p->data;
    if (!p->done)
        m->npending--;
    free(p);
    if (cb)
        cb(data, err);
}

/* Completes every publish of l with err. Each entry leaves the list before its callback runs, so a
 * callback that frees the client (which fails the same lists) cannot see an entry twice. */
static void fail_list(dr_mqttc_t *m, pub_list_t *l, int err)
{
    pub_t *p;
    while ((p = list_pop(l)) != NULL) {
        if (p->qos > 0 && l == &m->inflight)
            id_set(m, p->id, 0);
        complete(m, p, err);
    }
}

static uint32_t rand32(dr_mqttc_t *m)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return (uint32_t)(m->rng >> 11);
}

/* Logs a connection failure, at most once a minute for the same reason. */
static void log_failure(dr_mqttc_t *m, const char *reason)
{
    int64_t now = dr_mono_ms();
    if (strcmp(reason, m->logged) == 0 && now - m->logged_at < LOG_REPEAT_MS) {
        m->suppressed++;
        return;
    }
    dr_log(DR_LOG_WARNING, "event=mqttc_connection_failed url=%s client_id=%s reason=\"%s\" repeated=%d",
           m->url, m->client_id, reason, m->suppressed);
    snprintf(m->logged, sizeof(m->logged), "%s", reason);
    m->logged_at = now;
    m->suppressed = 0;
}

static void schedule_idle(dr_mqttc_t *m);

/* ---- connection buffers and writes ------------------------------------------------------------ */

static void reserve(uint8_t **buf, size_t *cap, size_t len, size_t more)
{
    if (*cap - len >= more)
        return;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap - len < more)
        ncap *= 2;
    *buf = dr_realloc(*buf, ncap);
    *cap = ncap;
}

/* Appends an encoded packet to the connection's write buffer (flushed by the idle handle). */
static void put_packet(conn_t *c, const dr_mqttc_packet_t *pk)
{
    dr_mqttc_packet_t v = *pk;
    const dr_mqttc_packet_t *p = &v;
    v.version = c->version;
    size_t n = dr_mqttc_encode(p, NULL, 0);
    assert(n > 0); /* every field was validated when it was accepted */
    reserve(&c->wbuf, &c->wcap, c->wlen, n);
    dr_mqttc_encode(p, c->wbuf + c->wlen, n);
    c->wlen += n;
    if (c->m)
        schedule_idle(c->m);
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = req->data;
    conn_t *c = w->c;
    dr_mqttc_t *m = c->m;
    size_t nqos0 = w->nqos0;
    int close_after = w->close_after;
    free(w->base);
    free(w);
    if (m == NULL)
        return; /* detached: its publishes were failed already */
    if (status < 0) {
        drop(m, "write failed: %s", uv_strerror(status));
        return;
    }
    for (size_t i = 0; i < nqos0 && c->m == m; i++) {
        pub_t *p = list_pop(&c->written0);
        if (p == NULL)
            break;
        complete(m, p, 0);
    }
    if (close_after && c->m == m && m->state == ST_STOPPING)
        drop(m, "stopped");
    else if (c->m == m && m->waiting.head)
        pump(m); /* the write queue shrank */
}

/* Hands n bytes at base (taken over) to the socket. What the socket takes at once is written with
 * uv_try_write: no request, and no change to what the loop polls for (libuv re-arms the socket's poll,
 * one epoll_ctl, after every uv_write it completes). The rest, and a write whose completion matters
 * (QoS 0 publishes complete when written; a DISCONNECT closes after it), goes through uv_write, which
 * keeps the order: uv_try_write writes nothing while an earlier uv_write is still queued. */
static void send_bytes(conn_t *c, char *base, size_t n, size_t nqos0, int close_after)
{
    dr_mqttc_t *m = c->m;
    size_t off = 0;
    if (nqos0 == 0 && !close_after && n > 0) {
        uv_buf_t b = uv_buf_init(base, (unsigned)n);
        int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (rc < 0 && rc != UV_EAGAIN) {
            free(base);
            drop(m, "write failed: %s", uv_strerror(rc));
            return;
        }
        if (rc > 0) {
            off = (size_t)rc;
            m->last_sent = dr_mono_ms();
        }
        if (off == n) {
            free(base);
            return;
        }
    }
    wreq_t *w = dr_calloc(1, sizeof(*w));
    w->c = c;
    w->base = base;
    w->len = n;
    w->nqos0 = nqos0;
    w->close_after = close_after;
    w->req.data = w;
    uv_buf_t b = uv_buf_init(base + off, (unsigned)(n - off));
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        free(base);
        free(w);
        drop(m, "write failed: %s", uv_strerror(rc));
        return;
    }
    m->last_sent = dr_mono_ms();
}

/* Sends whatever TLS produced (handshake records, alerts, encrypted data). */
static void tls_drain(conn_t *c, size_t nqos0, int close_after)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n == 0 && !close_after && nqos0 == 0)
        return;
    char *base = dr_malloc(n);
    int got = n ? BIO_read(c->wbio, base, (int)n) : 0;
    send_bytes(c, base, got > 0 ? (size_t)got : 0, nqos0, close_after);
}

/* Writes the plaintext buffer (one uv_write). */
static void conn_flush(conn_t *c, int close_after)
{
    if (c->m == NULL || (c->wlen == 0 && !close_after))
        return;
    size_t nqos0 = c->wbuf_qos0;
    c->wbuf_qos0 = 0;
    if (c->ssl == NULL) {
        char *base = (char *)c->wbuf;
        size_t n = c->wlen;
        c->wbuf = NULL;
        c->wlen = c->wcap = 0;
        send_bytes(c, base ? base : dr_malloc(1), n, nqos0, close_after);
        return;
    }
    if (c->wlen > 0) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->wbuf, (int)c->wlen); /* memory BIO: all or an error */
        c->wlen = 0;
        if (n <= 0) {
            drop(c->m, "TLS write failed");
            return;
        }
    }
    if (close_after)
        (void)SSL_shutdown(c->ssl); /* queue close_notify after DISCONNECT */
    tls_drain(c, nqos0, close_after);
}

static void on_idle(uv_idle_t *h)
{
    dr_mqttc_t *m = h->data;
    uv_idle_stop(h);
    if (m->done_pending) {
        m->done_pending = 0;
        void (*done)(void *) = m->stop_done;
        m->stop_done = NULL;
        if (done)
            done(m->stop_data);
    }
    if (m->conn && in_session(m))
        conn_flush(m->conn, 0);
}

static void schedule_idle(dr_mqttc_t *m)
{
    if (m->state != ST_FREED && !uv_is_active((uv_handle_t *)&m->idle))
        uv_idle_start(&m->idle, on_idle);
}

/* ---- connection life cycle -------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (c->done)
        c->done(c->done_data);
    if (c->ssl)
        SSL_free(c->ssl); /* frees both BIOs */
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

/* Detaches the connection from the client and closes it; done (if any) runs once it is closed. */
static void conn_close(dr_mqttc_t *m, conn_t *c, void (*done)(void *), void *done_data)
{
    fail_list(m, &c->written0, DR_ECLOSED);
    if (m->conn == c)
        m->conn = NULL;
    c->m = NULL;
    c->done = done;
    c->done_data = done_data;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Ends a stop: the connection is gone, stop's done runs when it is closed (or from the idle handle). */
static void finish_stop(dr_mqttc_t *m)
{
    void (*done)(void *) = m->stop_done;
    m->state = ST_STOPPED;
    uv_timer_stop(&m->tick);
    if (m->conn) {
        m->stop_done = NULL;
        conn_close(m, m->conn, done, m->stop_data);
    } else if (done) {
        m->done_pending = 1;
        schedule_idle(m);
    }
    fail_list(m, &m->inflight, DR_ECLOSED);
    fail_list(m, &m->waiting, DR_ECLOSED);
}

/* Ends the current connection or connection attempt after a failure: fails pending publishes, forgets
 * unacked messages (the broker redelivers them), reports the reason and schedules the reconnect. */
static void drop(dr_mqttc_t *m, const char *fmt, ...)
{
    char reason[DR_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);

    if (m->state == ST_FREED || m->state == ST_STOPPED || m->state == ST_IDLE)
        return;
    if (m->resolving) {
        m->resolving->m = NULL;
        m->resolving = NULL;
    }
    if (m->state == ST_STOPPING) {
        finish_stop(m);
        return;
    }
    int was_ready = m->state == ST_READY;
    snprintf(m->err, sizeof(m->err), "%s", reason);
    log_failure(m, reason);
    if (was_ready)
        dr_log(DR_LOG_NOTICE, "event=mqttc_disconnected url=%s client_id=%s reason=\"%s\"", m->url,
               m->client_id, reason);

    int d = m->backoff_ms;
    m->reconnect_at = dr_mono_ms() + d / 2 + (int)(rand32(m) % (uint32_t)(d / 2 + 1));
    m->backoff_ms = d >= m->reconnect_max_ms / 2 ? m->reconnect_max_ms : d * 2;
    m->state = ST_BACKOFF;
    m->ping_out = 0;
    if (m->sub_id)
        id_set(m, m->sub_id, 0);
    if (m->unsub_id)
        id_set(m, m->unsub_id, 0);
    m->sub_id = m->unsub_id = 0;
    dr_mqttc_ackq_reset(&m->ackq);

    if (m->conn)
        conn_close(m, m->conn, NULL, NULL);
    fail_list(m, &m->inflight, DR_ECLOSED);
    fail_list(m, &m->waiting, DR_ECLOSED);
    if (m->state == ST_BACKOFF && m->state_cb)
        m->state_cb(m->state_data, 0, m->err);
}

static void ready(dr_mqttc_t *m)
{
    m->state = ST_READY;
    m->backoff_ms = m->reconnect_min_ms;
    m->err[0] = '\0';
    m->logged[0] = '\0';
    dr_log(DR_LOG_NOTICE, "event=mqttc_connected url=%s client_id=%s session_present=%d subscriptions=%zu",
           m->url, m->client_id, m->session_present, m->nsubs);
    if (m->state_cb)
        m->state_cb(m->state_data, 1, "connected");
}

/* The session is up (CONNACK received): publishes may go out while the SUBSCRIBE is still answered,
 * which matters because a persistent session's queued messages arrive before the SUBACK and what the
 * application does with them (answers, notifications) must not wait or fail. */
static int session_up(const dr_mqttc_t *m)
{
    return m->state == ST_READY || m->state == ST_SUBSCRIBING;
}

/* MQTT 5 only: the expiry left (the wait in `waiting` counts, rounded up to whole seconds, so the broker
 * never keeps a message longer than asked) and the broker's Maximum Packet Size. Returns -1 when p was
 * completed instead of sent (expired: DR_ETIMEDOUT; too big: DR_ETOOBIG). */
static int publish_v5_checks(dr_mqttc_t *m, conn_t *c, pub_t *p, dr_mqttc_packet_t *pk)
{
    if (c->version != DR_MQTTC_V5)
        return 0;
    if (p->expiry_s > 0) {
        /* Dropped only once really expired; otherwise the wait, rounded up to whole seconds, comes off
         * the expiry, which stays at least 1 s (MQTT's unit): the broker keeps it at most 1 s longer
         * than asked, which callers allow for. */
        int64_t waited_ms = dr_mono_ms() - p->accepted;
        if (waited_ms >= (int64_t)p->expiry_s * 1000) {
            dr_log(DR_LOG_VERBOSE, "event=mqttc_publish_expired waited_ms=%lld expiry_s=%u", (long long)waited_ms,
                   p->expiry_s);
            complete(m, p, DR_ETIMEDOUT);
            return -1;
        }
        uint32_t waited_s = (uint32_t)((waited_ms + 999) / 1000);
        pk->props.has_message_expiry = 1;
        pk->props.message_expiry = p->expiry_s > waited_s ? p->expiry_s - waited_s : 1;
    }
    if (m->server_max_packet > 0) {
        pk->id = 1; /* sizing only: QoS 1 packets carry an id */
        size_t n = dr_mqttc_encode(pk, NULL, 0);
        pk->id = 0;
        if (n > m->server_max_packet) {
            complete(m, p, DR_ETOOBIG);
            return -1;
        }
    }
    return 0;
}

/* Moves waiting publishes into the window and encodes them. */
static void pump(dr_mqttc_t *m)
{
    conn_t *c = m->conn;
    if (!session_up(m) || c == NULL)
        return;
    while (m->waiting.head && m->conn == c && session_up(m)) {
        pub_t *p = m->waiting.head;
        if (p->qos > 0 && m->inflight.n >= m->inflight_cap)
            break;
        /* A socket that does not drain (a slow or stuck broker) must not grow memory without bound: stop
         * here, so the waiting queue fills and dr_mqttc_publish answers DR_EBUSY. on_write resumes. */
        if (c->wlen + uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_HIGH_WATER)
            break;
        list_unlink(&m->waiting, p);
        dr_mqttc_packet_t pk = {.type = DR_MQTTC_PUBLISH, .qos = p->qos, .version = c->version};
        pk.topic = (dr_mqttc_str_t){p->bytes, p->topic_len};
        pk.payload = (dr_mqttc_str_t){p->bytes + p->topic_len, p->len};
        if (publish_v5_checks(m, c, p, &pk) != 0)
            continue; /* completed unsent; a callback may have stopped us: the loop re-checks */
        if (p->qos > 0) {
            p->id = pk.id = alloc_id(m);
            list_push(&m->inflight, p);
        } else {
            list_push(&c->written0, p);
            c->wbuf_qos0++;
        }
        put_packet(c, &pk);
    }
}

static void send_connect(dr_mqttc_t *m, conn_t *c)
{
    dr_mqttc_packet_t p = {.type = DR_MQTTC_CONNECT, .clean_session = m->clean_session};
    m->keepalive_ms = m->keepalive_cfg_ms;
    m->inflight_cap = m->max_inflight;
    m->server_max_packet = 0;
    p.keepalive = m->keepalive_ms / 1000;
    if (c->version == DR_MQTTC_V5) {
        /* 3.1.1's persistent session lasts until it is cleaned; v5 says how long after a disconnect. */
        if (!m->clean_session) {
            p.props.has_session_expiry = 1;
            p.props.session_expiry = m->session_expiry_s ? m->session_expiry_s : 0xffffffffu;
        }
        /* Tell the broker our frame limit, so it drops what we could not take instead of sending it
         * and losing the connection to our refusal. */
        p.props.maximum_packet_size = (uint32_t)(m->max_packet < 0xffffffffu ? m->max_packet : 0xffffffffu);
    }
    p.client_id = (dr_mqttc_str_t){m->client_id, strlen(m->client_id)};
    if (m->username)
        p.username = (dr_mqttc_str_t){m->username, strlen(m->username)};
    if (m->password)
        p.password = (dr_mqttc_str_t){m->password, strlen(m->password)};
    m->state = ST_CONNACK;
    m->last_recv = dr_mono_ms();
    dr_mqttc_ackq_reset(&m->ackq);
    put_packet(c, &p);
    conn_flush(c, 0);
}

/* ---- TLS -------------------------------------------------------------------------------------- */

static void tls_failed(dr_mqttc_t *m, conn_t *c, int ssl_err)
{
    long v = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_error();
    char buf[160] = "connection closed during the handshake";
    tls_drain(c, 0, 0); /* let the peer see our alert */
    if (m->conn != c)
        return;
    if (v != X509_V_OK) {
        drop(m, "certificate verify failed: %s", X509_verify_cert_error_string(v));
        return;
    }
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else if (ssl_err == SSL_ERROR_SYSCALL)
        snprintf(buf, sizeof(buf), "unexpected end of stream");
    drop(m, "TLS handshake failed: %s", buf);
}

/* Advances the handshake; sends CONNECT when it completes. Returns -1 when the connection was dropped. */
static int tls_step(dr_mqttc_t *m, conn_t *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->tls_done = 1;
        dr_log(DR_LOG_VERBOSE, "event=mqttc_tls_ready url=%s version=%s cipher=%s", m->url,
               SSL_get_version(c->ssl), SSL_get_cipher(c->ssl));
        tls_drain(c, 0, 0);
        if (m->conn != c)
            return -1;
        send_connect(m, c);
        return m->conn == c ? 0 : -1;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_drain(c, 0, 0);
        return m->conn == c ? 0 : -1;
    }
    tls_failed(m, c, e);
    return -1;
}

static int tls_start(dr_mqttc_t *m, conn_t *c)
{
    c->ssl = SSL_new(m->ssl_ctx);
    if (c->ssl == NULL)
        return -1;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        return -1;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    if (!m->numeric)
        SSL_set_tlsext_host_name(c->ssl, m->host);
    if (!m->tls_insecure) {
        int ok = m->numeric ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), m->host)
                            : SSL_set1_host(c->ssl, m->host);
        if (ok != 1)
            return -1;
    }
    m->state = ST_TLS;
    return tls_step(m, c) < 0 ? 1 : 0;
}

/* Decrypts what arrived into rbuf. Returns -1 when the connection was dropped. */
static int tls_read(dr_mqttc_t *m, conn_t *c, const char *buf, size_t n)
{
    if (BIO_write(c->rbio, buf, (int)n) != (int)n) {
        drop(m, "TLS buffer allocation failed");
        return -1;
    }
    if (!c->tls_done && (tls_step(m, c) < 0 || !c->tls_done))
        return m->conn == c ? 0 : -1;
    for (;;) {
        reserve(&c->rbuf, &c->rcap, c->rlen, READ_CHUNK);
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->rbuf + c->rlen, READ_CHUNK);
        if (r > 0) {
            c->rlen += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            drop(m, "TLS connection closed by the broker");
        } else {
            char eb[160] = "unknown error";
            unsigned long ec = ERR_peek_error();
            if (ec)
                ERR_error_string_n(ec, eb, sizeof(eb));
            drop(m, "TLS error: %s", eb);
        }
        return -1;
    }
    tls_drain(c, 0, 0); /* key updates, session ticket acknowledgements */
    return m->conn == c ? 0 : -1;
}

/* ---- incoming packets ------------------------------------------------------------------------- */

/* Queues one SUBSCRIBE or UNSUBSCRIBE for every filter of list; returns its packet id. */
static uint16_t send_filters(dr_mqttc_t *m, conn_t *c, int type, const sub_t *list, size_t n)
{
    dr_mqttc_filter_t *f = dr_malloc(n * sizeof(*f));
    for (size_t i = 0; i < n; i++)
        f[i] = (dr_mqttc_filter_t){{list[i].filter, strlen(list[i].filter)}, list[i].qos, 0};
    dr_mqttc_packet_t p = {.type = type, .filters = f, .nfilters = n};
    p.id = alloc_id(m);
    put_packet(c, &p);
    free(f);
    return p.id;
}

/* A v5 CONNACK refusal, or a 3.1.1 answer to our v5 CONNECT. Returns 1 when the connection was
 * dropped. */
static int connack_refused(dr_mqttc_t *m, conn_t *c, const dr_mqttc_packet_t *p)
{
    int old_broker = c->version == DR_MQTTC_V5 && p->version != DR_MQTTC_V5;
    int bad_version = (old_broker && p->return_code == 1) || p->return_code == 0x84;
    if (bad_version && m->protocol_fallback && m->protocol == DR_MQTTC_V5) {
        m->protocol = DR_MQTTC_V311;
        dr_log(DR_LOG_WARNING,
               "event=mqttc_protocol_fallback url=%s client_id=%s from=5 to=4 reason=\"%s\" "
               "effect=\"MQTT 5 features (message expiry) are off for this client\"",
               m->url, m->client_id, dr_mqttc_connack_reason(p->return_code));
    }
    if (p->return_code != 0) {
        const dr_mqttc_str_t *rs = &p->props.reason_string;
        drop(m, "%s%s%.*s%s", dr_mqttc_connack_reason(p->return_code), rs->ptr ? " (" : "",
             rs->ptr ? (int)rs->len : 0, rs->ptr ? rs->ptr : "", rs->ptr ? ")" : "");
        return 1;
    }
    if (old_broker) {
        drop(m, "protocol error: MQTT 3.1.1 CONNACK accepting an MQTT 5 CONNECT");
        return 1;
    }
    return 0;
}

/* What a v5 broker announced for this connection. */
static void apply_connack_props(dr_mqttc_t *m, const dr_mqttc_props_t *pr)
{
    if (pr->receive_maximum > 0 && pr->receive_maximum < m->inflight_cap)
        m->inflight_cap = pr->receive_maximum;
    if (pr->has_server_keepalive && pr->server_keepalive > 0) /* 0 (no keepalive) keeps ours */
        m->keepalive_ms = (int)pr->server_keepalive * 1000;
    m->server_max_packet = pr->maximum_packet_size;
}

static void on_connack(dr_mqttc_t *m, conn_t *c, const dr_mqttc_packet_t *p)
{
    if (connack_refused(m, c, p))
        return;
    if (c->version == DR_MQTTC_V5)
        apply_connack_props(m, &p->props);
    m->session_present = p->session_present;
    if (!m->clean_session && !p->session_present)
        dr_log(DR_LOG_NOTICE, "event=mqttc_new_session url=%s client_id=%s", m->url, m->client_id);
    m->state = ST_SUBSCRIBING;
    if (m->nstale > 0)
        m->unsub_id = send_filters(m, c, DR_MQTTC_UNSUBSCRIBE, m->stale, m->nstale);
    if (m->nsubs > 0)
        m->sub_id = send_filters(m, c, DR_MQTTC_SUBSCRIBE, m->subs, m->nsubs);
    if (m->sub_id == 0 && m->unsub_id == 0)
        ready(m);
}

static void on_suback(dr_mqttc_t *m, const dr_mqttc_packet_t *p)
{
    if (m->sub_id == 0 || p->id != m->sub_id) {
        drop(m, "SUBACK for unknown packet id %u", p->id);
        return;
    }
    if (p->list.len != m->nsubs) {
        drop(m, "SUBACK with %zu return codes for %zu filters", p->list.len, m->nsubs);
        return;
    }
    for (size_t i = 0; i < m->nsubs; i++) {
        int granted = (uint8_t)p->list.ptr[i];
        if (granted >= DR_MQTTC_SUBACK_FAILURE) {
            if (p->version == DR_MQTTC_V5)
                drop(m, "subscription refused by the broker: %s (%s)", m->subs[i].filter,
                     dr_mqttc_reason_name(granted));
            else
                drop(m, "subscription refused by the broker: %s", m->subs[i].filter);
            return;
        }
        if (granted < m->subs[i].qos)
            dr_log(DR_LOG_NOTICE, "event=mqttc_qos_downgraded filter=\"%s\" asked=%d granted=%d",
                   m->subs[i].filter, m->subs[i].qos, granted);
    }
    id_set(m, m->sub_id, 0);
    m->sub_id = 0;
    if (m->unsub_id == 0)
        ready(m);
}

static void on_unsuback(dr_mqttc_t *m, const dr_mqttc_packet_t *p)
{
    if (m->unsub_id == 0 || p->id != m->unsub_id) {
        drop(m, "UNSUBACK for unknown packet id %u", p->id);
        return;
    }
    /* v5 reports per filter; 3.1.1 has no failure. A refusal is handled like a SUBACK refusal. */
    if (p->version == DR_MQTTC_V5 && p->list.len != m->nstale) {
        drop(m, "UNSUBACK with %zu reason codes for %zu filters", p->list.len, m->nstale);
        return;
    }
    for (size_t i = 0; p->version == DR_MQTTC_V5 && i < m->nstale; i++) {
        int code = (uint8_t)p->list.ptr[i];
        if (code >= 0x80) {
            drop(m, "unsubscribe refused by the broker: %s (%s)", m->stale[i].filter,
                 dr_mqttc_reason_name(code));
            return;
        }
    }
    id_set(m, m->unsub_id, 0);
    m->unsub_id = 0;
    if (m->sub_id == 0)
        ready(m);
}

static void on_puback(dr_mqttc_t *m, const dr_mqttc_packet_t *p)
{
    pub_t *e = m->inflight.head; /* PUBACKs normally come in order: this is the first one tried */
    while (e && e->id != p->id)
        e = e->next;
    if (e == NULL) {
        dr_log(DR_LOG_VERBOSE, "event=mqttc_unknown_puback id=%u", p->id);
        return;
    }
    list_unlink(&m->inflight, e);
    id_set(m, e->id, 0);
    if (p->return_code >= 0x80) /* v5 only: 3.1.1 PUBACKs decode with 0 */
        dr_log(DR_LOG_VERBOSE, "event=mqttc_publish_refused id=%u reason=\"%s\"", p->id,
               dr_mqttc_reason_name(p->return_code));
    complete(m, e, p->return_code >= 0x80 ? DR_EIO : 0);
    if (m->conn != NULL && session_up(m))
        pump(m);
}

/* Writes every PUBACK the ack queue releases. */
static void release_pubacks(dr_mqttc_t *m, conn_t *c)
{
    uint16_t id;
    while (dr_mqttc_ackq_pop(&m->ackq, &id)) {
        dr_mqttc_packet_t a = {.type = DR_MQTTC_PUBACK, .id = id};
        put_packet(c, &a);
    }
}

static void on_publish(dr_mqttc_t *m, conn_t *c, const dr_mqttc_packet_t *p)
{
    if (p->qos > 1) {
        drop(m, "QoS 2 PUBLISH received (subscriptions ask for at most QoS 1)");
        return;
    }
    dr_mqttc_msg_t msg = {.topic = p->topic.ptr,
                          .topic_len = p->topic.len,
                          .payload = p->payload.ptr,
                          .len = p->payload.len,
                          .qos = p->qos,
                          .dup = p->dup,
                          .retain = p->retain,
                          .has_expiry = p->props.has_message_expiry,
                          .expiry_s = p->props.message_expiry};
    if (p->qos == 1) {
        msg.token = dr_mqttc_ackq_push(&m->ackq, p->id);
        if (msg.token == 0) {
            drop(m, "more than %d unacknowledged QoS 1 messages", DR_MQTTC_ACKQ_MAX);
            return;
        }
    }
    if (m->msg_cb)
        m->msg_cb(m->msg_data, &msg);
    else if (msg.token)
        dr_mqttc_ack(m, msg.token);
    (void)c;
}

static void handle_packet(dr_mqttc_t *m, conn_t *c, const dr_mqttc_packet_t *p)
{
    if (m->state == ST_CONNACK) {
        if (p->type == DR_MQTTC_CONNACK)
            on_connack(m, c, p);
        else
            drop(m, "protocol error: %s before CONNACK", dr_mqttc_type_name(p->type));
        return;
    }
    switch (p->type) {
    case DR_MQTTC_PUBLISH:
        on_publish(m, c, p);
        return;
    case DR_MQTTC_PUBACK:
        on_puback(m, p);
        return;
    case DR_MQTTC_SUBACK:
        on_suback(m, p);
        return;
    case DR_MQTTC_UNSUBACK:
        on_unsuback(m, p);
        return;
    case DR_MQTTC_PINGRESP:
        m->ping_out = 0;
        return;
    case DR_MQTTC_DISCONNECT:
        if (c->version == DR_MQTTC_V5) { /* 3.1.1 brokers never send it */
            const dr_mqttc_str_t *rs = &p->props.reason_string;
            drop(m, "disconnected by the broker: %s (0x%02x)%s%.*s%s", dr_mqttc_reason_name(p->return_code),
                 (unsigned)p->return_code, rs->ptr ? " (" : "", rs->ptr ? (int)rs->len : 0,
                 rs->ptr ? rs->ptr : "", rs->ptr ? ")" : "");
            return;
        }
        break;
    }
    drop(m, "protocol error: unexpected %s from the broker", dr_mqttc_type_name(p->type));
}

/* Decodes and handles every whole packet in rbuf. */
static void process_input(dr_mqttc_t *m, conn_t *c)
{
    size_t pos = 0;
    while (conn_live(m, c)) {
        dr_mqttc_packet_t p;
        size_t used;
        const char *why;
        int rc = dr_mqttc_decode_v(c->rbuf + pos, c->rlen - pos, m->max_packet, c->version, &p, &used, &why);
        if (rc == DR_MQTTC_NEED_MORE)
            break;
        if (rc < 0) {
            drop(m, "protocol error: %s", why);
            return;
        }
        m->last_recv = dr_mono_ms();
        handle_packet(m, c, &p);
        pos += used;
    }
    if (c->m == m && pos > 0) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->inbuf, sizeof(c->inbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    dr_mqttc_t *m = c->m;
    if (m == NULL || n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            drop(m, "connection closed by the broker");
        else
            drop(m, "read failed: %s", uv_strerror((int)n));
        return;
    }
    if (c->ssl) {
        if (tls_read(m, c, buf->base, (size_t)n) < 0)
            return;
    } else {
        reserve(&c->rbuf, &c->rcap, c->rlen, (size_t)n);
        memcpy(c->rbuf + c->rlen, buf->base, (size_t)n);
        c->rlen += (size_t)n;
    }
    process_input(m, c);
    if (conn_live(m, c))
        conn_flush(c, 0); /* PUBACKs released by acks made in message callbacks leave in one write */
}

/* ---- connecting ------------------------------------------------------------------------------- */

static void on_tcp_connected(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    dr_mqttc_t *m = c->m;
    if (m == NULL)
        return; /* detached while connecting */
    if (status < 0) {
        drop(m, "cannot connect to %s:%d: %s", m->host, m->port, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc != 0) {
        drop(m, "read failed: %s", uv_strerror(rc));
        return;
    }
    m->last_sent = m->last_recv = dr_mono_ms();
    if (m->tls) {
        if (tls_start(m, c) < 0)
            drop(m, "TLS setup failed");
        return;
    }
    send_connect(m, c);
}

static void start_tcp(dr_mqttc_t *m, const struct sockaddr *addr)
{
    conn_t *c = dr_calloc(1, sizeof(*c));
    uv_tcp_init(m->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    c->m = m;
    c->version = m->protocol;
    m->conn = c;
    m->state = ST_CONNECTING;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, addr, on_tcp_connected);
    if (rc != 0)
        drop(m, "cannot connect to %s:%d: %s", m->host, m->port, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = req->data;
    dr_mqttc_t *m = r->m;
    free(r);
    if (m == NULL) {
        uv_freeaddrinfo(res);
        return;
    }
    m->resolving = NULL;
    /* One address per attempt: IPv4 first, because brokers often listen on 127.0.0.1 or 0.0.0.0 only
     * while "localhost" may resolve to ::1 first. */
    struct addrinfo *ai = res;
    while (ai && ai->ai_family != AF_INET)
        ai = ai->ai_next;
    if (ai == NULL)
        ai = res;
    if (status < 0 || ai == NULL)
        drop(m, "cannot resolve %s: %s", m->host, status < 0 ? uv_strerror(status) : "no address");
    else
        start_tcp(m, ai->ai_addr);
    uv_freeaddrinfo(res);
}

static void begin_connect(dr_mqttc_t *m)
{
    m->deadline = dr_mono_ms() + m->connect_timeout_ms;
    m->state = ST_RESOLVING;
    if (m->numeric) {
        start_tcp(m, (const struct sockaddr *)&m->addr);
        return;
    }
    resolve_t *r = dr_calloc(1, sizeof(*r));
    r->m = m;
    r->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(m->loop, &r->req, on_resolved, m->host, m->port_str, &hints);
    if (rc != 0) {
        free(r);
        drop(m, "cannot resolve %s: %s", m->host, uv_strerror(rc));
        return;
    }
    m->resolving = r;
}

/* ---- the tick --------------------------------------------------------------------------------- */

/* Times out waiting publishes and, in order, in-flight ones (which keep their id until the PUBACK). */
static void expire_publishes(dr_mqttc_t *m, int64_t now)
{
    while (m->waiting.head && m->waiting.head->deadline <= now && session_up(m))
        complete(m, list_pop(&m->waiting), DR_ETIMEDOUT);
    for (pub_t *p = m->inflight.head; p && p->deadline <= now && session_up(m); p = p->next) {
        if (p->done)
            continue;
        p->done = 1;
        m->npending--;
        dr_log(DR_LOG_VERBOSE, "event=mqttc_publish_timeout id=%u", p->id);
        if (p->cb)
            p->cb(p->data, DR_ETIMEDOUT);
        if (m->state != ST_READY)
            return; /* the callback stopped or freed us: the list was failed, p is gone */
    }
}

static void keepalive(dr_mqttc_t *m, int64_t now)
{
    conn_t *c = m->conn;
    int64_t ka = m->keepalive_ms;
    if (now - m->last_recv >= ka + ka / 2) {
        drop(m, "keepalive timeout: no packet from the broker for %lld ms", (long long)(now - m->last_recv));
        return;
    }
    if (now - m->last_sent >= ka || (now - m->last_recv >= ka && !m->ping_out)) {
        dr_mqttc_packet_t p = {.type = DR_MQTTC_PINGREQ};
        put_packet(c, &p);
        m->ping_out = 1;
        conn_flush(c, 0);
    }
}

static void on_tick(uv_timer_t *t)
{
    dr_mqttc_t *m = t->data;
    int64_t now = dr_mono_ms();
    switch (m->state) {
    case ST_BACKOFF:
        if (now >= m->reconnect_at)
            begin_connect(m);
        return;
    case ST_RESOLVING:
    case ST_CONNECTING:
    case ST_TLS:
    case ST_CONNACK:
        if (now >= m->deadline)
            drop(m, "connect timeout: no %s within %d ms", m->state == ST_CONNACK ? "CONNACK" : "connection",
                 m->connect_timeout_ms);
        return;
    case ST_SUBSCRIBING:
        if (now >= m->deadline) {
            drop(m, "connect timeout: no SUBACK/UNSUBACK within %d ms", m->connect_timeout_ms);
            return;
        }
        keepalive(m, now);
        return;
    case ST_READY:
        expire_publishes(m, now);
        if (m->state == ST_READY)
            keepalive(m, now);
        return;
    case ST_STOPPING:
        if (now >= m->deadline)
            drop(m, "stop deadline passed");
        return;
    }
}

/* ---- options ---------------------------------------------------------------------------------- */

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DR_ERR_LEN, fmt, ap);
    va_end(ap);
    return DR_EINVAL;
}

/* Splits "scheme://host[:port]" into m->host, m->port, m->tls and the numeric address if any. */
static int parse_url(dr_mqttc_t *m, const char *url, char *err)
{
    static const struct {
        const char *scheme;
        int tls, port;
    } schemes[] = {{"tcp://", 0, 1883}, {"mqtt://", 0, 1883}, {"ssl://", 1, 8883}, {"mqtts://", 1, 8883}};
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && rest == NULL; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(url, schemes[i].scheme, n) == 0) {
            rest = url + n;
            m->tls = schemes[i].tls;
            m->port = schemes[i].port;
        }
    }
    if (rest == NULL)
        return fail(err, "mqttc: url \"%s\" must start with tcp://, mqtt://, ssl:// or mqtts://", url);
    const char *host = rest, *end;
    if (*rest == '[') {
        host = rest + 1;
        end = strchr(host, ']');
        if (end == NULL)
            return fail(err, "mqttc: url \"%s\": unterminated [", url);
        rest = end + 1;
    } else {
        end = rest + strcspn(rest, ":/");
        rest = end;
    }
    if (end == host)
        return fail(err, "mqttc: url \"%s\" has no host", url);
    if (*rest == ':') {
        char *stop;
        long p = strtol(rest + 1, &stop, 10);
        if (stop == rest + 1 || p < 1 || p > 65535 || (*stop != '\0' && *stop != '/'))
            return fail(err, "mqttc: url \"%s\": bad port", url);
        m->port = (int)p;
        rest = stop;
    }
    if (*rest != '\0' && strcmp(rest, "/") != 0)
        return fail(err, "mqttc: url \"%s\": unexpected \"%s\"", url, rest);
    m->host = dr_strndup(host, (size_t)(end - host));
    char port[8];
    snprintf(port, sizeof(port), "%d", m->port);
    m->port_str = dr_strdup(port);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&m->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&m->addr;
    m->numeric = uv_ip4_addr(m->host, m->port, a4) == 0 || uv_ip6_addr(m->host, m->port, a6) == 0;
    return 0;
}

static int tls_setup(dr_mqttc_t *m, const dr_mqttc_options_t *opt, char *err)
{
    char eb[160];
    m->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (m->ssl_ctx == NULL)
        return fail(err, "mqttc: cannot create the TLS context");
    SSL_CTX_set_min_proto_version(m->ssl_ctx, TLS1_2_VERSION);
    if (opt->ca_file || opt->ca_path) {
        if (SSL_CTX_load_verify_locations(m->ssl_ctx, opt->ca_file, opt->ca_path) != 1)
            goto bad;
    } else if (SSL_CTX_set_default_verify_paths(m->ssl_ctx) != 1) {
        goto bad;
    }
    if (opt->cert_file) {
        const char *key = opt->key_file ? opt->key_file : opt->cert_file;
        if (SSL_CTX_use_certificate_chain_file(m->ssl_ctx, opt->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(m->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(m->ssl_ctx) != 1)
            goto bad;
    }
    if (m->tls_insecure) {
        SSL_CTX_set_verify(m->ssl_ctx, SSL_VERIFY_NONE, NULL);
        dr_log(DR_LOG_WARNING,
               "event=mqttc_tls_insecure url=%s note=\"server certificate NOT verified: tests only\"",
               m->url);
    } else {
        SSL_CTX_set_verify(m->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    return 0;
bad:
    ERR_error_string_n(ERR_get_error(), eb, sizeof(eb));
    ERR_clear_error();
    return fail(err, "mqttc: TLS files: %s", eb);
}

static int check_options(const dr_mqttc_options_t *o, char *err)
{
    if (o->keepalive_s < 0 || o->keepalive_s > 65535)
        return fail(err, "mqttc: keepalive_s must be 0..65535");
    if (o->connect_timeout_ms < 0 || o->publish_timeout_ms < 0 || o->reconnect_min_ms < 0 ||
        o->reconnect_max_ms < 0)
        return fail(err, "mqttc: timeouts must not be negative");
    if (o->max_inflight < 0 || o->max_inflight > 65535 || o->max_queued < 0)
        return fail(err, "mqttc: max_inflight must be 0..65535 and max_queued not negative");
    if (o->max_packet != 0 && o->max_packet < 16)
        return fail(err, "mqttc: max_packet must be at least 16 bytes");
    if (o->protocol != 0 && o->protocol != DR_MQTTC_V311 && o->protocol != DR_MQTTC_V5)
        return fail(err, "mqttc: protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5), not %d", o->protocol);
    const char *id = o->client_id ? o->client_id : "";
    if (id[0] == '\0' && !o->clean_session)
        return fail(err, "mqttc: a persistent session needs a client_id");
    if (strlen(id) > 65535 || dr_topic_check_utf8(id, strlen(id)) != 0)
        return fail(err, "mqttc: client_id is not valid UTF-8 or too long");
    int has_user = o->username && o->username[0];
    if (has_user &&
        (strlen(o->username) > 65535 || dr_topic_check_utf8(o->username, strlen(o->username)) != 0))
        return fail(err, "mqttc: username is not valid UTF-8 or too long");
    if (o->password && (!has_user || strlen(o->password) > 65535))
        return fail(err, "mqttc: a password needs a username and at most 65535 bytes");
    return 0;
}

/* ---- public API ------------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    dr_mqttc_t *m = h->data;
    if (--m->handles_open > 0)
        return;
    for (size_t i = 0; i < m->nsubs; i++)
        free(m->subs[i].filter);
    for (size_t i = 0; i < m->nstale; i++)
        free(m->stale[i].filter);
    free(m->subs);
    free(m->stale);
    dr_mqttc_ackq_dispose(&m->ackq);
    SSL_CTX_free(m->ssl_ctx);
    free(m->url);
    free(m->host);
    free(m->port_str);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m);
}

int dr_mqttc_open(uv_loop_t *loop, const dr_mqttc_options_t *opt, dr_mqttc_t **out, char err[DR_ERR_LEN])
{
    *out = NULL;
    if (opt->url == NULL)
        return fail(err, "mqttc: url is required");
    if (check_options(opt, err) != 0)
        return DR_EINVAL;
    dr_mqttc_t *m = dr_calloc(1, sizeof(*m));
    m->loop = loop;
    m->url = dr_strdup(opt->url);
    if (parse_url(m, opt->url, err) != 0)
        goto bad;
    m->client_id = dr_strdup(opt->client_id ? opt->client_id : "");
    m->username = opt->username && opt->username[0] ? dr_strdup(opt->username) : NULL;
    m->password = opt->password ? dr_strdup(opt->password) : NULL;
    m->keepalive_ms = m->keepalive_cfg_ms = (opt->keepalive_s ? opt->keepalive_s : 30) * 1000;
    m->protocol = opt->protocol == DR_MQTTC_V5 ? DR_MQTTC_V5 : DR_MQTTC_V311;
    m->protocol_fallback = opt->protocol_fallback ? 1 : 0;
    m->session_expiry_s = opt->session_expiry_s;
    m->clean_session = opt->clean_session ? 1 : 0;
    m->connect_timeout_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 5000;
    m->publish_timeout_ms = opt->publish_timeout_ms ? opt->publish_timeout_ms : 10000;
    m->max_inflight = opt->max_inflight ? (size_t)opt->max_inflight : 1000;
    m->inflight_cap = m->max_inflight;
    m->max_queued = opt->max_queued ? (size_t)opt->max_queued : 100000;
    m->max_packet = opt->max_packet ? opt->max_packet : 1024 * 1024;
    m->reconnect_min_ms = opt->reconnect_min_ms ? opt->reconnect_min_ms : 100;
    m->reconnect_max_ms = opt->reconnect_max_ms ? opt->reconnect_max_ms : 5000;
    if (m->reconnect_max_ms < m->reconnect_min_ms)
        m->reconnect_max_ms = m->reconnect_min_ms;
    m->backoff_ms = m->reconnect_min_ms;
    m->tls_insecure = opt->tls_insecure ? 1 : 0;
    if (m->tls && tls_setup(m, opt, err) != 0)
        goto bad;
    m->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)m;
    if (m->rng == 0)
        m->rng = 1;
    m->state = ST_IDLE;
    dr_mqttc_ackq_init(&m->ackq);
    uv_timer_init(loop, &m->tick);
    uv_idle_init(loop, &m->idle);
    m->tick.data = m->idle.data = m;
    m->handles_open = 2;
    *out = m;
    return 0;
bad:
    SSL_CTX_free(m->ssl_ctx);
    free(m->url);
    free(m->host);
    free(m->port_str);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m);
    return DR_EINVAL;
}

static void add_filter(sub_t **list, size_t *n, const char *filter, int qos)
{
    *list = dr_realloc(*list, (*n + 1) * sizeof(**list));
    (*list)[*n] = (sub_t){dr_strdup(filter), qos};
    (*n)++;
}

static int filter_ok(const char *filter)
{
    dr_mqttc_filter_t f = {{filter, filter ? strlen(filter) : 0}, 0, 0};
    if (filter == NULL || f.filter.len > 65535)
        return 0;
    /* Reuse the decoder's filter rules: encode a one-filter UNSUBSCRIBE and decode it again. */
    dr_mqttc_packet_t p = {.type = DR_MQTTC_UNSUBSCRIBE, .id = 1, .filters = &f, .nfilters = 1};
    size_t n = dr_mqttc_encode(&p, NULL, 0), used;
    uint8_t *buf = dr_malloc(n);
    const char *why;
    dr_mqttc_packet_t q;
    int ok =
        dr_mqttc_encode(&p, buf, n) == n && dr_mqttc_decode(buf, n, 0, &q, &used, &why) == DR_MQTTC_PACKET;
    free(buf);
    return ok;
}

void dr_mqttc_subscribe(dr_mqttc_t *m, const char *filter, int qos)
{
    if (!filter_ok(filter)) {
        dr_log(DR_LOG_WARNING, "event=mqttc_bad_filter filter=\"%s\" action=ignored",
               filter ? filter : "(null)");
        return;
    }
    add_filter(&m->subs, &m->nsubs, filter, qos <= 0 ? 0 : 1);
}

void dr_mqttc_unsubscribe_stale(dr_mqttc_t *m, const char *filter)
{
    if (!filter_ok(filter)) {
        dr_log(DR_LOG_WARNING, "event=mqttc_bad_filter filter=\"%s\" action=ignored",
               filter ? filter : "(null)");
        return;
    }
    add_filter(&m->stale, &m->nstale, filter, 0);
}

void dr_mqttc_on_message(dr_mqttc_t *m, dr_mqttc_msg_cb *cb, void *data)
{
    m->msg_cb = cb;
    m->msg_data = data;
}

void dr_mqttc_on_state(dr_mqttc_t *m, dr_mqttc_state_cb *cb, void *data)
{
    m->state_cb = cb;
    m->state_data = data;
}

void dr_mqttc_start(dr_mqttc_t *m)
{
    if (m->state != ST_IDLE && m->state != ST_STOPPED)
        return;
    m->backoff_ms = m->reconnect_min_ms;
    uv_timer_start(&m->tick, on_tick, TICK_MS, TICK_MS);
    begin_connect(m);
}

int dr_mqttc_publish(dr_mqttc_t *m, const char *topic, const void *payload, size_t len, int qos,
                     dr_mqttc_pub_cb *cb, void *data)
{
    dr_mqttc_pub_opts_t o = {.qos = qos};
    return dr_mqttc_publish_ex(m, topic, payload, len, &o, cb, data);
}

int dr_mqttc_publish_ex(dr_mqttc_t *m, const char *topic, const void *payload, size_t len,
                        const dr_mqttc_pub_opts_t *opt, dr_mqttc_pub_cb *cb, void *data)
{
    static const dr_mqttc_pub_opts_t none = {0, 0};
    if (opt == NULL)
        opt = &none;
    int qos = opt->qos;
    if (qos != 0 && qos != 1)
        return DR_EINVAL;
    size_t tlen = topic ? strlen(topic) : 0;
    if (topic == NULL || dr_topic_check_name(topic, tlen) != 0)
        return DR_EINVAL;
    if (len > DR_MQTTC_MAX_REMAINING - 4 - 6 - tlen) /* 6: a v5 property section with an expiry */
        return DR_ETOOBIG;
    if (!session_up(m))
        return DR_EUNAVAIL;
    if (m->waiting.n >= m->max_queued)
        return DR_EBUSY;
    pub_t *p = dr_malloc(sizeof(*p) + tlen + len);
    p->cb = cb;
    p->data = data;
    p->done = 0;
    p->accepted = dr_mono_ms();
    p->deadline = p->accepted + m->publish_timeout_ms;
    p->expiry_s = opt->message_expiry_s;
    p->qos = qos;
    p->id = 0;
    p->topic_len = tlen;
    p->len = len;
    memcpy(p->bytes, topic, tlen);
    if (len > 0)
        memcpy(p->bytes + tlen, payload, len);
    m->npending++;
    list_push(&m->waiting, p);
    pump(m);
    return 0;
}

void dr_mqttc_ack(dr_mqttc_t *m, uint64_t token)
{
    if (!dr_mqttc_ackq_ack(&m->ackq, token))
        return;
    if (m->conn && in_session(m))
        release_pubacks(m, m->conn);
}

int dr_mqttc_protocol(const dr_mqttc_t *m)
{
    return m->conn != NULL && in_session(m) ? m->conn->version : m->protocol;
}

int dr_mqttc_connected(const dr_mqttc_t *m)
{
    return m->state == ST_READY;
}

size_t dr_mqttc_pending(const dr_mqttc_t *m)
{
    return m->npending;
}

size_t dr_mqttc_unacked(const dr_mqttc_t *m)
{
    return dr_mqttc_ackq_unacked(&m->ackq);
}

const char *dr_mqttc_last_error(const dr_mqttc_t *m)
{
    return m->err;
}

void dr_mqttc_stop(dr_mqttc_t *m, void (*done)(void *data), void *data)
{
    if (m->state == ST_FREED)
        return;
    assert(m->stop_done == NULL); /* one stop at a time */
    m->stop_done = done;
    m->stop_data = data;
    dr_log(DR_LOG_VERBOSE, "event=mqttc_stop url=%s state=%s", m->url, state_names[m->state]);
    if (m->resolving) {
        m->resolving->m = NULL;
        m->resolving = NULL;
    }
    if (m->state == ST_STOPPING)
        return;
    if (!in_session(m) || m->conn == NULL) {
        finish_stop(m);
        return;
    }
    conn_t *c = m->conn;
    m->state = ST_STOPPING;
    m->deadline = dr_mono_ms() + m->connect_timeout_ms;
    dr_mqttc_ackq_reset(&m->ackq);
    fail_list(m, &m->inflight, DR_ECLOSED);
    fail_list(m, &m->waiting, DR_ECLOSED);
    if (m->state != ST_STOPPING || m->conn != c)
        return; /* a callback freed the client */
    dr_mqttc_packet_t d = {.type = DR_MQTTC_DISCONNECT};
    put_packet(c, &d); /* after the PUBACKs released so far, which are in the buffer already */
    conn_flush(c, 1);
}

void dr_mqttc_free(dr_mqttc_t *m)
{
    if (m == NULL || m->state == ST_FREED)
        return;
    void (*done)(void *) = m->stop_done;
    void *done_data = m->stop_data;
    m->stop_done = NULL;
    m->state = ST_FREED;
    if (m->resolving) {
        m->resolving->m = NULL;
        m->resolving = NULL;
    }
    if (m->conn) {
        conn_close(m, m->conn, done, done_data); /* an unfinished stop completes with the close */
        done = NULL;
    }
    fail_list(m, &m->inflight, DR_ECLOSED);
    fail_list(m, &m->waiting, DR_ECLOSED);
    if (done)
        done(done_data); /* a stop whose done was only waiting for the idle handle */
    uv_timer_stop(&m->tick);
    uv_idle_stop(&m->idle);
    uv_close((uv_handle_t *)&m->tick, on_handle_closed);
    uv_close((uv_handle_t *)&m->idle, on_handle_closed);
}
