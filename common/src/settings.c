/* The option table shared by all services. Defaults follow Duster where Duster had a setting (2 s pacing,
 * QoS 1) and the delivery contract elsewhere (durable acceptance, bounded retries with back-off). */
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/config.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/settings.h"

#define S(f) offsetof(dr_settings_t, f)
#define OPT(name, type, min, max, def, field, flags, help) {name, type, min, max, def, (void *)(uintptr_t)S(field), flags, help}

/* Field pointers are offsets here and relocated onto the caller's struct in bind(). */
static const dr_config_opt_t table[] = {
    OPT("node.id", DR_CFG_STR, 0, 64, "", node_id, 0, "stable node name (default <service>-<hostname>)"),
    OPT("log.level", DR_CFG_STR, 1, 16, "notice", log_level, 0, "debug, verbose, notice or warning"),
    OPT("redis.host", DR_CFG_STR, 1, 255, "127.0.0.1", redis_host, 0, "Redis host"),
    OPT("redis.port", DR_CFG_INT, 1, 65535, "6379", redis_port, 0, "Redis port"),
    OPT("redis.password", DR_CFG_STR, 0, 512, "", redis_password, DR_CFG_SECRET, "Redis AUTH password"),
    OPT("redis.prefix", DR_CFG_STR, 1, 64, "dr:", redis_prefix, 0, "prefix of every Redis key"),
    OPT("redis.timeout_ms", DR_CFG_INT, 100, 600000, "5000", redis_timeout_ms, 0, "connect and command timeout"),
    OPT("nats.url", DR_CFG_STR, 1, 1024, "nats://127.0.0.1:4222", nats_url, 0, "NATS server URL(s), comma separated"),
    OPT("nats.user", DR_CFG_STR, 0, 255, "", nats_user, 0, "NATS user"),
    OPT("nats.password", DR_CFG_STR, 0, 512, "", nats_password, DR_CFG_SECRET, "NATS password"),
    OPT("nats.subject_prefix", DR_CFG_STR, 1, 64, "drover.", nats_subject_prefix, 0, "prefix of NATS subjects"),
    OPT("mqtt.url", DR_CFG_STR, 1, 1024, "tcp://127.0.0.1:1883", mqtt_url, 0, "MQTT broker URL"),
    OPT("mqtt.username", DR_CFG_STR, 0, 255, "", mqtt_username, 0, "MQTT user name"),
    OPT("mqtt.password", DR_CFG_STR, 0, 512, "", mqtt_password, DR_CFG_SECRET, "MQTT password"),
    OPT("mqtt.qos", DR_CFG_INT, 0, 1, "1", mqtt_qos, 0, "QoS of publishes to devices and producers"),
    OPT("mqtt.keepalive_s", DR_CFG_INT, 5, 3600, "60", mqtt_keepalive_s, 0, "MQTT keepalive"),
    OPT("mqtt.share_group", DR_CFG_STR, 1, 64, "drover", mqtt_share_group, 0, "shared-subscription group"),
    OPT("ingress.max_payload", DR_CFG_INT, 256, 16777216, "65536", ingress_max_payload, 0, "largest accepted payload (bytes)"),
    OPT("ingress.max_device_id", DR_CFG_INT, 1, 200, "128", ingress_max_device_id, 0, "longest device id (bytes)"),
    OPT("http.port", DR_CFG_INT, 0, 65535, "8080", http_port, 0, "REST API port (0: no REST API)"),
    OPT("http.bind", DR_CFG_STR, 1, 255, "127.0.0.1", http_bind, 0, "REST API listen address"),
    OPT("http.max_body", DR_CFG_INT, 256, 16777216, "65536", http_max_body, 0, "largest request body (bytes)"),
    OPT("http.max_depth", DR_CFG_INT, 2, 256, "32", http_max_depth, 0, "deepest JSON nesting accepted"),
    OPT("http.duster_open", DR_CFG_INT, 0, 1, "0", http_duster_open, 0, "1: Duster paths without a key (loopback only)"),
    OPT("http.rate", DR_CFG_INT, 1, 1000000, "200", http_rate, 0, "requests per second per API key"),
    OPT("http.burst", DR_CFG_INT, 1, 1000000, "400", http_burst, 0, "request burst per API key"),
    OPT("http.key_cache_ms", DR_CFG_INT, 0, 600000, "5000", http_key_cache_ms, 0, "how long a verified key is trusted before re-reading it (revocation delay)"),
    OPT("cluster.shards", DR_CFG_INT, 1, 65536, "1024", shards, 0, "shard count S (fixed per cluster)"),
    OPT("dispatch.window", DR_CFG_INT, 1, 64, "1", window, 0, "unacknowledged messages per device"),
    OPT("dispatch.default_ttl_ms", DR_CFG_INT, 0, 31536000000.0, "86400000", default_ttl_ms, 0, "deliver-by given to messages without one (0: none)"),
    OPT("device.max_message", DR_CFG_INT, 0, 16777216, "1024", device_max_message, 0, "largest command message a device takes, in bytes, unless set per device (0: any)"),
    OPT("dispatch.interval_ms", DR_CFG_INT, 0, 86400000, "2000", interval_ms, 0, "minimum time between sends to one device"),
    OPT("dispatch.ack_timeout_ms", DR_CFG_INT, 50, 86400000, "15000", ack_timeout_ms, 0, "wait for an ack before the first re-send"),
    OPT("dispatch.retry_max_ms", DR_CFG_INT, 50, 86400000, "60000", retry_max_ms, 0, "longest wait between re-sends"),
    OPT("dispatch.backoff", DR_CFG_DBL, 1.0, 10.0, "2.0", backoff, 0, "re-send wait multiplier per attempt"),
    OPT("dispatch.jitter_pct", DR_CFG_INT, 0, 50, "10", jitter_pct, 0, "random +/- spread of re-send waits (%)"),
    OPT("dispatch.tick_ms", DR_CFG_INT, 5, 10000, "50", tick_ms, 0, "scan period of the due schedule"),
    OPT("dispatch.batch", DR_CFG_INT, 1, 10000, "64", batch, 0, "devices handled per shard per script call"),
    OPT("lease.ttl_ms", DR_CFG_INT, 500, 600000, "10000", lease_ttl_ms, 0, "shard lease lifetime"),
    OPT("lease.renew_ms", DR_CFG_INT, 100, 600000, "2000", lease_renew_ms, 0, "shard lease renewal period"),
    OPT("retention_s", DR_CFG_INT, 1, 315360000, "86400", retention_s, 0, "how long finished messages are kept"),
    OPT("metrics.flush_ms", DR_CFG_INT, 50, 3600000, "1000", metrics_flush_ms, 0, "counter flush period to Redis"),
    OPT("ids.max", DR_CFG_INT, 1000, 9007199254740991.0, "2147483647", ids_max, 0, "largest message id before wrap-around"),
};

