/* Loop side of the ingress: runs the accept and ack scripts for jobs posted by the MQTT callback,
 * answers the waiting callback, wakes the owning dispatcher over NATS and sends error notifications.
 */
#define DR_MODULE "ingress/store"

#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/metrics.h"
#include "dr/status.h"
#include "ingress.h"

static void finish(job_t *j, int err, int result)
{
    ingress_t *in = j->in;
    pthread_mutex_lock(&in->mu);
    j->err = err;
    j->result = result;
    j->done = 1;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

/* Redis errors that go away by themselves: retry rather than drop the message. */
static int transient(const redisReply *reply)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "NOSCRIPT", "READONLY", "MASTERDOWN",
                                           "TRYAGAIN", "OOM", "MISCONF", "NOREPLICAS"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(reply->str, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static void wake(ingress_t *in, uint32_t shard)
{
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "%u", shard);
    if (dr_bus_publish(in->node.bus, in->wake_subject, buf, (size_t)n) != 0)
        dr_metrics_inc(DR_M_BUS_DROPPED);
}

static const char *elem(const redisReply *r, size_t i)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return "";
    const redisReply *e = r->element[i];
    return (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) ? e->str : "";
}

/* Common error handling; returns 1 when the reply was an error and the job is finished. */
static int failed(job_t *j, redisReply *reply, int err)
{
    if (err == 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
        return 0;
    if (err == DR_EREDIS && !transient(reply)) {
        /* A script error is a bug, not an outage: retrying would block every later message. */
        dr_metrics_inc(DR_M_REDIS_ERRORS);
        dr_log(DR_LOG_WARNING, "event=script_error device=\"%s\" error=\"%s\" action=dropped", j->dev, reply->str);
        if (j->kind == JOB_ACCEPT && j->msg.has_cert)
            ingress_notify_error(j->in, j->msg.tmp_id, j->msg.producer_id, "INTERNAL",
                                 "the message could not be stored; nothing was accepted");
        finish(j, 0, RES_FAILED);
        return 1;
    }
    if (err != 0)
        dr_metrics_inc(DR_M_REDIS_ERRORS);
    finish(j, err != 0 ? err : DR_EREDIS, RES_FAILED);
    return 1;
}

static void on_accept(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    job_t *j = data;
    ingress_t *in = j->in;
    if (failed(j, reply, err))
        return;
    const char *what = elem(reply, 0);
    snprintf(j->id, sizeof(j->id), "%s", elem(reply, 1));
    if (strcmp(what, "OK") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_ACCEPTED);
        snprintf(j->status, sizeof(j->status), "%s", elem(reply, 2));
        dr_log(DR_LOG_VERBOSE, "event=accepted id=%s device=\"%s\" guarantee=%s shard=%u%s", j->id, j->dev,
               dr_guarantee_name(j->msg.guarantee), j->shard,
               strcmp(elem(reply, 4), "retry") == 0 ? " note=stored_by_an_earlier_attempt" : "");
        wake(in, j->shard);
        finish(j, 0, RES_STORED);
    } else if (strcmp(what, "DUP") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_DUPLICATE);
        snprintf(j->status, sizeof(j->status), "%s", elem(reply, 2));
        dr_log(DR_LOG_VERBOSE, "event=duplicate id=%s device=\"%s\" key=\"%s\"", j->id, j->dev,
               j->msg.idem_key ? j->msg.idem_key : "");
        wake(in, j->shard);
        finish(j, 0, RES_DUPLICATE);
    } else if (strcmp(what, "CONFLICT") == 0) {
        dr_metrics_inc(DR_M_PRODUCER_CONFLICT);
        dr_log(DR_LOG_NOTICE, "event=idempotency_conflict device=\"%s\" original_id=%s", j->dev, j->id);
        if (j->msg.has_cert)
            ingress_notify_error(in, j->msg.tmp_id, j->msg.producer_id, "IDEMPOTENCY_CONFLICT",
                                 "idempotencyKey was already used for a different command");
        finish(j, 0, RES_CONFLICT);
    } else {
        dr_log(DR_LOG_WARNING, "event=id_space_exhausted device=\"%s\" hint=\"raise ids.max or lower retention_s\"",
               j->dev);
        if (j->msg.has_cert)
            ingress_notify_error(in, j->msg.tmp_id, j->msg.producer_id, "ID_SPACE_EXHAUSTED",
                                 "no free message id; the message was not accepted");
        finish(j, 0, RES_FAILED);
    }
}

static void on_ack(dr_redis_t *r, redisReply *reply, int err, void *data)
{
    (void)r;
    job_t *j = data;
    if (failed(j, reply, err))
        return;
    const char *what = elem(reply, 0);
    if (strcmp(what, "OK") == 0) {
        dr_metrics_inc(DR_M_ACK_APPLIED);
        dr_log(DR_LOG_VERBOSE, "event=ack_applied id=%lld device=\"%s\" status=%s", (long long)j->ack.id, j->dev,
               elem(reply, 1));
        wake(j->in, j->shard);
        finish(j, 0, RES_STORED);
    } else if (strcmp(what, "IGNORED") == 0) {
        dr_metrics_inc(DR_M_ACK_IGNORED);
        dr_log(DR_LOG_VERBOSE, "event=ack_ignored id=%lld device=\"%s\" reported=%s current=%s", (long long)j->ack.id,
               j->dev, dr_status_name(j->ack.status), elem(reply, 1));
        finish(j, 0, RES_IGNORED);
    } else if (strcmp(what, "WRONG_DEVICE") == 0) {
        dr_metrics_inc(DR_M_ACK_WRONG_DEVICE);
        dr_log(DR_LOG_NOTICE, "event=ack_wrong_device id=%lld device=\"%s\"", (long long)j->ack.id, j->dev);
        finish(j, 0, RES_WRONG_DEVICE);
    } else {
        dr_metrics_inc(DR_M_ACK_UNKNOWN_ID);
        dr_log(DR_LOG_VERBOSE, "event=ack_unknown_id id=%lld device=\"%s\"", (long long)j->ack.id, j->dev);
        finish(j, 0, RES_UNKNOWN_ID);
    }
}

