/* The web console's data layer: typed wrappers of the sm_* and con_* functions of
 * common/lua/drover.lua (see dr/console.h).
 *
 * DESIGN
 * Saved commands pass one key, <prefix>{reg}, like the registry; the search and the device list pass
 * one <prefix>{<shard>} per shard they read, so on Redis Cluster the caller groups shards by slot. A
 * saved command travels as {id, cid, dev, desc, cmd, g, data}, a search hit as 8 strings; any other
 * shape is "unexpected reply".
 */
#define DR_MODULE "common/console"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/console.h"
#include "dr/err.h"
#include "dr/mem.h"
#include "dr/shard.h"

#define UNEXPECTED "unexpected reply"
#define MAX_ARGS (16 + DR_CON_SHARDS_PER_CALL)

typedef enum { K_SAVED, K_INT, K_SEARCH, K_STRS } kind_t;

typedef struct {
    kind_t kind;
    void *cb;
    void *data;
} call_t;

/* Arguments of one call; numbers are formatted into buf. */
typedef struct {
    const char *keys[DR_CON_SHARDS_PER_CALL];
    char keybuf[DR_CON_SHARDS_PER_CALL][160];
    int nkeys;
    const char *args[MAX_ARGS];
    char num[MAX_ARGS][24];
    int nargs;
} argv_t;

static void add_str(argv_t *a, const char *s)
{
    a->args[a->nargs++] = s ? s : "";
}

static void add_int(argv_t *a, int64_t v)
{
    snprintf(a->num[a->nargs], sizeof(a->num[0]), "%lld", (long long)v);
    a->args[a->nargs] = a->num[a->nargs];
    a->nargs++;
}

static const char *str_at(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
}

static int parse_saved(const redisReply *r, dr_con_saved_t *v)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 7)
        return -1;
    for (size_t i = 0; i < 7; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    v->id = strtoll(str_at(r, 0), NULL, 10);
    v->client_id = strtoll(str_at(r, 1), NULL, 10);
    v->dev = str_at(r, 2);
    v->description = str_at(r, 3);
    v->command = str_at(r, 4);
    v->guarantee = str_at(r, 5);
    v->data = str_at(r, 6)[0] ? str_at(r, 6) : NULL;
    return 0;
}

static void saved_result(call_t *c, const redisReply *reply)
{
    dr_con_saved_cb *cb = c->cb;
    if (reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, DR_EREDIS, UNEXPECTED, 0, NULL, 0);
        return;
    }
    /* sm_put answers {code[, saved]}; sm_list an array of saved commands */
    if (reply->elements >= 1 && reply->element[0]->type == REDIS_REPLY_STRING) {
        static const char *codes[] = {"OK", "NOT_FOUND", "NO_CLIENT", "NOT_DEVISE", "FULL"};
        for (int i = 0; i < 5; i++) {
            if (strcmp(reply->element[0]->str, codes[i]) != 0)
                continue;
            dr_con_saved_t v;
            if (i == DR_CON_OK && (reply->elements != 2 || parse_saved(reply->element[1], &v) != 0))
                break;
            cb(c->data, 0, NULL, i, i == DR_CON_OK ? &v : NULL, i == DR_CON_OK);
            return;
        }
        cb(c->data, DR_EREDIS, UNEXPECTED, 0, NULL, 0);
        return;
    }
    dr_con_saved_t *v = dr_calloc(reply->elements + 1, sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type == REDIS_REPLY_NIL)
            continue; /* sm_list by id of an unknown id */
        if (parse_saved(reply->element[i], &v[n++]) != 0) {
            free(v);
            cb(c->data, DR_EREDIS, UNEXPECTED, 0, NULL, 0);
            return;
        }
    }
    cb(c->data, 0, NULL, DR_CON_OK, v, n);
    free(v);
}

