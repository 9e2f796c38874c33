/* drover-device-sim: a device that speaks Drover's (and Duster's) device protocol through the device
 * SDK, for trying a stack out, demonstrating the SDK and driving integration tests.
 *
 * It connects with client id = device id, subscribes to `consumer/request/<id>`, and for every message
 * asks the SDK whether to execute it. New commands are "executed" (printed), acknowledged at once and,
 * if asked, reported COMPLETED after a delay; duplicates (re-sends of an id already executed) are only
 * acknowledged again, with the last status recorded for them. Acks can be dropped on purpose to make
 * Drover re-send, and the SDK's ring can be kept in a file so a restarted simulator does not execute
 * a re-sent command again. Every event is one key=value line on stdout; the run time is bounded.
 *
 * DESIGN
 * One thread: paho's synchronous client without callbacks, driven by MQTTClient_receive() with a short
 * timeout, so messages, pending completion reports and the deadline are all handled in one loop and
 * the SDK state needs no lock. The broker must be on loopback: this is a test tool and its password
 * may sit on a command line.
 */
#include <MQTTClient.h>
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drover_device.h"

#define MAX_PENDING 64     /* completion reports waiting for their delay */
#define PRINT_DATA_MAX 512 /* bytes of `data` shown per command */

static const char *usage =
    "usage: drover-device-sim -d DEVICE [options]\n"
    "  -b, --broker URL       broker on loopback (default tcp://127.0.0.1:1883)\n"
    "  -u, --user NAME        MQTT user name\n"
    "  -P, --password PW      MQTT password (default: environment DR_SIM_PASSWORD)\n"
    "  -d, --device ID        device id, also the MQTT client id\n"
    "  -c, --complete-ms MS   report COMPLETED MS after executing a command (default -1: never)\n"
    "  -l, --ack-loss PCT     drop PCT percent of acks instead of publishing them (default 0)\n"
    "  -t, --run-s S          exit after S seconds (1..86400, default 60)\n"
    "  -q, --qos N            QoS of the subscription and of acks, 0 or 1 (default 1)\n"
    "  -s, --state FILE       keep the de-duplication ring in FILE across restarts\n"
    "  -r, --seed N           seed of the ack-loss dice (default 1)\n"
    "      --dedup-no         also de-duplicate guarantee NO messages\n";

typedef struct {
    uint64_t id;
    int64_t due_ms; /* monotonic ms */
} pending_t;

