/* The web console's back end: Duster's admin message list and saved commands
 * (GET /admin/api/messages, /admin/api/saved-messages...), the fleet-wide message search
 * (GET /v1/messages) and the device list (GET /v1/devices). docs/console-api.md is the contract.
 *
 * DESIGN
 * A fleet search asks every group of DR_CON_SHARDS_PER_CALL shards at once (con_search merges its
 * shards newest first and stops after a budget of records), then merges the groups here. A group that
 * ran out of budget says up to where it examined everything; the page is cut at the newest such point
 * so that no message is skipped, and the cursor continues from there. Pages can therefore be short
 * when a filter is rare, never wrong. The admin list then loads the full records (data, history) of
 * the page with dr_store_get.
 */
#define DR_MODULE "ingress/rest_console"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/console.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/registry.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "http.h"
#include "rest.h"

#define SEARCH_BUDGET 2000 /* records one group call examines at most */

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

static void admin_unavailable(hreq_t *hr)
{
    http_add_header(hr, "retry-after", "1");
    rest_auth_error(hr, 503, "the store is unavailable; nothing was changed, retry later");
}

/* 1 when the query names parameter name at all (so a value that fails to decode is an error, not
 * an absent filter). */
static int query_has(hreq_t *hr, const char *name)
{
    if (hr->req == NULL || hr->req->query_at == SIZE_MAX)
        return 0;
    const char *q = hr->req->path.base + hr->req->query_at;
    const char *end = hr->req->path.base + hr->req->path.len;
    size_t nl = strlen(name);
    for (const char *p = q; p + nl <= end; p++)
        if ((*p == '?' || *p == '&') && p + 1 + nl <= end && memcmp(p + 1, name, nl) == 0 &&
            (p + 1 + nl == end || p[1 + nl] == '=' || p[1 + nl] == '&'))
            return 1;
    return 0;
}

/* A string query parameter into buf; 1 ok (buf "" when absent), 0 present but malformed or too long. */
static int query_str(hreq_t *hr, const char *name, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (http_query(hr, name, buf, cap))
        return 1;
    buf[0] = '\0';
    return !query_has(hr, name);
}

/* An integer query parameter within lo..hi; 1 ok (def when absent), 0 invalid. */
static int query_int(hreq_t *hr, const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    char b[32];
    *out = def;
    if (!query_str(hr, name, b, sizeof(b)))
        return 0;
    if (b[0] == '\0')
        return !query_has(hr, name);
    char *e;
    long long v = strtoll(b, &e, 10);
    if (*e != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* ---- fleet search engine -------------------------------------------------------------------------- */

typedef struct {
    int64_t id, ts, chg, att;
    char *dev, *cmd, *status, *g;
} hit_t;

typedef struct search search_t;
typedef void search_done_fn(search_t *s);

struct search {
    hreq_t *hr;
    dr_con_query_t q;
    char dev[256], status[32], cmd[DR_CON_MAX_TEXT + 1], owner[DR_APIKEY_ID_LEN + 1];
    int pending, err;
    hit_t *hits;
    size_t n, cap;
    int more;                  /* some group has more beyond what it examined */
    int64_t cut_ts, cut_id;    /* newest resume point of such a group */
    int admin;                 /* answer as /admin/api/messages */
    search_done_fn *done;
};

static void search_free(search_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->hits[i].dev);
        free(s->hits[i].cmd);
        free(s->hits[i].status);
        free(s->hits[i].g);
    }
    free(s->hits);
    free(s);
}

static int newer(int64_t ts1, int64_t id1, int64_t ts2, int64_t id2)
{
    return ts1 > ts2 || (ts1 == ts2 && id1 > id2);
}

static int cmp_hit(const void *a, const void *b)
{
    const hit_t *x = a, *y = b;
    return newer(x->ts, x->id, y->ts, y->id) ? -1 : newer(y->ts, y->id, x->ts, x->id) ? 1 : 0;
}

/* Sorts the page and drops what lies below the cut or beyond the limit; sets the next cursor
 * (*nts 0: none). */
static void search_page(search_t *s, int64_t *nts, int64_t *nid)
{
    if (s->n > 1)
        qsort(s->hits, s->n, sizeof(*s->hits), cmp_hit);
    size_t keep = 0;
    while (keep < s->n && keep < (size_t)s->q.limit &&
           (!s->more || !newer(s->cut_ts, s->cut_id, s->hits[keep].ts, s->hits[keep].id)))
        keep++;
    for (size_t i = keep; i < s->n; i++) {
        free(s->hits[i].dev);
        free(s->hits[i].cmd);
        free(s->hits[i].status);
        free(s->hits[i].g);
    }
    s->n = keep;
    *nts = *nid = 0;
    if (keep == (size_t)s->q.limit && keep > 0) {
        *nts = s->hits[keep - 1].ts;
        *nid = s->hits[keep - 1].id;
    } else if (s->more) {
        *nts = s->cut_ts;
        *nid = s->cut_id;
    }
}

