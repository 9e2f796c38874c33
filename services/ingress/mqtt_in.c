/* MQTT input: the paho message callback of the ingress.
 *
 * DESIGN
 * The callback runs on paho's receive thread and paho sends the QoS 1 PUBACK only when it returns,
 * so the callback waits for the loop to finish the Redis script: a producer message is acknowledged
 * to the broker only once Redis has it durably. While Redis is unreachable the callback keeps
 * retrying and the broker keeps the message (and queues later ones in our persistent session).
 * Completion reports (COMPLETED, COMPLETED_WITH_ERROR) are held the same way: nothing would repeat
 * them. A plain receipt ack (DELIVERED) is different: if it is lost, the message stays in flight and
 * the dispatcher re-sends it with the same id, which makes the device acknowledge again. Receipt acks
 * are therefore handed to the loop without waiting (store.c, ingress_defer_ack), so they neither
 * queue behind producer messages nor hold paho's single receive thread, and many share one fsync.
 * Invalid input is answered (counter, rate-limited log line, error notification when possible) and
 * acknowledged, so it can never block the queue or disturb the session.
 * Topic rules follow Duster: the device id is the last topic segment.
 */
#define DR_MODULE "ingress/mqtt_in"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "ingress.h"

#define PRODUCER_PREFIX "producer/request/"
#define ACK_PREFIX "consumer/response/"
#define PARSE_LIMIT (1024 * 1024) /* oversized input is still read this far to find the certificate */

/* ---- rate-limited logging of rejected input (paho thread only) --------------------------------- */

static int64_t log_window_start;
static int log_window_count, log_suppressed;

static int may_log(void)
{
    int64_t now = dr_mono_ms();
    if (now - log_window_start >= 1000) {
        if (log_suppressed > 0)
            dr_log(DR_LOG_NOTICE, "event=rejections_not_logged count=%d", log_suppressed);
        log_window_start = now;
        log_window_count = 0;
        log_suppressed = 0;
    }
    if (log_window_count++ < 20)
        return 1;
    log_suppressed++;
    return 0;
}

/* ---- parking: holding a message without acknowledging it --------------------------------------- */

/* Waits until shutdown has disconnected MQTT, so returning cannot acknowledge the message. */
static void park(ingress_t *in)
{
    atomic_fetch_add(&in->parked, 1);
    pthread_mutex_lock(&in->mu);
    while (!in->released)
        pthread_cond_wait(&in->cv, &in->mu);
    pthread_mutex_unlock(&in->mu);
    atomic_fetch_sub(&in->parked, 1);
}

/* Runs a job on the loop and waits for its answer, retrying transient failures for as long as it takes.
 * Returns 0 with the job answered, or -1 when shutdown interrupted it (the caller must park). */
static int run_job(ingress_t *in, job_t *j)
{
    int delay_ms = 50;
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&in->mu);
        j->done = 0;
        pthread_mutex_unlock(&in->mu);
        if (dr_loop_post(&in->node.loop, ingress_run_job, j) != 0)
            return -1;
        pthread_mutex_lock(&in->mu);
        while (!j->done)
            pthread_cond_wait(&in->cv, &in->mu);
        pthread_mutex_unlock(&in->mu);
        if (j->res.err == 0)
            return 0;
        if (atomic_load(&in->stopping))
            return -1;
        if (attempt == 0 || attempt % 50 == 0)
            dr_log(DR_LOG_WARNING, "event=store_retry kind=%s attempt=%d error=\"%s\" action=holding_message",
                   j->kind == JOB_ACCEPT ? "producer" : "ack", attempt + 1, dr_strerror(j->res.err));
        usleep((useconds_t)delay_ms * 1000);
        delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
    }
}

/* ---- producer messages and acks --------------------------------------------------------------- */

void ingress_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code, const char *message)
{
    char topic[192];
    snprintf(topic, sizeof(topic), "producer/error/%s", producer_id);
    char *body = dr_codec_encode_error(tmp_id, code, message);
    if (dr_mqtt_publish_now(in->mqtt, topic, body, strlen(body), (int)in->node.cfg.mqtt_qos) != 0)
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
        ingress_notify_error(in, err->tmp_id, err->producer_id, err->code, err->message);
}

