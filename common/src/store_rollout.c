/* Rollouts' data layer: typed wrappers of the ro_* functions of common/lua/drover.lua (see
 * dr/rollout.h).
 *
 * DESIGN
 * Every call but ro_count passes one key, <prefix>{ro}, and the prefix as its first argument, like
 * the registry. A rollout travels as 12 strings {id, state, command, guarantee, rate, total,
 * enqueued, created, updated, owner, data, ttl}; any other shape is "unexpected reply". A rollout
 * holds up to DR_RO_MAX_DEVICES devices, so the argument vectors are sized per call.
 */
#define DR_MODULE "common/rollout"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/mem.h"
#include "dr/rollout.h"

#define UNEXPECTED "unexpected reply"
#define RO_STRINGS 12

typedef enum { K_RO, K_LIST, K_TAKE, K_STRS, K_COUNT } kind_t;

typedef struct {
    kind_t kind;
    void *cb;
    void *data;
} call_t;

/* A growing argument vector; numbers are kept in their own allocations. */
typedef struct {
    const char **v;
    char **owned;
    size_t n, cap, nowned;
    char key[160];
} args_t;

static void arg_str(args_t *a, const char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->v = dr_realloc(a->v, a->cap * sizeof(*a->v));
        a->owned = dr_realloc(a->owned, a->cap * sizeof(*a->owned));
    }
    a->v[a->n++] = s ? s : "";
}

static void arg_int(args_t *a, int64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%lld", (long long)v);
    arg_str(a, NULL);
    a->owned[a->nowned] = dr_strdup(b);
    a->v[a->n - 1] = a->owned[a->nowned++];
}

static void args_free(args_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->v);
}

static const char *str_at(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements && r->element[i]->type == REDIS_REPLY_STRING
               ? r->element[i]->str
               : NULL;
}

static int parse_ro(const redisReply *r, dr_ro_t *ro)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != RO_STRINGS)
        return -1;
    for (size_t i = 0; i < RO_STRINGS; i++)
        if (str_at(r, i) == NULL)
            return -1;
    *ro = (dr_ro_t){.id = strtoll(str_at(r, 0), NULL, 10),
                    .state = str_at(r, 1),
                    .command = str_at(r, 2),
                    .guarantee = str_at(r, 3),
                    .rate = strtoll(str_at(r, 4), NULL, 10),
                    .total = strtoll(str_at(r, 5), NULL, 10),
                    .enqueued = strtoll(str_at(r, 6), NULL, 10),
                    .created_ms = strtoll(str_at(r, 7), NULL, 10),
                    .updated_ms = strtoll(str_at(r, 8), NULL, 10),
                    .owner = str_at(r, 9),
                    .data = str_at(r, 10)[0] ? str_at(r, 10) : NULL,
                    .ttl_ms = strtoll(str_at(r, 11), NULL, 10)};
    return 0;
}

/* Strings from element first on, into a new array (NULL when one is not a string). */
static const char **strings_from(const redisReply *r, size_t first, size_t *n)
{
    *n = r->elements > first ? r->elements - first : 0;
    const char **v = dr_calloc(*n + 1, sizeof(*v));
    for (size_t i = 0; i < *n; i++) {
        if ((v[i] = str_at(r, first + i)) == NULL) {
            free(v);
            return NULL;
        }
    }
    return v;
}

/* ro_create / ro_get answer {rollout, ids...} ({} or a bare rollout); ro_ctl {code, rollout, ids...}. */
static void ro_result(call_t *c, const redisReply *reply)
{
    dr_ro_cb *cb = c->cb;
    static const char *codes[] = {"OK", "NOT_FOUND", "NOT_RUNNING", "NOT_PAUSED", "FINISHED"};
    if (reply->type != REDIS_REPLY_ARRAY)
        goto bad;
    dr_ro_t ro;
    if (reply->elements == RO_STRINGS && parse_ro(reply, &ro) == 0) { /* ro_create */
        cb(c->data, 0, NULL, DR_RO_OK, &ro, NULL, 0);
        return;
    }
    if (reply->elements == 0) {
        cb(c->data, 0, NULL, DR_RO_NOT_FOUND, NULL, NULL, 0);
        return;
    }
    size_t at = 0;
    int code = DR_RO_OK;
    if (str_at(reply, 0) != NULL) {
        for (code = 0; code < 5 && strcmp(str_at(reply, 0), codes[code]) != 0; code++)
            ;
        if (code == 5)
            goto bad;
        if (code == DR_RO_NOT_FOUND) {
            cb(c->data, 0, NULL, code, NULL, NULL, 0);
            return;
        }
        at = 1;
    }
    if (reply->elements <= at || parse_ro(reply->element[at], &ro) != 0)
        goto bad;
    size_t n;
    const char **ids = strings_from(reply, at + 1, &n);
    if (ids == NULL)
        goto bad;
    cb(c->data, 0, NULL, code, &ro, ids, n);
    free(ids);
    return;
bad:
    cb(c->data, DR_EREDIS, UNEXPECTED, 0, NULL, NULL, 0);
}

