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
    char *nats_tls_ca;      /* TLS (tls:// URLs or any nats.tls_* file): trusted CAs, "" = system store */
    char *nats_tls_cert;    /* client certificate chain (PEM), "" = none */
    char *nats_tls_key;     /* its private key (PEM) */
    char *nats_tls_server_name; /* name checked against the server certificate, "" = host of the first URL */
    int64_t nats_tls_verify;    /* 0: no server certificate check (tests only) */
    int64_t nats_tls;           /* derived: 1 when the bus uses TLS */
    /* mqtt */
    char *mqtt_url;
    char *mqtt_username;
    char *mqtt_password;
    int64_t mqtt_qos;
    int64_t mqtt_keepalive_s;
    int64_t mqtt_protocol;  /* dispatcher: 5 MQTT 5 (message expiry on device sends), 4 MQTT 3.1.1 */
    char *mqtt_share_group;
    int64_t mqtt_tls;       /* 1: TLS (also implied by an mqtts:// or ssl:// mqtt.url) */
    char *mqtt_tls_ca;      /* trusted CAs (PEM bundle), "" = system store */
    char *mqtt_tls_cert;    /* client certificate chain (PEM), "" = none */
    char *mqtt_tls_key;     /* its private key (PEM), "" = in mqtt.tls_cert */
    int64_t mqtt_tls_verify; /* 0: no server certificate or host name check (tests only) */
    /* ingress */
    int64_t ingress_max_payload;
    int64_t ingress_max_device_id;
    int64_t ingress_linger_us; /* busy loop: wait before the next poll (dr_loop_linger) */
    /* REST API (ingress) */
    int64_t http_port;      /* 0: no HTTP listener */
    char *http_bind;
    int64_t http_max_body;
    int64_t http_max_depth;
    int64_t http_duster_open;
    int64_t http_rate;
    int64_t http_burst;
    int64_t http_key_cache_ms;
    char *http_console_dir;  /* console pages; "" = the installed ones (or the sources in a build tree) */
    char *http_vendor_dir;   /* third-party scripts served under /vendor/ */
    /* client registry and logins (ingress) */
    int64_t auth_token_ttl_s;
    int64_t auth_bcrypt_cost;
    int64_t auth_login_failures;    /* failed logins per client id and per address per window */
    int64_t auth_login_window_s;
    int64_t registry_bootstrap;     /* create operator "admin" when no MAN client exists */
    int64_t registry_dynsec;        /* push clients to Mosquitto's dynamic-security plugin */
    char *registry_dynsec_username;
    char *registry_dynsec_password;
    int64_t registry_dynsec_timeout_ms;
    char *http_tls_cert;    /* with http.tls_key: the REST API serves HTTPS only */
    char *http_tls_key;
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
    int64_t send_hold;
    int64_t lease_ttl_ms;
    int64_t lease_renew_ms;
    int64_t retention_s;
    int64_t metrics_flush_ms;
    int64_t metrics_port;           /* dispatcher's /metrics, /healthz, /readyz listener; 0: none */
    char *metrics_bind;
    int64_t ids_max;
} dr_settings_t;

/* Loads settings for service svc ("ingress" or "dispatcher") from defaults, file, env and argv.
 * Prints usage and exits 0 on --help. Returns 0, or DR_ECONFIG with err (DR_ERR_LEN bytes) filled. */
int dr_settings_load(dr_settings_t *s, const char *svc, int argc, char **argv, char *err);

/* Takes from fresh (a configuration loaded again, on SIGHUP) the options a running node reads on every
 * use: log level, pacing and re-send policy, message size and request-rate limits. Writes the names
 * of the other options that differ, comma separated, into restart (cap bytes): they need a restart
 * and keep their current values. Returns the number of options applied. Loop thread. */
int dr_settings_reload(dr_settings_t *cur, const dr_settings_t *fresh, char *restart, size_t cap);

/* Frees the strings held by s. */
void dr_settings_dispose(dr_settings_t *s);

#endif
