/* The client registry's data layer: typed wrappers of the reg_* functions of common/lua/drover.lua
 * (see dr/registry.h).
 *
 * DESIGN
 * Every call passes one key, <prefix>{reg}, and the prefix as its first argument; the functions
 * derive every other key name from it, so all registry keys share one hash slot. A client travels
 * as a flat array of strings (name, id, desc, role, pw, en, ct, ut, gen); parse_client reads it and
 * refuses any other shape, so a library of another version shows up as "unexpected reply".
 */
#define DR_MODULE "common/registry"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/mem.h"
#include "dr/registry.h"

static const char *role_names[] = {"DEVISE", "MAN"};

const char *dr_reg_role_name(int role)
{
    return role == DR_REG_MAN ? role_names[1] : role_names[0];
}

int dr_reg_role_parse(const char *s)
{
    for (int i = 0; i < 2; i++)
        if (strcmp(s, role_names[i]) == 0)
            return i;
    return -1;
}

/* ---- calls -------------------------------------------------------------------------------------- */

typedef enum { K_CLIENT, K_UPDATE, K_TOKEN, K_LOGIN, K_LIST, K_INT } kind_t;

typedef struct {
    kind_t kind;
    union {
        dr_reg_client_cb *client;
        dr_reg_list_cb *list;
        dr_store_int_cb *num;
    } cb;
    void *data;
} call_t;

#define NFIELDS 9

static int parse_client(const redisReply *r, dr_reg_client_t *c)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != NFIELDS)
        return -1;
    for (size_t i = 0; i < NFIELDS; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    c->devise_id = r->element[0]->str;
    c->id = strtoll(r->element[1]->str, NULL, 10);
    c->description = r->element[2]->str;
    c->role = strcmp(r->element[3]->str, "MAN") == 0 ? DR_REG_MAN : DR_REG_DEVISE;
    c->hash = r->element[4]->str;
    c->enabled = strcmp(r->element[5]->str, "0") != 0;
    c->created_ms = strtoll(r->element[6]->str, NULL, 10);
    c->updated_ms = strtoll(r->element[7]->str, NULL, 10);
    c->gen = r->element[8]->str;
    return 0;
}

static void client_result(call_t *c, const redisReply *reply)
{
    dr_reg_client_t cl;
    const redisReply *obj = reply;
    int64_t aux = 0;
    if (reply->type == REDIS_REPLY_NIL) {
        c->cb.client(c->data, 0, NULL, DR_REG_NOT_FOUND, NULL, 0);
        return;
    }
    if (c->kind == K_LOGIN) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER)
            goto bad;
        if (reply->element[0]->integer > 0) {
            c->cb.client(c->data, 0, NULL, DR_REG_LIMITED, NULL, reply->element[0]->integer);
            return;
        }
        if (reply->elements == 1) {
            c->cb.client(c->data, 0, NULL, DR_REG_NOT_FOUND, NULL, 0);
            return;
        }
        obj = reply->element[1];
    } else if (c->kind == K_UPDATE || c->kind == K_TOKEN) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[1]->type != REDIS_REPLY_INTEGER)
            goto bad;
        obj = reply->element[0];
        aux = reply->element[1]->integer;
    }
    if (parse_client(obj, &cl) != 0)
        goto bad;
    c->cb.client(c->data, 0, NULL, DR_REG_OK, &cl, aux);
    return;
bad:
    c->cb.client(c->data, DR_EREDIS, "unexpected reply", 0, NULL, 0);
}

static void list_result(call_t *c, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        c->cb.list(c->data, DR_EREDIS, "unexpected reply", NULL, 0, 0);
        return;
    }
    size_t n = reply->elements - 1;
    dr_reg_client_t *cl = dr_calloc(n ? n : 1, sizeof(*cl));
    for (size_t i = 0; i < n; i++) {
        if (parse_client(reply->element[i + 1], &cl[i]) != 0) {
            free(cl);
            c->cb.list(c->data, DR_EREDIS, "unexpected reply", NULL, 0, 0);
            return;
        }
    }
    c->cb.list(c->data, 0, NULL, cl, n, reply->element[0]->integer != 0);
    free(cl);
}

static void on_reply(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    call_t *c = data;
    const char *errstr = err == DR_EREDIS && reply ? reply->str : NULL;
    if (err == DR_EREDIS && c->kind == K_CLIENT && reply && strncmp(reply->str, "EXISTS", 6) == 0) {
        c->cb.client(c->data, 0, NULL, DR_REG_EXISTS, NULL, 0);
    } else if (err != 0) {
        if (c->kind == K_LIST)
            c->cb.list(c->data, err, errstr, NULL, 0, 0);
        else if (c->kind == K_INT)
            c->cb.num(c->data, err, errstr, 0);
        else
            c->cb.client(c->data, err, errstr, 0, NULL, 0);
    } else if (c->kind == K_LIST) {
        list_result(c, reply);
    } else if (c->kind == K_INT) {
        if (reply->type == REDIS_REPLY_INTEGER)
            c->cb.num(c->data, 0, NULL, reply->integer);
        else
            c->cb.num(c->data, DR_EREDIS, "unexpected reply", 0);
    } else {
        client_result(c, reply);
    }
    free(c);
}