static void on_group(void *data, int err, const char *errstr, int done, int64_t rts, int64_t rid,
                     const dr_con_hit_t *h, size_t n)
{
    search_t *s = data;
    if (err != 0) {
        if (s->err == 0)
            dr_log(DR_LOG_WARNING, "event=search_failed error=\"%s\"", errstr ? errstr : dr_strerror(err));
        s->err = err;
    } else {
        if (!done && (!s->more || newer(rts, rid, s->cut_ts, s->cut_id))) {
            s->cut_ts = rts;
            s->cut_id = rid;
        }
        s->more |= !done;
        for (size_t i = 0; i < n; i++) {
            if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                s->hits = dr_realloc(s->hits, s->cap * sizeof(*s->hits));
            }
            s->hits[s->n++] = (hit_t){.id = h[i].id,
                                      .ts = h[i].accepted_ms,
                                      .chg = h[i].changed_ms,
                                      .att = h[i].attempts,
                                      .dev = dr_strdup(h[i].dev),
                                      .cmd = dr_strdup(h[i].command),
                                      .status = dr_strdup(h[i].status),
                                      .g = dr_strdup(h[i].guarantee)};
        }
    }
    if (--s->pending == 0)
        s->done(s);
}

/* Starts the search; s->done runs once (also on errors: s->err). */
static void search_start(search_t *s)
{
    ingress_t *in = s->hr->in;
    const dr_store_t *st = &in->store;
    s->q.dev = s->dev;
    s->q.status = s->status;
    s->q.command = s->cmd;
    s->q.owner = s->owner;
    s->q.budget = SEARCH_BUDGET;
    s->q.ids_max = in->node.cfg.ids_max;
    uint32_t shards[DR_CON_SHARDS_PER_CALL];
    s->pending = 1; /* held until every group is sent */
    if (s->dev[0] != '\0') {
        shards[0] = dr_shard_of(s->dev, strlen(s->dev), st->shards);
        s->pending++;
        if (dr_con_search(in->node.redis, st, shards, 1, &s->q, on_group, s) != 0) {
            s->pending--;
            s->err = DR_EUNAVAIL;
        }
    } else {
        for (uint32_t first = 0; first < st->shards && s->err == 0; first += DR_CON_SHARDS_PER_CALL) {
            size_t n = 0;
            for (uint32_t sh = first; sh < st->shards && n < DR_CON_SHARDS_PER_CALL; sh++)
                shards[n++] = sh;
            s->pending++;
            if (dr_con_search(in->node.redis, st, shards, n, &s->q, on_group, s) != 0) {
                s->pending--;
                s->err = DR_EUNAVAIL;
            }
        }
    }
    if (--s->pending == 0)
        s->done(s);
}

/* ---- GET /admin/api/messages ------------------------------------------------------------------------ */

static json_t *data_json(const char *data)
{
    json_t *d = data ? json_loads(data, JSON_DECODE_ANY, NULL) : NULL;
    return d ? d : json_null();
}

static void on_admin_records(void *data, int err, const char *errstr, const dr_store_msg_t *m, size_t n)
{
    (void)errstr;
    search_t *s = data;
    hreq_t *hr = s->hr;
    if (err != 0) {
        admin_unavailable(hr);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            if (!m[i].found)
                continue; /* retired between the search and the load */
            json_t *delivered = json_null();
            for (size_t k = 0; k < m[i].nhistory; k++) {
                if (dr_status_is_ack(m[i].history[k].status)) {
                    json_decref(delivered);
                    delivered = json_integer(m[i].history[k].ts);
                    break;
                }
            }
            json_array_append_new(
                a, json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:b, s:o}", "id", (json_int_t)m[i].id,
                             "deviseId", m[i].dev, "command", m[i].command, "deliveryStatus",
                             dr_status_name(m[i].status), "deliveryGuarantee", dr_guarantee_name(m[i].guarantee),
                             "createdDate", (json_int_t)m[i].accepted_ms, "deliveredDate", delivered, "tmpId",
                             m[i].has_tmp ? json_integer(m[i].tmp) : json_null(), "producerDeviseId",
                             m[i].has_tmp && m[i].pd[0] ? json_string(m[i].pd) : json_null(), "deliveredError",
                             m[i].status == DR_ST_COMPLETED_WITH_ERROR, "data", data_json(m[i].data)));
        }
        send_json(hr, 200, a);
    }
    hreq_release(hr);
    search_free(s);
}

static void admin_messages_done(search_t *s)
{
    hreq_t *hr = s->hr;
    if (s->err != 0 || hr->req == NULL) {
        if (s->err != 0)
            admin_unavailable(hr);
        hreq_release(hr);
        search_free(s);
        return;
    }
    int64_t nts, nid;
    search_page(s, &nts, &nid);
    if (s->n == 0) {
        send_json(hr, 200, json_array());
        hreq_release(hr);
        search_free(s);
        return;
    }
    int64_t *ids = dr_malloc(s->n * sizeof(*ids));
    for (size_t i = 0; i < s->n; i++)
        ids[i] = s->hits[i].id;
    if (dr_store_get(hr->in->node.redis, &hr->in->store, ids, s->n, on_admin_records, s) != 0)
        on_admin_records(s, DR_EUNAVAIL, NULL, NULL, 0);
    free(ids);
}

