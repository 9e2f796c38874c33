/* Options of drover-load: one table, loaded like every Drover binary (defaults -> file -> DR_* env ->
 * argv) through dr/config.h, then checked in one pass. The bounds keep every run finite: a count and
 * a time limit on everything, and a hard timeout over the whole run. Like the broker, the REST API
 * may only be on this machine.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/config.h"
#include "dr/err.h"
#include "load.h"

#define F(x) ((void *)&o->x)

static int loopback_url(const char *url)
{
    static const char *const ok[] = {"tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:", "mqtt://127.0.0.1:",
                                     "mqtt://localhost:"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strncmp(url, ok[i], strlen(ok[i])) == 0)
            return 1;
    return 0;
}

/* Reads the first line of path into out (size bytes), without the line end. */
static int read_key_file(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "drover-load: option 'rest.key_file': cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fgets(out, (int)size, f) != NULL;
    fclose(f);
    if (!ok)
        out[0] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

/* Checks the REST options and derives the target and the key. */
static int rest_opts(lt_opts_t *o)
{
    char err[DR_ERR_LEN];
    if (o->mode_bits != LT_MODE_DROVER && o->mode_bits != LT_MODE_LATENCY) {
        fprintf(stderr, "drover-load: producer.transport=rest needs mode=drover or latency (the raw baseline "
                        "publishes straight to the broker and has no REST path)\n");
        return -1;
    }
    if (lt_rest_url_parse(o, err, sizeof(err)) != 0) {
        fprintf(stderr, "drover-load: option 'rest.url': %s\n", err);
        return -1;
    }
    if (o->rest_key_file[0] != '\0') {
        if (read_key_file(o->rest_key_file, o->rest_bearer, sizeof(o->rest_bearer)) != 0)
            return -1;
    } else {
        snprintf(o->rest_bearer, sizeof(o->rest_bearer), "%s", o->rest_key);
    }
    if (o->rest_bearer[0] == '\0') {
        fprintf(stderr, "drover-load: producer.transport=rest needs an API key: rest.key_file=FILE, env "
                        "DR_REST_KEY or rest.key\n");
        return -1;
    }
    /* The key goes into a header line verbatim: nothing but visible ASCII may pass. */
    for (const char *p = o->rest_bearer; *p; p++) {
        if (*p < '!' || *p > '~') {
            fprintf(stderr, "drover-load: the REST API key holds a character that is not visible ASCII\n");
            return -1;
        }
    }
    if (o->producers * o->rest_conns > 1024) {
        fprintf(stderr, "drover-load: producers x rest.conns is %lld; at most 1024 connections (threads)\n",
                (long long)(o->producers * o->rest_conns));
        return -1;
    }
    return 0;
}

#define OPTS_MAX 96

/* The option table, its fields in o. Returns the number of options (at most OPTS_MAX). */
static size_t opts_table(lt_opts_t *o, dr_config_opt_t *out)
{
    const dr_config_opt_t t[] = {
        {"mode", DR_CFG_STR, 1, 16, "both", F(mode), 0, "drover, raw (broker-only baseline), both (drover, then raw; repeated) or latency (full-cycle rate, then half of it)"},
        {"repeat", DR_CFG_INT, 0, 50, "0", F(repeat), 0, "repetitions of each phase; 0 = 3 for mode=both, else 1"},
        {"raw.duration_s", DR_CFG_INT, 0, 3600, "0", F(raw_duration_s), 0, "mode=both, as fast as accepted: raw sending time; 0 = as long as the Drover phase ran (at least 5 s)"},
        {"raw.commands", DR_CFG_INT, 1, 5000000, "1000000", F(raw_commands), 0, "mode=both, as fast as accepted: most commands of a raw phase"},
        {"cpu.pids", DR_CFG_STR, 0, 1024, "", F(cpu_pids), 0, "name=pid,... of processes whose CPU (with their children's) is reported per command"},
        {"broker.sys_interval_s", DR_CFG_INT, 0, 3600, "0", F(sys_interval_s), 0, "the broker's sys_interval: count its messages over $SYS; 0 = off"},
        {"mqtt.url", DR_CFG_STR, 1, 256, "tcp://127.0.0.1:1883", F(mqtt_url), 0, "broker URL (loopback only)"},
        {"device.user", DR_CFG_STR, 0, 255, "", F(dev_user), 0, "MQTT user name of the simulated devices"},
        {"device.password", DR_CFG_STR, 0, 255, "", F(dev_password), DR_CFG_SECRET, "their password"},
        {"producer.user", DR_CFG_STR, 0, 255, "", F(prod_user), 0, "MQTT user name of the producers"},
        {"producer.password", DR_CFG_STR, 0, 255, "", F(prod_password), DR_CFG_SECRET, "their password"},
        {"prefix", DR_CFG_STR, 1, 24, "lt", F(prefix), 0, "device ids are <prefix>-<n>, producer ids <prefix>-p<n>"},
        {"devices", DR_CFG_INT, 1, 200000, "1000", F(devices), 0, "simulated devices (one MQTT connection each)"},
        {"device.per_proc", DR_CFG_INT, 1, 9000, "2500", F(per_proc), 0, "devices per worker process (one event loop each; fd limit)"},
        {"device.offline_pct", DR_CFG_INT, 0, 100, "0", F(offline_pct), 0, "share of devices that never connect"},
        {"device.backlog", DR_CFG_INT, 0, 1, "0", F(backlog), 0, "1: devices connect only after every command was accepted"},
        {"device.clean", DR_CFG_INT, 0, 1, "1", F(clean), 0, "MQTT clean session of the devices"},
        {"device.ack_delay_ms", DR_CFG_INT, 0, 600000, "0", F(ack_delay_ms), 0, "time a device takes to acknowledge"},
        {"device.ack_loss_pct", DR_CFG_INT, 0, 100, "0", F(ack_loss_pct), 0, "share of acks the device drops"},
        {"device.complete_pct", DR_CFG_INT, 0, 100, "0", F(complete_pct), 0, "share of commands also reported COMPLETED"},
        {"device.connect_window", DR_CFG_INT, 1, 10000, "200", F(connect_window), 0, "connects in flight per worker"},
        {"producers", DR_CFG_INT, 1, 256, "4", F(producers), 0, "producers, one MQTT connection each (plus rest.conns over REST)"},
        {"producer.rate", DR_CFG_INT, 0, 10000000, "0", F(rate), 0, "commands/s over all producers; 0 = as fast as accepted"},
        {"producer.window", DR_CFG_INT, 1, 100000, "500", F(window), 0, "unaccepted commands per producer"},
        {"producer.transport", DR_CFG_STR, 1, 16, "mqtt", F(transport), 0, "mqtt, or rest (POST /v1/devices/{id}/messages; statuses still over MQTT)"},
        {"rest.url", DR_CFG_STR, 1, 256, "http://127.0.0.1:8080", F(rest_url), 0, "REST API of the ingress (loopback only)"},
        {"rest.key", DR_CFG_STR, 0, 255, "", F(rest_key), DR_CFG_SECRET, "REST API key, producer or admin scope (better: env DR_REST_KEY)"},
        {"rest.key_file", DR_CFG_STR, 0, 1024, "", F(rest_key_file), 0, "read the REST API key from this file instead (first line)"},
        {"rest.conns", DR_CFG_INT, 1, 256, "8", F(rest_conns), 0, "HTTP/1.1 keep-alive connections per producer, one request at a time each"},
        {"rest.timeout_ms", DR_CFG_INT, 100, 600000, "10000", F(rest_timeout_ms), 0, "limit on one request: connect, write and the whole answer"},
        {"rest.retries", DR_CFG_INT, 0, 1000, "10", F(rest_retries), 0, "retries of a command after 429, 503, a timeout or a connection error"},
        {"commands", DR_CFG_INT, 1, 5000000, "20000", F(commands), 0, "commands to send in each phase"},
        {"payload", DR_CFG_INT, 0, 60000, "64", F(payload), 0, "bytes of padding in each command's data"},
        {"duration_s", DR_CFG_INT, 1, 3600, "60", F(duration_s), 0, "longest sending time per phase"},
        {"drain_s", DR_CFG_INT, 0, 3600, "30", F(drain_s), 0, "longest wait for outstanding work after sending"},
        {"timeout_s", DR_CFG_INT, 0, 7200, "0", F(timeout_s), 0, "hard limit of the whole run; 0 = (duration_s + drain_s + 120) per phase, at most 7200"},
        {"interval_ms", DR_CFG_INT, 0, 86400000, "0", F(interval_ms), 0, "dispatch.interval_ms of the Drover under test"},
        {"progress_ms", DR_CFG_INT, 100, 60000, "1000", F(progress_ms), 0, "period of the progress line"},
        {"json", DR_CFG_STR, 0, 1024, "", F(json), 0, "also write the summary as JSON lines to this file"},
        {"wait_accept_only", DR_CFG_INT, 0, 1, "0", F(wait_accept_only), 0, "1: end once every command is accepted"},
    };
    const size_t n = sizeof(t) / sizeof(t[0]);
    _Static_assert(sizeof(t) / sizeof(t[0]) <= OPTS_MAX, "OPTS_MAX too small");
    memcpy(out, t, sizeof(t));
    return n;
}

void lt_opts_free(lt_opts_t *o)
{
    dr_config_opt_t t[OPTS_MAX];
    dr_config_dispose(t, opts_table(o, t));
}

int lt_opts_load(lt_opts_t *o, int argc, char **argv)
{
    memset(o, 0, sizeof(*o));
    dr_config_opt_t t[OPTS_MAX];
    const size_t n = opts_table(o, t);
    char err[DR_ERR_LEN];
    int help = 0;
    if (dr_config_load(t, n, argc, argv, &help, err) != 0) {
        fprintf(stderr, "drover-load: %s\n", err);
        return -1;
    }
    if (help) {
        dr_config_print_help(t, n, "usage: drover-load [-c FILE] [--key=value ...]");
        dr_config_dispose(t, n);
        exit(0);
    }
    if (strcmp(o->mode, "drover") == 0)
        o->mode_bits = LT_MODE_DROVER;
    else if (strcmp(o->mode, "raw") == 0)
        o->mode_bits = LT_MODE_RAW;
    else if (strcmp(o->mode, "both") == 0)
        o->mode_bits = LT_MODE_BOTH;
    else if (strcmp(o->mode, "latency") == 0)
        o->mode_bits = LT_MODE_LATENCY;
    else {
        fprintf(stderr, "drover-load: option 'mode': '%s' is not drover, raw, both or latency\n", o->mode);
        return -1;
    }
    if (o->repeat == 0)
        o->repeat = o->mode_bits == LT_MODE_BOTH ? 3 : 1;
    if (o->mode_bits == LT_MODE_LATENCY && o->repeat != 1) {
        fprintf(stderr, "drover-load: mode=latency runs once (repeat=1)\n");
        return -1;
    }
    if (o->timeout_s == 0) {
        int64_t phases = o->repeat * (o->mode_bits == LT_MODE_BOTH || o->mode_bits == LT_MODE_LATENCY ? 2 : 1);
        int64_t limit = phases * (o->duration_s + o->drain_s + 120);
        o->timeout_s = limit > 7200 ? 7200 : limit;
    }
    if (lt_cpu_parse(o, err, sizeof(err)) != 0) {
        fprintf(stderr, "drover-load: option 'cpu.pids': %s\n", err);
        return -1;
    }
    if (!loopback_url(o->mqtt_url)) {
        fprintf(stderr, "drover-load: option 'mqtt.url': only tcp://127.0.0.1, localhost or [::1] are allowed\n");
        return -1;
    }
    if (strcmp(o->transport, "rest") == 0)
        o->rest = 1;
    else if (strcmp(o->transport, "mqtt") != 0) {
        fprintf(stderr, "drover-load: option 'producer.transport': '%s' is not mqtt or rest\n", o->transport);
        return -1;
    }
    if (o->rest && rest_opts(o) != 0)
        return -1;
    if (o->backlog && o->clean) {
        fprintf(stderr, "drover-load: device.backlog=1 needs device.clean=0 (the broker must keep the "
                        "sessions of the offline devices)\n");
        return -1;
    }
    o->workers = (int)((o->devices + o->per_proc - 1) / o->per_proc);
    if (o->devices - o->devices * o->offline_pct / 100 + o->producers + 64 > 19000 * (int64_t)o->workers) {
        fprintf(stderr, "drover-load: too many connections per process\n");
        return -1;
    }
    return 0;
}