typedef struct {
    /* options */
    const char *broker, *user, *password, *device, *state_path;
    long complete_ms, ack_loss, run_s, qos;
    unsigned long long seed;
    int dedup_no;
    /* state */
    MQTTClient client;
    dr_device_t dev;
    char req_topic[DR_DEVICE_TOPIC_MAX];
    char resp_topic[DR_DEVICE_TOPIC_MAX];
    pending_t pending[MAX_PENDING];
    int npending;
    uint64_t rng;
    /* counters for the summary line */
    long executed, duplicates, rejected, acks, acks_lost, completed, store_errors;
} sim_t;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Options ------------------------------------------------------------------------------------- */

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* 1 if url is tcp:// or mqtt:// to 127.0.0.0/8, [::1] or localhost, with an optional port. */
static int broker_is_loopback(const char *url)
{
    const char *host;
    char buf[64];
    size_t n;
    struct in_addr a4;

    if (strncmp(url, "tcp://", 6) == 0)
        host = url + 6;
    else if (strncmp(url, "mqtt://", 7) == 0)
        host = url + 7;
    else
        return 0;
    if (strncmp(host, "[::1]", 5) == 0)
        return host[5] == '\0' || host[5] == ':';
    n = strcspn(host, ":/");
    if (n == 0 || n >= sizeof(buf) || (host[n] != '\0' && host[n] != ':'))
        return 0;
    memcpy(buf, host, n);
    buf[n] = '\0';
    if (strcmp(buf, "localhost") == 0)
        return 1;
    return inet_pton(AF_INET, buf, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static int parse_args(sim_t *s, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'P'},
        {"device", required_argument, NULL, 'd'},
        {"complete-ms", required_argument, NULL, 'c'},
        {"ack-loss", required_argument, NULL, 'l'},
        {"run-s", required_argument, NULL, 't'},
        {"qos", required_argument, NULL, 'q'},
        {"state", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'r'},
        {"dedup-no", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long seed;
    int c;

    s->broker = "tcp://127.0.0.1:1883";
    s->password = getenv("DR_SIM_PASSWORD");
    s->complete_ms = -1;
    s->run_s = 60;
    s->qos = 1;
    s->seed = 1;
    while ((c = getopt_long(argc, argv, "b:u:P:d:c:l:t:q:s:r:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            s->broker = optarg;
            break;
        case 'u':
            s->user = optarg;
            break;
        case 'P':
            s->password = optarg;
            break;
        case 'd':
            s->device = optarg;
            break;
        case 'c':
            if (parse_long(optarg, -1, 3600000, &s->complete_ms) != 0)
                goto bad;
            break;
        case 'l':
            if (parse_long(optarg, 0, 100, &s->ack_loss) != 0)
                goto bad;
            break;
        case 't':
            if (parse_long(optarg, 1, 86400, &s->run_s) != 0)
                goto bad;
            break;
        case 'q':
            if (parse_long(optarg, 0, 1, &s->qos) != 0)
                goto bad;
            break;
        case 's':
            s->state_path = optarg;
            break;
        case 'r':
            if (parse_long(optarg, 0, LONG_MAX, &seed) != 0)
                goto bad;
            s->seed = (unsigned long long)seed;
            break;
        case 'N':
            s->dedup_no = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            goto usage_err;
        }
    }
    if (optind != argc || s->device == NULL)
        goto usage_err;
    if (!broker_is_loopback(s->broker)) {
        fprintf(stderr, "drover-device-sim: the broker must be on loopback (tcp://127.0.0.1:PORT): %s\n",
                s->broker);
        return -1;
    }
    if (dr_device_topic_request(s->req_topic, sizeof(s->req_topic), s->device) < 0 ||
        dr_device_topic_response(s->resp_topic, sizeof(s->resp_topic), s->device) < 0) {
        fprintf(stderr,
                "drover-device-sim: invalid device id (1..%d bytes, no '/', '+', '#' or control "
                "characters)\n",
                DR_DEVICE_NAME_MAX);
        return -1;
    }
    return 0;

bad:
    fprintf(stderr, "drover-device-sim: invalid value for -%c: %s\n", c, optarg);
    return -1;
usage_err:
    fputs(usage, stderr);
    return -1;
}

/* ---- Persistence hooks: the SDK's ring in a file ------------------------------------------------- */

/* Writes the image to FILE.tmp, syncs it and renames it over FILE, so a crash leaves the old image or
 * the new one, never half of one. */
static int on_save(void *ctx, const void *image, size_t len)
{
    const char *path = ctx;
    char tmp[PATH_MAX];
    FILE *f;
    int ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    f = fopen(tmp, "wb");
    if (f == NULL)
        return -1;
    ok = fwrite(image, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int on_load(void *ctx, void *image, size_t len)
{
    const char *path = ctx;
    FILE *f = fopen(path, "rb");
    size_t n;
    int extra;

    if (f == NULL)
        return errno == ENOENT ? DR_DEVICE_ENOTFOUND : -1;
    n = fread(image, 1, len, f);
    extra = fgetc(f);
    fclose(f);
    return n == len && extra == EOF ? 0 : -1;
}

/* ---- Acks and completions ------------------------------------------------------------------------ */

static uint64_t dice(sim_t *s)
{
    /* splitmix64: a fixed seed gives the same losses on every run */
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void send_ack(sim_t *s, uint64_t id, dr_device_status_t st)
{
    char payload[DR_DEVICE_ACK_MAX];
    MQTTClient_deliveryToken token;
    int n = dr_device_ack(payload, sizeof(payload), id, st), rc;

    if (n < 0) {
        fprintf(stderr, "drover-device-sim: ack for id %" PRIu64 ": %s\n", id, dr_device_strerror(n));
        return;
    }
    if (s->ack_loss > 0 && (long)(dice(s) % 100) < s->ack_loss) {
        s->acks_lost++;
        printf("ack id=%" PRIu64 " status=%s lost=1\n", id, dr_device_status_name(st));
        return;
    }
    rc = MQTTClient_publish(s->client, s->resp_topic, n, payload, (int)s->qos, 0, &token);
    if (rc == MQTTCLIENT_SUCCESS && s->qos > 0)
        rc = MQTTClient_waitForCompletion(s->client, token, 5000);
    if (rc != MQTTCLIENT_SUCCESS) {
        /* Like a lost ack: Drover re-sends, and the duplicate is acknowledged again. */
        printf("ack id=%" PRIu64 " status=%s error=%d\n", id, dr_device_status_name(st), rc);
        return;
    }
    s->acks++;
    printf("ack id=%" PRIu64 " status=%s\n", id, dr_device_status_name(st));
}

/* Records the outcome before publishing it, so a re-send after a lost report is answered with it. */
static void complete(sim_t *s, uint64_t id)
{
    int rc = dr_device_set_status(&s->dev, id, DR_DEVICE_COMPLETED);
    if (rc == DR_DEVICE_ESTORE)
        s->store_errors++;
    s->completed++;
    printf("complete id=%" PRIu64 " status=COMPLETED\n", id);
    send_ack(s, id, DR_DEVICE_COMPLETED);
}

static void run_due_completions(sim_t *s, int64_t now)
{
    int i = 0;
    while (i < s->npending) {
        if (s->pending[i].due_ms > now) {
            i++;
            continue;
        }
        uint64_t id = s->pending[i].id;
        s->pending[i] = s->pending[--s->npending];
        complete(s, id);
    }
}

static int64_t next_due(const sim_t *s)
{
    int64_t due = INT64_MAX;
    for (int i = 0; i < s->npending; i++)
        if (s->pending[i].due_ms < due)
            due = s->pending[i].due_ms;
    return due;
}

/* ---- Messages ------------------------------------------------------------------------------------ */

static void execute(sim_t *s, const dr_device_cmd_t *cmd)
{
    char name[256];
    int n = dr_device_str_copy(cmd->command, name, sizeof(name));
    size_t shown = cmd->data.len < PRINT_DATA_MAX ? cmd->data.len : PRINT_DATA_MAX;

    s->executed++;
    printf("exec id=%" PRIu64 " guarantee=%s command=%s ts=%" PRIu64 " data=%.*s%s\n", cmd->id,
           cmd->guarantee == DR_DEVICE_G_OTHER ? "OTHER" : dr_device_guarantee_name(cmd->guarantee),
           n >= 0 ? name : "(long)", cmd->current_timestamp, cmd->data.p ? (int)shown : 4,
           cmd->data.p ? cmd->data.p : "null", shown < cmd->data.len ? "..." : "");
}

static void on_message(sim_t *s, const char *topic, int topic_len, const MQTTClient_message *m)
{
    dr_device_cmd_t cmd;
    int rc;

    if ((size_t)topic_len != strlen(s->req_topic) || memcmp(topic, s->req_topic, (size_t)topic_len) != 0) {
        printf("ignored topic=%.*s\n", topic_len, topic);
        return;
    }
    rc = dr_device_receive(&s->dev, m->payload, (size_t)m->payloadlen, &cmd);
    if (rc == DR_DEVICE_ESTORE) {
        /* Not recorded, so not executed and not acknowledged: the re-send tries again. */
        s->store_errors++;
        printf("store_error id=%" PRIu64 "\n", cmd.id);
        return;
    }
    if (rc != 0) {
        /* Malformed: there is no id to acknowledge. */
        s->rejected++;
        printf("rejected error=\"%s\" len=%d\n", dr_device_strerror(rc), m->payloadlen);
        return;
    }
    if (cmd.action == DR_DEVICE_DUPLICATE) {
        s->duplicates++;
        printf("duplicate id=%" PRIu64 " status=%s ts=%" PRIu64 "\n", cmd.id,
               dr_device_status_name(cmd.status), cmd.current_timestamp);
        send_ack(s, cmd.id, cmd.status);
        return;
    }
    execute(s, &cmd);
    /* Receipt first, as Duster's firmware does; acknowledging a guarantee-NO message is optional and
     * harmless (it moves UNKNOWN to DELIVERED). */
    send_ack(s, cmd.id, DR_DEVICE_DELIVERED);
    if (s->complete_ms == 0 || (s->complete_ms > 0 && s->npending == MAX_PENDING)) {
        complete(s, cmd.id);
    } else if (s->complete_ms > 0) {
        s->pending[s->npending].id = cmd.id;
        s->pending[s->npending].due_ms = now_ms() + s->complete_ms;
        s->npending++;
    }
}

/* ---- Connection ---------------------------------------------------------------------------------- */

static int connect_and_subscribe(sim_t *s)
{
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    int rc;

    opts.keepAliveInterval = 15; /* as Duster's firmware */
    opts.cleansession = 1;
    opts.connectTimeout = 5;
    opts.username = s->user;
    opts.password = s->password;
    rc = MQTTClient_connect(s->client, &opts);
    if (rc != MQTTCLIENT_SUCCESS) {
        printf("connect_failed rc=%d\n", rc);
        return -1;
    }
    rc = MQTTClient_subscribe(s->client, s->req_topic, (int)s->qos);
    if (rc != MQTTCLIENT_SUCCESS) {
        printf("subscribe_failed rc=%d\n", rc);
        MQTTClient_disconnect(s->client, 1000);
        return -1;
    }
    printf("connected broker=%s device=%s topic=%s qos=%ld\n", s->broker, s->device, s->req_topic, s->qos);
    return 0;
}

static int run(sim_t *s)
{
    const int64_t deadline = now_ms() + s->run_s * 1000;
    int64_t retry_at = 0, backoff = 200;
    int ever_connected = 0;

    while (!stop_requested) {
        int64_t now = now_ms(), wait;
        char *topic = NULL;
        int topic_len = 0, rc;
        MQTTClient_message *m = NULL;

        if (now >= deadline)
            break;
        if (!MQTTClient_isConnected(s->client)) {
            if (now < retry_at) {
                usleep(20000);
                continue;
            }
            if (connect_and_subscribe(s) != 0) {
                retry_at = now + backoff;
                backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
                continue;
            }
            ever_connected = 1;
            backoff = 200;
        }
        run_due_completions(s, now);
        wait = next_due(s) - now;
        if (wait > 100)
            wait = 100;
        if (wait > deadline - now)
            wait = deadline - now;
        if (wait < 1)
            wait = 1;
        rc = MQTTClient_receive(s->client, &topic, &topic_len, &m, (unsigned long)wait);
        if (m != NULL) {
            on_message(s, topic, topic_len, m);
            MQTTClient_freeMessage(&m);
            MQTTClient_free(topic);
        } else if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED) {
            printf("connection_lost rc=%d\n", rc);
            retry_at = now_ms() + backoff;
        }
    }
    if (MQTTClient_isConnected(s->client))
        MQTTClient_disconnect(s->client, 1000);
    return ever_connected ? 0 : 1;
}

int main(int argc, char **argv)
{
    static sim_t sim;
    sim_t *s = &sim;
    dr_device_opts_t opts = {NULL, NULL, NULL, 0};
    struct sigaction sa;
    int rc;

    if (parse_args(s, argc, argv) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    s->rng = s->seed;

    if (s->state_path != NULL) {
        opts.save = on_save;
        opts.load = on_load;
        opts.ctx = (void *)s->state_path;
    }
    opts.flags = s->dedup_no ? DR_DEVICE_F_DEDUP_NO : 0;
    rc = dr_device_init(&s->dev, &opts);
    if (rc != 0)
        printf("state_unreadable path=%s (starting with an empty ring)\n", s->state_path);
    if (s->state_path != NULL)
        printf("state path=%s remembered=%zu\n", s->state_path, dr_device_count(&s->dev));

    rc = MQTTClient_create(&s->client, s->broker, s->device, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "drover-device-sim: MQTTClient_create failed: %d\n", rc);
        return 1;
    }
    rc = run(s);
    MQTTClient_destroy(&s->client);
    printf("summary executed=%ld duplicates=%ld rejected=%ld acks=%ld acks_lost=%ld completed=%ld "
           "pending=%d store_errors=%ld remembered=%zu\n",
           s->executed, s->duplicates, s->rejected, s->acks, s->acks_lost, s->completed, s->npending,
           s->store_errors, dr_device_count(&s->dev));
    return rc;
}
