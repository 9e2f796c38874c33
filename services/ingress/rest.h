/* Helpers shared by the REST handlers (rest_common.c). Private to the ingress. */
#ifndef DR_INGRESS_REST_H
#define DR_INGRESS_REST_H

#include "http.h"

/* The fields of a message record that handlers need (borrowed from the reply). */
typedef struct {
    const char *dev, *st, *g, *cmd, *data, *key, *tmp, *pd;
    int ext;
    long long att, ts, chg, sent;
} rest_msg_t;

/* Parses the body as a producer message (Duster field names plus Drover's optional fields) and
 * applies the Idempotency-Key header. Answers 400/413/415 itself and returns -1 on failure. */
int rest_parse_message(hreq_t *hr, dr_producer_msg_t *m);

/* Parses the body as an ack. Answers 400 itself and returns -1 on failure. */
int rest_parse_ack(hreq_t *hr, dr_ack_t *ack);

/* Runs the accept script for hr->dev; cb gets hr as data. */
void rest_accept(hreq_t *hr, const dr_producer_msg_t *m, store_cb *cb);

/* Answers a failed store result (409 conflict, 500 internal). */
void rest_store_error(hreq_t *hr, const store_result_t *res);

/* Runs a script with the standard first arguments (prefix, now, retention) then argv. On a refusal
 * (Redis not ready) answers 503 and releases hr. */
void rest_script(hreq_t *hr, dr_redis_script_t *s, dr_redis_cb *cb, int argc, const char **argv);

/* HMGET of message hr->id; cb gets hr as data. Use rest_msg_from_reply on the reply. */
void rest_fetch_msg(hreq_t *hr, dr_redis_cb *cb);
#define REST_MSG_FIELDS "dev", "st", "g", "cmd", "data", "key", "tmp", "pd", "ext", "att", "ts", "chg", "sent"
int rest_msg_from_reply(const redisReply *reply, rest_msg_t *m);

/* May the caller read this message? Admin: yes. Device key: only its device's. Producer key: messages
 * it submitted, and messages submitted without a key (over MQTT). */
int rest_may_read(const hreq_t *hr, const rest_msg_t *m);

/* Status as this client may see it: Drover-only outcomes shown as their Duster equivalent unless the
 * message used Drover-only fields or the client speaks v1. */
const char *rest_status_name(const char *st, int ext, int v1);

#endif