static void list_result(call_t *c, const redisReply *reply)
{
    dr_ro_list_cb *cb = c->cb;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0, 0);
        return;
    }
    size_t n = reply->elements - 1;
    dr_ro_t *v = dr_calloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        if (parse_ro(reply->element[i + 1], &v[i]) != 0) {
            free(v);
            cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0, 0);
            return;
        }
    }
    cb(c->data, 0, NULL, v, n, reply->element[0]->integer != 0);
    free(v);
}

static void take_result(call_t *c, const redisReply *reply)
{
    dr_ro_take_cb *cb = c->cb;
    if (reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
        return;
    }
    size_t n = reply->elements;
    dr_ro_batch_t *b = dr_calloc(n + 1, sizeof(*b));
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        const redisReply *e = reply->element[i];
        size_t nd = 0;
        const char **devs = e->type == REDIS_REPLY_ARRAY && e->elements >= 8 ? strings_from(e, 0, &nd) : NULL;
        if (devs == NULL) {
            ok = 0;
            break;
        }
        b[i].ro = (dr_ro_t){.id = strtoll(devs[0], NULL, 10),
                            .command = devs[2],
                            .data = devs[3][0] ? devs[3] : NULL,
                            .guarantee = devs[4],
                            .ttl_ms = strtoll(devs[5], NULL, 10),
                            .owner = devs[6]};
        b[i].first = strtoll(devs[1], NULL, 10);
        b[i].devs = devs + 7;
        b[i].n = nd - 7;
    }
    if (ok)
        cb(c->data, 0, NULL, b, n);
    else
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
    for (size_t i = 0; i < n; i++)
        if (b[i].devs != NULL)
            free((void *)(b[i].devs - 7));
    free(b);
}

static void on_reply(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    call_t *c = data;
    const char *errstr = err == DR_EREDIS && reply ? reply->str : NULL;
    switch (c->kind) {
    case K_RO:
        if (err != 0)
            ((dr_ro_cb *)c->cb)(c->data, err, errstr, 0, NULL, NULL, 0);
        else
            ro_result(c, reply);
        break;
    case K_LIST:
        if (err != 0)
            ((dr_ro_list_cb *)c->cb)(c->data, err, errstr, NULL, 0, 0);
        else
            list_result(c, reply);
        break;
    case K_TAKE:
        if (err != 0)
            ((dr_ro_take_cb *)c->cb)(c->data, err, errstr, NULL, 0);
        else
            take_result(c, reply);
        break;
    case K_STRS:
        if (err != 0 || reply->type != REDIS_REPLY_STRING) {
            ((dr_store_strs_cb *)c->cb)(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        } else {
            const char *v[1] = {reply->str};
            ((dr_store_strs_cb *)c->cb)(c->data, 0, NULL, v, 1);
        }
        break;
    case K_COUNT: {
        dr_ro_count_cb *cb = c->cb;
        if (err == 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 9))
            err = DR_EREDIS, errstr = UNEXPECTED;
        for (size_t i = 0; err == 0 && i < 9; i++)
            if (reply->element[i]->type != REDIS_REPLY_INTEGER)
                err = DR_EREDIS, errstr = UNEXPECTED;
        if (err != 0) {
            cb(c->data, err, errstr, NULL);
            break;
        }
        long long v[9];
        for (size_t i = 0; i < 9; i++)
            v[i] = reply->element[i]->integer;
        dr_ro_counts_t n = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
        cb(c->data, 0, NULL, &n);
        break;
    }
    }
    free(c);
}

/* Sends fn with the key <prefix>{ro} (or the given keys) and frees a. */
static int send_call(dr_redis_t *r, const char *fn, args_t *a, int nkeys, const char **keys, kind_t kind,
                     void *cb, void *data)
{
    call_t *c = dr_malloc(sizeof(*c));
    *c = (call_t){.kind = kind, .cb = cb, .data = data};
    const char *k1[1] = {a->key};
    int rc = dr_redis_fcall(r, on_reply, c, fn, keys ? nkeys : 1, keys ? keys : k1, (int)a->n, a->v, NULL);
    if (rc != 0)
        free(c);
    args_free(a);
    return rc;
}

static void ro_args(args_t *a, const dr_store_t *st)
{
    *a = (args_t){0};
    snprintf(a->key, sizeof(a->key), "%s{ro}", st->prefix);
    arg_str(a, st->prefix);
}

