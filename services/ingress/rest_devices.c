/* GET /v1/devices: the fleet's device list (registry clients of role DEVISE and devices with queued
 * work or state), and the name-paging engine the rollouts' device queries use too.
 * docs/console-api.md §3 is the contract.
 *
 * DESIGN
 * No call reads a whole keyspace. Two sources are paged in name order at once: the registry's name
 * index ({reg}idx, dr_reg_list) and each shard's device index {s}dx (dr_con_devices: a name enters
 * it when its device enters the shard's schedule and leaves it when the listing finds the device
 * without work or state). Each source examines at most `limit` names after the cursor; a source that
 * filled its page may have more, and the page is cut at the lowest last name such a source examined,
 * so every name up to the cut has been seen in every source and nothing is skipped. The next page
 * starts after the last name returned (or after the cut when the page was cut short). A second call
 * per group of shards then reads the queue and pacing state of the page's devices (dr_con_devinfo).
 */
#define DR_MODULE "ingress/rest_devices"

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
#include "http.h"
#include "rest.h"

#define DEV_PAGE_MAX 500 /* GET /v1/devices limit */

/* ---- name paging engine --------------------------------------------------------------------------- */

struct dev_page {
    ingress_t *in;
    char prefix[256], after[256];
    int64_t limit;
    int pending, err;
    char *cut; /* lowest last name of a source that may have more; NULL: none */
    dev_entry_t *e;
    size_t n, cap;
    dev_page_cb *cb;
    void *data;
};

static void page_add(struct dev_page *p, const char *name, int registered, const char *desc)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->e = dr_realloc(p->e, p->cap * sizeof(*p->e));
    }
    p->e[p->n++] = (dev_entry_t){
        .name = dr_strdup(name), .registered = registered, .description = dr_strdup(desc ? desc : "")};
}

static void page_cut(struct dev_page *p, const char *last)
{
    if (p->cut == NULL || strcmp(last, p->cut) < 0) {
        free(p->cut);
        p->cut = dr_strdup(last);
    }
}

static void entry_free(dev_entry_t *e)
{
    free(e->name);
    free(e->description);
}

static int cmp_entry(const void *a, const void *b)
{
    const dev_entry_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : y->registered - x->registered; /* the registry's entry first */
}

static void page_finish(struct dev_page *p)
{
    if (--p->pending > 0)
        return;
    if (p->err != 0) {
        p->cb(p->data, p->err, NULL, 0, NULL);
    } else {
        if (p->n > 1)
            qsort(p->e, p->n, sizeof(*p->e), cmp_entry);
        size_t keep = 0;
        for (size_t i = 0; i < p->n; i++) {
            int dup = keep > 0 && strcmp(p->e[keep - 1].name, p->e[i].name) == 0;
            int beyond = p->cut != NULL && strcmp(p->e[i].name, p->cut) > 0;
            if (dup || beyond || keep == (size_t)p->limit + 1)
                entry_free(&p->e[i]);
            else
                p->e[keep++] = p->e[i];
        }
        const char *next = NULL;
        if (keep > (size_t)p->limit) {
            entry_free(&p->e[--keep]);
            next = p->e[keep - 1].name;
        } else if (p->cut != NULL) {
            next = keep > 0 && strcmp(p->e[keep - 1].name, p->cut) == 0 ? p->e[keep - 1].name : p->cut;
        }
        p->n = keep;
        p->cb(p->data, 0, p->e, p->n, next);
    }
    for (size_t i = 0; i < p->n; i++)
        entry_free(&p->e[i]);
    free(p->e);
    free(p->cut);
    free(p);
}

static void on_reg_page(void *data, int err, const char *errstr, const dr_reg_client_t *c, size_t n, int more)
{
    (void)errstr;
    struct dev_page *p = data;
    if (err != 0) {
        p->err = err;
    } else {
        for (size_t i = 0; i < n; i++)
            if (c[i].role == DR_REG_DEVISE)
                page_add(p, c[i].devise_id, 1, c[i].description);
        if (more && n > 0)
            page_cut(p, c[n - 1].devise_id);
    }
    page_finish(p);
}

static void on_shard_page(void *data, int err, const char *errstr, const char *cut, const char *const *names,
                          size_t n)
{
    struct dev_page *p = data;
    if (err != 0) {
        if (p->err == 0)
            dr_log(DR_LOG_WARNING, "event=device_list_failed error=\"%s\"",
                   errstr ? errstr : dr_strerror(err));
        p->err = err;
    } else {
        for (size_t i = 0; i < n; i++)
            page_add(p, names[i], 0, "");
        if (cut[0] != '\0')
            page_cut(p, cut);
    }
    page_finish(p);
}

