/* Lanes: the MQTT consumer processes of one ingress.
 *
 * DESIGN
 * paho.mqtt.c runs every message callback of a process on one receive thread, and the ingress callback
 * must wait for Redis before it returns (the PUBACK follows the return), so one process stores one
 * producer message at a time: its throughput is one Redis round trip plus one fsync per message, and
 * an ack arriving behind a producer message on the same connection waits too. Lanes remove both
 * limits without giving up acknowledge-after-durable: the ingress the operator started (lane 0) starts
 * ingress.mqtt_lanes - 1 copies of itself (lanes 1..N-1), each with its own MQTT connection and
 * receive thread. With more than one lane, lane 0 consumes device acks and serves REST, and the other
 * lanes consume producer messages; their accept scripts are in flight together, so Redis writes them
 * with one fsync.
 *
 * A lane is the same executable with the same arguments plus --ingress.lane=k, --node.id=<id>.l<k>
 * (a stable MQTT client id, so a restarted lane resumes its persistent session), --http.port=0 and
 * --ingress.lane_parent=<pid of lane 0>.
 * Lane 0 restarts a lane that exits on its own, stops every lane on SIGTERM and waits for them; a lane
 * asks the kernel for SIGTERM when lane 0 dies, so a kill -9 of the ingress leaves no orphans (they
 * stop cleanly and their sessions keep what they had not stored).
 */
#define DR_MODULE "ingress/lanes"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "ingress.h"

#define RESTART_DELAY_MS 1000

struct lane {
    ingress_t *in;
    int index;           /* 1..N-1 */
    uv_process_t proc;
    uv_timer_t restart;
    int running;         /* proc is a live child */
    int proc_open;       /* proc is initialised and its close callback has not run yet */
    char node_id[80];
};

static void start_lane(struct lane *l);

static void on_proc_closed(uv_handle_t *h)
{
    struct lane *l = h->data;
    l->proc_open = 0;
}

static void on_restart(uv_timer_t *t)
{
    struct lane *l = t->data;
    if (!l->in->node.stopping)
        start_lane(l);
}

static void on_lane_exit(uv_process_t *p, int64_t status, int sig)
{
    struct lane *l = p->data;
    ingress_t *in = l->in;
    l->running = 0;
    in->lanes_running--;
    uv_close((uv_handle_t *)p, on_proc_closed);
    if (in->node.stopping) {
        dr_log(DR_LOG_VERBOSE, "event=lane_stopped lane=%d status=%lld signal=%d", l->index, (long long)status, sig);
        return;
    }
    dr_log(DR_LOG_WARNING, "event=lane_exited lane=%d status=%lld signal=%d action=restart_in_ms:%d", l->index,
           (long long)status, sig, RESTART_DELAY_MS);
    uv_timer_start(&l->restart, on_restart, RESTART_DELAY_MS, 0);
}

