/* Live-test driver for dr_mqttc: one client on a libuv loop, steered line by line over stdin by
 * tests/mqttc/test_mqttc.py, reporting every callback as one line on stdout. Logs go to stderr.
 *
 * Usage: mqttc_live key=value...   (url id user pass keepalive clean ca capath cert key insecure
 *                                   connect_timeout publish_timeout max_inflight max_queued max_packet
 *                                   rmin rmax autoack protocol fallback session_expiry)
 * Commands (one per line; a word starting with "x:" is hex, e.g. x:61c285):
 *   sub FILTER QOS | stale FILTER | start | autoack 0|1 | ack TOKEN | ackall | stat
 *   pub TAG TOPIC QOS PAYLOAD     -> "pubrc TAG RC", then "pubdone TAG ERR" when RC is 0
 *   pubx TAG TOPIC QOS EXPIRY PAYLOAD -> as pub, with an MQTT 5 message expiry of EXPIRY seconds
 *   proto                         -> "proto N" (dr_mqttc_protocol)
 *   pubn TAG TOPIC QOS COUNT      -> COUNT publishes TAG-0.., payload = tag; "pubn TAG ACCEPTED"
 *   stop                          -> "stopped" once closed
 *   exit                          -> stop, free, exit 0 | free -> free at once, exit 0
 * Events: "state 0|1 REASON", "msg TOKEN QOS DUP RETAIN TOPIC PAYLOAD" (followed by "expiry SECONDS" when
 * the message carries an MQTT 5 expiry), "stat connected=.. pending=.. unacked=..".
 */
#define DR_MODULE "tests/mqttc_live"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/mqttc.h"

typedef struct {
    uv_loop_t *loop;
    uv_pipe_t in;
    dr_mqttc_t *m;
    int autoack;
    char line[70000];
    size_t len;
    uint64_t *held; /* tokens received and not acked, in arrival order */
    size_t nheld, capheld;
    int exiting;
} drv_t;

typedef struct {
    char tag[64];
} pubtag_t;

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

/* Decodes "x:hex" in place; returns the length (the word is left as is otherwise). */
static size_t word(char *w)
{
    if (strncmp(w, "x:", 2) != 0)
        return strlen(w);
    size_t n = 0;
    for (const char *h = w + 2; h[0] && h[1]; h += 2) {
        unsigned v;
        if (sscanf(h, "%2x", &v) != 1)
            break;
        w[n++] = (char)v;
    }
    w[n] = '\0';
    return n;
}

static void on_state(void *data, int connected, const char *reason)
{
    (void)data;
    out("state %d %s", connected, reason);
}

static void on_msg(void *data, const dr_mqttc_msg_t *msg)
{
    drv_t *d = data;
    out("msg %llu %d %d %d %.*s %.*s", (unsigned long long)msg->token, msg->qos, msg->dup, msg->retain,
        (int)msg->topic_len, msg->topic, (int)msg->len, msg->payload);
    if (msg->has_expiry)
        out("expiry %u", msg->expiry_s);
    if (msg->token == 0)
        return;
    if (d->autoack) {
        dr_mqttc_ack(d->m, msg->token);
        return;
    }
    if (d->nheld == d->capheld) {
        d->capheld = d->capheld ? d->capheld * 2 : 64;
        d->held = dr_realloc(d->held, d->capheld * sizeof(*d->held));
    }
    d->held[d->nheld++] = msg->token;
}

static void on_pub(void *data, int err)
{
    pubtag_t *t = data;
    out("pubdone %s %d", t->tag, err);
    free(t);
}

static void on_in_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish(drv_t *d)
{
    dr_mqttc_free(d->m);
    d->m = NULL;
    if (!uv_is_closing((uv_handle_t *)&d->in))
        uv_close((uv_handle_t *)&d->in, on_in_closed);
}

static void on_stopped(void *data)
{
    drv_t *d = data;
    out("stopped");
    if (d->exiting)
        finish(d);
}

static void publish(drv_t *d, const char *tag, char *topic, int qos, uint32_t expiry, const char *payload,
                    size_t plen)
{
    pubtag_t *t = dr_calloc(1, sizeof(*t));
    snprintf(t->tag, sizeof(t->tag), "%s", tag);
    dr_mqttc_pub_opts_t o = {.qos = qos, .message_expiry_s = expiry};
    int rc = dr_mqttc_publish_ex(d->m, topic, payload, plen, &o, on_pub, t);
    if (rc != 0)
        free(t);
    out("pubrc %s %d", tag, rc);
}