static int handle_producer(ingress_t *in, const char *dev, size_t dev_len, const char *payload, size_t len)
{
    job_t j;
    dr_codec_err_t err;
    memset(&j, 0, sizeof(j));
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
    if (dr_codec_parse_producer(payload, len, &j.msg, &err) != 0) {
        reject_producer(in, dev, dev_len, &err);
        return 0;
    }
    if (dr_codec_check_id(dev, dev_len, (size_t)cfg->ingress_max_device_id) != 0) {
        err.code = "BAD_DEVICE_ID";
        snprintf(err.message, sizeof(err.message),
                 "device id must be 1..%lld bytes without '/', '+', '#' or control characters",
                 (long long)cfg->ingress_max_device_id);
        err.has_cert = j.msg.has_cert;
        err.tmp_id = j.msg.tmp_id;
        if (j.msg.has_cert)
            snprintf(err.producer_id, sizeof(err.producer_id), "%s", j.msg.producer_id);
        reject_producer(in, dev, dev_len, &err);
        dr_producer_msg_dispose(&j.msg);
        return 0;
    }
    j.in = in;
    j.kind = JOB_ACCEPT;
    j.dev = dr_strndup(dev, dev_len);
    store_new_token(j.token);
    int rc = run_job(in, &j);
    if (rc == 0 && j.res.notify != NULL && j.msg.has_cert)
        ingress_notify_error(in, j.msg.tmp_id, j.msg.producer_id, j.res.notify, store_notify_text(j.res.notify));
    free(j.dev);
    dr_producer_msg_dispose(&j.msg);
    return rc;
}

static int handle_ack(ingress_t *in, const char *dev, size_t dev_len, const char *payload, size_t len)
{
    job_t j;
    dr_codec_err_t err;
    memset(&j, 0, sizeof(j));
    const dr_settings_t *cfg = &in->node.cfg;
    int bad = 0;
    if (len > (size_t)cfg->ingress_max_payload) {
        bad = 1;
        err.code = "TOO_LARGE";
        snprintf(err.message, sizeof(err.message), "ack of %zu bytes exceeds the payload limit", len);
    } else if (dr_codec_parse_ack(payload, len, &j.ack, &err) != 0) {
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
    /* A receipt ack whose loss a re-send repairs is applied without holding paho's receive thread. */
    if (j.ack.status == DR_ST_DELIVERED && ingress_defer_ack(in, dev, dev_len, &j.ack) == 0)
        return 0;
    j.in = in;
    j.kind = JOB_ACK;
    j.dev = dr_strndup(dev, dev_len);
    int rc = run_job(in, &j);
    free(j.dev);
    return rc;
}

void ingress_on_message(void *data, const char *topic, size_t topic_len, const char *payload, size_t len, int dup)
{
    ingress_t *in = data;
    (void)dup;
    /* busy first, then the flag: shutdown waits for every callback that saw stopping == 0. */
    atomic_fetch_add(&in->busy, 1);
    if (atomic_load(&in->stopping)) {
        atomic_fetch_sub(&in->busy, 1);
        park(in);
        return;
    }
    const char *seg = topic;
    for (size_t i = 0; i < topic_len; i++)
        if (topic[i] == '/')
            seg = topic + i + 1;
    size_t seg_len = topic_len - (size_t)(seg - topic);
    int rc = 0;
    /* Duster's filter producer/request/# also matched "producer/request" itself: no device id. */
    if (topic_len == sizeof(PRODUCER_PREFIX) - 2 && memcmp(topic, PRODUCER_PREFIX, topic_len) == 0)
        rc = handle_producer(in, "", 0, payload, len);
    else if (topic_len >= sizeof(PRODUCER_PREFIX) - 1 && memcmp(topic, PRODUCER_PREFIX, sizeof(PRODUCER_PREFIX) - 1) == 0)
        rc = handle_producer(in, seg, seg_len, payload, len);
    else if (topic_len >= sizeof(ACK_PREFIX) - 1 && memcmp(topic, ACK_PREFIX, sizeof(ACK_PREFIX) - 1) == 0)
        rc = handle_ack(in, seg, seg_len, payload, len);
    else if (may_log())
        dr_log(DR_LOG_NOTICE, "event=unexpected_topic topic=\"%.*s\"", (int)(topic_len > 128 ? 128 : topic_len), topic);
    atomic_fetch_sub(&in->busy, 1);
    if (rc != 0)
        park(in);
}
