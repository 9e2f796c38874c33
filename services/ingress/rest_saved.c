/* Duster's saved commands ("saved messages", duster-compat.md §4.2 and §6): commands an operator keeps
 * per device and sends with one click. GET/POST /admin/api/saved-messages, GET/PUT/DELETE
 * /admin/api/saved-messages/{id} and POST /admin/api/saved-messages/{id}/send. Admin only; errors in
 * Duster's shapes (rest_auth_error). Storage: dr/console.h. PUT is a Drover addition.
 */
#define DR_MODULE "ingress/rest_saved"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/console.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/status.h"
#include "http.h"
#include "rest.h"

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

static void unavailable(hreq_t *hr)
{
    http_add_header(hr, "retry-after", "1");
    rest_auth_error(hr, 503, "the store is unavailable; nothing was changed, retry later");
}

static json_t *saved_json(const dr_con_saved_t *v)
{
    json_t *d = v->data ? json_loads(v->data, 0, NULL) : NULL;
    return json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)v->id, "clientId",
                     (json_int_t)v->client_id, "deviseId", v->dev, "description", v->description, "command",
                     v->command, "deliveryGuarantee", v->guarantee, "data", d ? d : json_null());
}

/* ---- reads ------------------------------------------------------------------------------------------ */

static void on_list(void *data, int err, const char *errstr, int result, const dr_con_saved_t *v, size_t n)
{
    (void)errstr, (void)result;
    hreq_t *hr = data;
    if (err != 0) {
        unavailable(hr);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, saved_json(&v[i]));
        send_json(hr, 200, a);
    }
    hreq_release(hr);
}

void saved_list(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_list))
        return;
    char cid[32], dev[256];
    const char *by = NULL, *val = "";
    if (http_query(hr, "clientId", cid, sizeof(cid)) && cid[0] != '\0') {
        char *e;
        long long v = strtoll(cid, &e, 10);
        if (*e != '\0' || v <= 0) {
            rest_auth_error(hr, 400, "clientId must be a positive integer");
            hreq_release(hr);
            return;
        }
        by = "cid", val = cid;
    } else if (http_query(hr, "deviseId", dev, sizeof(dev)) && dev[0] != '\0') {
        by = "dev", val = dev;
    }
    if (dr_con_saved_list(hr->in->node.redis, &hr->in->store, by, val, 10000, on_list, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

static void on_one(void *data, int err, const char *errstr, int result, const dr_con_saved_t *v, size_t n)
{
    (void)errstr, (void)result;
    hreq_t *hr = data;
    if (err != 0)
        unavailable(hr);
    else if (n == 0)
        rest_auth_error(hr, 404, "saved message %lld not found", (long long)hr->id);
    else
        send_json(hr, 200, saved_json(&v[0]));
    hreq_release(hr);
}

void saved_get(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_get))
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)hr->id);
    if (dr_con_saved_list(hr->in->node.redis, &hr->in->store, "id", id, 1, on_one, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

/* ---- writes ----------------------------------------------------------------------------------------- */

typedef struct {
    char *desc, *cmd, *data;
} fields_t;

static void fields_free(void *p)
{
    fields_t *f = p;
    free(f->desc);
    free(f->cmd);
    free(f->data);
    free(f);
}

/* A trimmed copy of string field name into *out; 1 ok (NULL when absent and !required), 0 answered 400. */
static int text_field(hreq_t *hr, json_t *o, const char *name, int required, char **out)
{
    json_t *v = json_object_get(o, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 1;
        rest_auth_error(hr, 400, "%s is required", name);
        return 0;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        rest_auth_error(hr, 400, "%s must be a string", name);
        return 0;
    }
    const char *s = json_string_value(v);
    size_t len = strlen(s);
    while (len > 0 && strchr(" \t\r\n", s[len - 1]))
        len--;
    while (len > 0 && strchr(" \t\r\n", *s))
        s++, len--;
    if (len == 0) {
        rest_auth_error(hr, 400, "%s must not be blank", name);
        return 0;
    }
    if (len > DR_CON_MAX_TEXT) {
        rest_auth_error(hr, 400, "%s is longer than %d bytes", name, DR_CON_MAX_TEXT);
        return 0;
    }
    *out = dr_strndup(s, len);
    return 1;
}

static void on_put(void *data, int err, const char *errstr, int result, const dr_con_saved_t *v, size_t n)
{
    (void)n;
    hreq_t *hr = data;
    if (err != 0) {
        dr_log(DR_LOG_WARNING, "event=saved_put_failed error=\"%s\"", errstr ? errstr : dr_strerror(err));
        unavailable(hr);
    }
    else if (result == DR_CON_OK)
        send_json(hr, hr->req && hr->req->method.len == 4 ? 201 : 200, saved_json(v)); /* POST: 201 */
    else if (result == DR_CON_NOT_FOUND)
        rest_auth_error(hr, 404, "saved message %lld not found", (long long)hr->id);
    else if (result == DR_CON_NO_CLIENT)
        rest_auth_error(hr, 400, "clientId names no client");
    else if (result == DR_CON_NOT_DEVISE)
        rest_auth_error(hr, 400, "the owner client must have role DEVISE");
    else
        rest_auth_error(hr, 409, "the device already has %d saved messages", DR_CON_SAVED_MAX);
    hreq_release(hr);
}

static void put(hreq_t *hr, int create)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1) {
        hreq_release(hr);
        return;
    }
    json_error_t je;
    json_t *j = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (j == NULL || !json_is_object(j)) {
        rest_auth_error(hr, 400, "the body must be a JSON object");
        json_decref(j);
        hreq_release(hr);
        return;
    }
    fields_t *f = dr_calloc(1, sizeof(*f));
    hr->state = f;
    hr->free_state = fields_free;
    dr_con_saved_change_t ch = {0};
    json_t *cid = json_object_get(j, "clientId"), *g = json_object_get(j, "deliveryGuarantee");
    json_t *d = json_object_get(j, "data");
    if (!text_field(hr, j, "description", create, &f->desc) || !text_field(hr, j, "command", create, &f->cmd))
        goto done;
    if ((cid == NULL && create) || (cid != NULL && (!json_is_integer(cid) || json_integer_value(cid) <= 0))) {
        rest_auth_error(hr, 400, "clientId must be the id of a client with role DEVISE");
        goto done;
    }
    ch.client_id = cid ? json_integer_value(cid) : 0;
    if (g != NULL && !json_is_null(g) &&
        (!json_is_string(g) || dr_guarantee_parse(json_string_value(g), json_string_length(g)) < 0)) {
        rest_auth_error(hr, 400, "deliveryGuarantee must be NO, RECEIPT_CONFIRMATION or ONLY_LAST");
        goto done;
    }
    ch.guarantee = g && json_is_string(g) ? json_string_value(g) : create ? "NO" : NULL; /* Duster: NO */
    if (d != NULL && !json_is_null(d) && !json_is_object(d)) {
        rest_auth_error(hr, 400, "data must be a JSON object or null");
        goto done;
    }
    if (d != NULL && json_is_object(d)) {
        f->data = json_dumps(d, JSON_COMPACT);
        if (strlen(f->data) > (size_t)hr->in->node.cfg.ingress_max_payload) {
            rest_auth_error(hr, 400, "data is larger than %lld bytes",
                            (long long)hr->in->node.cfg.ingress_max_payload);
            goto done;
        }
    }
    ch.data_null = d != NULL && json_is_null(d);
    ch.data = f->data;
    ch.description = f->desc;
    ch.command = f->cmd;
    if (dr_con_saved_put(hr->in->node.redis, &hr->in->store, create ? 0 : hr->id, &ch, on_put, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
    json_decref(j); /* after the call: ch.guarantee points into j; the call copied it */
    return;
done:
    json_decref(j);
    hreq_release(hr);
}

void saved_create(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_create))
        return;
    put(hr, 1);
}