static void command(drv_t *d, char *line)
{
    char *argv[8] = {0};
    int argc = 0;
    for (char *save = NULL, *w = strtok_r(line, " ", &save); w && argc < 8; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    if (argc == 0 || d->m == NULL)
        return;
    const char *c = argv[0];
    if (strcmp(c, "sub") == 0 && argc == 3) {
        word(argv[1]);
        dr_mqttc_subscribe(d->m, argv[1], atoi(argv[2]));
    } else if (strcmp(c, "stale") == 0 && argc == 2) {
        word(argv[1]);
        dr_mqttc_unsubscribe_stale(d->m, argv[1]);
    } else if (strcmp(c, "start") == 0) {
        dr_mqttc_start(d->m);
    } else if (strcmp(c, "autoack") == 0 && argc == 2) {
        d->autoack = atoi(argv[1]);
    } else if (strcmp(c, "ack") == 0 && argc == 2) {
        dr_mqttc_ack(d->m, strtoull(argv[1], NULL, 10));
    } else if (strcmp(c, "ackall") == 0) {
        for (size_t i = 0; i < d->nheld; i++)
            dr_mqttc_ack(d->m, d->held[i]);
        d->nheld = 0;
    } else if (strcmp(c, "stat") == 0) {
        out("stat connected=%d pending=%zu unacked=%zu", dr_mqttc_connected(d->m), dr_mqttc_pending(d->m),
            dr_mqttc_unacked(d->m));
    } else if (strcmp(c, "pub") == 0 && argc == 5) {
        word(argv[2]);
        size_t plen = word(argv[4]);
        publish(d, argv[1], argv[2], atoi(argv[3]), 0, argv[4], plen);
    } else if (strcmp(c, "pubx") == 0 && argc == 6) {
        word(argv[2]);
        size_t plen = word(argv[5]);
        publish(d, argv[1], argv[2], atoi(argv[3]), (uint32_t)strtoul(argv[4], NULL, 10), argv[5], plen);
    } else if (strcmp(c, "proto") == 0) {
        out("proto %d", dr_mqttc_protocol(d->m));
    } else if (strcmp(c, "pubn") == 0 && argc == 5) {
        int n = atoi(argv[4]), ok = 0;
        for (int i = 0; i < n; i++) {
            char tag[64];
            snprintf(tag, sizeof(tag), "%s-%d", argv[1], i);
            pubtag_t *t = dr_calloc(1, sizeof(*t));
            snprintf(t->tag, sizeof(t->tag), "%s", tag);
            if (dr_mqttc_publish(d->m, argv[2], tag, strlen(tag), atoi(argv[3]), on_pub, t) == 0)
                ok++;
            else
                free(t);
        }
        out("pubn %s %d", argv[1], ok);
    } else if (strcmp(c, "stop") == 0) {
        dr_mqttc_stop(d->m, on_stopped, d);
    } else if (strcmp(c, "exit") == 0) {
        d->exiting = 1;
        dr_mqttc_stop(d->m, on_stopped, d);
    } else if (strcmp(c, "free") == 0) {
        finish(d);
    } else {
        out("error unknown command %s", c);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char chunk[4096];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_stdin(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    drv_t *d = s->data;
    if (n < 0) { /* EOF: the test went away */
        if (d->m)
            finish(d);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            d->line[d->len] = '\0';
            d->len = 0;
            command(d, d->line);
        } else if (d->len < sizeof(d->line) - 1) {
            d->line[d->len++] = ch;
        }
    }
}

static const char *opt(int argc, char **argv, const char *key, const char *def)
{
    size_t k = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, k) == 0 && argv[i][k] == '=')
            return argv[i] + k + 1;
    return def;
}

static int iopt(int argc, char **argv, const char *key, int def)
{
    const char *v = opt(argc, argv, key, NULL);
    return v ? atoi(v) : def;
}

int main(int argc, char **argv)
{
    static drv_t d;
    dr_log_level = DR_LOG_VERBOSE;
    dr_log_set_service("mqttc_live");
    d.loop = uv_default_loop();
    dr_mqttc_options_t o = {
        .url = opt(argc, argv, "url", NULL),
        .client_id = opt(argc, argv, "id", "mqttc-live"),
        .username = opt(argc, argv, "user", NULL),
        .password = opt(argc, argv, "pass", NULL),
        .keepalive_s = iopt(argc, argv, "keepalive", 0),
        .clean_session = iopt(argc, argv, "clean", 1),
        .connect_timeout_ms = iopt(argc, argv, "connect_timeout", 0),
        .publish_timeout_ms = iopt(argc, argv, "publish_timeout", 0),
        .max_inflight = iopt(argc, argv, "max_inflight", 0),
        .max_queued = iopt(argc, argv, "max_queued", 0),
        .max_packet = (size_t)iopt(argc, argv, "max_packet", 0),
        .reconnect_min_ms = iopt(argc, argv, "rmin", 0),
        .reconnect_max_ms = iopt(argc, argv, "rmax", 0),
        .ca_file = opt(argc, argv, "ca", NULL),
        .ca_path = opt(argc, argv, "capath", NULL),
        .cert_file = opt(argc, argv, "cert", NULL),
        .key_file = opt(argc, argv, "key", NULL),
        .tls_insecure = iopt(argc, argv, "insecure", 0),
        .protocol = iopt(argc, argv, "protocol", 0),
        .protocol_fallback = iopt(argc, argv, "fallback", 0),
        .session_expiry_s = (uint32_t)iopt(argc, argv, "session_expiry", 0),
    };
    d.autoack = iopt(argc, argv, "autoack", 0);
    char err[DR_ERR_LEN];
    if (dr_mqttc_open(d.loop, &o, &d.m, err) != 0) {
        out("open_failed %s", err);
        return 2;
    }
    dr_mqttc_on_state(d.m, on_state, &d);
    dr_mqttc_on_message(d.m, on_msg, &d);
    uv_pipe_init(d.loop, &d.in, 0);
    d.in.data = &d;
    if (uv_pipe_open(&d.in, 0) != 0 || uv_read_start((uv_stream_t *)&d.in, on_alloc, on_stdin) != 0) {
        out("error stdin is not a pipe");
        return 2;
    }
    out("ready");
    uv_run(d.loop, UV_RUN_DEFAULT);
    free(d.held);
    int rc = uv_loop_close(d.loop);
    out("exited loop_close=%d", rc);
    return rc == 0 ? 0 : 3;
}
