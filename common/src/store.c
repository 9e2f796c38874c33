/* Drover's Redis data layer: typed wrappers of the functions in common/lua/drover.lua (see
 * dr/store.h).
 *
 * DESIGN
 * Each wrapper has three parts: argument building (an argv_t that owns what it formats), the FCALL,
 * and a parser that turns the borrowed reply into the structs of dr/store.h, calls the caller once
 * and frees what it allocated. The library's reply shapes are documented next to each function in
 * drover.lua; a reply of another shape is reported as DR_EREDIS "unexpected reply", never read
 * past its end.
 */
#define DR_MODULE "common/store"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/mem.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "dr/store.h"

extern const char dr_store_library[]; /* common/lua/drover.lua, embedded at build time */

/* The generation the library declares ("local GENERATION = <n>" in drover.lua). */
long long dr_store_generation(void)
{
    static const char mark[] = "\nlocal GENERATION = ";
    const char *p = strstr(dr_store_library, mark);
    return p ? strtoll(p + sizeof(mark) - 1, NULL, 10) : 0;
}

void dr_store_register(dr_redis_t *r)
{
    dr_redis_add_library(r, "drover", dr_store_library, "generation", dr_store_generation());
}

char *dr_store_key(const dr_store_t *st, uint32_t shard, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s{%u}%s", st->prefix, shard, name);
    return buf;
}

uint32_t dr_store_shard_of_id(const dr_store_t *st, int64_t id)
{
    return id > 0 ? (uint32_t)(id % (int64_t)st->shards) : 0;
}

/* ---- key names outside the function calls ------------------------------------------------------ */

/* Global (not per shard) key name prefixes, after redis.prefix. */
#define APIKEY_NAME "ak:"
#define METRICS_NAME "metrics:"

char *dr_store_key_log(const dr_store_t *st, uint32_t shard, char *buf, size_t size)
{
    return dr_store_key(st, shard, "log", buf, size);
}

int dr_store_shard_of_key(const dr_store_t *st, const char *key, uint32_t *shard)
{
    size_t plen = strlen(st->prefix);
    if (strncmp(key, st->prefix, plen) != 0 || key[plen] != '{')
        return -1;
    *shard = (uint32_t)strtoul(key + plen + 1, NULL, 10);
    return 0;
}

/* The part of key after "<prefix><name>", or NULL when key does not start with it. */
static const char *after_name(const dr_store_t *st, const char *name, const char *key)
{
    size_t plen = strlen(st->prefix), nlen = strlen(name);
    if (strncmp(key, st->prefix, plen) != 0 || strncmp(key + plen, name, nlen) != 0)
        return NULL;
    return key + plen + nlen;
}

char *dr_store_key_apikey(const dr_store_t *st, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%s" APIKEY_NAME "%s", st->prefix, id);
    return buf;
}

char *dr_store_match_apikeys(const dr_store_t *st, char *buf, size_t size)
{
    return dr_store_key_apikey(st, "*", buf, size);
}

const char *dr_store_apikey_of_key(const dr_store_t *st, const char *key)
{
    return after_name(st, APIKEY_NAME, key);
}

char *dr_store_key_metrics(const dr_store_t *st, const char *node, char *buf, size_t size)
{
    snprintf(buf, size, "%s" METRICS_NAME "%s", st->prefix, node);
    return buf;
}

char *dr_store_match_metrics(const dr_store_t *st, char *buf, size_t size)
{
    return dr_store_key_metrics(st, "*", buf, size);
}

const char *dr_store_node_of_metrics_key(const dr_store_t *st, const char *key)
{
    return after_name(st, METRICS_NAME, key);
}

/* ---- argument vectors --------------------------------------------------------------------------- */

typedef struct {
    const char **v;
    size_t *l;
    char **own;
    int n, cap, nown;
} argv_t;

static void av_add(argv_t *a, const char *s, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = dr_realloc(a->v, (size_t)a->cap * sizeof(*a->v));
        a->l = dr_realloc(a->l, (size_t)a->cap * sizeof(*a->l));
        a->own = dr_realloc(a->own, (size_t)a->cap * sizeof(*a->own));
    }
    a->v[a->n] = s;
    a->l[a->n] = len;
    a->n++;
}

static void av_str(argv_t *a, const char *s)
{
    av_add(a, s ? s : "", s ? strlen(s) : 0);
}

static void av_fmt(argv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_fmt(argv_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        dr_mem_oom(0);
    va_end(ap);
    av_add(a, s, strlen(s));
    a->own[a->nown++] = s;
}

static void av_int(argv_t *a, int64_t v)
{
    av_fmt(a, "%lld", (long long)v);
}

static void av_free(argv_t *a)
{
    for (int i = 0; i < a->nown; i++)
        free(a->own[i]);
    free(a->v);
    free(a->l);
    free(a->own);
}

/* The arguments every function starts with. */
static void av_common(argv_t *a, const dr_store_t *st)
{
    av_str(a, st->prefix);
    av_int(a, st->shards);
    av_int(a, st->retention_s);
    av_str(a, st->node);
}

/* Keys: one <prefix>{<shard>} per distinct shard, in first-seen order. */
typedef struct {
    char **k;
    uint32_t *sh;
    int n, cap;
} keys_t;

static void keys_add(keys_t *k, const dr_store_t *st, uint32_t shard)
{
    for (int i = 0; i < k->n; i++)
        if (k->sh[i] == shard)
            return;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        k->k = dr_realloc(k->k, (size_t)k->cap * sizeof(*k->k));
        k->sh = dr_realloc(k->sh, (size_t)k->cap * sizeof(*k->sh));
    }
    char buf[160];
    k->k[k->n] = dr_strdup(dr_store_key(st, shard, "", buf, sizeof(buf)));
    k->sh[k->n] = shard;
    k->n++;
}

