/* drover-load: private header shared by the files of the load generator.
 *
 * DESIGN
 * One run is one or more phases ("drover" and "raw" baseline; mode=both repeats the pair, mode=latency
 * runs two Drover phases, the second at half the first one's rate). A phase runs in its own process, the
 * phase coordinator, which forks the device workers (each one libuv loop with a dr_mqttc client per
 * device) before it creates any paho client (paho starts threads, and a fork after that would copy
 * locked mutexes), then connects the producers itself on paho.
 * Everything the processes must share lives in one MAP_SHARED region created before the forks: the
 * counters of the progress line, one record per command (indexed by the command number, which is
 * also the producer's tmpId) and the measured pacing intervals. Timestamps are wall-clock
 * microseconds because they are compared across processes on the same machine.
 * The top-level process never touches paho; it only orders the phases and prints the comparisons.
 * Around its sending, a phase also samples the CPU of the named processes (cpu.c) and the broker's
 * $SYS counters (broker.c), so every phase reports both per full cycle.
 */
#ifndef DR_LOAD_H
#define DR_LOAD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- options ------------------------------------------------------------------------------------ */

enum { LT_MODE_DROVER = 1, LT_MODE_RAW = 2, LT_MODE_BOTH = 3, LT_MODE_LATENCY = 4 };

/* Process groups whose CPU a phase accounts (cpu.pids), plus the load tool itself. */
#define LT_CPU_GROUPS 8
#define LT_CPU_PIDS 32

typedef struct {
    int ngroups;                        /* named groups from cpu.pids; "load tool" is group ngroups */
    char name[LT_CPU_GROUPS][16];
    int npids;
    pid_t pid[LT_CPU_PIDS];             /* roots: each counts with every process below it */
    int group[LT_CPU_PIDS];
} lt_cpu_set_t;

typedef struct {
    char *mode;              /* "drover", "raw", "both" or "latency" */
    char *mqtt_url;          /* loopback only */
    char *dev_user, *dev_password;
    char *prod_user, *prod_password;
    char *prefix;            /* device ids are <prefix>-<n>, producer ids <prefix>-p<n> */
    int64_t devices;
    int64_t per_proc;        /* devices per worker process */
    int64_t offline_pct;     /* this share of devices never connects */
    int64_t backlog;         /* 1: devices connect only after every command was accepted */
    int64_t clean;           /* MQTT clean session of the devices */
    int64_t ack_delay_ms;
    int64_t ack_loss_pct;
    int64_t complete_pct;
    int64_t connect_window;  /* connects in flight per worker */
    int64_t producers;
    int64_t rate;            /* commands/s over all producers; 0 = as fast as accepted */
    int64_t window;          /* unaccepted commands per producer */
    int64_t commands;
    int64_t payload;         /* bytes of padding in each command's data */
    int64_t duration_s;      /* longest sending time */
    int64_t drain_s;         /* longest wait for outstanding work after the last send */
    int64_t timeout_s;       /* hard limit of the whole run */
    int64_t interval_ms;     /* the Drover pacing the run was configured with (for the report) */
    int64_t progress_ms;
    char *transport;         /* producer transport: "mqtt" or "rest" */
    char *rest_url;          /* REST base URL of the ingress, loopback only */
    char *rest_key;          /* API key (or DR_REST_KEY), unless rest_key_file is set */
    char *rest_key_file;
    int64_t rest_conns;      /* keep-alive connections per producer, one request at a time each */
    int64_t rest_timeout_ms; /* one request: connect, write and the whole answer */
    int64_t rest_retries;    /* per command, after 429, 503, a timeout or a connection error */
    char *json;              /* optional summary file */
    int64_t wait_accept_only;/* 1: end the phase once every command is accepted (memory runs) */
    int64_t repeat;          /* repetitions of each phase; 0 = 3 for mode=both, else 1 */
    int64_t raw_duration_s;  /* mode=both, as fast as accepted: raw sending time; 0 = the Drover phase's */
    int64_t raw_commands;    /* ... and the most commands that raw phase may send */
    char *cpu_pids;          /* "name=pid,..." of the server processes whose CPU is accounted */
    int64_t sys_interval_s;  /* the broker's sys_interval: count its messages over $SYS; 0 = off */
    /* derived */
    int mode_bits;
    int workers;
    int rest;                /* 1: producer.transport=rest */
    int raw_by_time;         /* this raw phase sends for duration_s, up to commands (see raw.duration_s) */
    char rest_origin[64];    /* "http://127.0.0.1:PORT" (always an address, never a name) */
    char rest_base[128];     /* path prefix without a trailing '/', "" for none */
    char rest_bearer[256];   /* the key actually used (from rest.key or rest.key_file) */
    lt_cpu_set_t cpu;        /* parsed cpu.pids */
} lt_opts_t;

