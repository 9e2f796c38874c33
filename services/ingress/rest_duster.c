/* Duster's REST endpoints (duster-compat.md §4.1), same paths and JSON shapes, with Drover's
 * semantics: a 200 means the message is durable, statuses only move forward, and an ack counts only
 * for the device named in the path. Differences from Duster are listed in docs/protocol.md.
 */
#define DR_MODULE "ingress/rest_duster"

#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "http.h"
#include "rest.h"

/* ---- PUT /producer/request/{deviceId} --------------------------------------------------------- */

typedef struct {
    int has_cert;
    int64_t tmp_id;
} submit_state_t;

static void on_submitted(void *data, const store_result_t *res)
{
    hreq_t *hr = data;
    submit_state_t *st = hr->state;
    if (!http_unavailable(hr, res->err)) {
        if (res->result == RES_STORED || res->result == RES_DUPLICATE) {
            int status = dr_status_parse(res->status, strlen(res->status));
            char *body = dr_codec_encode_producer(strtoll(res->id, NULL, 10), st->has_cert, st->tmp_id,
                                                  status < 0 ? DR_ST_NOT_DELIVERED : status);
            http_json(hr, 200, body, strlen(body));
            free(body);
        } else {
            rest_store_error(hr, res);
        }
    }
    hreq_release(hr);
}

void duster_submit(hreq_t *hr)
{
    dr_producer_msg_t m;
    if (rest_parse_message(hr, &m) != 0) {
        hreq_release(hr);
        return;
    }
    submit_state_t *st = dr_calloc(1, sizeof(*st));
    st->has_cert = m.has_cert;
    st->tmp_id = m.tmp_id;
    hr->state = st;
    hr->free_state = free;
    rest_accept(hr, &m, on_submitted);
    dr_producer_msg_dispose(&m);
}

/* ---- POST /consumer/request/{deviceId} -------------------------------------------------------- */

static void on_acked(void *data, const store_result_t *res)
{
    hreq_t *hr = data;
    if (!http_unavailable(hr, res->err)) {
        if (res->result == RES_UNKNOWN_ID || res->result == RES_WRONG_DEVICE)
            http_error(hr, 404, "NOT_FOUND", "message %s not found for device %s", res->id, hr->dev);
        else
            http_empty(hr, 200); /* Duster: 200 with an empty body, also when the status is not applied */
    }
    hreq_release(hr);
}

void duster_ack(hreq_t *hr)
{
    dr_ack_t ack;
    if (rest_parse_ack(hr, &ack) != 0) {
        hreq_release(hr);
        return;
    }
    ingest_ack(hr->in, hr->dev, ack.id, ack.status, 0, on_acked, hr);
}

/* ---- GET /consumer/getLastMessage/{deviceId} -------------------------------------------------- */

static void on_peeked(void *data, int err, const char *errstr, const dr_store_send_t *msg)
{
    hreq_t *hr = data;
    if (!rest_store_failed(hr, err, errstr)) {
        if (msg == NULL) {
            http_json(hr, 200, "[]", 2);
        } else {
            char *one = dr_codec_encode_consumer(msg->id, msg->guarantee, msg->command,
                                                 msg->sent_ms > 0 ? msg->sent_ms : dr_now_ms(), msg->data);
            size_t n = strlen(one);
            char *body = dr_malloc(n + 3);
            body[0] = '[';
            memcpy(body + 1, one, n);
            body[n + 1] = ']';
            body[n + 2] = '\0';
            http_json(hr, 200, body, n + 2);
            free(body);
            free(one);
        }
    }
    hreq_release(hr);
}

void duster_peek(hreq_t *hr)
{
    int rc = dr_store_peek(hr->in->node.redis, &hr->in->store, hr->dev, on_peeked, hr);
    if (rc != 0) {
        http_unavailable(hr, rc);
        hreq_release(hr);
    }
}

/* ---- GET /producer/getMessageStatus/{messageId} ----------------------------------------------- */

static void on_status(hreq_t *hr, const dr_store_msg_t *m)
{
    if (m == NULL) {
        http_error(hr, 404, "NOT_FOUND", "Message not found for id: %lld", (long long)hr->id);
    } else {
        char body[96];
        int n = snprintf(body, sizeof(body), "{\"deliveryStatus\":\"%s\"}", rest_status_name(m->status, m->ext, 0));
        http_json(hr, 200, body, (size_t)n);
    }
    hreq_release(hr);
}

void duster_status(hreq_t *hr)
{
    rest_load_msg(hr, on_status);
}
