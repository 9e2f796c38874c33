/* Helpers shared by the REST handlers (rest_common.c). Private to the ingress. Loop thread only. */
#ifndef DR_INGRESS_REST_H
#define DR_INGRESS_REST_H

#include "http.h"

/* Parses the body as a producer message (Duster field names plus Drover's optional fields) and
 * applies the Idempotency-Key header. Answers 400/413/415 itself and returns -1 on failure. */
int rest_parse_message(hreq_t *hr, dr_producer_msg_t *m);

/* Parses the body as an ack. Answers 400 itself and returns -1 on failure. */
int rest_parse_ack(hreq_t *hr, dr_ack_t *ack);

/* Queues m for hr->dev with the caller's key id; cb gets hr as data. m is copied. */
void rest_accept(hreq_t *hr, const dr_producer_msg_t *m, store_cb *cb);

/* Answers a failed store result (409 conflict, 500 internal). */
void rest_store_error(hreq_t *hr, const store_result_t *res);

/* Answers 503 when a store call failed (err != 0) and returns 1; returns 0 when err is 0. A Redis
 * error reply (DR_EREDIS: a bug in the function library, or a misconfigured Redis) is also logged,
 * rate-limited. errstr may be NULL. */
int rest_store_failed(hreq_t *hr, int err, const char *errstr);

/* Called with message hr->id, or m NULL when it does not exist or the caller may not read it
 * (answer 404 then). m and what it points to are valid during the call only. The callback answers
 * and releases hr. */
typedef void rest_msg_cb(hreq_t *hr, const dr_store_msg_t *m);

/* Loads message hr->id (dr_store_get) and calls cb once. When the store cannot answer, it answers
 * 503 itself, releases hr and does not call cb. */
void rest_load_msg(hreq_t *hr, rest_msg_cb *cb);

/* May the caller read this message? Admin: yes. Device key: only its device's. Producer key: messages
 * it submitted, and messages submitted without a key (over MQTT). */
int rest_may_read(const hreq_t *hr, const dr_store_msg_t *m);

/* The caller argument of the store's cancel and purge: "" for an admin (every message), the key id
 * for a producer key (only the messages that key submitted; never those submitted over MQTT). */
const char *rest_owner(const hreq_t *hr);

/* Status as this client may see it: Drover-only outcomes shown as their Duster equivalent unless the
 * message used Drover-only fields or the client speaks v1. */
const char *rest_status_name(int status, int ext, int v1);

#endif
