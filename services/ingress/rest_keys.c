/* API keys over REST: POST /v1/keys, GET /v1/keys, DELETE /v1/keys/{id} (admin only).
 * docs/console-api.md §5 is the contract.
 *
 * DESIGN
 * Keys are the hashes <prefix>ak:<id> that drover-ctl writes and auth.c verifies (dr/apikey.h): only
 * the key's SHA-256 is stored, so the secret is shown once, in the creation answer. Creation and
 * revocation are one function call each (ak_create, ak_revoke, called through dr_store_apikey_create
 * and dr_store_apikey_revoke), so a half-written key never exists.
 * Keys have no index of their own (drover-ctl creates them too), so the listing walks the keyspace
 * with SCAN MATCH <prefix>ak:* in steps of 1000 keys, each step its own round trip: Redis stays
 * responsive, and the listing is an operator's occasional request. Revocation takes effect within
 * http.key_cache_ms on every node (auth.c caches verified keys that long).
 */
#define DR_MODULE "ingress/rest_keys"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/apikey.h"
#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "http.h"
#include "rest.h"

#define KEY_NAME_MAX 128

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

static json_t *key_json(const char *id, const char *scope, const char *dev, const char *name,
                        long long created, int revoked)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:I, s:b}", "id", id, "scope", scope, "device",
                     dev && dev[0] ? json_string(dev) : json_null(), "name", name ? name : "", "createdAt",
                     (json_int_t)created, "revoked", revoked);
}

/* ---- POST /v1/keys -------------------------------------------------------------------------------- */

typedef struct {
    hreq_t *hr;
    char key[DR_APIKEY_LEN + 1], id[DR_APIKEY_ID_LEN + 1];
    int scope;
    char dev[256];
    char name[KEY_NAME_MAX + 1];
    int tries;
} create_t;

static void create_send(create_t *c);

static void on_created(void *data, int err, const char *errstr, int64_t created)
{
    create_t *c = data;
    hreq_t *hr = c->hr;
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
        free(c);
        return;
    }
    if (created == 0 && ++c->tries < 3) { /* 48-bit id collision: draw another key */
        create_send(c);
        return;
    }
    if (created == 0) {
        http_error(hr, 500, "INTERNAL", "could not draw an unused key id");
    } else {
        dr_log(DR_LOG_NOTICE, "event=key_created id=%s scope=%s by=%s", c->id, dr_scope_name(c->scope),
               hr->who.key_id[0] ? hr->who.key_id : "-");
        json_t *j = key_json(c->id, dr_scope_name(c->scope), c->dev, c->name, (long long)created, 0);
        json_object_set_new(j, "key", json_string(c->key));
        send_json(hr, 201, j);
    }
    hreq_release(hr);
    explicit_bzero(c->key, sizeof(c->key));
    free(c);
}

static void create_send(create_t *c)
{
    hreq_t *hr = c->hr;
    char hash[DR_APIKEY_HASH_LEN + 1];
    if (dr_apikey_generate(c->key, c->id) != 0) {
        http_error(hr, 500, "INTERNAL", "the random source failed");
        hreq_release(hr);
        free(c);
        return;
    }
    dr_apikey_hash(c->key, strlen(c->key), hash);
    int rc = dr_store_apikey_create(hr->in->node.redis, &hr->in->store, c->id, hash, dr_scope_name(c->scope),
                                    c->dev, c->name, on_created, c);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
        free(c);
    }
}

void keys_create(hreq_t *hr)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1) {
        hreq_release(hr);
        return;
    }
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    create_t *c = dr_calloc(1, sizeof(*c));
    c->hr = hr;
    json_t *scope = root ? json_object_get(root, "scope") : NULL;
    json_t *dev = root ? json_object_get(root, "device") : NULL;
    json_t *name = root ? json_object_get(root, "name") : NULL;
    if (!json_is_object(root)) {
        http_error(hr, 400, "BAD_JSON", "the body must be a JSON object");
        goto bad;
    }
    c->scope = json_is_string(scope) ? dr_scope_parse(json_string_value(scope)) : -1;
    if (c->scope < 0) {
        http_error(hr, 400, "BAD_FIELD", "scope must be \"producer\", \"device\" or \"admin\"");
        goto bad;
    }
    if (dev != NULL && !json_is_null(dev)) {
        const char *d = json_is_string(dev) ? json_string_value(dev) : NULL;
        if (c->scope != DR_SCOPE_DEVICE) {
            http_error(hr, 400, "BAD_FIELD", "device is only allowed with scope \"device\"");
            goto bad;
        }
        if (d == NULL ||
            dr_codec_check_id(d, json_string_length(dev), (size_t)hr->in->node.cfg.ingress_max_device_id) !=
                0 ||
            strlen(d) != json_string_length(dev)) {
            http_error(hr, 400, "BAD_DEVICE_ID", "device must be a valid device id");
            goto bad;
        }
        snprintf(c->dev, sizeof(c->dev), "%s", d);
    } else if (c->scope == DR_SCOPE_DEVICE) {
        http_error(hr, 400, "BAD_FIELD", "scope \"device\" needs a device");
        goto bad;
    }
    if (name != NULL && !json_is_null(name)) {
        if (!json_is_string(name) || json_string_length(name) > KEY_NAME_MAX ||
            strlen(json_string_value(name)) != json_string_length(name)) {
            http_error(hr, 400, "BAD_FIELD", "name must be a string of at most %d bytes", KEY_NAME_MAX);
            goto bad;
        }
        snprintf(c->name, sizeof(c->name), "%s", json_string_value(name));
    }
    json_decref(root);
    create_send(c);
    return;