void rest_console_messages(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, rest_console_messages))
        return;
    search_t *s = dr_calloc(1, sizeof(*s));
    s->hr = hr;
    s->admin = 1;
    s->done = admin_messages_done;
    char lim[32];
    int64_t limit = 200;
    if (http_query(hr, "limit", lim, sizeof(lim))) {
        char *e;
        long long v = strtoll(lim, &e, 10);
        if (lim[0] == '\0' || *e != '\0') {
            rest_auth_error(hr, 400, "limit must be an integer");
            goto bad;
        }
        limit = v < 1 ? 1 : v > 500 ? 500 : v; /* clamped, as Duster does */
    }
    s->q.limit = limit;
    if (http_query(hr, "deviseId", s->dev, sizeof(s->dev)) && s->dev[0] != '\0' &&
        dr_codec_check_id(s->dev, strlen(s->dev), (size_t)hr->in->node.cfg.ingress_max_device_id) != 0) {
        rest_auth_error(hr, 400, "deviseId is not a valid device id");
        goto bad;
    }
    search_start(s);
    return;
bad:
    hreq_release(hr);
    search_free(s);
}

/* ---- GET /v1/messages ------------------------------------------------------------------------------ */

static void v1_search_done(search_t *s)
{
    hreq_t *hr = s->hr;
    if (s->err != 0) {
        http_unavailable(hr, s->err);
    } else if (hr->req != NULL) {
        int64_t nts, nid;
        search_page(s, &nts, &nid);
        json_t *a = json_array();
        for (size_t i = 0; i < s->n; i++) {
            const hit_t *h = &s->hits[i];
            json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id", (json_int_t)h->id,
                                               "device", h->dev, "command", h->cmd, "status", h->status,
                                               "believerGuarantee", h->g, "acceptedAt", (json_int_t)h->ts,
                                               "changedAt", (json_int_t)h->chg, "attempts", (json_int_t)h->att));
        }
        char cur[64];
        snprintf(cur, sizeof(cur), "%lld:%lld", (long long)nts, (long long)nid);
        send_json(hr, 200, json_pack("{s:o, s:o}", "messages", a, "nextCursor", nts ? json_string(cur) : json_null()));
    }
    hreq_release(hr);
    search_free(s);
}

void rest_console_search(hreq_t *hr)
{
    search_t *s = dr_calloc(1, sizeof(*s));
    s->hr = hr;
    s->done = v1_search_done;
    const dr_settings_t *cfg = &hr->in->node.cfg;
    char b[64];
    if (!query_int(hr, "limit", 1, 500, 50, &s->q.limit) || !query_int(hr, "from", 0, INT64_MAX, 0, &s->q.from) ||
        !query_int(hr, "to", 0, INT64_MAX, 0, &s->q.to)) {
        http_error(hr, 400, "BAD_FIELD", "limit must be 1..500 and from/to non-negative integers (ms)");
        goto bad;
    }
    if (!query_str(hr, "device", s->dev, sizeof(s->dev)) ||
        (s->dev[0] != '\0' && dr_codec_check_id(s->dev, strlen(s->dev), (size_t)cfg->ingress_max_device_id) != 0)) {
        http_error(hr, 400, "BAD_DEVICE_ID", "device is not a valid device id");
        goto bad;
    }
    if (!query_str(hr, "status", s->status, sizeof(s->status)) ||
        (s->status[0] != '\0' && dr_status_parse(s->status, strlen(s->status)) < 0)) {
        http_error(hr, 400, "BAD_STATUS", "unknown status '%s'", s->status);
        goto bad;
    }
    if (!query_str(hr, "command", s->cmd, sizeof(s->cmd))) {
        http_error(hr, 400, "BAD_FIELD", "command is longer than %d bytes or badly encoded", DR_CON_MAX_TEXT);
        goto bad;
    }
    if (!query_str(hr, "cursor", b, sizeof(b))) {
        http_error(hr, 400, "BAD_FIELD", "cursor is not one this API returned");
        goto bad;
    }
    if (b[0] != '\0') {
        long long t, id;
        char tail;
        if (sscanf(b, "%lld:%lld%c", &t, &id, &tail) != 2 || t <= 0 || id < 0) {
            http_error(hr, 400, "BAD_FIELD", "cursor is not one this API returned");
            goto bad;
        }
        s->q.cursor_ts = t;
        s->q.cursor_id = id;
    }
    if (hr->who.scope == DR_SCOPE_PRODUCER)
        snprintf(s->owner, sizeof(s->owner), "%s", hr->who.key_id);
    search_start(s);
    return;
bad:
    hreq_release(hr);
    search_free(s);
}
