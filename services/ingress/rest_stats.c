/* GET /v1/stats (admin only): the cluster's figures for the console's dashboard, read from the
 * metrics hashes every node flushes to Redis (dr/metrics.h). docs/rest.md "Cluster figures" is the
 * contract.
 *
 * DESIGN
 * Counters are cumulative per node, so the cluster's figure is their sum over every hash, a node that
 * is gone included (its counts happened). Gauges describe "now": a dispatcher's are summed only when
 * its hash was flushed within the staleness bound (3 x metrics.flush_ms, at least 30 s); the shards a
 * dead dispatcher held are taken over by others, whose rounds then report them. The oldest pending
 * age is the maximum over the counted dispatchers.
 *
 * The hashes have no index of their own (drover-ctl finds them with SCAN MATCH <prefix>metrics:*),
 * and a SCAN walks the whole keyspace, which holds every message. So the names found are kept on the
 * loop (a node set of at most MAX_NODES), and each request advances one shared walk by at most
 * SCAN_PAGES pages of SCAN_COUNT keys; a complete walk starts again no sooner than SWEEP_MS later.
 * A request is thus at most SCAN_PAGES SCANs plus one HGETALL per known node, sent together: cheap
 * enough for a page that polls every few seconds. A name whose hash has expired is dropped when its
 * HGETALL comes back empty. Clocks: the staleness check compares the writer's wall clock with this
 * node's, so it assumes clocks within a few seconds of each other (NTP).
 */
#define DR_MODULE "ingress/rest_stats"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dr/err.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "http.h"

#define MAX_NODES 512
#define SCAN_PAGES 4
#define SCAN_COUNT "1000"
#define SWEEP_MS 10000
#define STALE_MIN_MS 30000

/* ---- known metrics hashes (loop thread) ------------------------------------------------------------ */

static char *known[MAX_NODES];
static size_t nknown;
static int truncated;         /* the walk found more hashes than MAX_NODES */
static char cursor[32] = "0"; /* of the walk under way */
static int walking;           /* a request is advancing the walk */
static int64_t next_sweep;    /* monotonic ms before which no new walk starts */

static void known_add(const char *key)
{
    for (size_t i = 0; i < nknown; i++)
        if (strcmp(known[i], key) == 0)
            return;
    if (nknown == MAX_NODES) {
        truncated = 1;
        return;
    }
    known[nknown++] = dr_strdup(key);
}

static void known_drop(const char *key)
{
    for (size_t i = 0; i < nknown; i++) {
        if (strcmp(known[i], key) == 0) {
            free(known[i]);
            known[i] = known[--nknown];
            return;
        }
    }
}

/* ---- one request ---------------------------------------------------------------------------------- */

typedef struct {
    hreq_t *hr;
    int pages;   /* SCAN pages this request sent */
    int pending; /* HGETALLs still to answer */
    int err;
    int64_t now, stale_ms;
    size_t nodes, dispatchers, stale;
    int64_t counters[DR_M_COUNT];
    int64_t statuses[DR_ST_COUNT];
    int64_t gauges[DR_GAUGE_COUNT]; /* sums, except OLDEST_PENDING_MS: the maximum (-1: none) */
} stats_t;

typedef struct {
    stats_t *s;
    char key[];
} one_t;

static void stats_read(stats_t *s);