/* ---- wrappers ------------------------------------------------------------------------------------ */

int dr_ro_create(dr_redis_t *r, const dr_store_t *st, const dr_ro_new_t *n, dr_ro_cb *cb, void *data)
{
    if (n->ndevs < 1 || n->ndevs > DR_RO_MAX_DEVICES || n->rate < 1 || n->burst < 1 || !n->command ||
        !n->guarantee)
        return DR_EINVAL;
    args_t a;
    ro_args(&a, st);
    arg_str(&a, n->owner);
    arg_str(&a, n->command);
    arg_str(&a, n->data);
    arg_str(&a, n->guarantee);
    arg_int(&a, n->ttl_ms);
    arg_int(&a, n->rate);
    arg_int(&a, n->burst);
    arg_int(&a, n->keep_s);
    for (size_t i = 0; i < n->ndevs; i++)
        arg_str(&a, n->devs[i]);
    return send_call(r, "ro_create", &a, 0, NULL, K_RO, (void *)cb, data);
}

int dr_ro_get(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *owner, int with_ids, dr_ro_cb *cb,
              void *data)
{
    args_t a;
    ro_args(&a, st);
    arg_int(&a, id);
    arg_str(&a, owner);
    arg_str(&a, with_ids ? "1" : "0");
    return send_call(r, "ro_get", &a, 0, NULL, K_RO, (void *)cb, data);
}

int dr_ro_control(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *owner, const char *op,
                  dr_ro_cb *cb, void *data)
{
    if (strcmp(op, "pause") != 0 && strcmp(op, "resume") != 0 && strcmp(op, "cancel") != 0)
        return DR_EINVAL;
    args_t a;
    ro_args(&a, st);
    arg_int(&a, id);
    arg_str(&a, owner);
    arg_str(&a, op);
    return send_call(r, "ro_ctl", &a, 0, NULL, K_RO, (void *)cb, data);
}

int dr_ro_list(dr_redis_t *r, const dr_store_t *st, const char *owner, int64_t after, int64_t limit,
               dr_ro_list_cb *cb, void *data)
{
    if (limit < 1 || limit > 1000 || after < 0)
        return DR_EINVAL;
    args_t a;
    ro_args(&a, st);
    arg_str(&a, owner);
    arg_int(&a, after);
    arg_int(&a, limit);
    return send_call(r, "ro_list", &a, 0, NULL, K_LIST, (void *)cb, data);
}

int dr_ro_take(dr_redis_t *r, const dr_store_t *st, const char *holder, int64_t lease_ms, int64_t per,
               int64_t most, dr_ro_take_cb *cb, void *data)
{
    if (lease_ms < 1 || per < 1 || most < 1)
        return DR_EINVAL;
    args_t a;
    ro_args(&a, st);
    arg_str(&a, holder);
    arg_int(&a, lease_ms);
    arg_int(&a, per);
    arg_int(&a, most);
    return send_call(r, "ro_take", &a, 0, NULL, K_TAKE, (void *)cb, data);
}

int dr_ro_done(dr_redis_t *r, const dr_store_t *st, int64_t id, int64_t first, const char *const *ids,
               size_t n, dr_store_strs_cb *cb, void *data)
{
    args_t a;
    ro_args(&a, st);
    arg_int(&a, id);
    arg_int(&a, first);
    for (size_t i = 0; i < n; i++)
        arg_str(&a, ids[i]);
    return send_call(r, "ro_done", &a, 0, NULL, K_STRS, (void *)cb, data);
}

int dr_ro_count(dr_redis_t *r, const dr_store_t *st, const int64_t *ids, size_t n, dr_ro_count_cb *cb,
                void *data)
{
    if (n < 1 || n > DR_RO_COUNT_MAX)
        return DR_EINVAL;
    args_t a = {0};
    arg_str(&a, st->prefix);
    arg_int(&a, st->shards);
    arg_int(&a, st->retention_s);
    arg_str(&a, st->node);
    /* one key per distinct shard of the ids (their records' slots) */
    char(*kb)[160] = dr_calloc(n, sizeof(*kb));
    const char **keys = dr_calloc(n, sizeof(*keys));
    int nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        arg_int(&a, ids[i]);
        char k[160];
        dr_store_key(st, dr_store_shard_of_id(st, ids[i]), "", k, sizeof(k));
        int seen = 0;
        for (int j = 0; j < nkeys && !seen; j++)
            seen = strcmp(kb[j], k) == 0;
        if (!seen) {
            memcpy(kb[nkeys], k, sizeof(k));
            keys[nkeys] = kb[nkeys];
            nkeys++;
        }
    }
    int rc = send_call(r, "ro_count", &a, nkeys, keys, K_COUNT, (void *)cb, data);
    free(kb);
    free(keys);
    return rc;
}
