/* One phase (raw baseline or Drover): the coordinator process. It forks the device workers, waits
 * until their devices are connected, sends the commands at the configured rate, waits (bounded) for
 * the outstanding deliveries and notifications, stops the workers and prints the summary.
 * Around the sending it samples the CPU of the processes named in cpu.pids and of its own process
 * tree (at the first send and at the end, so connection set-up is left out), and the broker's $SYS
 * message counters (before the first send and after the last answer).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dr/mem.h"
#include "load.h"

typedef struct {
    const lt_opts_t *o;
    int mode;
    lt_shm_t *s;
    pid_t *pids;
    int64_t t0, next_progress;
} phase_t;

static void tick(phase_t *ph)
{
    int64_t now = lt_now_us();
    if (now >= ph->next_progress) {
        lt_report_progress(ph->o, ph->mode, ph->s, ph->t0);
        ph->next_progress = now + ph->o->progress_ms * 1000;
    }
}

/* True when every command that can still complete has done so: accepted, delivered to its device
 * (if that device is online) and, when the device answered, notified back. */
static int all_done(phase_t *ph, int64_t sent)
{
    const lt_opts_t *o = ph->o;
    lt_counters_t *c = &ph->s->c;
    if (atomic_load(&c->accepted) + atomic_load(&c->rejected) + atomic_load(&c->send_errors) < sent)
        return 0;
    if (o->wait_accept_only)
        return 1;
    int64_t expect = 0;
    for (int64_t k = 0; k < sent; k++)
        if (atomic_load(&ph->s->rec[k].acc_us) != 0 && lt_device_online(o, lt_device_of(o, k)))
            expect++;
    if (atomic_load(&c->dev_first) < expect)
        return 0;
    if (o->ack_loss_pct == 100)
        return 1;
    int64_t want_done = atomic_load(&c->completes_sent);
    return atomic_load(&c->notif_delivered) >= expect && atomic_load(&c->notif_completed) >= want_done;
}

static void stop_workers(phase_t *ph)
{
    atomic_store(&ph->s->c.phase, LT_PH_STOP);
    for (int i = 0; i < ph->o->workers; i++) {
        int st;
        for (int w = 0; w < 300; w++) {
            if (waitpid(ph->pids[i], &st, WNOHANG) != 0)
                goto next;
            usleep(10000);
        }
        kill(ph->pids[i], SIGKILL);
        waitpid(ph->pids[i], &st, 0);
    next:;
    }
}

static int wait_ready(phase_t *ph)
{
    const lt_opts_t *o = ph->o;
    int64_t start = lt_now_us();
    while (atomic_load(&ph->s->c.workers_ready) < o->workers) {
        for (int i = 0; i < o->workers; i++) {
            int st;
            if (waitpid(ph->pids[i], &st, WNOHANG) == ph->pids[i]) {
                fprintf(stderr, "drover-load: device worker %d exited early\n", i);
                ph->pids[i] = -1;
                return -1;
            }
        }
        if (lt_now_us() >= ph->next_progress) {
            fprintf(stderr, "[%s] connecting devices: %lld up, %lld failed, %.0f s\n", lt_mode_name(ph->mode),
                    (long long)atomic_load(&ph->s->c.connected), (long long)atomic_load(&ph->s->c.connect_failed),
                    (double)(lt_now_us() - start) / 1e6);
            ph->next_progress = lt_now_us() + o->progress_ms * 1000;
        }
        usleep(20000);
    }
    if (o->backlog)
        fprintf(stderr, "[%s] device sessions primed and disconnected in %.1f s (%lld failed)\n",
                lt_mode_name(ph->mode), (double)(lt_now_us() - start) / 1e6,
                (long long)atomic_load(&ph->s->c.connect_failed));
    else
        fprintf(stderr, "[%s] %lld devices connected in %.1f s (%lld failed)\n", lt_mode_name(ph->mode),
                (long long)atomic_load(&ph->s->c.connected), (double)(lt_now_us() - start) / 1e6,
                (long long)atomic_load(&ph->s->c.connect_failed));
    return 0;
}