/* A key that is not a shard's, <prefix><name><suffix>, for functions that touch one such key (Redis
 * Cluster routes a call by its keys, so every key a function touches is declared). */
static void keys_add_name(keys_t *k, const dr_store_t *st, const char *name, const char *suffix)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        k->k = dr_realloc(k->k, (size_t)k->cap * sizeof(*k->k));
        k->sh = dr_realloc(k->sh, (size_t)k->cap * sizeof(*k->sh));
    }
    size_t pl = strlen(st->prefix), nl = strlen(name), sl = strlen(suffix);
    char *v = dr_malloc(pl + nl + sl + 1);
    memcpy(v, st->prefix, pl);
    memcpy(v + pl, name, nl);
    memcpy(v + pl + nl, suffix, sl + 1);
    k->k[k->n] = v;
    k->sh[k->n] = UINT32_MAX;
    k->n++;
}

static void keys_free(keys_t *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->k[i]);
    free(k->k);
    free(k->sh);
}

/* ---- calls and reply helpers -------------------------------------------------------------------- */

typedef struct call call_t;
typedef void parse_fn(call_t *c, redisReply *reply, int err, const char *errstr);

struct call {
    parse_fn *parse;
    void *cb;
    void *data;
    const dr_store_t *st;
};

static void on_reply(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    call_t *c = data;
    const char *errstr = err == DR_EREDIS && reply && reply->str ? reply->str : dr_strerror(err);
    c->parse(c, err == 0 ? reply : NULL, err, errstr);
    free(c);
}

static int fcall(dr_redis_t *r, const dr_store_t *st, const char *fn, keys_t *k, argv_t *a, parse_fn *parse,
                 void *cb, void *data)
{
    call_t *c = dr_malloc(sizeof(*c));
    c->parse = parse;
    c->cb = cb;
    c->data = data;
    c->st = st;
    int rc = dr_redis_fcall(r, on_reply, c, fn, k->n, (const char **)k->k, a->n, a->v, a->l);
    if (rc != 0)
        free(c);
    keys_free(k);
    av_free(a);
    return rc;
}

#define UNEXPECTED "unexpected reply"

static int is_array(const redisReply *r, size_t min)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

static const char *str_at(const redisReply *r, size_t i)
{
    if (!is_array(r, i + 1))
        return "";
    const redisReply *e = r->element[i];
    return (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) ? e->str : "";
}

static int64_t int_at(const redisReply *r, size_t i)
{
    if (!is_array(r, i + 1))
        return 0;
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER)
        return (int64_t)e->integer;
    if (e->type == REDIS_REPLY_STRING)
        return strtoll(e->str, NULL, 10);
    return 0;
}

static int status_of(const char *name)
{
    return dr_status_parse(name, strlen(name));
}

/* Notes: flat groups of 9 strings (shard, log id, id, device, status, tmpId, pd, ext, after). Returns
 * an allocated array (n set), NULL for none; *bad set when the shape is wrong. */
#define NOTE_FIELDS 9
static dr_note_t *parse_notes(const redisReply *r, size_t *n, int *bad)
{
    *n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % NOTE_FIELDS != 0) {
        *bad = 1;
        return NULL;
    }
    if (r->elements == 0)
        return NULL;
    dr_note_t *notes = dr_calloc(r->elements / NOTE_FIELDS, sizeof(*notes));
    for (size_t i = 0; i < r->elements; i += NOTE_FIELDS) {
        dr_note_t *o = &notes[*n];
        o->shard = (uint32_t)int_at(r, i);
        o->log_id = str_at(r, i + 1);
        o->id = int_at(r, i + 2);
        o->dev = str_at(r, i + 3);
        o->status = status_of(str_at(r, i + 4));
        const char *tmp = str_at(r, i + 5);
        o->has_tmp = tmp[0] != '\0';
        o->tmp = strtoll(tmp, NULL, 10);
        o->pd = str_at(r, i + 6);
        o->ext = strcmp(str_at(r, i + 7), "1") == 0;
        o->after = str_at(r, i + 8);
        (*n)++;
    }
    return notes;
}

/* ---- layout -------------------------------------------------------------------------------------- */

static void parse_layout(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_int_cb *cb = (dr_store_int_cb *)c->cb;
    if (err != 0)
        cb(c->data, err, errstr, 0);
    else if (reply->type == REDIS_REPLY_STATUS || reply->type == REDIS_REPLY_STRING)
        cb(c->data, 0, NULL, 1);
    else
        cb(c->data, DR_EREDIS, UNEXPECTED, 0);
}

int dr_store_check_layout(dr_redis_t *r, const dr_store_t *st, dr_store_int_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add_name(&k, st, "layout", "");
    av_common(&a, st);
    av_int(&a, DR_STORE_LAYOUT);
    return fcall(r, st, "layout", &k, &a, parse_layout, (void *)cb, data);
}

/* ---- accept ------------------------------------------------------------------------------------- */