int dev_page(ingress_t *in, const char *prefix, const char *after, int64_t limit, dev_page_cb *cb, void *data)
{
    if (limit < 1 || limit > 1000)
        return DR_EINVAL;
    struct dev_page *p = dr_calloc(1, sizeof(*p));
    *p = (struct dev_page){.in = in, .limit = limit, .cb = cb, .data = data, .pending = 1};
    snprintf(p->prefix, sizeof(p->prefix), "%s", prefix);
    snprintf(p->after, sizeof(p->after), "%s", after);
    const dr_store_t *st = &in->store;
    p->pending++;
    if (dr_reg_list(in->node.redis, st, p->prefix, p->after, limit, on_reg_page, p) != 0) {
        p->pending--;
        p->err = DR_EUNAVAIL;
    }
    uint32_t shards[DR_CON_SHARDS_PER_CALL];
    for (uint32_t first = 0; first < st->shards && p->err == 0; first += DR_CON_SHARDS_PER_CALL) {
        size_t n = 0;
        for (uint32_t sh = first; sh < st->shards && n < DR_CON_SHARDS_PER_CALL; sh++)
            shards[n++] = sh;
        p->pending++;
        if (dr_con_devices(in->node.redis, st, shards, n, p->prefix, p->after, limit, on_shard_page, p) !=
            0) {
            p->pending--;
            p->err = DR_EUNAVAIL;
        }
    }
    page_finish(p); /* drops the reference held while the calls were sent; calls cb at most once */
    return 0;
}

/* ---- GET /v1/devices ------------------------------------------------------------------------------ */

typedef struct {
    hreq_t *hr;
    dev_entry_t *e; /* the page (copied) */
    dr_store_devinfo_t *info;
    char **modes; /* info[i].mode copies */
    size_t n;
    char *next;
    int pending, err;
} list_t;

static void list_free(list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        entry_free(&l->e[i]);
        free(l->modes[i]);
    }
    free(l->e);
    free(l->info);
    free(l->modes);
    free(l->next);
    free(l);
}

static json_t *opt_num(int64_t v)
{
    return v >= 0 ? json_integer(v) : json_null();
}

static void list_answer(list_t *l)
{
    hreq_t *hr = l->hr;
    if (l->err != 0) {
        http_unavailable(hr, l->err);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < l->n; i++) {
            const dr_store_devinfo_t *d = &l->info[i];
            json_array_append_new(
                a,
                json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "device",
                          l->e[i].name, "registered", l->e[i].registered, "description", l->e[i].description,
                          "queued", (json_int_t)d->queued, "inFlight", (json_int_t)d->in_flight, "scheduled",
                          (json_int_t)d->scheduled, "nextSendAt", opt_num(d->next_ms), "lastSendAt",
                          opt_num(d->last_send_ms), "lastAckAt", opt_num(d->last_ack_ms), "intervalMs",
                          opt_num(d->interval_ms), "window", opt_num(d->window), "mode",
                          l->modes[i][0] ? json_string(l->modes[i]) : json_null(), "maxMessageBytes",
                          opt_num(d->max_message)));
        }
        json_t *j =
            json_pack("{s:o, s:o}", "devices", a, "nextAfter", l->next ? json_string(l->next) : json_null());
        char *s = json_dumps(j, JSON_COMPACT);
        http_json(hr, 200, s, strlen(s));
        free(s);
        json_decref(j);
    }
    hreq_release(hr);
    list_free(l);
}

typedef struct {
    list_t *l;
    size_t *at; /* positions in l of the devices of this call */
} group_t;

static void on_infos(void *data, int err, const char *errstr, const dr_store_devinfo_t *info, size_t n)
{
    group_t *g = data;
    list_t *l = g->l;
    if (err != 0) {
        if (l->err == 0)
            dr_log(DR_LOG_WARNING, "event=device_info_failed error=\"%s\"",
                   errstr ? errstr : dr_strerror(err));
        l->err = err;
    } else {
        for (size_t i = 0; i < n; i++) {
            l->info[g->at[i]] = info[i];
            free(l->modes[g->at[i]]);
            l->modes[g->at[i]] = dr_strdup(info[i].mode ? info[i].mode : "");
            l->info[g->at[i]].mode = NULL;
        }
    }
    free(g->at);
    free(g);
    if (--l->pending == 0)
        list_answer(l);
}

