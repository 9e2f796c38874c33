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
#include "dr/mem.h"
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
    OPT("nats.tls_ca", DR_CFG_STR, 0, 1024, "", nats_tls_ca, 0, "NATS TLS: trusted CA file (PEM; empty: system store)"),
    OPT("nats.tls_cert", DR_CFG_STR, 0, 1024, "", nats_tls_cert, 0, "NATS TLS: client certificate chain file (PEM)"),
    OPT("nats.tls_key", DR_CFG_STR, 0, 1024, "", nats_tls_key, 0, "NATS TLS: client private key file (PEM)"),
    OPT("nats.tls_server_name", DR_CFG_STR, 0, 255, "", nats_tls_server_name, 0, "NATS TLS: name the server certificate must carry (empty: host of the first URL)"),
    OPT("nats.tls_verify", DR_CFG_INT, 0, 1, "1", nats_tls_verify, 0, "NATS TLS: 0 skips the server certificate check (tests only)"),
    OPT("mqtt.url", DR_CFG_STR, 1, 1024, "tcp://127.0.0.1:1883", mqtt_url, 0, "MQTT broker URL"),
    OPT("mqtt.username", DR_CFG_STR, 0, 255, "", mqtt_username, 0, "MQTT user name"),
    OPT("mqtt.password", DR_CFG_STR, 0, 512, "", mqtt_password, DR_CFG_SECRET, "MQTT password"),
    OPT("mqtt.qos", DR_CFG_INT, 0, 1, "1", mqtt_qos, 0, "QoS of publishes to devices and producers"),
    OPT("mqtt.keepalive_s", DR_CFG_INT, 5, 3600, "60", mqtt_keepalive_s, 0, "MQTT keepalive"),
    OPT("mqtt.protocol", DR_CFG_INT, 4, 5, "5", mqtt_protocol, 0, "dispatcher's MQTT version: 5 (MQTT 5, falls back to 4 if refused) or 4 (3.1.1)"),
    OPT("mqtt.share_group", DR_CFG_STR, 1, 64, "drover", mqtt_share_group, 0, "shared-subscription group"),
    OPT("mqtt.tls", DR_CFG_INT, 0, 1, "0", mqtt_tls, 0, "1: MQTT over TLS (implied by an mqtts:// or ssl:// mqtt.url)"),
    OPT("mqtt.tls_ca", DR_CFG_STR, 0, 1024, "", mqtt_tls_ca, 0, "MQTT TLS: trusted CA file (PEM; empty: system store)"),
    OPT("mqtt.tls_cert", DR_CFG_STR, 0, 1024, "", mqtt_tls_cert, 0, "MQTT TLS: client certificate chain file (PEM)"),
    OPT("mqtt.tls_key", DR_CFG_STR, 0, 1024, "", mqtt_tls_key, 0, "MQTT TLS: client private key file (PEM; empty: in mqtt.tls_cert)"),
    OPT("mqtt.tls_verify", DR_CFG_INT, 0, 1, "1", mqtt_tls_verify, 0, "MQTT TLS: 0 skips the certificate and host name checks (tests only)"),
    OPT("ingress.max_payload", DR_CFG_INT, 256, 16777216, "65536", ingress_max_payload, 0, "largest accepted payload (bytes)"),
    OPT("ingress.max_device_id", DR_CFG_INT, 1, 200, "128", ingress_max_device_id, 0, "longest device id (bytes)"),
    OPT("ingress.linger_us", DR_CFG_INT, 0, 5000, "500", ingress_linger_us, 0, "while busy, wait this long (us) after each loop turn so that what arrives meanwhile is handled together (0: never)"),
    OPT("http.port", DR_CFG_INT, 0, 65535, "8080", http_port, 0, "REST API port (0: no REST API)"),
    OPT("http.bind", DR_CFG_STR, 1, 255, "127.0.0.1", http_bind, 0, "REST API listen address"),
    OPT("http.max_body", DR_CFG_INT, 256, 16777216, "65536", http_max_body, 0, "largest request body (bytes)"),
    OPT("http.max_depth", DR_CFG_INT, 2, 256, "32", http_max_depth, 0, "deepest JSON nesting accepted"),
    OPT("http.duster_open", DR_CFG_INT, 0, 1, "0", http_duster_open, 0, "1: Duster paths without a key (loopback only)"),
    OPT("http.rate", DR_CFG_INT, 1, 1000000, "200", http_rate, 0, "requests per second per API key"),
    OPT("http.burst", DR_CFG_INT, 1, 1000000, "400", http_burst, 0, "request burst per API key"),
    OPT("http.console_dir", DR_CFG_STR, 0, 1024, "", http_console_dir, 0, "web console pages served at /admin/ (empty: the installed console)"),
    OPT("http.vendor_dir", DR_CFG_STR, 1, 1024, "/usr/share/javascript", http_vendor_dir, 0, "directory served at /vendor/ (chart.js, swagger-ui-dist)"),
    OPT("http.key_cache_ms", DR_CFG_INT, 0, 600000, "5000", http_key_cache_ms, 0, "how long a verified key is trusted before re-reading it (revocation delay)"),
    OPT("auth.token_ttl_s", DR_CFG_INT, 1, 31536000, "43200", auth_token_ttl_s, 0, "lifetime of a login token"),
    OPT("auth.bcrypt_cost", DR_CFG_INT, 4, 16, "12", auth_bcrypt_cost, 0, "bcrypt cost of new password hashes"),
    OPT("auth.login_failures", DR_CFG_INT, 1, 1000000, "10", auth_login_failures, 0, "failed logins per client id and per address before 429"),
    OPT("auth.login_window_s", DR_CFG_INT, 1, 86400, "60", auth_login_window_s, 0, "window of auth.login_failures"),
    OPT("registry.bootstrap", DR_CFG_INT, 0, 1, "1", registry_bootstrap, 0, "1: create operator 'admin' when no MAN client exists"),
    OPT("registry.dynsec", DR_CFG_INT, 0, 1, "0", registry_dynsec, 0, "1: push clients to Mosquitto's dynamic-security plugin"),
    OPT("registry.dynsec_username", DR_CFG_STR, 0, 255, "", registry_dynsec_username, 0, "broker user allowed to use $CONTROL/dynamic-security"),
    OPT("registry.dynsec_password", DR_CFG_STR, 0, 512, "", registry_dynsec_password, DR_CFG_SECRET, "its password"),
    OPT("registry.dynsec_timeout_ms", DR_CFG_INT, 100, 60000, "5000", registry_dynsec_timeout_ms, 0, "wait for the broker's answer"),
    OPT("http.tls_cert", DR_CFG_STR, 0, 1024, "", http_tls_cert, 0, "REST API over HTTPS: certificate chain file (PEM)"),
    OPT("http.tls_key", DR_CFG_STR, 0, 1024, "", http_tls_key, 0, "REST API over HTTPS: private key file (PEM)"),
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
    OPT("dispatch.send_hold", DR_CFG_INT, 1, 65535, "256", send_hold, 0, "no dispatch pass while this many publishes wait for the broker"),
    OPT("lease.ttl_ms", DR_CFG_INT, 500, 600000, "10000", lease_ttl_ms, 0, "shard lease lifetime"),
    OPT("lease.renew_ms", DR_CFG_INT, 100, 600000, "2000", lease_renew_ms, 0, "shard lease renewal period"),
    OPT("retention_s", DR_CFG_INT, 1, 315360000, "86400", retention_s, 0, "how long finished messages are kept"),
    OPT("metrics.flush_ms", DR_CFG_INT, 50, 3600000, "1000", metrics_flush_ms, 0, "counter flush period to Redis"),
    OPT("metrics.port", DR_CFG_INT, 0, 65535, "9102", metrics_port, 0, "dispatcher's /metrics port (0: none)"),
    OPT("metrics.bind", DR_CFG_STR, 1, 255, "0.0.0.0", metrics_bind, 0, "dispatcher's /metrics listen address"),
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