static void parse_accept(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_accept_cb *cb = (dr_store_accept_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL, 0, NULL, 0);
        return;
    }
    int bad = !is_array(reply, 2) || reply->element[0]->type != REDIS_REPLY_ARRAY ||
              reply->element[0]->elements % 4 != 0;
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[1], &nnotes, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0, NULL, 0);
        return;
    }
    const redisReply *out = reply->element[0];
    size_t n = out->elements / 4;
    dr_store_accept_res_t *res = dr_calloc(n ? n : 1, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        const char *code = str_at(out, 4 * i);
        res[i].code = strcmp(code, "OK") == 0          ? DR_STORE_OK
                      : strcmp(code, "DUP") == 0       ? DR_STORE_DUP
                      : strcmp(code, "CONFLICT") == 0  ? DR_STORE_CONFLICT
                      : strcmp(code, "TOO_LARGE") == 0 ? DR_STORE_TOO_LARGE
                                                       : DR_STORE_FULL;
        res[i].id = int_at(out, 4 * i + 1);
        res[i].status = status_of(str_at(out, 4 * i + 2));
        if (res[i].code == DR_STORE_TOO_LARGE)
            res[i].limit = int_at(out, 4 * i + 3);
        else
            res[i].cancelled = (int)int_at(out, 4 * i + 3);
    }
    cb(c->data, 0, NULL, res, n, notes, nnotes);
    free(res);
    free(notes);
}

size_t dr_store_device_message_size(const dr_producer_msg_t *m)
{
    char *body = dr_codec_encode_consumer(2147483647, m->guarantee, m->command, 9999999999999LL, m->data);
    size_t n = strlen(body);
    free(body);
    return n;
}

int dr_store_accept(dr_redis_t *r, const dr_store_t *st, const dr_store_limits_t *lim, const char *token,
                    int64_t token_ttl_s, const dr_store_accept_t *items, size_t n, dr_store_accept_cb *cb,
                    void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    av_int(&a, lim->ids_max);
    av_str(&a, token);
    av_int(&a, token_ttl_s);
    av_int(&a, lim->default_ttl_ms);
    av_int(&a, lim->max_message);
    av_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        const dr_producer_msg_t *m = items[i].msg;
        uint32_t shard = dr_shard_of(items[i].dev, strlen(items[i].dev), st->shards);
        keys_add(&k, st, shard);
        av_str(&a, items[i].dev);
        av_int(&a, shard);
        av_str(&a, dr_guarantee_name(m->guarantee));
        av_str(&a, m->command);
        av_str(&a, m->data);
        if (m->has_cert)
            av_int(&a, m->tmp_id);
        else
            av_str(&a, "");
        av_str(&a, m->has_cert ? m->producer_id : "");
        av_int(&a, m->ttl_ms);
        av_int(&a, m->deliver_by);
        av_int(&a, m->max_attempts);
        av_int(&a, m->not_before);
        av_str(&a, m->idem_key);
        av_fmt(&a, "%016llx", (unsigned long long)dr_producer_msg_fingerprint(m, items[i].dev));
        av_str(&a, m->ext ? "1" : "0");
        av_str(&a, items[i].key_id);
        av_int(&a, (int64_t)dr_store_device_message_size(m));
    }
    return fcall(r, st, "accept_batch", &k, &a, parse_accept, (void *)cb, data);
}

/* ---- acks --------------------------------------------------------------------------------------- */

static void parse_ack(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_ack_cb *cb = (dr_store_ack_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL, 0, NULL, 0);
        return;
    }
    int bad = !is_array(reply, 2) || reply->element[0]->type != REDIS_REPLY_ARRAY ||
              reply->element[0]->elements % 3 != 0;
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[1], &nnotes, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0, NULL, 0);
        return;
    }
    const redisReply *out = reply->element[0];
    size_t n = out->elements / 3;
    dr_store_ack_res_t *res = dr_calloc(n ? n : 1, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        const char *code = str_at(out, 3 * i);
        res[i].code = strcmp(code, "OK") == 0             ? DR_STORE_ACK_OK
                      : strcmp(code, "IGNORED") == 0      ? DR_STORE_ACK_IGNORED
                      : strcmp(code, "WRONG_DEVICE") == 0 ? DR_STORE_ACK_WRONG_DEVICE
                                                          : DR_STORE_ACK_UNKNOWN_ID;
        const char *s = str_at(out, 3 * i + 1);
        res[i].status = s[0] ? status_of(s) : -1;
        const char *age = str_at(out, 3 * i + 2);
        res[i].age_ms = res[i].code == DR_STORE_ACK_OK && age[0] ? strtoll(age, NULL, 10) : -1;
    }
    cb(c->data, 0, NULL, res, n, notes, nnotes);
    free(res);
    free(notes);
}

int dr_store_ack(dr_redis_t *r, const dr_store_t *st, const dr_store_ack_t *items, size_t n, dr_store_ack_cb *cb,
                 void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    av_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        keys_add(&k, st, dr_store_shard_of_id(st, items[i].id));
        av_str(&a, items[i].dev);
        av_int(&a, items[i].id);
        av_str(&a, dr_status_name(items[i].status));
    }
    if (k.n == 0)
        keys_add(&k, st, 0);
    return fcall(r, st, "ack_batch", &k, &a, parse_ack, (void *)cb, data);
}

/* ---- sending ------------------------------------------------------------------------------------ */

static void av_policy(argv_t *a, const dr_store_policy_t *p)
{
    av_int(a, p->window);
    av_int(a, p->interval_ms);
    av_int(a, p->ack_timeout_ms);
    av_int(a, p->retry_max_ms);
    av_fmt(a, "%.6f", p->backoff);
    av_int(a, p->jitter_pct);
    av_fmt(a, "%llu", (unsigned long long)(p->seed >> 33));
}

/* One send from SEND_FIELDS strings at r[i..]: id, device, guarantee, command, data, attempt, send time,
 * accept time, MQTT 5 expiry (s). */
