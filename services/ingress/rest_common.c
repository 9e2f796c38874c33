/* Helpers shared by the REST handlers (see rest.h). */
#define DR_MODULE "ingress/rest"

#include <stdio.h>
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
    char token[33];
    store_new_token(token);
    accept_req_t a = {.dev = hr->dev, .dev_len = strlen(hr->dev), .msg = m, .token = token, .key_id = hr->who.key_id};
    store_accept(hr->in, &a, cb, hr);
}

void rest_store_error(hreq_t *hr, const store_result_t *res)
{
    if (res->result == RES_CONFLICT)
        http_error(hr, 409, "IDEMPOTENCY_CONFLICT",
                   "the idempotency key was already used for a different command (message %s)", res->id);
    else
        http_error(hr, 500, "INTERNAL", "the message could not be stored; nothing was accepted");
}

void rest_script(hreq_t *hr, dr_redis_script_t *s, dr_redis_cb *cb, int argc, const char **argv)
{
    const dr_settings_t *cfg = &hr->in->node.cfg;
    const char *av[24];
    char now_s[24], ret_s[24];
    snprintf(now_s, sizeof(now_s), "%lld", (long long)dr_now_ms());
    snprintf(ret_s, sizeof(ret_s), "%lld", (long long)cfg->retention_s);
    av[0] = cfg->redis_prefix;
    av[1] = now_s;
    av[2] = ret_s;
    for (int i = 0; i < argc && i < 21; i++)
        av[3 + i] = argv[i];
    if (dr_redis_eval(hr->in->node.redis, s, cb, hr, argc + 3, av, NULL) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
    }
}

void rest_fetch_msg(hreq_t *hr, dr_redis_cb *cb)
{
    char key[96];
    snprintf(key, sizeof(key), "%sm:%lld", hr->in->node.cfg.redis_prefix, (long long)hr->id);
    const char *argv[] = {"HMGET", key, REST_MSG_FIELDS};
    if (dr_redis_cmd(hr->in->node.redis, cb, hr, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL) != 0) {
        http_unavailable(hr, DR_EUNAVAIL);
        hreq_release(hr);
    }
}

static const char *str_or_null(const redisReply *r, size_t i)
{
    return (i < r->elements && r->element[i]->type == REDIS_REPLY_STRING) ? r->element[i]->str : NULL;
}

int rest_msg_from_reply(const redisReply *reply, rest_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 13 || str_or_null(reply, 0) == NULL)
        return -1;
    m->dev = str_or_null(reply, 0);
    m->st = str_or_null(reply, 1) ? str_or_null(reply, 1) : "UNKNOWN";
    m->g = str_or_null(reply, 2) ? str_or_null(reply, 2) : "RECEIPT_CONFIRMATION";
    m->cmd = str_or_null(reply, 3) ? str_or_null(reply, 3) : "";
    m->data = str_or_null(reply, 4);
    m->key = str_or_null(reply, 5);
    m->tmp = str_or_null(reply, 6);
    m->pd = str_or_null(reply, 7);
    m->ext = str_or_null(reply, 8) && strcmp(str_or_null(reply, 8), "1") == 0;
    m->att = str_or_null(reply, 9) ? strtoll(str_or_null(reply, 9), NULL, 10) : 0;
    m->ts = str_or_null(reply, 10) ? strtoll(str_or_null(reply, 10), NULL, 10) : 0;
    m->chg = str_or_null(reply, 11) ? strtoll(str_or_null(reply, 11), NULL, 10) : 0;
    m->sent = str_or_null(reply, 12) ? strtoll(str_or_null(reply, 12), NULL, 10) : 0;
    return 0;
}

int rest_may_read(const hreq_t *hr, const rest_msg_t *m)
{
    if (!hr->who.authenticated || hr->who.scope == DR_SCOPE_ADMIN)
        return 1;
    if (hr->who.scope == DR_SCOPE_DEVICE)
        return strcmp(m->dev, hr->who.device) == 0;
    return m->key == NULL || strcmp(m->key, hr->who.key_id) == 0;
}

const char *rest_status_name(const char *st, int ext, int v1)
{
    int s = dr_status_parse(st, strlen(st));
    if (s < 0)
        return st;
    return dr_status_name(ext || v1 ? s : dr_status_for_duster(s));
}