/* Loads options from argv (and DR_* environment, as every Drover binary). Returns 0 or -1 with a
 * message on stderr; prints help and exits 0 on -h. */
int lt_opts_load(lt_opts_t *o, int argc, char **argv);

/* Frees the strings lt_opts_load allocated (also after it failed). */
void lt_opts_free(lt_opts_t *o);

/* ---- shared memory ------------------------------------------------------------------------------ */

/* One command, written by whichever process observes the event. 0 = not observed. */
typedef struct {
    _Atomic int64_t sent_us;    /* publish handed to paho, or the first write of the REST request */
    _Atomic int64_t acc_us;     /* accepted: NOT_DELIVERED receipt (drover), PUBACK (raw), 201 (REST) */
    _Atomic int64_t dev_us;     /* first arrival at the device */
    _Atomic int64_t notif_us;   /* DELIVERED notification (drover) or device reply (raw) */
    _Atomic int64_t done_us;    /* COMPLETED notification */
    _Atomic int64_t rid;        /* message id from the receipt (REST: the answer; an MQTT receipt must agree) */
    _Atomic int64_t did;        /* message id the device saw */
} lt_rec_t;

enum { LT_PH_CONNECT, LT_PH_RUN, LT_PH_RECONNECT, LT_PH_STOP };

typedef struct {
    _Atomic int64_t sent, send_errors, accepted, rejected;
    _Atomic int64_t dev_first, dev_dups, dev_foreign, acks_sent, acks_lost, ack_errors, completes_sent;
    _Atomic int64_t notif_delivered, notif_completed, notif_dups, notif_other, id_mismatch;
    _Atomic int64_t connected, connect_failed, conn_lost;
    /* REST transport: answers by kind, failures without an answer, and what it took */
    _Atomic int64_t http_requests, http_created, http_replayed, http_429, http_503, http_4xx, http_other, http_bad;
    _Atomic int64_t http_timeouts, http_net_errors, http_retries, http_conns, rest_receipts;
    _Atomic int64_t nintervals;
    _Atomic int phase;
    _Atomic int workers_ready;
    _Atomic int64_t reconnect_us; /* backlog: when devices were told to connect */
} lt_counters_t;

/* Latency paths of the summary, send = publish handed to paho (or the first write of a REST request). */
enum { LT_L_SEND_ACC, LT_L_SEND_DEV, LT_L_ACC_DEV, LT_L_ACC_NOTIF, LT_L_DEV_NOTIF, LT_L_ACC_DONE, LT_L_COUNT };

/* Results of one phase, filled by the coordinator for the top-level process. */
typedef struct {
    int valid;
    double acc_rate, dev_rate, ack_rate;
    double steady_rate;         /* DELIVERED (raw: answers) between 10 % and 90 % of them, per second */
    double run_s;               /* first send to the end of the phase */
    int64_t accepted, delivered, notified;
    double p50_ms[LT_L_COUNT], p99_ms[LT_L_COUNT];
    int have_cpu;
    double cpu_s[LT_CPU_GROUPS + 1];  /* per cpu.pids group, then the load tool */
    double cpu_us[LT_CPU_GROUPS + 1]; /* the same per full cycle */
    double drover_cpu_us;       /* redis + ingress + dispatcher + nats per full cycle */
    int have_broker;
    double pub_per_cmd, pkt_per_cmd; /* broker PUBLISH packets (in + out), all packets, per full cycle */
    double pub_rate;            /* broker PUBLISH packets (in + out) per second over the phase */
} lt_result_t;

typedef struct {
    lt_counters_t c;
    lt_result_t res;
    int64_t ncmd;
    lt_rec_t *rec;              /* ncmd records */
    int32_t *intervals;         /* ncmd slots, pacing intervals in ms at the devices */
} lt_shm_t;