static void search_result(call_t *c, const redisReply *reply)
{
    dr_con_search_cb *cb = c->cb;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || (reply->elements - 3) % 8 != 0 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER || str_at(reply, 1) == NULL || str_at(reply, 2) == NULL) {
        cb(c->data, DR_EREDIS, UNEXPECTED, 0, 0, 0, NULL, 0);
        return;
    }
    size_t n = (reply->elements - 3) / 8;
    dr_con_hit_t *h = dr_calloc(n + 1, sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        size_t b = 3 + i * 8;
        for (size_t j = 0; j < 8; j++) {
            if (str_at(reply, b + j) == NULL) {
                free(h);
                cb(c->data, DR_EREDIS, UNEXPECTED, 0, 0, 0, NULL, 0);
                return;
            }
        }
        h[i] = (dr_con_hit_t){.id = strtoll(str_at(reply, b), NULL, 10),
                              .dev = str_at(reply, b + 1),
                              .command = str_at(reply, b + 2),
                              .status = str_at(reply, b + 3),
                              .guarantee = str_at(reply, b + 4),
                              .accepted_ms = strtoll(str_at(reply, b + 5), NULL, 10),
                              .changed_ms = strtoll(str_at(reply, b + 6), NULL, 10),
                              .attempts = strtoll(str_at(reply, b + 7), NULL, 10)};
    }
    cb(c->data, 0, NULL, reply->element[0]->integer != 0, strtoll(str_at(reply, 1), NULL, 10),
       strtoll(str_at(reply, 2), NULL, 10), h, n);
    free(h);
}

static void strs_result(call_t *c, const redisReply *reply)
{
    dr_store_strs_cb *cb = c->cb;
    if (reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
        return;
    }
    const char **v = dr_calloc(reply->elements + 1, sizeof(*v));
    for (size_t i = 0; i < reply->elements; i++) {
        if ((v[i] = str_at(reply, i)) == NULL) {
            free(v);
            cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
            return;
        }
    }
    cb(c->data, 0, NULL, v, reply->elements);
    free(v);
}

static void on_reply(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    call_t *c = data;
    const char *errstr = err == DR_EREDIS && reply ? reply->str : NULL;
    switch (c->kind) {
    case K_SAVED:
        if (err != 0)
            ((dr_con_saved_cb *)c->cb)(c->data, err, errstr, 0, NULL, 0);
        else
            saved_result(c, reply);
        break;
    case K_INT:
        if (err != 0 || reply->type != REDIS_REPLY_INTEGER)
            ((dr_store_int_cb *)c->cb)(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, 0);
        else
            ((dr_store_int_cb *)c->cb)(c->data, 0, NULL, reply->integer);
        break;
    case K_SEARCH:
        if (err != 0)
            ((dr_con_search_cb *)c->cb)(c->data, err, errstr, 0, 0, 0, NULL, 0);
        else
            search_result(c, reply);
        break;
    case K_STRS:
        if (err != 0)
            ((dr_store_strs_cb *)c->cb)(c->data, err, errstr, NULL, 0);
        else
            strs_result(c, reply);
        break;
    }
    free(c);
}

static int send_call(dr_redis_t *r, const char *fn, argv_t *a, kind_t kind, void *cb, void *data)
{
    call_t *c = dr_malloc(sizeof(*c));
    *c = (call_t){.kind = kind, .cb = cb, .data = data};
    int rc = dr_redis_fcall(r, on_reply, c, fn, a->nkeys, a->keys, a->nargs, a->args, NULL);
    if (rc != 0)
        free(c);
    return rc;
}

/* Registry calls: key <prefix>{reg}, first argument the prefix. */
static argv_t *reg_args(const dr_store_t *st)
{
    argv_t *a = dr_calloc(1, sizeof(*a));
    snprintf(a->keybuf[0], sizeof(a->keybuf[0]), "%s{reg}", st->prefix);
    a->keys[0] = a->keybuf[0];
    a->nkeys = 1;
    add_str(a, st->prefix);
    return a;
}

/* Shard calls: one key per shard, then the common arguments of the library (see ctx()). */
static argv_t *shard_args(const dr_store_t *st, const uint32_t *shards, size_t n)
{
    argv_t *a = dr_calloc(1, sizeof(*a));
    for (size_t i = 0; i < n; i++) {
        dr_store_key(st, shards[i], "", a->keybuf[i], sizeof(a->keybuf[i]));
        a->keys[i] = a->keybuf[i];
    }
    a->nkeys = (int)n;
    add_str(a, st->prefix);
    add_int(a, st->shards);
    add_int(a, st->retention_s);
    add_str(a, st->node);
    return a;
}