/* Sends FCALL fn with key <prefix>{reg} and args (the prefix is prepended). */
static int call(dr_redis_t *r, const dr_store_t *st, const char *fn, call_t *c, int nargs, const char **args)
{
    char key[160];
    snprintf(key, sizeof(key), "%s{reg}", st->prefix);
    const char *keys[] = {key};
    const char *all[16];
    all[0] = st->prefix;
    for (int i = 0; i < nargs && i < 15; i++)
        all[i + 1] = args[i] ? args[i] : "";
    call_t *heap = dr_malloc(sizeof(*heap));
    *heap = *c;
    int rc = dr_redis_fcall(r, on_reply, heap, fn, 1, keys, nargs + 1, all, NULL);
    if (rc != 0)
        free(heap);
    return rc;
}

static call_t client_call(kind_t kind, dr_reg_client_cb *cb, void *data)
{
    return (call_t){.kind = kind, .cb.client = cb, .data = data};
}

static call_t int_call(dr_store_int_cb *cb, void *data)
{
    return (call_t){.kind = K_INT, .cb.num = cb, .data = data};
}

/* ---- wrappers ------------------------------------------------------------------------------------ */

int dr_reg_get(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *name, dr_reg_client_cb *cb,
               void *data)
{
    char idb[24];
    snprintf(idb, sizeof(idb), "%lld", (long long)id);
    const char *a[] = {name ? "name" : "id", name ? name : idb};
    call_t c = client_call(K_CLIENT, cb, data);
    return call(r, st, "reg_get", &c, 2, a);
}

int dr_reg_list(dr_redis_t *r, const dr_store_t *st, const char *prefix, const char *after, int64_t limit,
                dr_reg_list_cb *cb, void *data)
{
    if (limit < 1 || limit > 1000)
        return DR_EINVAL;
    char lim[24];
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    const char *a[] = {prefix, after, lim};
    call_t c = {.kind = K_LIST, .cb.list = cb, .data = data};
    return call(r, st, "reg_list", &c, 3, a);
}

int dr_reg_create(dr_redis_t *r, const dr_store_t *st, const char *name, const char *desc, int role,
                  const char *hash, int enabled, dr_reg_client_cb *cb, void *data)
{
    const char *a[] = {name, desc, dr_reg_role_name(role), hash, enabled ? "1" : "0"};
    call_t c = client_call(K_CLIENT, cb, data);
    return call(r, st, "reg_create", &c, 5, a);
}

int dr_reg_update(dr_redis_t *r, const dr_store_t *st, int64_t id, const dr_reg_change_t *ch,
                  dr_reg_client_cb *cb, void *data)
{
    char idb[24];
    snprintf(idb, sizeof(idb), "%lld", (long long)id);
    const char *a[9] = {idb};
    int n = 1;
    if (ch->description) {
        a[n++] = "desc";
        a[n++] = ch->description;
    }
    if (ch->role >= 0) {
        a[n++] = "role";
        a[n++] = dr_reg_role_name(ch->role);
    }
    if (ch->hash) {
        a[n++] = "pw";
        a[n++] = ch->hash;
    }
    if (ch->enabled >= 0) {
        a[n++] = "en";
        a[n++] = ch->enabled ? "1" : "0";
    }
    call_t c = client_call(K_UPDATE, cb, data);
    return call(r, st, "reg_update", &c, n, a);
}

int dr_reg_delete(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *name, dr_reg_client_cb *cb,
                  void *data)
{
    char idb[24];
    snprintf(idb, sizeof(idb), "%lld", (long long)id);
    const char *a[] = {name ? "name" : "id", name ? name : idb};
    call_t c = client_call(K_CLIENT, cb, data);
    return call(r, st, "reg_delete", &c, 2, a);
}

int dr_reg_bootstrap(dr_redis_t *r, const dr_store_t *st, const char *name, const char *hash,
                     dr_store_int_cb *cb, void *data)
{
    const char *a[] = {name, hash};
    call_t c = int_call(cb, data);
    return call(r, st, "reg_bootstrap", &c, 2, a);
}

int dr_reg_login(dr_redis_t *r, const dr_store_t *st, const char *name, const char *addr,
                 int64_t max_failures, dr_reg_client_cb *cb, void *data)
{
    char lim[24];
    snprintf(lim, sizeof(lim), "%lld", (long long)max_failures);
    const char *a[] = {name, addr, lim};
    call_t c = client_call(K_LOGIN, cb, data);
    return call(r, st, "reg_login", &c, 3, a);
}

int dr_reg_failed(dr_redis_t *r, const dr_store_t *st, const char *name, const char *addr, int64_t window_ms,
                  dr_store_int_cb *cb, void *data)
{
    char win[24];
    snprintf(win, sizeof(win), "%lld", (long long)window_ms);
    const char *a[] = {name, addr, win};
    call_t c = int_call(cb, data);
    return call(r, st, "reg_failed", &c, 3, a);
}

int dr_reg_token_issue(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, const char *name,
                       const char *gen, int64_t ttl_ms, dr_reg_client_cb *cb, void *data)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    const char *a[] = {tok_hash, name, gen, ttl};
    call_t c = client_call(K_CLIENT, cb, data);
    return call(r, st, "reg_token_issue", &c, 4, a);
}

int dr_reg_token_check(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, dr_reg_client_cb *cb,
                       void *data)
{
    const char *a[] = {tok_hash};
    call_t c = client_call(K_TOKEN, cb, data);
    return call(r, st, "reg_token_check", &c, 1, a);
}

int dr_reg_token_revoke(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, dr_store_int_cb *cb,
                        void *data)
{
    const char *a[] = {tok_hash};
    call_t c = int_call(cb, data);
    return call(r, st, "reg_token_revoke", &c, 1, a);
}