void saved_update(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_update))
        return;
    put(hr, 0);
}

static void on_deleted(void *data, int err, const char *errstr, int64_t result)
{
    (void)errstr;
    hreq_t *hr = data;
    if (err != 0)
        unavailable(hr);
    else if (result == 0)
        rest_auth_error(hr, 404, "saved message %lld not found", (long long)hr->id);
    else
        http_empty(hr, 204);
    hreq_release(hr);
}

void saved_delete(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_delete))
        return;
    if (dr_con_saved_delete(hr->in->node.redis, &hr->in->store, hr->id, on_deleted, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

/* ---- POST /admin/api/saved-messages/{id}/send --------------------------------------------------------- */

static void on_sent(void *data, const store_result_t *res)
{
    hreq_t *hr = data;
    if (res->err != 0) {
        unavailable(hr);
    } else if (res->result == RES_STORED || res->result == RES_DUPLICATE) {
        int status = dr_status_parse(res->status, strlen(res->status));
        char *body = dr_codec_encode_producer(strtoll(res->id, NULL, 10), 0, 0,
                                              status < 0 ? DR_ST_NOT_DELIVERED : status);
        http_json(hr, 200, body, strlen(body));
        free(body);
    } else if (res->result == RES_TOO_LARGE) {
        rest_auth_error(hr, 400, "the command is larger than the device takes (%s bytes)", res->id);
    } else {
        rest_auth_error(hr, 500, "the command could not be stored");
    }
    hreq_release(hr);
}

static void on_loaded(void *data, int err, const char *errstr, int result, const dr_con_saved_t *v, size_t n)
{
    (void)errstr, (void)result;
    hreq_t *hr = data;
    if (err != 0 || n == 0 || hr->req == NULL) {
        if (err != 0)
            unavailable(hr);
        else
            rest_auth_error(hr, 404, "saved message %lld not found", (long long)hr->id);
        hreq_release(hr);
        return;
    }
    dr_producer_msg_t m = {0};
    m.guarantee = dr_guarantee_parse(v->guarantee, strlen(v->guarantee));
    m.command = dr_strdup(v->command);
    m.data = v->data ? dr_strdup(v->data) : NULL;
    snprintf(hr->dev, sizeof(hr->dev), "%s", v->dev);
    rest_accept(hr, &m, on_sent); /* the normal acceptance path, as any producer message */
    dr_producer_msg_dispose(&m);
}

void saved_send(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, saved_send))
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)hr->id);
    if (dr_con_saved_list(hr->in->node.redis, &hr->in->store, "id", id, 1, on_loaded, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}
