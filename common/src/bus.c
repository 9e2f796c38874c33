/* NATS event bus (see dr/bus.h). nats.c runs its own I/O threads; message handlers copy the message
 * and post it to the loop, so bus users only ever run on the loop thread. */
#define DR_MODULE "common/bus"

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/bus.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"

#define MAX_SUBS 8

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

int dr_bus_open(dr_loop_t *loop, const dr_bus_options_t *opt, dr_bus_t **out, char *err)
{
    dr_bus_t *b = dr_calloc(1, sizeof(*b));
    b->loop = loop;
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
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(b->opts, true);
    if (s != NATS_OK) {
        snprintf(err, DR_ERR_LEN, "nats options: %s", natsStatus_GetText(s));
        natsOptions_Destroy(b->opts);
        free(b);
        return DR_EINVAL;
    }
    s = natsConnection_Connect(&b->nc, b->opts);
    if (s == NATS_OK) {
        atomic_store(&b->connected, 1);
        dr_log(DR_LOG_NOTICE, "event=nats_connected");
    } else if (s != NATS_NOT_YET_CONNECTED) {
        snprintf(err, DR_ERR_LEN, "nats connect: %s", natsStatus_GetText(s));
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
    return natsConnection_Publish(b->nc, subject, payload, (int)len) == NATS_OK ? 0 : DR_EUNAVAIL;
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
    free(b);
}