static void start_lane(struct lane *l)
{
    ingress_t *in = l->in;
    if (l->proc_open) { /* the previous process's handle is still closing */
        uv_timer_start(&l->restart, on_restart, 10, 0);
        return;
    }
    char exe[4096];
    size_t exe_len = sizeof(exe);
    if (uv_exepath(exe, &exe_len) != 0) {
        dr_log(DR_LOG_WARNING, "event=lane_not_started lane=%d reason=\"executable path unknown\"", l->index);
        return;
    }
    char lane_arg[32], id_arg[96], parent_arg[48];
    snprintf(lane_arg, sizeof(lane_arg), "--ingress.lane=%d", l->index);
    snprintf(parent_arg, sizeof(parent_arg), "--ingress.lane_parent=%d", (int)getpid());
    snprintf(id_arg, sizeof(id_arg), "--node.id=%s", l->node_id);
    char **args = dr_calloc((size_t)in->argc + 5, sizeof(char *));
    args[0] = exe;
    for (int i = 1; i < in->argc; i++)
        args[i] = in->argv[i];
    /* Given last, so they win over the same keys in the file, the environment and earlier arguments. */
    args[in->argc] = lane_arg;
    args[in->argc + 1] = id_arg;
    args[in->argc + 2] = "--http.port=0";
    args[in->argc + 3] = parent_arg;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    /* Its own process group: a Ctrl-C at the terminal reaches lane 0 only, which then stops the lanes
     * with one SIGTERM (a second signal would make a lane exit at once). */
    uv_process_options_t opt = {
        .file = exe,
        .args = args,
        .exit_cb = on_lane_exit,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    l->proc.data = l;
    int rc = uv_spawn(in->node.loop.uv, &l->proc, &opt);
    l->proc.data = l; /* whatever uv_spawn's handle initialisation did */
    l->proc_open = 1;
    free(args);
    if (rc != 0) {
        /* uv_spawn initialised the handle even though it failed: it must be closed. */
        uv_close((uv_handle_t *)&l->proc, on_proc_closed);
        dr_log(DR_LOG_WARNING, "event=lane_not_started lane=%d error=\"%s\" action=retry_in_ms:%d", l->index,
               uv_strerror(rc), RESTART_DELAY_MS);
        uv_timer_start(&l->restart, on_restart, RESTART_DELAY_MS, 0);
        return;
    }
    l->running = 1;
    in->lanes_running++;
    dr_log(DR_LOG_NOTICE, "event=lane_started lane=%d pid=%d node=%s", l->index, l->proc.pid, l->node_id);
}

int lanes_start(ingress_t *in, char *err)
{
    const dr_settings_t *cfg = &in->node.cfg;
    int n = (int)cfg->ingress_mqtt_lanes;
    if (cfg->ingress_lane > 0) {
        /* Log lines name the lane: every lane writes to the stderr of the ingress that started it. */
        static char svc[32];
        snprintf(svc, sizeof(svc), "ingress.l%lld", (long long)cfg->ingress_lane);
        dr_log_set_service(svc);
        /* A lane: stop when the ingress that started us goes away, whatever the reason. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        /* Compared with the pid lane 0 passed, not with 1: lane 0 may itself be pid 1 (a container). */
        if ((int64_t)getppid() != cfg->ingress_lane_parent) {
            snprintf(err, DR_ERR_LEN, "lane %lld: the ingress that started it has already exited",
                     (long long)cfg->ingress_lane);
            return -1;
        }
        return 0;
    }
    if (n <= 1)
        return 0;
    if (strlen(cfg->node_id) + 4 > 64) {
        snprintf(err, DR_ERR_LEN, "option 'node.id': at most 60 characters with ingress.mqtt_lanes > 1 "
                                  "(lanes are named <node.id>.l<k>)");
        return -1;
    }
    in->lanes = dr_calloc((size_t)n - 1, sizeof(struct lane *));
    in->nlanes = n - 1;
    for (int i = 0; i < n - 1; i++) {
        struct lane *l = dr_calloc(1, sizeof(*l));
        l->in = in;
        l->index = i + 1;
        snprintf(l->node_id, sizeof(l->node_id), "%s.l%d", cfg->node_id, l->index);
        uv_timer_init(in->node.loop.uv, &l->restart);
        l->restart.data = l;
        in->lanes[i] = l;
        start_lane(l);
    }
    return 0;
}

void lanes_stop(ingress_t *in)
{
    for (int i = 0; i < in->nlanes; i++) {
        struct lane *l = in->lanes[i];
        uv_timer_stop(&l->restart);
        if (l->running)
            uv_process_kill(&l->proc, SIGTERM);
    }
}

void lanes_close(ingress_t *in)
{
    for (int i = 0; i < in->nlanes; i++) {
        struct lane *l = in->lanes[i];
        if (l->running) {
            /* Still stopping after the deadline: it got SIGTERM and stops on its own. */
            dr_log(DR_LOG_WARNING, "event=lane_still_stopping lane=%d pid=%d", l->index, l->proc.pid);
            l->running = 0;
            uv_close((uv_handle_t *)&l->proc, on_proc_closed);
        }
        uv_close((uv_handle_t *)&l->restart, NULL);
    }
}

void lanes_dispose(ingress_t *in)
{
    for (int i = 0; i < in->nlanes; i++)
        free(in->lanes[i]);
    free(in->lanes);
    in->lanes = NULL;
    in->nlanes = 0;
}