/* ---- TLS -------------------------------------------------------------------------------------- */

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Resolves mqtt.tls against the scheme of mqtt.url (rewriting a plain URL to mqtts:// when the switch
 * is on), derives nats_tls, and refuses TLS files that would silently not be used: a CA or certificate
 * given for a plain connection means the operator believes the link is protected when it is not. */
static int check_tls(dr_settings_t *s, char *err)
{
    int url_tls = has_prefix(s->mqtt_url, "mqtts://") || has_prefix(s->mqtt_url, "ssl://");
    if (s->mqtt_tls && !url_tls) {
        const char *rest = NULL;
        if (has_prefix(s->mqtt_url, "tcp://"))
            rest = s->mqtt_url + 6;
        else if (has_prefix(s->mqtt_url, "mqtt://"))
            rest = s->mqtt_url + 7;
        if (rest == NULL) {
            snprintf(err, DR_ERR_LEN, "option 'mqtt.url': '%s' must start with tcp://, mqtt://, mqtts:// or ssl://",
                     s->mqtt_url);
            return -1;
        }
        size_t n = strlen(rest) + sizeof("mqtts://");
        char *url = dr_malloc(n);
        snprintf(url, n, "mqtts://%s", rest);
        free(s->mqtt_url);
        s->mqtt_url = url;
        url_tls = 1;
    }
    s->mqtt_tls = url_tls;
    if (!url_tls && (s->mqtt_tls_ca[0] || s->mqtt_tls_cert[0] || s->mqtt_tls_key[0])) {
        snprintf(err, DR_ERR_LEN, "mqtt.tls_ca/tls_cert/tls_key are set but mqtt.url '%s' is not TLS "
                 "(use mqtts://host:port or mqtt.tls=1)", s->mqtt_url);
        return -1;
    }
    if (s->mqtt_tls_key[0] && !s->mqtt_tls_cert[0]) {
        snprintf(err, DR_ERR_LEN, "mqtt.tls_key needs mqtt.tls_cert");
        return -1;
    }
    s->nats_tls = strstr(s->nats_url, "tls://") != NULL || s->nats_tls_ca[0] || s->nats_tls_cert[0] ||
                  s->nats_tls_key[0];
    if (s->nats_tls && strstr(s->nats_url, "nats://") != NULL) {
        snprintf(err, DR_ERR_LEN, "nats.url '%s' mixes plain nats:// with TLS: with TLS every URL must be tls://",
                 s->nats_url);
        return -1;
    }
    if (!s->nats_tls_cert[0] != !s->nats_tls_key[0]) {
        snprintf(err, DR_ERR_LEN, "nats.tls_cert and nats.tls_key must be set together");
        return -1;
    }
    if (!s->http_tls_cert[0] != !s->http_tls_key[0]) {
        snprintf(err, DR_ERR_LEN, "http.tls_cert and http.tls_key must be set together");
        return -1;
    }
    if (s->mqtt_tls && !s->mqtt_tls_verify)
        dr_log(DR_LOG_WARNING, "event=tls_verify_disabled link=mqtt note=\"the broker is NOT authenticated: "
               "anyone on the path can read and change every command; tests only\"");
    if (s->nats_tls && !s->nats_tls_verify)
        dr_log(DR_LOG_WARNING, "event=tls_verify_disabled link=nats note=\"the NATS server is NOT authenticated; "
               "tests only\"");
    return 0;
}