#define SEND_FIELDS 9
static void read_send(const redisReply *r, size_t i, dr_store_send_t *s)
{
    s->id = int_at(r, i);
    s->dev = str_at(r, i + 1);
    const char *g = str_at(r, i + 2);
    s->guarantee = dr_guarantee_parse(g, strlen(g));
    s->command = str_at(r, i + 3);
    const char *d = str_at(r, i + 4);
    s->data = d[0] ? d : NULL;
    s->attempt = int_at(r, i + 5);
    s->sent_ms = int_at(r, i + 6);
    s->accepted_ms = int_at(r, i + 7);
    int64_t e = int_at(r, i + 8);
    s->expiry_s = e < 0 ? 0 : (e > UINT32_MAX ? UINT32_MAX : (uint32_t)e);
}

static void parse_dispatch(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_pass_cb *cb = (dr_store_pass_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL);
        return;
    }
    dr_store_pass_t pass;
    memset(&pass, 0, sizeof(pass));
    if (is_array(reply, 1) && strcmp(str_at(reply, 0), "FENCED") == 0) {
        pass.fenced = 1;
        cb(c->data, 0, NULL, &pass);
        return;
    }
    int bad = !is_array(reply, 7) || reply->element[5]->type != REDIS_REPLY_ARRAY ||
              reply->element[5]->elements % SEND_FIELDS != 0;
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[6], &nnotes, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL);
        return;
    }
    pass.expired = int_at(reply, 1);
    pass.failed = int_at(reply, 2);
    pass.more = int_at(reply, 3) != 0;
    pass.next_in_ms = int_at(reply, 4);
    const redisReply *out = reply->element[5];
    size_t n = out->elements / SEND_FIELDS;
    dr_store_send_t *sends = dr_calloc(n ? n : 1, sizeof(*sends));
    for (size_t i = 0; i < n; i++)
        read_send(out, SEND_FIELDS * i, &sends[i]);
    pass.sends = sends;
    pass.nsends = n;
    pass.notes = notes;
    pass.nnotes = nnotes;
    cb(c->data, 0, NULL, &pass);
    free(sends);
    free(notes);
}

int dr_store_dispatch(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t epoch, int64_t batch,
                      const dr_store_policy_t *pol, dr_store_pass_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_int(&a, shard);
    av_int(&a, epoch);
    av_int(&a, batch);
    av_policy(&a, pol);
    return fcall(r, st, "dispatch", &k, &a, parse_dispatch, (void *)cb, data);
}

/* dispatch_many: the requests travel with the call; each gets its own pass, sends and notes. */
typedef struct {
    dr_store_pass_req_t *reqs;
    size_t n;
} many_t;

#define RESULT_FIELDS 6

static void parse_dispatch_many(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_pass_cb *cb = (dr_store_pass_cb *)c->cb;
    many_t *mt = c->data;
    size_t nnotes = 0;
    dr_note_t *notes = NULL;
    int bad = err == 0 && (!is_array(reply, 3) || reply->element[0]->type != REDIS_REPLY_ARRAY ||
                           reply->element[0]->elements != RESULT_FIELDS * mt->n ||
                           reply->element[1]->type != REDIS_REPLY_ARRAY ||
                           reply->element[1]->elements % (SEND_FIELDS + 1) != 0);
    if (err == 0 && !bad)
        notes = parse_notes(reply->element[2], &nnotes, &bad);
    if (err != 0 || bad) {
        for (size_t i = 0; i < mt->n; i++)
            cb(mt->reqs[i].data, err != 0 ? err : DR_EREDIS, err != 0 ? errstr : UNEXPECTED, NULL);
        goto done;
    }
    const redisReply *res = reply->element[0], *out = reply->element[1];
    size_t nsends_all = out->elements / (SEND_FIELDS + 1);
    dr_store_send_t *sends = dr_calloc(nsends_all ? nsends_all : 1, sizeof(*sends));
    uint32_t *send_shard = dr_calloc(nsends_all ? nsends_all : 1, sizeof(*send_shard));
    for (size_t i = 0; i < nsends_all; i++) {
        send_shard[i] = (uint32_t)int_at(out, (SEND_FIELDS + 1) * i);
        read_send(out, (SEND_FIELDS + 1) * i + 1, &sends[i]);
    }
    /* Every note goes with the pass of its shard. Only a pass makes changes, so every note has one; one
     * that had none would stay claimed and the shard owner's reclaim would publish it, as any note
     * nobody published. */
    size_t *owner = dr_calloc(nnotes ? nnotes : 1, sizeof(*owner));
    for (size_t j = 0; j < nnotes; j++) {
        owner[j] = mt->n;
        for (size_t i = 0; i < mt->n && owner[j] == mt->n; i++)
            if (mt->reqs[i].shard == notes[j].shard && strcmp(str_at(res, RESULT_FIELDS * i + 1), "OK") == 0)
                owner[j] = i;
    }
    dr_store_send_t *mine = dr_calloc(nsends_all ? nsends_all : 1, sizeof(*mine));
    dr_note_t *my_notes = dr_calloc(nnotes ? nnotes : 1, sizeof(*my_notes));
    for (size_t i = 0; i < mt->n; i++) {
        size_t b = RESULT_FIELDS * i;
        uint32_t shard = mt->reqs[i].shard;
        const char *code = str_at(res, b + 1);
        dr_store_pass_t pass;
        memset(&pass, 0, sizeof(pass));
        if ((uint32_t)int_at(res, b) != shard) {
            cb(mt->reqs[i].data, DR_EREDIS, UNEXPECTED, NULL);
            continue;
        }
        if (strcmp(code, "FENCED") == 0) {
            pass.fenced = 1;
        } else if (strcmp(code, "LATER") == 0) {
            pass.later = 1;
            pass.next_in_ms = 0;
        } else {
            pass.expired = int_at(res, b + 2);
            pass.failed = int_at(res, b + 3);
            pass.more = int_at(res, b + 4) != 0;
            pass.next_in_ms = int_at(res, b + 5);
            size_t ns = 0, nn = 0;
            for (size_t j = 0; j < nsends_all; j++)
                if (send_shard[j] == shard)
                    mine[ns++] = sends[j];
            for (size_t j = 0; j < nnotes; j++)
                if (owner[j] == i)
                    my_notes[nn++] = notes[j];
            pass.sends = mine;
            pass.nsends = ns;
            pass.notes = my_notes;
            pass.nnotes = nn;
        }
        cb(mt->reqs[i].data, 0, NULL, &pass);
    }
    free(owner);
    free(mine);
    free(my_notes);
    free(sends);
    free(send_shard);
done:
    free(notes);
    free(mt->reqs);
    free(mt);
}