bad:
    json_decref(root);
    free(c);
    hreq_release(hr);
}

/* ---- GET /v1/keys --------------------------------------------------------------------------------- */

typedef struct {
    hreq_t *hr;
    char pattern[160];
    char cursor[32];
    json_t *keys; /* collected so far */
    int pending, err, scan_done;
} list_t;

static void list_step(list_t *l);

static int cmp_key(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "id")), json_string_value(json_object_get(y, "id")));
}

static void list_finish(list_t *l)
{
    if (l->pending > 0 || !l->scan_done)
        return;
    hreq_t *hr = l->hr;
    if (l->err != 0) {
        http_unavailable(hr, l->err);
    } else {
        size_t n = json_array_size(l->keys);
        json_t **v = dr_calloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++)
            v[i] = json_incref(json_array_get(l->keys, i));
        if (n > 1)
            qsort(v, n, sizeof(*v), cmp_key);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, v[i]);
        free(v);
        send_json(hr, 200, json_pack("{s:o}", "keys", a));
    }
    hreq_release(hr);
    json_decref(l->keys);
    free(l);
}

typedef struct {
    list_t *l;
    char id[DR_APIKEY_ID_LEN + 1];
} one_t;

static const char *rstr(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
}

static void on_key(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    one_t *o = data;
    list_t *l = o->l;
    if (err != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
        if (l->err == 0)
            l->err = err ? err : DR_EREDIS;
    } else if (rstr(reply, 0) != NULL) { /* else deleted meanwhile */
        const char *created = rstr(reply, 4), *rev = rstr(reply, 3);
        json_array_append_new(l->keys, key_json(o->id, rstr(reply, 0), rstr(reply, 1), rstr(reply, 2),
                                                created ? strtoll(created, NULL, 10) : 0,
                                                rev && strcmp(rev, "1") == 0));
    }
    free(o);
    l->pending--;
    list_finish(l);
}

static void on_scan(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    list_t *l = data;
    l->pending--;
    if (err == 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || rstr(reply, 0) == NULL ||
                     reply->element[1]->type != REDIS_REPLY_ARRAY))
        err = DR_EREDIS;
    if (err != 0) {
        l->err = err;
        l->scan_done = 1;
        list_finish(l);
        return;
    }
    const redisReply *keys = reply->element[1];
    for (size_t i = 0; i < keys->elements && l->err == 0; i++) {
        const char *k = keys->element[i]->type == REDIS_REPLY_STRING ? keys->element[i]->str : NULL;
        const char *id = k ? dr_store_apikey_of_key(&l->hr->in->store, k) : NULL;
        if (id == NULL || strlen(id) != DR_APIKEY_ID_LEN)
            continue; /* not a key id this API made */
        one_t *o = dr_calloc(1, sizeof(*o));
        o->l = l;
        snprintf(o->id, sizeof(o->id), "%s", id);
        const char *argv[] = {"HMGET", k, "scope", "dev", "name", "revoked", "created"};
        l->pending++;
        if (dr_redis_cmd(l->hr->in->node.redis, on_key, o, 7, argv, NULL) != 0) {
            l->pending--;
            l->err = DR_EUNAVAIL;
            free(o);
        }
    }
    snprintf(l->cursor, sizeof(l->cursor), "%s", rstr(reply, 0));
    if (strcmp(l->cursor, "0") == 0 || l->err != 0) {
        l->scan_done = 1;
        list_finish(l);
    } else {
        list_step(l);
    }
}

static void list_step(list_t *l)
{
    const char *argv[] = {"SCAN", l->cursor, "MATCH", l->pattern, "COUNT", "1000"};
    l->pending++;
    if (dr_redis_cmd(l->hr->in->node.redis, on_scan, l, 6, argv, NULL) != 0) {
        l->pending--;
        l->err = DR_EUNAVAIL;
        l->scan_done = 1;
        list_finish(l);
    }
}

void keys_list(hreq_t *hr)
{
    list_t *l = dr_calloc(1, sizeof(*l));
    l->hr = hr;
    l->keys = json_array();
    dr_store_match_apikeys(&hr->in->store, l->pattern, sizeof(l->pattern));
    snprintf(l->cursor, sizeof(l->cursor), "0");
    list_step(l);
}

/* ---- DELETE /v1/keys/{id} ------------------------------------------------------------------------- */

static void on_revoked(void *data, int err, const char *errstr, int64_t revoked)
{
    hreq_t *hr = data;
    if (!rest_store_failed(hr, err, errstr)) {
        if (revoked == 1) {
            dr_log(DR_LOG_NOTICE, "event=key_revoked id=%s by=%s", hr->dev,
                   hr->who.key_id[0] ? hr->who.key_id : "-");
            http_empty(hr, 204);
        } else {
            http_error(hr, 404, "NOT_FOUND", "no key %s", hr->dev);
        }
    }
    hreq_release(hr);
}

void keys_revoke(hreq_t *hr)
{
    /* hr->dev holds the {id} segment; anything not shaped like a key id names no key */
    int ok = strlen(hr->dev) == DR_APIKEY_ID_LEN;
    for (size_t i = 0; ok && i < DR_APIKEY_ID_LEN; i++)
        ok = (hr->dev[i] >= '0' && hr->dev[i] <= '9') || (hr->dev[i] >= 'a' && hr->dev[i] <= 'f');
    if (!ok) {
        http_error(hr, 404, "NOT_FOUND", "no key %s", hr->dev);
        hreq_release(hr);
        return;
    }
    int rc = dr_store_apikey_revoke(hr->in->node.redis, &hr->in->store, hr->dev, on_revoked, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}