/* Sends commands 0..commands-1 at producer.rate (or as fast as the windows allow) until done or
 * duration_s has passed. Returns how many were handed to paho. */
static int64_t send_all(phase_t *ph, lt_producers_t *ps)
{
    const lt_opts_t *o = ph->o;
    int64_t deadline = ph->t0 + o->duration_s * 1000000, k = 0;
    while (k < o->commands) {
        int64_t now = lt_now_us();
        if (now >= deadline)
            break;
        tick(ph);
        if (o->rate > 0 && k >= (now - ph->t0) * o->rate / 1000000 + 1) {
            usleep(500);
            continue;
        }
        int rc = lt_producers_send(ps, k);
        if (rc == -1) {
            usleep(200); /* this producer's window is full: wait for receipts */
            continue;
        }
        k++;
    }
    return k;
}

static void wait_until(phase_t *ph, int64_t sent, int64_t deadline)
{
    int64_t next_check = 0;
    while (lt_now_us() < deadline) {
        tick(ph);
        if (lt_now_us() >= next_check) {
            if (all_done(ph, sent))
                return;
            next_check = lt_now_us() + 50000;
        }
        usleep(5000);
    }
}

void lt_phase_run(const lt_opts_t *o, int mode, lt_shm_t *s)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    phase_t ph = {.o = o, .mode = mode, .s = s};
    ph.pids = dr_calloc((size_t)o->workers, sizeof(pid_t));
    /* Workers first: no paho thread exists yet in this process. */
    for (int i = 0; i < o->workers; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("drover-load: fork");
            _exit(1);
        }
        if (pid == 0)
            lt_devices_run(o, mode, i, s);
        ph.pids[i] = pid;
    }
    if (wait_ready(&ph) != 0) {
        stop_workers(&ph);
        _exit(1);
    }
    lt_producers_t *ps = lt_producers_open(o, mode, s);
    if (ps == NULL) {
        stop_workers(&ph);
        _exit(1);
    }
    lt_usage_t u;
    memset(&u, 0, sizeof(u));
    char sys_id[48];
    snprintf(sys_id, sizeof(sys_id), "%s-sys", o->prefix);
    lt_broker_t *broker = lt_broker_open(o, sys_id);
    u.have_broker = broker != NULL && lt_broker_sample(broker, &u.b0) == 0;
    lt_cpu_sample(o, getpid(), &u.cpu0);
    atomic_store(&s->c.phase, LT_PH_RUN);
    ph.t0 = lt_now_us();
    ph.next_progress = ph.t0 + o->progress_ms * 1000;
    int64_t sent = send_all(&ph, ps);
    int64_t t_sent = lt_now_us();
    if (o->backlog) {
        /* Everything queued while the devices are away; then they all come back at once. */
        o = ph.o;
        lt_opts_t accept_only = *o;
        accept_only.wait_accept_only = 1;
        ph.o = &accept_only;
        wait_until(&ph, sent, t_sent + o->drain_s * 1000000);
        ph.o = o;
        atomic_store(&s->c.reconnect_us, lt_now_us());
        atomic_store(&s->c.phase, LT_PH_RECONNECT);
        fprintf(stderr, "[%s] backlog of %lld accepted commands queued in %.1f s; devices reconnecting\n",
                lt_mode_name(mode), (long long)atomic_load(&s->c.accepted), (double)(lt_now_us() - ph.t0) / 1e6);
        wait_until(&ph, sent, lt_now_us() + o->drain_s * 1000000);
    } else {
        wait_until(&ph, sent, t_sent + o->drain_s * 1000000);
    }
    int64_t t_end = lt_now_us();
    lt_cpu_sample(o, getpid(), &u.cpu1);
    lt_report_progress(o, mode, s, ph.t0);
    if (u.have_broker && lt_broker_sample(broker, &u.b1) != 0) {
        fprintf(stderr, "drover-load: no $SYS update from the broker after the run; broker messages not counted\n");
        u.have_broker = 0;
    }
    lt_broker_close(broker);
    lt_producers_close(ps);
    stop_workers(&ph);
    lt_report_summary(o, mode, s, ph.t0, t_end, &u);
    free(ph.pids);
    fflush(stdout);
    _exit(0);
}