int dr_store_dispatch_many(dr_redis_t *r, const dr_store_t *st, const dr_store_pass_req_t *reqs, size_t n,
                           int64_t batch, const dr_store_policy_t *pol, dr_store_pass_cb *cb)
{
    if (n == 0)
        return DR_EINVAL;
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    av_int(&a, batch);
    av_policy(&a, pol);
    av_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        keys_add(&k, st, reqs[i].shard);
        av_int(&a, reqs[i].shard);
        av_int(&a, reqs[i].epoch);
    }
    many_t *mt = dr_malloc(sizeof(*mt));
    mt->n = n;
    mt->reqs = dr_malloc(n * sizeof(*reqs));
    memcpy(mt->reqs, reqs, n * sizeof(*reqs));
    int rc = fcall(r, st, "dispatch_many", &k, &a, parse_dispatch_many, (void *)cb, mt);
    if (rc != 0) {
        free(mt->reqs);
        free(mt);
    }
    return rc;
}

static void parse_int(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_int_cb *cb = (dr_store_int_cb *)c->cb;
    if (cb == NULL)
        return;
    if (err != 0) {
        cb(c->data, err, errstr, 0);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER)
        cb(c->data, 0, NULL, (int64_t)reply->integer);
    else if (is_array(reply, 1) && strcmp(str_at(reply, 0), "FENCED") == 0)
        cb(c->data, 0, NULL, -1);
    else
        cb(c->data, DR_EREDIS, UNEXPECTED, 0);
}

int dr_store_unsend(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t epoch, int64_t id, int64_t attempt,
                    dr_store_int_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_int(&a, shard);
    av_int(&a, epoch);
    av_int(&a, id);
    av_int(&a, attempt);
    return fcall(r, st, "unsend", &k, &a, parse_int, (void *)cb, data);
}

int dr_store_ids_advance(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t ids_max, int64_t by,
                         dr_store_int_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_int(&a, shard);
    av_int(&a, ids_max);
    av_int(&a, by);
    return fcall(r, st, "ids_advance", &k, &a, parse_int, (void *)cb, data);
}

static void parse_strs(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_strs_cb *cb = (dr_store_strs_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        return;
    }
    const char **v = dr_calloc(reply->elements ? reply->elements : 1, sizeof(*v));
    for (size_t i = 0; i < reply->elements; i++)
        v[i] = str_at(reply, i);
    cb(c->data, 0, NULL, v, reply->elements);
    free(v);
}

int dr_store_subs(dr_redis_t *r, const dr_store_t *st, int replace, const char *const *filters, size_t n,
                  dr_store_strs_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add_name(&k, st, "subs:", st->node);
    av_common(&a, st);
    av_str(&a, replace ? "set" : "add");
    for (size_t i = 0; i < n; i++)
        av_str(&a, filters[i]);
    return fcall(r, st, "subs", &k, &a, parse_strs, (void *)cb, data);
}

static void parse_heads(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_heads_cb *cb = (dr_store_heads_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        return;
    }
    int64_t *due = dr_calloc(reply->elements ? reply->elements : 1, sizeof(*due));
    for (size_t i = 0; i < reply->elements; i++)
        due[i] = int_at(reply, i);
    cb(c->data, 0, NULL, due, reply->elements);
    free(due);
}

int dr_store_heads(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, dr_store_heads_cb *cb,
                   void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    for (size_t i = 0; i < n; i++) {
        keys_add(&k, st, shards[i]);
        av_int(&a, shards[i]);
    }
    if (k.n == 0)
        keys_add(&k, st, 0);
    return fcall(r, st, "heads", &k, &a, parse_heads, (void *)cb, data);
}

static void parse_reclaim(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_notes_cb *cb = (dr_store_notes_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL, 0, 0);
        return;
    }
    int bad = !is_array(reply, 2);
    size_t n = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[0], &n, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0, 0);
        return;
    }
    cb(c->data, 0, NULL, notes, n, int_at(reply, 1));
    free(notes);
}

int dr_store_reclaim(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t min_idle_ms, int64_t count,
                     dr_store_notes_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_int(&a, shard);
    av_int(&a, min_idle_ms);
    av_int(&a, count);
    return fcall(r, st, "reclaim", &k, &a, parse_reclaim, (void *)cb, data);
}

int dr_store_trim_log(dr_redis_t *r, const dr_store_t *st, uint32_t shard, int64_t keep_ms, dr_store_int_cb *cb,
                      void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_int(&a, shard);
    av_int(&a, keep_ms);
    return fcall(r, st, "trim_log", &k, &a, parse_int, (void *)cb, data);
}

typedef struct {
    dr_store_int_cb *cb;
    void *data;
    int left;
    int err;
    int64_t acked;
} xack_t;