static int parse_i64(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

/* Adds one node's hash (field/value pairs) to the sums. */
static void stats_add(stats_t *s, const redisReply *h)
{
    static const char *cnames[DR_M_COUNT] = {
#define DR_STATS_NAME(id, name) name,
        DR_METRICS(DR_STATS_NAME)
#undef DR_STATS_NAME
    };
    static const char *gnames[DR_GAUGE_COUNT] = {
#define DR_STATS_GNAME(id, name) name,
        DR_GAUGES(DR_STATS_GNAME)
#undef DR_STATS_GNAME
    };
    int64_t g[DR_GAUGE_COUNT], flushed = -1;
    int has_gauges = 0;
    for (size_t j = 0; j + 1 < h->elements; j += 2) {
        const redisReply *f = h->element[j], *v = h->element[j + 1];
        int64_t x;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || parse_i64(v->str, &x) != 0)
            continue; /* not a figure of ours */
        if (strcmp(f->str, DR_METRICS_FLUSHED_AT) == 0) {
            flushed = x;
            continue;
        }
        if (strncmp(f->str, "status_", 7) == 0) {
            for (int st = 0; st < DR_ST_COUNT; st++)
                if (strcasecmp(f->str + 7, dr_status_name(st)) == 0)
                    s->statuses[st] += x;
            continue;
        }
        if (strncmp(f->str, "gauge_", 6) == 0) {
            for (int i = 0; i < DR_GAUGE_COUNT; i++) {
                if (strcmp(f->str, gnames[i]) == 0) {
                    g[i] = x;
                    has_gauges |= 1 << i;
                }
            }
            continue;
        }
        for (int i = 0; i < DR_M_COUNT; i++)
            if (strcmp(f->str, cnames[i]) == 0)
                s->counters[i] += x;
    }
    s->nodes++;
    if (has_gauges != (1 << DR_GAUGE_COUNT) - 1)
        return; /* not a dispatcher, or one that has not finished a backlog round yet */
    if (flushed < 0 || s->now - flushed > s->stale_ms) {
        s->stale++;
        return;
    }
    s->dispatchers++;
    for (int i = 0; i < DR_GAUGE_COUNT; i++) {
        if (i == DR_GAUGE_OLDEST_PENDING_MS) {
            if (g[i] > s->gauges[i])
                s->gauges[i] = g[i];
        } else if (i != DR_GAUGE_BACKLOG_AT_MS) {
            s->gauges[i] += g[i];
        }
    }
}

static json_t *jint(int64_t v)
{
    return json_integer((json_int_t)v);
}

static void stats_answer(stats_t *s)
{
    hreq_t *hr = s->hr;
    if (s->err != 0) {
        http_unavailable(hr, s->err);
    } else {
        const int64_t *c = s->counters;
        json_t *acks = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "applied", jint(c[DR_M_ACK_APPLIED]), "ignored",
                                 jint(c[DR_M_ACK_IGNORED]), "unknownId", jint(c[DR_M_ACK_UNKNOWN_ID]),
                                 "wrongDevice", jint(c[DR_M_ACK_WRONG_DEVICE]), "rejected",
                                 jint(c[DR_M_ACK_REJECTED]), "dropped", jint(c[DR_M_ACK_DROPPED]));
        json_t *st = json_object();
        for (int i = 0; i < DR_ST_COUNT; i++)
            json_object_set_new(st, dr_status_name(i), jint(s->statuses[i]));
        json_t *counters =
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "accepted",
                      jint(c[DR_M_PRODUCER_ACCEPTED]), "rejected", jint(c[DR_M_PRODUCER_REJECTED]),
                      "duplicate", jint(c[DR_M_PRODUCER_DUPLICATE]), "conflict",
                      jint(c[DR_M_PRODUCER_CONFLICT]), "sent", jint(c[DR_M_SENT]), "resent",
                      jint(c[DR_M_RESENT]), "expired", jint(c[DR_M_EXPIRED]), "failed", jint(c[DR_M_FAILED]),
                      "notified", jint(c[DR_M_NOTIFIED]), "publishFailed", jint(c[DR_M_PUBLISH_FAILED]),
                      "redisErrors", jint(c[DR_M_REDIS_ERRORS]), "acks", acks, "statusChanges", st);
        const int64_t *g = s->gauges;
        json_t *gauges = json_pack(
            "{s:o,s:o,s:o,s:o,s:o}", "queueDepth", jint(g[DR_GAUGE_QUEUE_DEPTH]), "inFlight",
            jint(g[DR_GAUGE_IN_FLIGHT]), "scheduled", jint(g[DR_GAUGE_SCHEDULED]), "oldestPendingMs",
            g[DR_GAUGE_OLDEST_PENDING_MS] >= 0 ? jint(g[DR_GAUGE_OLDEST_PENDING_MS]) : json_null(),
            "shardsHeld", jint(g[DR_GAUGE_SHARDS_HELD]));
        json_t *j = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o}", "time", jint(s->now), "nodes",
                              jint((int64_t)s->nodes), "dispatchers", jint((int64_t)s->dispatchers),
                              "staleDispatchers", jint((int64_t)s->stale), "staleAfterMs", jint(s->stale_ms),
                              "counters", counters, "truncated", truncated, "gauges", gauges);
        char *body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        http_add_header(hr, "cache-control", "no-store");
        http_json(hr, 200, body, strlen(body));
        free(body);
    }
    hreq_release(hr);
    free(s);
}

