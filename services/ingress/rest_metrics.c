/* GET /metrics on the ingress's REST listener: the common families (dr/metrics.h) and the ingress's
 * own gauges, in the Prometheus text format. An open route like /healthz: it shows counts and states,
 * never message content, device ids or keys. Answered from memory on the loop thread, so the transport
 * splits of the counters are exact (see dr/metrics.h). */
#define DR_MODULE "ingress/metrics"

#include "dr/metrics.h"
#include "dr/prom.h"
#include "http.h"

static void gauge(dr_prom_t *p, const char *name, const char *help, double v)
{
    dr_prom_family(p, name, "gauge", help);
    dr_prom_sample(p, name, NULL, v);
}

void rest_metrics(hreq_t *hr)
{
    ingress_t *in = hr->in;
    dr_prom_t p;
    dr_prom_init(&p);
    dr_metrics_expose(&p, DR_BUILD_VERSION);
    gauge(&p, "drover_mqtt_connected", "1 while the broker connection is ready.",
          in->mqtt != NULL && dr_mqttc_connected(in->mqtt));
    gauge(&p, "drover_redis_connected", "1 while the Redis connection is ready.",
          dr_redis_ready(in->node.redis));
    gauge(&p, "drover_nats_connected", "1 while the NATS connection is up.", dr_bus_connected(in->node.bus));
    gauge(&p, "drover_ingest_pending", "Producer messages and acks queued or in a Redis call.",
          in->ingest != NULL ? (double)ingest_pending(in->ingest) : 0);
    gauge(&p, "drover_notifications_in_flight", "Status notifications being published.",
          in->notes != NULL ? (double)dr_notes_in_flight(in->notes) : 0);
    gauge(&p, "drover_sse_streams", "Open event streams (GET /v1/events).", in->sse_streams);
    if (hr->req != NULL) {
        h2o_req_t *req = hr->req;
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT(DR_PROM_CONTENT_TYPE));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
        req->res.content_length = p.len;
        /* h2o_send_inline copies the body into the request's pool. */
        h2o_send_inline(req, p.buf, p.len);
    }
    dr_prom_dispose(&p);
    hreq_release(hr);
}
