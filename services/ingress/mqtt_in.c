/* MQTT input: producer messages and device acks from the ingress's shared subscriptions.
 *
 * DESIGN
 * dr_mqttc hands every message to the loop with a token; the broker's PUBACK for it goes out only
 * when the token is acknowledged, in arrival order (MQTT 3.1.1 §4.6). A valid producer message or
 * ack is queued for the next batch (ingest.c) and its token acknowledged once the batch is durable.
 * While Redis is unreachable nothing is acknowledged: the broker keeps the messages (and queues
 * later ones in our persistent session), and dr_mqttc keeps the session alive meanwhile. Invalid
 * input is answered (counter, rate-limited log line, error notification when the certificate can be
 * read) and acknowledged at once, so it can never block the queue or disturb the session.
 * Topic rules follow Duster: the device id is the last topic segment.
 */
#define DR_MODULE "ingress/mqtt_in"

#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "ingress.h"

#define PRODUCER_PREFIX "producer/request/"
#define ACK_PREFIX "consumer/response/"
#define PARSE_LIMIT (1024 * 1024) /* oversized input is still read this far to find the certificate */

/* ---- rate-limited logging of rejected input -------------------------------------------------- */

static dr_log_limit_t rejections;

static int may_log(void)
{
    return dr_log_limit_ok(&rejections, 20, DR_LOG_NOTICE, DR_MODULE, "rejections_not_logged");
}

/* ---- completion: acknowledge to the broker once stored --------------------------------------- */

typedef struct {
    ingress_t *in;
    uint64_t token;
    int has_cert;
    int64_t tmp_id;
    char producer_id[DR_MAX_PRODUCER_ID + 1];
} pending_t;

static void on_stored(void *data, const store_result_t *res)
{
    pending_t *p = data;
    ingress_t *in = p->in;
    /* err: shutting down before it was stored: no PUBACK, the broker delivers it again. */
    if (res->err == 0) {
        if (res->notify != NULL && p->has_cert)
            mqtt_in_notify_error(in, p->tmp_id, p->producer_id, res->notify, ingest_notify_text(res->notify));
        if (in->mqtt != NULL)
            dr_mqttc_ack(in->mqtt, p->token);
    }
    free(p);
}

void mqtt_in_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code,
                          const char *message)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "producer/error/%s", producer_id);
    char *body = dr_codec_encode_error(tmp_id, code, message);
    if (in->mqtt == NULL ||
        dr_mqttc_publish(in->mqtt, topic, body, strlen(body), (int)in->node.cfg.mqtt_qos, NULL, NULL) != 0)
        dr_log(DR_LOG_VERBOSE, "event=error_notification_dropped producer=\"%s\" code=%s", producer_id, code);
    free(body);
}

static void reject_producer(ingress_t *in, const char *dev, size_t dev_len, dr_codec_err_t *err)
{
    dr_metrics_inc(DR_M_PRODUCER_REJECTED);
    if (may_log())
        dr_log(DR_LOG_NOTICE, "event=producer_rejected device=\"%.*s\" code=%s reason=\"%s\" certificate=%s",
               (int)(dev_len > 64 ? 64 : dev_len), dev, err->code, err->message, err->has_cert ? "yes" : "no");
    if (err->has_cert)
        mqtt_in_notify_error(in, err->tmp_id, err->producer_id, err->code, err->message);
}