/* Maps a shared region for ncmd commands; never returns NULL (aborts on failure). */
lt_shm_t *lt_shm_new(int64_t ncmd);

/* Unmaps it. NULL is fine. */
void lt_shm_free(lt_shm_t *s);

/* ---- wire ------------------------------------------------------------------------------------- */

/* Wall-clock microseconds (comparable between processes). */
int64_t lt_now_us(void);

/* Sets TCP_NODELAY on every TCP socket this process has open; returns how many. paho.mqtt.c 1.3.12
 * leaves Nagle's algorithm on and has no option for it, and a producer that publishes right after a
 * PUBACK would otherwise wait for the broker's delayed TCP ACK (up to 40 ms on Linux): the load tool's
 * own delay, not Drover's. Call it once the paho clients are connected (dr_mqttc sets it itself). */
int lt_nodelay_sockets(void);

/* Formats device n's id into buf (size bytes). */
void lt_device_id(const lt_opts_t *o, int64_t n, char *buf, size_t size);

/* Producer message (drover) or device message (raw) for command k; heap string, caller frees. */
char *lt_wire_command(const lt_opts_t *o, int mode, int64_t k, const char *producer_id);

/* Reads the integer after the first occurrence of "key": in buf. Returns 0 or -1 when absent.
 * Only for the load tool's own, known message shapes: it is a scanner, not a JSON parser. */
int lt_wire_int(const char *buf, size_t len, const char *key, int64_t *out);

/* Copies the string after "key":" into out (size bytes). Returns 0 or -1. */
int lt_wire_str(const char *buf, size_t len, const char *key, char *out, size_t size);

/* ---- processes ---------------------------------------------------------------------------------- */

/* Device worker w of o->workers: connects its devices, answers commands, exits at LT_PH_STOP.
 * Runs in a forked child and never returns. */
void lt_devices_run(const lt_opts_t *o, int mode, int w, lt_shm_t *s) __attribute__((noreturn));

typedef struct lt_producers lt_producers_t;

/* Connects o->producers producer clients. Returns NULL (message on stderr) if any cannot connect
 * within the deadline. */
lt_producers_t *lt_producers_open(const lt_opts_t *o, int mode, lt_shm_t *s);

/* Sends command k (producer k % n, device k % devices), or over REST queues it for one of the
 * producer's connections. Returns 0, or -1 when the producer's window is full (try again later), or
 * -2 on a publish error (counted). */
int lt_producers_send(lt_producers_t *p, int64_t k);

/* Disconnects and frees. NULL is fine. */
void lt_producers_close(lt_producers_t *p);

/* ---- REST transport (rest.c) --------------------------------------------------------------------- */

typedef struct lt_rest lt_rest_t;

/* How the REST transport reports the fate of each command. Called on a connection thread, exactly
 * once per command that reached a verdict (never for one abandoned by lt_rest_close). */
typedef struct {
    void (*accepted)(void *data, int64_t k, int64_t id, int64_t now_us); /* 201, or 200 for a replay */
    void (*failed)(void *data, int64_t k, int rejected); /* rejected: a final 4xx; else gave up */
    void *data;
} lt_rest_cb_t;

/* Parses rest.url ("http://HOST[:PORT][/base]", HOST 127.0.0.1, localhost or [::1]; no name is
 * looked up) into o->rest_origin and o->rest_base. Returns 0, or -1 with a sentence in err. */
int lt_rest_url_parse(lt_opts_t *o, char *err, size_t errlen);

/* Checks once that the REST API answers and accepts the key. Returns 0, or -1 with a message on
 * stderr. Blocks for at most rest.timeout_ms. curl_global_init() must have run. */
int lt_rest_check(const lt_opts_t *o);

/* Starts the REST transport of n producers: one thread running a libuv loop (dr/loop.h) that drives
 * a libcurl multi handle. ids[i] (copied) names producer i and cbs[i] (copied) receives its
 * verdicts. o and s are borrowed and must outlive the transport. Returns NULL (message on stderr)
 * when the thread or libcurl cannot start. curl_global_init() must have run. */
lt_rest_t *lt_rest_open(const lt_opts_t *o, lt_shm_t *s, int n, char *const *ids, const lt_rest_cb_t *cbs);