static void on_xack(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    xack_t *x = data;
    if (err != 0)
        x->err = err;
    else if (reply->type == REDIS_REPLY_INTEGER)
        x->acked += reply->integer;
    if (--x->left == 0) {
        if (x->cb)
            x->cb(x->data, x->err, x->err ? dr_strerror(x->err) : NULL, x->acked);
        free(x);
    }
}

static void parse_wait(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_wait_cb *cb = (dr_store_wait_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, 0, NULL);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        cb(c->data, 0, NULL, (int)reply->integer, NULL);
        return;
    }
    int bad = 0;
    size_t n = 0;
    dr_note_t *notes = parse_notes(reply, &n, &bad);
    if (bad || n != 1)
        cb(c->data, DR_EREDIS, UNEXPECTED, 0, NULL);
    else
        cb(c->data, 0, NULL, 2, &notes[0]);
    free(notes);
}

int dr_store_note_wait(dr_redis_t *r, const dr_store_t *st, const dr_note_t *note, int64_t stale_ms,
                       dr_store_wait_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, note->shard);
    av_common(&a, st);
    av_int(&a, note->shard);
    av_str(&a, note->after);
    av_int(&a, stale_ms);
    return fcall(r, st, "note_wait", &k, &a, parse_wait, (void *)cb, data);
}

int dr_store_notes_done(dr_redis_t *r, const dr_store_t *st, const dr_note_t *notes, size_t n, dr_store_int_cb *cb,
                        void *data)
{
    /* One XACK per shard, all pipelined. */
    xack_t *x = dr_calloc(1, sizeof(*x));
    x->cb = cb;
    x->data = data;
    x->left = 1; /* held while sending */
    char *done = dr_calloc(n ? n : 1, 1);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (done[i])
            continue;
        argv_t a = {0};
        char key[160];
        av_str(&a, "XACK");
        av_fmt(&a, "%s", dr_store_key(st, notes[i].shard, "log", key, sizeof(key)));
        av_str(&a, "pub");
        for (size_t j = i; j < n; j++) {
            if (!done[j] && notes[j].shard == notes[i].shard) {
                av_str(&a, notes[j].log_id);
                done[j] = 1;
            }
        }
        x->left++;
        rc = dr_redis_cmd(r, on_xack, x, a.n, a.v, a.l);
        if (rc != 0)
            x->left--;
        av_free(&a);
    }
    free(done);
    if (rc != 0)
        x->err = rc;
    if (--x->left == 0) {
        /* Nothing was sent (no notes, or the first send failed). */
        if (rc != 0) {
            free(x);
            return rc;
        }
        if (cb)
            cb(data, 0, NULL, 0);
        free(x);
    }
    return 0;
}

/* ---- leases ------------------------------------------------------------------------------------- */

static void parse_lease(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_lease_cb *cb = (dr_store_lease_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        return;
    }
    size_t n = reply->elements / 2;
    dr_store_lease_t *held = dr_calloc(n ? n : 1, sizeof(*held));
    for (size_t i = 0; i < n; i++) {
        held[i].shard = (uint32_t)int_at(reply, 2 * i);
        held[i].epoch = int_at(reply, 2 * i + 1);
    }
    cb(c->data, 0, NULL, held, n);
    free(held);
}

int dr_store_lease(dr_redis_t *r, const dr_store_t *st, int64_t ttl_ms, int release, dr_store_lease_cb *cb,
                   void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    av_int(&a, ttl_ms);
    av_str(&a, release ? "1" : "0");
    return fcall(r, st, "lease", &k, &a, parse_lease, (void *)cb, data);
}

/* ---- REST and operator calls -------------------------------------------------------------------- */

static void parse_cancel(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_cancel_cb *cb = (dr_store_cancel_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL, NULL, 0);
        return;
    }
    int bad = !is_array(reply, 2) || !is_array(reply->element[0], 1);
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[1], &nnotes, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, NULL, 0);
        return;
    }
    const redisReply *o = reply->element[0];
    const char *code = str_at(o, 0);
    dr_store_cancel_res_t res = {.code = DR_STORE_CANCEL_NOT_FOUND, .status = -1, .dev = ""};
    if (strcmp(code, "OK") == 0) {
        res.code = DR_STORE_CANCEL_OK;
        res.shard = (uint32_t)int_at(o, 1);
        res.dev = str_at(o, 2);
    } else if (strcmp(code, "CONFLICT") == 0) {
        res.code = DR_STORE_CANCEL_CONFLICT;
        res.status = status_of(str_at(o, 1));
    }
    cb(c->data, 0, NULL, &res, notes, nnotes);
    free(notes);
}

int dr_store_cancel(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *caller, const char *fail_event,
                    dr_store_cancel_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add(&k, st, dr_store_shard_of_id(st, id));
    av_common(&a, st);
    av_int(&a, id);
    av_str(&a, caller);
    if (fail_event != NULL) {
        av_str(&a, "FAILED");
        av_str(&a, fail_event);
    }
    return fcall(r, st, "cancel", &k, &a, parse_cancel, (void *)cb, data);
}

static void parse_purge(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_purge_cb *cb = (dr_store_purge_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, 0, 0, "", NULL, 0);
        return;
    }
    int bad = !is_array(reply, 2) || !is_array(reply->element[0], 4);
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[1], &nnotes, &bad);
    if (bad) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, 0, 0, "", NULL, 0);
        return;
    }
    cb(c->data, 0, NULL, int_at(reply->element[0], 1), int_at(reply->element[0], 2) != 0,
       str_at(reply->element[0], 3), notes, nnotes);
    free(notes);
}

