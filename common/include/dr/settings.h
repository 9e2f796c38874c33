/* The settings shared by every Drover service, and their one option table.
 *
 * Both services read the same keys so one configuration file can serve a whole node; a service simply
 * ignores the keys it has no use for. docs/configuration.md documents each key.
 */
#ifndef DR_SETTINGS_H
#define DR_SETTINGS_H

#include <stdint.h>

typedef struct {
    char *node_id;          /* stable node name; MQTT client ids and lease owners derive from it */
    char *log_level;
    /* redis */
    char *redis_host;
    int64_t redis_port;
    char *redis_password;
    char *redis_prefix;     /* key prefix, e.g. "dr:" */
    int64_t redis_timeout_ms;
    /* nats */
    char *nats_url;
    char *nats_user;
    char *nats_password;
    char *nats_subject_prefix;
    /* mqtt */
    char *mqtt_url;
    char *mqtt_username;
    char *mqtt_password;
    int64_t mqtt_qos;
    int64_t mqtt_keepalive_s;
    char *mqtt_share_group;
    /* ingress */
    int64_t ingress_max_payload;
    int64_t ingress_max_device_id;
    /* REST API (ingress) */
    int64_t http_port;      /* 0: no HTTP listener */
    char *http_bind;
    int64_t http_max_body;
    int64_t http_max_depth;
    int64_t http_duster_open;
    int64_t http_rate;
    int64_t http_burst;
    int64_t http_key_cache_ms;
    /* cluster and dispatch */
    int64_t shards;
    int64_t window;
    int64_t default_ttl_ms;         /* deliver-by of messages without one; 0: none */
    int64_t device_max_message;     /* largest message a device takes (bytes); 0: any */
    int64_t interval_ms;
    int64_t ack_timeout_ms;
    int64_t retry_max_ms;
    double backoff;
    int64_t jitter_pct;
    int64_t tick_ms;
    int64_t batch;
    int64_t lease_ttl_ms;
    int64_t lease_renew_ms;
    int64_t retention_s;
    int64_t metrics_flush_ms;
    int64_t ids_max;
} dr_settings_t;

/* Loads settings for service svc ("ingress" or "dispatcher") from defaults, file, env and argv.
 * Prints usage and exits 0 on --help. Returns 0, or DR_ECONFIG with err (DR_ERR_LEN bytes) filled. */
int dr_settings_load(dr_settings_t *s, const char *svc, int argc, char **argv, char *err);

/* Frees the strings held by s. */
void dr_settings_dispose(dr_settings_t *s);

#endif