/* ---- loading ---------------------------------------------------------------------------------- */

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
    if (check_tls(s, err) != 0)
        return DR_ECONFIG;
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

/* ---- reloading (SIGHUP) ------------------------------------------------------------------------ */

/* What a running node takes from a reloaded file: the options read afresh on every use (pacing and
 * re-send policy, limits, request rates, the log level). Everything else (addresses, credentials,
 * TLS files, node id, shard count, ...) is bound into connections or the data layout at start. */
static const char *const runtime_options[] = {
    "log.level",           "dispatch.interval_ms", "dispatch.window",      "dispatch.ack_timeout_ms",
    "dispatch.retry_max_ms", "dispatch.backoff",   "dispatch.jitter_pct",  "dispatch.default_ttl_ms",
    "device.max_message",  "http.rate",            "http.burst",           "http.key_cache_ms",
};

static int runtime_option(const char *name)
{
    for (size_t i = 0; i < sizeof(runtime_options) / sizeof(runtime_options[0]); i++)
        if (strcmp(runtime_options[i], name) == 0)
            return 1;
    return 0;
}

int dr_settings_reload(dr_settings_t *cur, const dr_settings_t *fresh, char *restart, size_t cap)
{
    dr_config_opt_t a[NOPTS], b[NOPTS];
    bind(a, cur);
    bind(b, (dr_settings_t *)fresh);
    int applied = 0;
    size_t used = 0;
    if (cap > 0)
        restart[0] = '\0';
    for (size_t i = 0; i < NOPTS; i++) {
        int same;
        switch (a[i].type) {
        case DR_CFG_STR: same = strcmp(*(char **)a[i].field, *(char **)b[i].field) == 0; break;
        case DR_CFG_INT: same = *(int64_t *)a[i].field == *(int64_t *)b[i].field; break;
        default: same = *(double *)a[i].field == *(double *)b[i].field; break;
        }
        if (same)
            continue;
        if (!runtime_option(a[i].name)) {
            int n = snprintf(restart + used, used < cap ? cap - used : 0, "%s%s", used ? "," : "", a[i].name);
            if (n > 0 && used + (size_t)n < cap)
                used += (size_t)n;
            continue;
        }
        switch (a[i].type) {
        case DR_CFG_STR:
            free(*(char **)a[i].field);
            *(char **)a[i].field = dr_strdup(*(char **)b[i].field);
            break;
        case DR_CFG_INT: *(int64_t *)a[i].field = *(int64_t *)b[i].field; break;
        default: *(double *)a[i].field = *(double *)b[i].field; break;
        }
        applied++;
    }
    int lvl = dr_log_parse_level(cur->log_level);
    if (lvl >= 0)
        dr_log_level = lvl;
    return applied;
}