int dr_store_purge(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t step, const char *caller,
                   const char *cursor, dr_store_purge_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    av_int(&a, step);
    av_str(&a, caller);
    av_str(&a, cursor);
    return fcall(r, st, "purge", &k, &a, parse_purge, (void *)cb, data);
}

static void parse_pull(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_pull_cb *cb = (dr_store_pull_cb *)c->cb;
    if (err != 0) {
        cb(c->data, err, errstr, NULL, -1, NULL, 0);
        return;
    }
    int bad = !is_array(reply, 2) || !is_array(reply->element[0], 2);
    size_t nnotes = 0;
    dr_note_t *notes = bad ? NULL : parse_notes(reply->element[1], &nnotes, &bad);
    const redisReply *o = bad ? NULL : reply->element[0];
    int is_msg = o && strcmp(str_at(o, 0), "MSG") == 0;
    if (bad || (is_msg && o->elements < 7)) {
        free(notes);
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, -1, NULL, 0);
        return;
    }
    if (is_msg) {
        dr_store_send_t s = {0};
        s.id = int_at(o, 1);
        s.dev = "";
        const char *g = str_at(o, 2);
        s.guarantee = dr_guarantee_parse(g, strlen(g));
        s.command = str_at(o, 3);
        const char *d = str_at(o, 4);
        s.data = d[0] ? d : NULL;
        s.attempt = int_at(o, 5);
        s.sent_ms = int_at(o, 6);
        cb(c->data, 0, NULL, &s, -1, notes, nnotes);
    } else {
        const char *due = str_at(o, 1);
        cb(c->data, 0, NULL, NULL, due[0] ? strtoll(due, NULL, 10) : -1, notes, nnotes);
    }
    free(notes);
}

int dr_store_pull(dr_redis_t *r, const dr_store_t *st, const char *dev, const dr_store_policy_t *pol,
                  dr_store_pull_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    av_policy(&a, pol);
    return fcall(r, st, "pull", &k, &a, parse_pull, (void *)cb, data);
}

static void parse_peek(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_peek_cb *cb = (dr_store_peek_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements < 4)) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL);
        return;
    }
    if (reply->elements == 0) {
        cb(c->data, 0, NULL, NULL);
        return;
    }
    dr_store_send_t s = {0};
    s.id = int_at(reply, 0);
    s.dev = "";
    const char *g = str_at(reply, 1);
    s.guarantee = dr_guarantee_parse(g, strlen(g));
    s.command = str_at(reply, 2);
    const char *d = str_at(reply, 3);
    s.data = d[0] ? d : NULL;
    s.attempt = 0;
    s.sent_ms = reply->elements > 4 ? int_at(reply, 4) : 0;
    cb(c->data, 0, NULL, &s);
}

int dr_store_peek(dr_redis_t *r, const dr_store_t *st, const char *dev, dr_store_peek_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    return fcall(r, st, "peek", &k, &a, parse_peek, (void *)cb, data);
}

static int64_t opt_int(const redisReply *r, size_t i)
{
    const char *s = str_at(r, i);
    return s[0] ? strtoll(s, NULL, 10) : -1;
}

static void parse_devinfo(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_devinfo_cb *cb = (dr_store_devinfo_cb *)c->cb;
    if (err != 0 || !is_array(reply, 10)) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL);
        return;
    }
    dr_store_devinfo_t info = {
        .queued = int_at(reply, 0),
        .in_flight = int_at(reply, 1),
        .scheduled = int_at(reply, 2),
        .next_ms = opt_int(reply, 3),
        .last_send_ms = opt_int(reply, 4),
        .last_ack_ms = opt_int(reply, 5),
        .interval_ms = opt_int(reply, 6),
        .window = opt_int(reply, 7),
        .mode = str_at(reply, 8),
        .max_message = opt_int(reply, 9),
    };
    cb(c->data, 0, NULL, &info);
}

int dr_store_devinfo(dr_redis_t *r, const dr_store_t *st, const char *dev, dr_store_devinfo_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    return fcall(r, st, "devinfo", &k, &a, parse_devinfo, (void *)cb, data);
}

int dr_store_devset(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t interval_ms, int64_t window,
                    const char *mode, int64_t max_message, dr_store_int_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    if (interval_ms == DR_STORE_UNSET)
        av_str(&a, "-");
    else if (interval_ms < 0)
        av_str(&a, "");
    else
        av_int(&a, interval_ms);
    if (window == DR_STORE_UNSET)
        av_str(&a, "-");
    else if (window < 0)
        av_str(&a, "");
    else
        av_int(&a, window);
    av_str(&a, mode == NULL ? "" : mode[0] == '\0' ? "-" : mode);
    if (max_message == DR_STORE_UNSET)
        av_str(&a, "-");
    else if (max_message < 0)
        av_str(&a, "");
    else
        av_int(&a, max_message);
    return fcall(r, st, "devset", &k, &a, parse_int, (void *)cb, data);
}