static void on_page(void *data, int err, const dev_entry_t *e, size_t n, const char *next)
{
    list_t *l = data;
    hreq_t *hr = l->hr;
    l->next = next ? dr_strdup(next) : NULL;
    if (err != 0 || hr->req == NULL || n == 0) {
        l->err = err;
        list_answer(l);
        return;
    }
    l->n = n;
    l->e = dr_calloc(n, sizeof(*l->e));
    l->info = dr_calloc(n, sizeof(*l->info));
    l->modes = dr_calloc(n, sizeof(*l->modes));
    for (size_t i = 0; i < n; i++) {
        l->e[i] = (dev_entry_t){.name = dr_strdup(e[i].name),
                                .registered = e[i].registered,
                                .description = dr_strdup(e[i].description)};
        l->modes[i] = dr_strdup("");
    }
    /* one call per group of DR_CON_SHARDS_PER_CALL shards, as the search groups them */
    const dr_store_t *st = &hr->in->store;
    uint32_t groups = (st->shards + DR_CON_SHARDS_PER_CALL - 1) / DR_CON_SHARDS_PER_CALL;
    l->pending = 1;
    for (uint32_t gi = 0; gi < groups; gi++) {
        group_t *g = dr_calloc(1, sizeof(*g));
        g->l = l;
        g->at = dr_calloc(n, sizeof(*g->at));
        const char **devs = dr_calloc(n, sizeof(*devs));
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (dr_shard_of(l->e[i].name, strlen(l->e[i].name), st->shards) / DR_CON_SHARDS_PER_CALL == gi) {
                g->at[k] = i;
                devs[k++] = l->e[i].name;
            }
        }
        l->pending++;
        if (k == 0 || dr_con_devinfo(hr->in->node.redis, st, devs, k, on_infos, g) != 0) {
            if (k != 0)
                l->err = DR_EUNAVAIL;
            l->pending--;
            free(g->at);
            free(g);
        }
        free(devs);
    }
    if (--l->pending == 0)
        list_answer(l);
}

int rest_query_has(hreq_t *hr, const char *name)
{
    if (hr->req == NULL || hr->req->query_at == SIZE_MAX)
        return 0;
    const char *q = hr->req->path.base + hr->req->query_at, *end = hr->req->path.base + hr->req->path.len;
    size_t nl = strlen(name);
    for (const char *p = q; p + 1 + nl <= end; p++)
        if ((*p == '?' || *p == '&') && memcmp(p + 1, name, nl) == 0 &&
            (p + 1 + nl == end || p[1 + nl] == '=' || p[1 + nl] == '&'))
            return 1;
    return 0;
}

/* A string query parameter: 1 ok ("" when absent), 0 malformed or longer than max bytes. */
static int query_name(hreq_t *hr, const char *name, char *buf, size_t cap, size_t max)
{
    buf[0] = '\0';
    if (http_query(hr, name, buf, cap))
        return strlen(buf) <= max;
    buf[0] = '\0'; /* present but undecodable or too long for buf: http_query refused it */
    return !rest_query_has(hr, name);
}

void v1_devices(hreq_t *hr)
{
    size_t max = (size_t)hr->in->node.cfg.ingress_max_device_id;
    char prefix[256], after[256], lim[32];
    int64_t limit = 100;
    if (!query_name(hr, "prefix", prefix, sizeof(prefix), max) ||
        !query_name(hr, "after", after, sizeof(after), max)) {
        http_error(hr, 400, "BAD_FIELD", "prefix and after must be at most %zu bytes", max);
        hreq_release(hr);
        return;
    }
    if (http_query(hr, "limit", lim, sizeof(lim))) {
        char *e;
        long long v = strtoll(lim, &e, 10);
        if (lim[0] == '\0' || *e != '\0' || v < 1 || v > DEV_PAGE_MAX) {
            http_error(hr, 400, "BAD_FIELD", "limit must be an integer in [1, %d]", DEV_PAGE_MAX);
            hreq_release(hr);
            return;
        }
        limit = v;
    }
    list_t *l = dr_calloc(1, sizeof(*l));
    l->hr = hr;
    if (dev_page(hr->in, prefix, after, limit, on_page, l) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
        free(l);
    }
}