static void run_accept(ingress_t *in, job_t *j)
{
    const dr_settings_t *cfg = &in->node.cfg;
    const dr_producer_msg_t *m = &j->msg;
    int64_t now = dr_now_ms();
    char now_s[24], ret_s[24], shard_s[16], tmp_s[24], ttl_s[24], max_s[24], nb_s[24], fp_s[24], idmax_s[24];
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
    snprintf(ret_s, sizeof(ret_s), "%lld", (long long)cfg->retention_s);
    snprintf(shard_s, sizeof(shard_s), "%u", j->shard);
    snprintf(tmp_s, sizeof(tmp_s), "%lld", (long long)m->tmp_id);
    int64_t deadline = 0;
    if (m->ttl_ms > 0)
        deadline = now + m->ttl_ms;
    if (m->deliver_by > 0 && (deadline == 0 || m->deliver_by < deadline))
        deadline = m->deliver_by;
    ttl_s[0] = max_s[0] = nb_s[0] = '\0';
    if (deadline > 0)
        snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)deadline);
    if (m->max_attempts > 0)
        snprintf(max_s, sizeof(max_s), "%lld", (long long)m->max_attempts);
    if (m->not_before > 0)
        snprintf(nb_s, sizeof(nb_s), "%lld", (long long)m->not_before);
    snprintf(fp_s, sizeof(fp_s), "%016llx", (unsigned long long)j->fingerprint);
    snprintf(idmax_s, sizeof(idmax_s), "%lld", (long long)cfg->ids_max);
    /* The token must outlive every retry of this request: retries stop within seconds of Redis
     * answering again, so a few minutes is ample. */
    char rqttl_s[24];
    snprintf(rqttl_s, sizeof(rqttl_s), "%lld", (long long)(cfg->redis_timeout_ms / 1000 * 4 + 300));
    const char *argv[] = {
        cfg->redis_prefix, now_s, ret_s, j->dev, shard_s, dr_guarantee_name(m->guarantee), m->command,
        m->data ? m->data : "", m->has_cert ? tmp_s : "", m->has_cert ? m->producer_id : "", ttl_s, max_s, nb_s,
        m->idem_key ? m->idem_key : "", fp_s, idmax_s, m->ext ? "1" : "0", j->token, rqttl_s,
    };
    if (dr_redis_eval(in->node.redis, in->s_accept, on_accept, j, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL) != 0)
        finish(j, DR_EUNAVAIL, RES_FAILED);
}

static void run_ack(ingress_t *in, job_t *j)
{
    const dr_settings_t *cfg = &in->node.cfg;
    char now_s[24], ret_s[24], id_s[24];
    snprintf(now_s, sizeof(now_s), "%lld", (long long)dr_now_ms());
    snprintf(ret_s, sizeof(ret_s), "%lld", (long long)cfg->retention_s);
    snprintf(id_s, sizeof(id_s), "%lld", (long long)j->ack.id);
    const char *argv[] = {cfg->redis_prefix, now_s, ret_s, j->dev, id_s, dr_status_name(j->ack.status)};
    if (dr_redis_eval(in->node.redis, in->s_ack, on_ack, j, 6, argv, NULL) != 0)
        finish(j, DR_EUNAVAIL, RES_FAILED);
}

void ingress_run_job(void *arg)
{
    job_t *j = arg;
    ingress_t *in = j->in;
    if (in->node.closed) {
        finish(j, DR_ECLOSED, RES_FAILED);
        return;
    }
    if (j->kind == JOB_ACCEPT)
        run_accept(in, j);
    else
        run_ack(in, j);
}

void ingress_notify_error(ingress_t *in, int64_t tmp_id, const char *producer_id, const char *code, const char *message)
{
    char topic[192];
    snprintf(topic, sizeof(topic), "producer/error/%s", producer_id);
    char *body = dr_codec_encode_error(tmp_id, code, message);
    if (in->mqtt == NULL || dr_mqtt_publish(in->mqtt, topic, body, strlen(body), (int)in->node.cfg.mqtt_qos, NULL, NULL) != 0)
        dr_log(DR_LOG_VERBOSE, "event=error_notification_dropped producer=\"%s\" code=%s", producer_id, code);
    free(body);
}

typedef struct {
    ingress_t *in;
    dr_codec_err_t err;
} posted_error_t;

static void run_posted_error(void *arg)
{
    posted_error_t *p = arg;
    if (!p->in->node.closed)
        ingress_notify_error(p->in, p->err.tmp_id, p->err.producer_id, p->err.code, p->err.message);
    free(p);
}

void ingress_post_error(ingress_t *in, const dr_codec_err_t *err)
{
    posted_error_t *p = dr_malloc(sizeof(*p));
    p->in = in;
    p->err = *err;
    if (dr_loop_post(&in->node.loop, run_posted_error, p) != 0)
        free(p);
}