/* Returns 1 when the message was queued (its token is acknowledged later), 0 when it was answered. */
static int handle_producer(ingress_t *in, const char *dev, size_t dev_len, const char *payload, size_t len,
                           uint64_t token)
{
    dr_codec_err_t err;
    dr_producer_msg_t msg;
    memset(&msg, 0, sizeof(msg));
    const dr_settings_t *cfg = &in->node.cfg;

    if (len > (size_t)cfg->ingress_max_payload) {
        dr_producer_msg_t tmp;
        memset(&err, 0, sizeof(err));
        if (len <= PARSE_LIMIT && dr_codec_parse_producer(payload, len, &tmp, &err) == 0) {
            err.has_cert = tmp.has_cert;
            err.tmp_id = tmp.tmp_id;
            if (tmp.has_cert)
                snprintf(err.producer_id, sizeof(err.producer_id), "%s", tmp.producer_id);
            dr_producer_msg_dispose(&tmp);
        }
        err.code = "TOO_LARGE";
        snprintf(err.message, sizeof(err.message), "payload of %zu bytes exceeds the limit of %lld bytes", len,
                 (long long)cfg->ingress_max_payload);
        reject_producer(in, dev, dev_len, &err);
        return 0;
    }
    if (dr_codec_parse_producer(payload, len, &msg, &err) != 0) {
        reject_producer(in, dev, dev_len, &err);
        return 0;
    }
    if (dr_codec_check_id(dev, dev_len, (size_t)cfg->ingress_max_device_id) != 0) {
        err.code = "BAD_DEVICE_ID";
        snprintf(err.message, sizeof(err.message),
                 "device id must be 1..%lld bytes of UTF-8 valid in a topic, without '/', '+' or '#'",
                 (long long)cfg->ingress_max_device_id);
        err.has_cert = msg.has_cert;
        err.tmp_id = msg.tmp_id;
        if (msg.has_cert)
            snprintf(err.producer_id, sizeof(err.producer_id), "%s", msg.producer_id);
        reject_producer(in, dev, dev_len, &err);
        dr_producer_msg_dispose(&msg);
        return 0;
    }
    pending_t *p = dr_calloc(1, sizeof(*p));
    p->in = in;
    p->token = token;
    p->has_cert = msg.has_cert;
    p->tmp_id = msg.tmp_id;
    if (msg.has_cert)
        snprintf(p->producer_id, sizeof(p->producer_id), "%s", msg.producer_id);
    accept_req_t a = {.dev = dev, .dev_len = dev_len, .msg = &msg, .key_id = "", .hold = 1};
    ingest_accept(in, &a, on_stored, p);
    dr_producer_msg_dispose(&msg);
    return 1;
}

static int handle_ack(ingress_t *in, const char *dev, size_t dev_len, const char *payload, size_t len, uint64_t token)
{
    dr_ack_t ack;
    dr_codec_err_t err;
    const dr_settings_t *cfg = &in->node.cfg;
    int bad = 0;
    if (len > (size_t)cfg->ingress_max_payload) {
        bad = 1;
        err.code = "TOO_LARGE";
        snprintf(err.message, sizeof(err.message), "ack of %zu bytes exceeds the payload limit", len);
    } else if (dr_codec_parse_ack(payload, len, &ack, &err) != 0) {
        bad = 1;
    } else if (dr_codec_check_id(dev, dev_len, (size_t)cfg->ingress_max_device_id) != 0) {
        bad = 1;
        err.code = "BAD_DEVICE_ID";
        snprintf(err.message, sizeof(err.message), "invalid device id in the ack topic");
    }
    if (bad) {
        dr_metrics_inc(DR_M_ACK_REJECTED);
        if (may_log())
            dr_log(DR_LOG_NOTICE, "event=ack_rejected device=\"%.*s\" code=%s reason=\"%s\"",
                   (int)(dev_len > 64 ? 64 : dev_len), dev, err.code, err.message);
        return 0;
    }
    pending_t *p = dr_calloc(1, sizeof(*p));
    p->in = in;
    p->token = token;
    char devz[256];
    snprintf(devz, sizeof(devz), "%.*s", (int)dev_len, dev);
    ingest_ack(in, devz, ack.id, ack.status, 1, on_stored, p);
    return 1;
}

void mqtt_in_on_message(void *data, const dr_mqttc_msg_t *msg)
{
    ingress_t *in = data;
    const char *topic = msg->topic;
    size_t topic_len = msg->topic_len;
    const char *seg = topic;
    for (size_t i = 0; i < topic_len; i++)
        if (topic[i] == '/')
            seg = topic + i + 1;
    size_t seg_len = topic_len - (size_t)(seg - topic);
    int queued = 0;
    if (in->node.stopping)
        return; /* not acknowledged: the broker delivers it again (to another node or after restart) */
    /* Duster's filter producer/request/# also matched "producer/request" itself: no device id. */
    if (topic_len == sizeof(PRODUCER_PREFIX) - 2 && memcmp(topic, PRODUCER_PREFIX, topic_len) == 0)
        queued = handle_producer(in, "", 0, msg->payload, msg->len, msg->token);
    else if (topic_len >= sizeof(PRODUCER_PREFIX) - 1 && memcmp(topic, PRODUCER_PREFIX, sizeof(PRODUCER_PREFIX) - 1) == 0)
        queued = handle_producer(in, seg, seg_len, msg->payload, msg->len, msg->token);
    else if (topic_len >= sizeof(ACK_PREFIX) - 1 && memcmp(topic, ACK_PREFIX, sizeof(ACK_PREFIX) - 1) == 0)
        queued = handle_ack(in, seg, seg_len, msg->payload, msg->len, msg->token);
    else if (may_log())
        dr_log(DR_LOG_NOTICE, "event=unexpected_topic topic=\"%.*s\"", (int)(topic_len > 128 ? 128 : topic_len), topic);
    if (!queued && msg->token != 0)
        dr_mqttc_ack(in->mqtt, msg->token);
}