/* Queues command k of producer i; it goes out as soon as one of the producer's rest.conns request
 * slots is free. Any thread. The caller bounds what is queued (producer.window). Returns 0, or -1
 * when the transport is stopping (no callback then). */
int lt_rest_submit(lt_rest_t *r, int i, int64_t k);

/* Stops at once: queued commands and requests in progress are abandoned, no callback runs after it
 * returns. Joins the thread and frees. Not on the transport's thread. NULL is fine. */
void lt_rest_close(lt_rest_t *r);

/* ---- CPU and broker accounting (cpu.c, broker.c) --------------------------------------------------- */

/* Parses cpu.pids ("name=pid,name=pid,..."; a name may repeat, its processes are then summed) into
 * o->cpu. Returns 0, or -1 with a sentence in err. */
int lt_cpu_parse(lt_opts_t *o, char *err, size_t errlen);

/* CPU ticks (user + sys of the whole process tree below each root, including reaped children) per
 * group, the load tool (the tree below self) last. */
typedef struct {
    int64_t ticks[LT_CPU_GROUPS + 1];
} lt_cpu_sample_t;

/* Reads /proc once and fills out. self: the root of the load tool's own processes. */
void lt_cpu_sample(const lt_opts_t *o, pid_t self, lt_cpu_sample_t *out);

/* Seconds of one tick (1 / sysconf(_SC_CLK_TCK)). */
double lt_cpu_tick_s(void);

/* Broker counters from $SYS, corrected for the $SYS messages sent to the tool itself. */
typedef struct {
    int64_t pub_in, pub_out;            /* PUBLISH packets received and sent by the broker */
    int64_t pkt_in, pkt_out;            /* packets of any type */
} lt_broker_count_t;

typedef struct lt_broker lt_broker_t;

/* Connects one MQTT client (producer credentials) subscribed to the broker's $SYS counters.
 * Returns NULL when o->sys_interval_s is 0, or (message on stderr) when it cannot subscribe. */
lt_broker_t *lt_broker_open(const lt_opts_t *o, const char *client_id);

/* Waits for the first $SYS update computed after this call (at most 3 sys intervals) and returns
 * the counters then. Returns 0, or -1 when no update came. */
int lt_broker_sample(lt_broker_t *b, lt_broker_count_t *out);

/* Disconnects and frees. NULL is fine. */
void lt_broker_close(lt_broker_t *b);

/* Runs one phase in the current process (the coordinator) and exits with its status. */
void lt_phase_run(const lt_opts_t *o, int mode, lt_shm_t *s) __attribute__((noreturn));

/* ---- report ------------------------------------------------------------------------------------ */

/* One progress line on stderr. t0_us: start of sending. */
void lt_report_progress(const lt_opts_t *o, int mode, lt_shm_t *s, int64_t t0_us);

/* What a phase measured around the run: CPU samples at the first send and at the end, and the
 * broker's counters before the first send and after the end (have_broker 0 when not counted). */
typedef struct {
    lt_cpu_sample_t cpu0, cpu1;
    int have_broker;
    lt_broker_count_t b0, b1;
} lt_usage_t;

/* Final summary on stdout (and the JSON file when configured); fills s->res. u may be NULL. */
void lt_report_summary(const lt_opts_t *o, int mode, lt_shm_t *s, int64_t t0_us, int64_t t_end_us,
                       const lt_usage_t *u);

/* Prints the Drover/baseline ratio of one repetition of mode=both. */
void lt_report_ratio(const lt_opts_t *o, const lt_result_t *raw, const lt_result_t *drv);

/* Prints median, min and max over n repetitions of mode=both, and the broker ceiling. */
void lt_report_repeats(const lt_opts_t *o, const lt_result_t *raw, const lt_result_t *drv, int n);

/* Prints the half-load figures of mode=latency: probe = the rate run, half = the run at half its rate. */
void lt_report_latency(const lt_opts_t *o, const lt_result_t *probe, const lt_result_t *half);

static inline const char *lt_mode_name(int mode)
{
    return mode == LT_MODE_RAW ? "raw" : "drover";
}

/* Device index of command k, and whether a device connects at all. */
static inline int64_t lt_device_of(const lt_opts_t *o, int64_t k)
{
    return k % o->devices;
}

static inline int lt_device_online(const lt_opts_t *o, int64_t n)
{
    return n >= o->devices * o->offline_pct / 100;
}

#endif