static void on_hash(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    one_t *o = data;
    stats_t *s = o->s;
    if (err == 0 && reply->type != REDIS_REPLY_ARRAY)
        err = DR_EREDIS;
    if (err != 0) {
        if (s->err == 0)
            s->err = err;
    } else if (reply->elements == 0) {
        known_drop(o->key); /* expired: the node is gone for a week */
    } else {
        stats_add(s, reply);
    }
    free(o);
    if (--s->pending == 0)
        stats_answer(s);
}

/* Sends one HGETALL per known hash; all go out at once (one round trip). */
static void stats_read(stats_t *s)
{
    s->pending = 1; /* held until every call is sent, so an early answer cannot finish s */
    for (size_t i = 0; i < nknown && s->err == 0; i++) {
        size_t len = strlen(known[i]);
        one_t *o = dr_malloc(sizeof(*o) + len + 1);
        o->s = s;
        memcpy(o->key, known[i], len + 1);
        const char *argv[] = {"HGETALL", o->key};
        s->pending++;
        if (dr_redis_cmd(s->hr->in->node.redis, on_hash, o, 2, argv, NULL) != 0) {
            s->pending--;
            s->err = DR_EUNAVAIL;
            free(o);
        }
    }
    if (--s->pending == 0)
        stats_answer(s);
}

static void scan_step(stats_t *s);

static void on_scan(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    stats_t *s = data;
    walking = 0;
    if (err == 0 &&
        (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
         reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_ARRAY))
        err = DR_EREDIS;
    if (err != 0) {
        s->err = err;
        stats_answer(s);
        return;
    }
    const redisReply *keys = reply->element[1];
    for (size_t i = 0; i < keys->elements; i++)
        if (keys->element[i]->type == REDIS_REPLY_STRING)
            known_add(keys->element[i]->str);
    snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
    if (strcmp(cursor, "0") == 0) {
        next_sweep = dr_mono_ms() + SWEEP_MS;
        stats_read(s);
    } else if (s->pages < SCAN_PAGES) {
        scan_step(s);
    } else {
        stats_read(s); /* the walk goes on with the next request */
    }
}

static void scan_step(stats_t *s)
{
    char pattern[192];
    dr_store_match_metrics(&s->hr->in->store, pattern, sizeof(pattern));
    const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT};
    s->pages++;
    walking = 1;
    if (dr_redis_cmd(s->hr->in->node.redis, on_scan, s, 6, argv, NULL) != 0) {
        walking = 0;
        s->err = DR_EUNAVAIL;
        stats_answer(s);
    }
}

void v1_stats(hreq_t *hr)
{
    const dr_settings_t *cfg = &hr->in->node.cfg;
    stats_t *s = dr_calloc(1, sizeof(*s));
    s->hr = hr;
    s->now = dr_now_ms();
    s->stale_ms = 3 * cfg->metrics_flush_ms > STALE_MIN_MS ? 3 * cfg->metrics_flush_ms : STALE_MIN_MS;
    s->gauges[DR_GAUGE_OLDEST_PENDING_MS] = -1;
    if (!dr_redis_ready(hr->in->node.redis)) {
        s->err = DR_EUNAVAIL;
        stats_answer(s);
        return;
    }
    /* This node's own hash is known without a walk (once it has flushed, the HGETALL finds it). */
    char own[256];
    dr_store_key_metrics(&hr->in->store, cfg->node_id, own, sizeof(own));
    known_add(own);
    /* One walk at a time: a request that finds one under way reads the names known so far. */
    if (walking || (strcmp(cursor, "0") == 0 && dr_mono_ms() < next_sweep))
        stats_read(s);
    else
        scan_step(s);
}
