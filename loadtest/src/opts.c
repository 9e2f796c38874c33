/* Options of drover-load: one table, loaded like every Drover binary (defaults -> file -> DR_* env ->
 * argv) through dr/config.h, then checked in one pass. The bounds keep every run finite: a count and
 * a time limit on everything, and a hard timeout over the whole run.
 */
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

int lt_opts_load(lt_opts_t *o, int argc, char **argv)
{
    memset(o, 0, sizeof(*o));
    const dr_config_opt_t t[] = {
        {"mode", DR_CFG_STR, 1, 16, "both", F(mode), 0, "drover, raw (broker-only baseline) or both (raw, then drover)"},
        {"mqtt.url", DR_CFG_STR, 1, 256, "tcp://127.0.0.1:1883", F(mqtt_url), 0, "broker URL (loopback only)"},
        {"device.user", DR_CFG_STR, 0, 255, "", F(dev_user), 0, "MQTT user name of the simulated devices"},
        {"device.password", DR_CFG_STR, 0, 255, "", F(dev_password), DR_CFG_SECRET, "their password"},
        {"producer.user", DR_CFG_STR, 0, 255, "", F(prod_user), 0, "MQTT user name of the producers"},
        {"producer.password", DR_CFG_STR, 0, 255, "", F(prod_password), DR_CFG_SECRET, "their password"},
        {"prefix", DR_CFG_STR, 1, 24, "lt", F(prefix), 0, "device ids are <prefix>-<n>, producer ids <prefix>-p<n>"},
        {"devices", DR_CFG_INT, 1, 200000, "1000", F(devices), 0, "simulated devices (one MQTT connection each)"},
        {"device.per_proc", DR_CFG_INT, 1, 9000, "2500", F(per_proc), 0, "devices per worker process (fd and paho thread limit)"},
        {"device.offline_pct", DR_CFG_INT, 0, 100, "0", F(offline_pct), 0, "share of devices that never connect"},
        {"device.backlog", DR_CFG_INT, 0, 1, "0", F(backlog), 0, "1: devices connect only after every command was accepted"},
        {"device.clean", DR_CFG_INT, 0, 1, "1", F(clean), 0, "MQTT clean session of the devices"},
        {"device.ack_delay_ms", DR_CFG_INT, 0, 600000, "0", F(ack_delay_ms), 0, "time a device takes to acknowledge"},
        {"device.ack_loss_pct", DR_CFG_INT, 0, 100, "0", F(ack_loss_pct), 0, "share of acks the device drops"},
        {"device.complete_pct", DR_CFG_INT, 0, 100, "0", F(complete_pct), 0, "share of commands also reported COMPLETED"},
        {"device.connect_window", DR_CFG_INT, 1, 10000, "200", F(connect_window), 0, "connects in flight per worker"},
        {"producers", DR_CFG_INT, 1, 256, "4", F(producers), 0, "producer MQTT connections"},
        {"producer.rate", DR_CFG_INT, 0, 10000000, "0", F(rate), 0, "commands/s over all producers; 0 = as fast as accepted"},
        {"producer.window", DR_CFG_INT, 1, 100000, "500", F(window), 0, "unaccepted commands per producer"},
        {"producer.transport", DR_CFG_STR, 1, 16, "mqtt", F(transport), 0, "mqtt (rest is not implemented yet)"},
        {"commands", DR_CFG_INT, 1, 5000000, "20000", F(commands), 0, "commands to send in each phase"},
        {"payload", DR_CFG_INT, 0, 60000, "64", F(payload), 0, "bytes of padding in each command's data"},
        {"duration_s", DR_CFG_INT, 1, 3600, "60", F(duration_s), 0, "longest sending time per phase"},
        {"drain_s", DR_CFG_INT, 0, 3600, "30", F(drain_s), 0, "longest wait for outstanding work after sending"},
        {"timeout_s", DR_CFG_INT, 5, 7200, "600", F(timeout_s), 0, "hard limit of the whole run"},
        {"interval_ms", DR_CFG_INT, 0, 86400000, "0", F(interval_ms), 0, "dispatch.interval_ms of the Drover under test"},
        {"progress_ms", DR_CFG_INT, 100, 60000, "1000", F(progress_ms), 0, "period of the progress line"},
        {"json", DR_CFG_STR, 0, 1024, "", F(json), 0, "also write the summary as JSON lines to this file"},
        {"wait_accept_only", DR_CFG_INT, 0, 1, "0", F(wait_accept_only), 0, "1: end once every command is accepted"},
    };
    const size_t n = sizeof(t) / sizeof(t[0]);
    char err[DR_ERR_LEN];
    int help = 0;
    if (dr_config_load(t, n, argc, argv, &help, err) != 0) {
        fprintf(stderr, "drover-load: %s\n", err);
        return -1;
    }
    if (help) {
        dr_config_print_help(t, n, "usage: drover-load [-c FILE] [--key=value ...]");
        exit(0);
    }
    if (strcmp(o->mode, "drover") == 0)
        o->mode_bits = LT_MODE_DROVER;
    else if (strcmp(o->mode, "raw") == 0)
        o->mode_bits = LT_MODE_RAW;
    else if (strcmp(o->mode, "both") == 0)
        o->mode_bits = LT_MODE_BOTH;
    else {
        fprintf(stderr, "drover-load: option 'mode': '%s' is not drover, raw or both\n", o->mode);
        return -1;
    }
    if (!loopback_url(o->mqtt_url)) {
        fprintf(stderr, "drover-load: option 'mqtt.url': only tcp://127.0.0.1, localhost or [::1] are allowed\n");
        return -1;
    }
    /* The REST producer is a separate transport behind lt_producers_send(); until it exists the option
     * is refused rather than silently falling back to MQTT. */
    if (strcmp(o->transport, "mqtt") != 0) {
        fprintf(stderr, "drover-load: option 'producer.transport': only 'mqtt' is implemented "
                        "(use loadtest/wrk/submit.lua for REST submission)\n");
        return -1;
    }
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