/* ---- wrappers ------------------------------------------------------------------------------------ */

int dr_con_saved_put(dr_redis_t *r, const dr_store_t *st, int64_t id, const dr_con_saved_change_t *ch,
                     dr_con_saved_cb *cb, void *data)
{
    if (id == 0 && (ch->client_id <= 0 || !ch->description || !ch->command || !ch->guarantee))
        return DR_EINVAL;
    argv_t *a = reg_args(st);
    if (id > 0)
        add_int(a, id);
    else
        add_str(a, "");
    if (ch->client_id > 0)
        add_int(a, ch->client_id);
    else
        add_str(a, "");
    add_str(a, ch->description);
    add_str(a, ch->command);
    add_str(a, ch->guarantee);
    add_str(a, ch->data_null ? "-" : ch->data);
    add_int(a, DR_CON_SAVED_MAX);
    int rc = send_call(r, "sm_put", a, K_SAVED, (void *)cb, data);
    free(a);
    return rc;
}

int dr_con_saved_list(dr_redis_t *r, const dr_store_t *st, const char *by, const char *value, int64_t limit,
                      dr_con_saved_cb *cb, void *data)
{
    if (limit < 1 || limit > 10000)
        return DR_EINVAL;
    argv_t *a = reg_args(st);
    add_str(a, by ? by : "all");
    add_str(a, value);
    add_int(a, limit);
    int rc = send_call(r, "sm_list", a, K_SAVED, (void *)cb, data);
    free(a);
    return rc;
}

int dr_con_saved_delete(dr_redis_t *r, const dr_store_t *st, int64_t id, dr_store_int_cb *cb, void *data)
{
    argv_t *a = reg_args(st);
    add_int(a, id);
    int rc = send_call(r, "sm_del", a, K_INT, (void *)cb, data);
    free(a);
    return rc;
}

int dr_con_search(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, const dr_con_query_t *q,
                  dr_con_search_cb *cb, void *data)
{
    if (n < 1 || n > DR_CON_SHARDS_PER_CALL || q->limit < 1 || q->budget < 1)
        return DR_EINVAL;
    argv_t *a = shard_args(st, shards, n);
    add_int(a, q->cursor_ts);
    add_int(a, q->cursor_id);
    add_int(a, q->from);
    add_int(a, q->to);
    add_str(a, q->dev);
    add_str(a, q->status);
    add_str(a, q->command);
    add_str(a, q->owner);
    add_int(a, q->limit);
    add_int(a, q->budget);
    add_int(a, q->ids_max);
    for (size_t i = 0; i < n; i++)
        add_int(a, shards[i]);
    int rc = send_call(r, "con_search", a, K_SEARCH, (void *)cb, data);
    free(a);
    return rc;
}

/* ---- device list ---------------------------------------------------------------------------------- */

typedef struct {
    void *cb;
    void *data;
} dev_call_t;

static void on_devices(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    dev_call_t *c = data;
    dr_con_names_cb *cb = c->cb;
    if (err != 0) {
        cb(c->data, err, err == DR_EREDIS && reply ? reply->str : NULL, NULL, NULL, 0);
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || str_at(reply, 0) == NULL) {
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, NULL, 0);
    } else {
        const char **v = dr_calloc(reply->elements, sizeof(*v));
        size_t n = 0;
        for (size_t i = 1; i < reply->elements && (v[n] = str_at(reply, i)) != NULL; i++)
            n++;
        if (n + 1 != reply->elements)
            cb(c->data, DR_EREDIS, UNEXPECTED, NULL, NULL, 0);
        else
            cb(c->data, 0, NULL, str_at(reply, 0), v, n);
        free(v);
    }
    free(c);
}