static void parse_get(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_get_cb *cb = (dr_store_get_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        return;
    }
    size_t n = reply->elements;
    dr_store_msg_t *msgs = dr_calloc(n ? n : 1, sizeof(*msgs));
    dr_store_hist_t **hists = dr_calloc(n ? n : 1, sizeof(*hists));
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        const redisReply *o = reply->element[i];
        if (o->type != REDIS_REPLY_ARRAY) {
            bad = 1;
            break;
        }
        if (o->elements == 0)
            continue;
        if (o->elements < 20 || o->element[19]->type != REDIS_REPLY_ARRAY || o->element[19]->elements % 4 != 0) {
            bad = 1;
            break;
        }
        dr_store_msg_t *m = &msgs[i];
        m->found = 1;
        m->id = int_at(o, 0);
        m->dev = str_at(o, 1);
        const char *g = str_at(o, 2);
        m->guarantee = dr_guarantee_parse(g, strlen(g));
        m->command = str_at(o, 3);
        const char *d = str_at(o, 4);
        m->data = d[0] ? d : NULL;
        m->status = status_of(str_at(o, 5));
        m->accepted_ms = int_at(o, 6);
        m->changed_ms = int_at(o, 7);
        m->attempts = int_at(o, 8);
        const char *tmp = str_at(o, 9);
        m->has_tmp = tmp[0] != '\0';
        m->tmp = strtoll(tmp, NULL, 10);
        m->pd = str_at(o, 10);
        m->deliver_by = int_at(o, 11);
        m->max_attempts = int_at(o, 12);
        m->not_before = int_at(o, 13);
        m->ext = strcmp(str_at(o, 14), "1") == 0;
        m->idem_key = str_at(o, 15);
        m->key_id = str_at(o, 16);
        m->last_send_ms = int_at(o, 17);
        m->next_retry_ms = int_at(o, 18);
        const redisReply *h = o->element[19];
        size_t nh = h->elements / 4;
        hists[i] = dr_calloc(nh ? nh : 1, sizeof(dr_store_hist_t));
        for (size_t j = 0; j < nh; j++) {
            hists[i][j].event = str_at(h, 4 * j);
            hists[i][j].status = status_of(str_at(h, 4 * j + 1));
            hists[i][j].ts = int_at(h, 4 * j + 2);
            hists[i][j].attempt = int_at(h, 4 * j + 3);
        }
        m->history = hists[i];
        m->nhistory = nh;
    }
    if (bad)
        cb(c->data, DR_EREDIS, UNEXPECTED, NULL, 0);
    else
        cb(c->data, 0, NULL, msgs, n);
    for (size_t i = 0; i < n; i++)
        free(hists[i]);
    free(hists);
    free(msgs);
}

int dr_store_get(dr_redis_t *r, const dr_store_t *st, const int64_t *ids, size_t n, dr_store_get_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    for (size_t i = 0; i < n; i++) {
        keys_add(&k, st, dr_store_shard_of_id(st, ids[i]));
        av_int(&a, ids[i]);
    }
    if (k.n == 0)
        keys_add(&k, st, 0);
    return fcall(r, st, "get", &k, &a, parse_get, (void *)cb, data);
}

static void parse_ids(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_ids_cb *cb = (dr_store_ids_cb *)c->cb;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL, 0);
        return;
    }
    int64_t *ids = dr_calloc(reply->elements ? reply->elements : 1, sizeof(*ids));
    for (size_t i = 0; i < reply->elements; i++)
        ids[i] = int_at(reply, i);
    cb(c->data, 0, NULL, ids, reply->elements);
    free(ids);
}

int dr_store_list(dr_redis_t *r, const dr_store_t *st, const char *dev, int64_t cursor, int64_t limit,
                  dr_store_ids_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    uint32_t shard = dr_shard_of(dev, strlen(dev), st->shards);
    keys_add(&k, st, shard);
    av_common(&a, st);
    av_str(&a, dev);
    av_int(&a, shard);
    av_int(&a, cursor);
    av_int(&a, limit);
    return fcall(r, st, "list", &k, &a, parse_ids, (void *)cb, data);
}

/* ---- API keys ------------------------------------------------------------------------------------ */

int dr_store_apikey_create(dr_redis_t *r, const dr_store_t *st, const char *id, const char *hash,
                           const char *scope, const char *dev, const char *name, dr_store_int_cb *cb,
                           void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add_name(&k, st, APIKEY_NAME, id);
    av_str(&a, hash);
    av_str(&a, scope);
    av_str(&a, dev);
    av_str(&a, name);
    return fcall(r, st, "ak_create", &k, &a, parse_int, (void *)cb, data);
}

int dr_store_apikey_revoke(dr_redis_t *r, const dr_store_t *st, const char *id, dr_store_int_cb *cb,
                           void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    keys_add_name(&k, st, APIKEY_NAME, id);
    return fcall(r, st, "ak_revoke", &k, &a, parse_int, (void *)cb, data);
}

/* ---- backlog gauges -------------------------------------------------------------------------------- */

static void parse_backlog(call_t *c, redisReply *reply, int err, const char *errstr)
{
    dr_store_backlog_cb *cb = (dr_store_backlog_cb *)c->cb;
    if (err != 0 || !is_array(reply, 5)) {
        cb(c->data, err ? err : DR_EREDIS, err ? errstr : UNEXPECTED, NULL);
        return;
    }
    dr_store_backlog_t res = {
        .queued = int_at(reply, 0),
        .in_flight = int_at(reply, 1),
        .scheduled = int_at(reply, 2),
        .oldest_age_ms = int_at(reply, 3),
        .skipped = int_at(reply, 4),
    };
    cb(c->data, 0, NULL, &res);
}

int dr_store_backlog(dr_redis_t *r, const dr_store_t *st, const uint32_t *shards, size_t n, int64_t max_devices,
                     dr_store_backlog_cb *cb, void *data)
{
    argv_t a = {0};
    keys_t k = {0};
    av_common(&a, st);
    av_int(&a, max_devices);
    for (size_t i = 0; i < n; i++) {
        keys_add(&k, st, shards[i]);
        av_int(&a, shards[i]);
    }
    if (k.n == 0)
        keys_add(&k, st, 0);
    return fcall(r, st, "backlog", &k, &a, parse_backlog, (void *)cb, data);
}