#define NOPTS (sizeof(table) / sizeof(table[0]))

static void bind(dr_config_opt_t *out, dr_settings_t *s)
{
    for (size_t i = 0; i < NOPTS; i++) {
        out[i] = table[i];
        out[i].field = (char *)s + (uintptr_t)table[i].field;
    }
}

int dr_settings_load(dr_settings_t *s, const char *svc, int argc, char **argv, char *err)
{
    dr_config_opt_t opts[NOPTS];
    int help = 0;
    memset(s, 0, sizeof(*s));
    bind(opts, s);
    if (dr_config_load(opts, NOPTS, argc, argv, &help, err) != 0)
        return DR_ECONFIG;
    if (help) {
        char usage[128];
        snprintf(usage, sizeof(usage), "usage: drover-%s [-c FILE] [--key=value ...]", svc);
        dr_config_print_help(opts, NOPTS, usage);
        dr_settings_dispose(s);
        exit(0);
    }
    int lvl = dr_log_parse_level(s->log_level);
    if (lvl < 0) {
        snprintf(err, DR_ERR_LEN, "option 'log.level': '%s' is not debug, verbose, notice or warning", s->log_level);
        return DR_ECONFIG;
    }
    dr_log_level = lvl;
    if (s->node_id[0] == '\0') {
        char host[64] = "localhost", id[64];
        gethostname(host, sizeof(host) - 1);
        snprintf(id, sizeof(id), "%s-%.40s", svc, host);
        free(s->node_id);
        s->node_id = strdup(id);
    }
    for (const char *p = s->node_id; *p; p++) {
        if (*p == ' ' || *p == '/' || *p == '+' || *p == '#') {
            snprintf(err, DR_ERR_LEN, "option 'node.id': must not contain spaces, '/', '+' or '#'");
            return DR_ECONFIG;
        }
    }
    if (s->http_duster_open && strcmp(s->http_bind, "127.0.0.1") != 0 && strcmp(s->http_bind, "::1") != 0) {
        snprintf(err, DR_ERR_LEN, "http.duster_open=1 is allowed only with http.bind 127.0.0.1 or ::1");
        return DR_ECONFIG;
    }
    if (s->retry_max_ms < s->ack_timeout_ms) {
        snprintf(err, DR_ERR_LEN, "dispatch.retry_max_ms must be >= dispatch.ack_timeout_ms");
        return DR_ECONFIG;
    }
    if (s->lease_renew_ms * 2 > s->lease_ttl_ms) {
        snprintf(err, DR_ERR_LEN, "lease.renew_ms must be at most half of lease.ttl_ms");
        return DR_ECONFIG;
    }
    return 0;
}

void dr_settings_dispose(dr_settings_t *s)
{
    dr_config_opt_t opts[NOPTS];
    bind(opts, s);
    dr_config_dispose(opts, NOPTS);
}