int dr_con_devices(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, const char *prefix,
                   const char *after, int64_t limit, dr_con_names_cb *cb, void *data)
{
    if (n < 1 || n > DR_CON_SHARDS_PER_CALL || limit < 1)
        return DR_EINVAL;
    argv_t *a = shard_args(st, shards, n);
    add_str(a, prefix);
    add_str(a, after);
    add_int(a, limit);
    for (size_t i = 0; i < n; i++)
        add_int(a, shards[i]);
    dev_call_t *c = dr_malloc(sizeof(*c));
    *c = (dev_call_t){.cb = (void *)cb, .data = data};
    int rc = dr_redis_fcall(r, on_devices, c, "con_devices", a->nkeys, a->keys, a->nargs, a->args, NULL);
    if (rc != 0)
        free(c);
    free(a);
    return rc;
}

static int64_t opt_at(const redisReply *r, size_t i)
{
    const char *s = str_at(r, i);
    return s && s[0] ? strtoll(s, NULL, 10) : -1;
}

static void on_devinfo(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    dev_call_t *c = data;
    dr_con_devinfo_cb *cb = c->cb;
    if (err != 0) {
        cb(c->data, err, err == DR_EREDIS && reply ? reply->str : NULL, NULL, 0);
        free(c);
        return;
    }
    size_t n = reply->type == REDIS_REPLY_ARRAY && reply->elements % 10 == 0 ? reply->elements / 10 : 0;
    int ok = reply->type == REDIS_REPLY_ARRAY && reply->elements % 10 == 0;
    dr_store_devinfo_t *v = dr_calloc(n + 1, sizeof(*v));
    for (size_t i = 0; ok && i < reply->elements; i++)
        ok = str_at(reply, i) != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        size_t b = i * 10;
        v[i] = (dr_store_devinfo_t){.queued = opt_at(reply, b),
                                    .in_flight = opt_at(reply, b + 1),
                                    .scheduled = opt_at(reply, b + 2),
                                    .next_ms = opt_at(reply, b + 3),
                                    .last_send_ms = opt_at(reply, b + 4),
                                    .last_ack_ms = opt_at(reply, b + 5),
                                    .interval_ms = opt_at(reply, b + 6),
                                    .window = opt_at(reply, b + 7),
                                    .mode = str_at(reply, b + 8),
                                    .max_message = opt_at(reply, b + 9)};
    }
    if (ok)
        cb(c->data, 0, NULL, v, n);
    else
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
    free(v);
    free(c);
}

int dr_con_devinfo(dr_redis_t *r, const dr_store_t *st, const char *const *devs, size_t n, dr_con_devinfo_cb *cb,
                   void *data)
{
    if (n < 1 || n > DR_CON_DEVINFO_MAX)
        return DR_EINVAL;
    /* keys: each distinct shard once; args: the common four, then (shard, device) pairs */
    char(*kb)[160] = dr_calloc(n, sizeof(*kb));
    const char **keys = dr_calloc(n, sizeof(*keys));
    const char **args = dr_calloc(4 + 2 * n, sizeof(*args));
    char(*num)[24] = dr_calloc(n + 2, sizeof(*num));
    int nkeys = 0;
    snprintf(num[n], sizeof(num[0]), "%u", st->shards);
    snprintf(num[n + 1], sizeof(num[0]), "%lld", (long long)st->retention_s);
    args[0] = st->prefix;
    args[1] = num[n];
    args[2] = num[n + 1];
    args[3] = st->node;
    for (size_t i = 0; i < n; i++) {
        uint32_t sh = dr_shard_of(devs[i], strlen(devs[i]), st->shards);
        snprintf(num[i], sizeof(num[0]), "%u", sh);
        args[4 + 2 * i] = num[i];
        args[5 + 2 * i] = devs[i];
        char k[160];
        dr_store_key(st, sh, "", k, sizeof(k));
        int seen = 0;
        for (int j = 0; j < nkeys && !seen; j++)
            seen = strcmp(kb[j], k) == 0;
        if (!seen) {
            memcpy(kb[nkeys], k, sizeof(k));
            keys[nkeys] = kb[nkeys];
            nkeys++;
        }
    }
    dev_call_t *c = dr_malloc(sizeof(*c));
    *c = (dev_call_t){.cb = (void *)cb, .data = data};
    int rc = dr_redis_fcall(r, on_devinfo, c, "con_devinfo", nkeys, keys, (int)(4 + 2 * n), args, NULL);
    if (rc != 0)
        free(c);
    free(kb);
    free(keys);
    free(args);
    free(num);
    return rc;
}
