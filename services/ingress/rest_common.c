/* Helpers shared by the REST handlers (see rest.h): request bodies, submitting, loading one message
 * through the store (dr/store.h) and the rules of who may read and change which message. */
#define DR_MODULE "ingress/rest"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "rest.h"

int rest_parse_message(hreq_t *hr, dr_producer_msg_t *m)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1)
        return -1;
    if (body == NULL) {
        http_error(hr, 400, "BAD_JSON", "a JSON body is required");
        return -1;
    }
    dr_codec_err_t err;
    if (dr_codec_parse_producer(body, len, m, &err) != 0) {
        dr_metrics_inc(DR_M_PRODUCER_REJECTED);
        dr_metrics_inc(DR_M_PRODUCER_REJECTED_REST);
        http_error(hr, 400, err.code, "%s", err.message);
        return -1;
    }
    size_t kl;
    const char *key = http_header(hr, "idempotency-key", &kl);
    if (key != NULL) {
        if (kl == 0 || kl > DR_MAX_IDEM_KEY || memchr(key, '\0', kl) != NULL) {
            http_error(hr, 400, "BAD_FIELD", "Idempotency-Key must be 1..%d bytes", DR_MAX_IDEM_KEY);
            dr_producer_msg_dispose(m);
            return -1;
        }
        free(m->idem_key);
        m->idem_key = dr_strndup(key, kl);
        m->ext = 1;
    }
    if (m->idem_key != NULL && hr->who.key_id[0] != '\0') {
        /* Keys are scoped to the API key that used them, so two clients can never collide. */
        char scoped[DR_MAX_IDEM_KEY + DR_APIKEY_ID_LEN + 2];
        snprintf(scoped, sizeof(scoped), "%s:%s", hr->who.key_id, m->idem_key);
        free(m->idem_key);
        m->idem_key = dr_strdup(scoped);
    }
    return 0;
}

int rest_parse_ack(hreq_t *hr, dr_ack_t *ack)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1)
        return -1;
    if (body == NULL) {
        http_error(hr, 400, "BAD_JSON", "a JSON body is required");
        return -1;
    }
    dr_codec_err_t err;
    if (dr_codec_parse_ack(body, len, ack, &err) != 0) {
        dr_metrics_inc(DR_M_ACK_REJECTED);
        http_error(hr, 400, err.code, "%s", err.message);
        return -1;
    }
    return 0;
}

void rest_accept(hreq_t *hr, const dr_producer_msg_t *m, store_cb *cb)
{
    accept_req_t a = {.dev = hr->dev, .dev_len = strlen(hr->dev), .msg = m, .key_id = hr->who.key_id};
    ingest_accept(hr->in, &a, cb, hr);
}

void rest_store_error(hreq_t *hr, const store_result_t *res)
{
    if (res->result == RES_CONFLICT)
        http_error(hr, 409, "IDEMPOTENCY_CONFLICT",
                   "the idempotency key was already used for a different command (message %s)", res->id);
    else if (res->result == RES_TOO_LARGE)
        http_error(hr, 413, "TOO_LARGE", "the command message is larger than this device takes (%s bytes)", res->id);
    else
        http_error(hr, 500, "INTERNAL", "the message could not be stored; nothing was accepted");
}

int rest_store_failed(hreq_t *hr, int err, const char *errstr)
{
    if (err == 0)
        return 0;
    if (err == DR_EREDIS) {
        static int64_t last_log;
        int64_t now = dr_mono_ms();
        if (now - last_log >= 1000) {
            last_log = now;
            h2o_iovec_t path = hr->req ? hr->req->path_normalized : h2o_iovec_init(H2O_STRLIT("-"));
            dr_log(DR_LOG_WARNING, "event=store_call_failed path=\"%.*s\" error=\"%s\"", (int)path.len, path.base,
                   errstr ? errstr : "");
        }
    }
    return http_unavailable(hr, err);
}

/* ---- loading one message ---------------------------------------------------------------------- */

typedef struct {
    hreq_t *hr;
    rest_msg_cb *cb;
} load_t;

static void on_loaded(void *data, int err, const char *errstr, const dr_store_msg_t *msgs, size_t n)
{
    load_t *l = data;
    hreq_t *hr = l->hr;
    rest_msg_cb *cb = l->cb;
    free(l);
    if (rest_store_failed(hr, err, errstr)) {
        hreq_release(hr);
        return;
    }
    const dr_store_msg_t *m = n == 1 && msgs[0].found ? &msgs[0] : NULL;
    cb(hr, m != NULL && rest_may_read(hr, m) ? m : NULL);
}

void rest_load_msg(hreq_t *hr, rest_msg_cb *cb)
{
    load_t *l = dr_malloc(sizeof(*l));
    l->hr = hr;
    l->cb = cb;
    int rc = dr_store_get(hr->in->node.redis, &hr->in->store, &hr->id, 1, on_loaded, l);
    if (rc != 0) {
        free(l);
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- who may see and change what --------------------------------------------------------------- */

int rest_may_read(const hreq_t *hr, const dr_store_msg_t *m)
{
    if (!hr->who.authenticated || hr->who.scope == DR_SCOPE_ADMIN)
        return 1;
    if (hr->who.scope == DR_SCOPE_DEVICE)
        return strcmp(m->dev, hr->who.device) == 0;
    return m->key_id[0] == '\0' || strcmp(m->key_id, hr->who.key_id) == 0;
}

const char *rest_owner(const hreq_t *hr)
{
    if (hr->who.authenticated && hr->who.scope == DR_SCOPE_ADMIN)
        return "";
    /* Never "" for anyone else: that would make the caller an operator. No message is submitted by
     * key "-" (key ids are hex), so a caller without a key id owns nothing. */
    return hr->who.key_id[0] != '\0' ? hr->who.key_id : "-";
}

const char *rest_status_name(int status, int ext, int v1)
{
    if (status < 0)
        return "UNKNOWN";
    return dr_status_name(ext || v1 ? status : dr_status_for_duster(status));
}
