/* Reporting of one phase: the progress line while it runs, the summary at its end (rates, latency
 * percentiles, duplicates, losses, pacing, CPU per process and broker messages). Comparisons of
 * several phases are in compare.c.
 *
 * Rates are counts divided by the time from the first send to the last event of that kind, so a run
 * that ends early because all work is done is not diluted by idle time; the steady full-cycle rate
 * also leaves out the first and the last 10 % of answers (windows filling, stragglers). Percentiles
 * are exact (the samples are sorted), which is affordable for the bounded command counts of a run.
 * CPU and broker messages are divided by the full cycles (answers at the producer) of the phase.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/mem.h"
#include "load.h"

void lt_report_progress(const lt_opts_t *o, int mode, lt_shm_t *s, int64_t t0_us)
{
    lt_counters_t *c = &s->c;
    double t = (double)(lt_now_us() - t0_us) / 1e6;
    char rest[160] = "";
    if (o->rest)
        snprintf(rest, sizeof(rest),
                 " http_retries=%" PRId64 " http_429=%" PRId64 " http_503=%" PRId64 " http_errors=%" PRId64,
                 atomic_load(&c->http_retries), atomic_load(&c->http_429), atomic_load(&c->http_503),
                 atomic_load(&c->http_timeouts) + atomic_load(&c->http_net_errors) + atomic_load(&c->http_4xx) +
                     atomic_load(&c->http_other) + atomic_load(&c->http_bad));
    fprintf(stderr,
            "[%s] t=%5.1fs sent=%" PRId64 " accepted=%" PRId64 " at_device=%" PRId64 " dups=%" PRId64
            " notified=%" PRId64 " completed=%" PRId64 " acks_lost=%" PRId64 " devices_up=%" PRId64 " lost_conn=%" PRId64
            "%s\n",
            lt_mode_name(mode), t, atomic_load(&c->sent), atomic_load(&c->accepted), atomic_load(&c->dev_first),
            atomic_load(&c->dev_dups), atomic_load(&c->notif_delivered), atomic_load(&c->notif_completed),
            atomic_load(&c->acks_lost), atomic_load(&c->connected), atomic_load(&c->conn_lost), rest);
}

/* ---- percentiles --------------------------------------------------------------------------------- */

typedef struct {
    int64_t *v;
    int64_t n;
} samples_t;

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const samples_t *s, double p)
{
    if (s->n == 0)
        return 0;
    int64_t i = (int64_t)(p * (double)s->n + 0.999999) - 1;
    if (i < 0)
        i = 0;
    if (i >= s->n)
        i = s->n - 1;
    return (double)s->v[i];
}

typedef struct {
    const char *name;
    samples_t s;
    double p50, p90, p99, max;
} lat_t;

static void lat_finish(lat_t *l, double scale)
{
    qsort(l->s.v, (size_t)l->s.n, sizeof(int64_t), cmp64);
    l->p50 = pct(&l->s, 0.50) / scale;
    l->p90 = pct(&l->s, 0.90) / scale;
    l->p99 = pct(&l->s, 0.99) / scale;
    l->max = pct(&l->s, 1.0) / scale;
}

static void lat_print(FILE *f, const lat_t *l)
{
    if (l->s.n == 0)
        fprintf(f, "  %-26s %9s\n", l->name, "-");
    else
        fprintf(f, "  %-26s %9.1f %9.1f %9.1f %9.1f %9" PRId64 "\n", l->name, l->p50, l->p90, l->p99, l->max, l->s.n);
}

/* ---- summary ------------------------------------------------------------------------------------- */

typedef struct {
    int64_t sent, accepted, online_accepted, at_device, notified, completed;
    int64_t missing_dev, missing_notif, never_accepted, mismatch;
    int64_t last_acc, last_dev, last_notif;
    double steady;              /* answers per second between the 10th and the 90th percentile answer */
    lat_t lat[LT_L_COUNT];
} tally_t;

static void add(lat_t *l, int64_t x)
{
    l->s.v[l->s.n++] = x;
}

/* The full-cycle rate without the start (windows filling) and the end (the last stragglers): the
 * answers between the 10th and the 90th percentile of answer times, over that time. */
static double steady_rate(int64_t *times, int64_t n)
{
    if (n < 20)
        return 0;
    qsort(times, (size_t)n, sizeof(int64_t), cmp64);
    int64_t a = n / 10, b = n - 1 - n / 10;
    return times[b] > times[a] ? (double)(b - a) * 1e6 / (double)(times[b] - times[a]) : 0;
}

static void tally(const lt_opts_t *o, lt_shm_t *s, tally_t *t)
{
    static const char *const names[LT_L_COUNT] = {"send -> accepted",      "send -> device",
                                                  "accepted -> device",    "accepted -> DELIVERED",
                                                  "device -> DELIVERED",   "accepted -> COMPLETED"};
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < LT_L_COUNT; i++) {
        t->lat[i].name = names[i];
        t->lat[i].s.v = dr_malloc(sizeof(int64_t) * (size_t)(s->ncmd + 1));
    }
    int64_t *answers = dr_malloc(sizeof(int64_t) * (size_t)(s->ncmd + 1)), nanswers = 0;
    for (int64_t k = 0; k < s->ncmd; k++) {
        lt_rec_t *r = &s->rec[k];
        int64_t sent = atomic_load(&r->sent_us), acc = atomic_load(&r->acc_us), dev = atomic_load(&r->dev_us);
        int64_t nt = atomic_load(&r->notif_us), done = atomic_load(&r->done_us);
        int64_t rid = atomic_load(&r->rid), did = atomic_load(&r->did);
        if (sent == 0)
            continue;
        t->sent++;
        if (acc == 0) {
            t->never_accepted++;
            continue;
        }
        t->accepted++;
        add(&t->lat[LT_L_SEND_ACC], acc - sent);
        t->last_acc = acc > t->last_acc ? acc : t->last_acc;
        int online = lt_device_online(o, lt_device_of(o, k));
        t->online_accepted += online;
        if (dev == 0) {
            t->missing_dev += online;
            continue;
        }
        t->at_device++;
        add(&t->lat[LT_L_SEND_DEV], dev - sent);
        add(&t->lat[LT_L_ACC_DEV], dev - acc);
        t->last_dev = dev > t->last_dev ? dev : t->last_dev;
        if (rid != 0 && did != 0 && rid != did)
            t->mismatch++;
        if (nt == 0) {
            t->missing_notif += o->ack_loss_pct < 100;
        } else {
            t->notified++;
            answers[nanswers++] = nt;
            add(&t->lat[LT_L_ACC_NOTIF], nt - acc);
            add(&t->lat[LT_L_DEV_NOTIF], nt - dev);
            t->last_notif = nt > t->last_notif ? nt : t->last_notif;
        }
        if (done != 0) {
            t->completed++;
            add(&t->lat[LT_L_ACC_DONE], done - acc);
        }
    }
    for (int i = 0; i < LT_L_COUNT; i++)
        lat_finish(&t->lat[i], 1000.0);
    t->steady = steady_rate(answers, nanswers);
    free(answers);
}

static double rate(int64_t n, int64_t from, int64_t to)
{
    return (n > 0 && to > from) ? (double)n * 1e6 / (double)(to - from) : 0;
}

typedef struct {
    int64_t n, below;
    double min, p10, p50, p90, max;
} pacing_t;

static void pacing(const lt_opts_t *o, lt_shm_t *s, pacing_t *p)
{
    memset(p, 0, sizeof(*p));
    int64_t n = atomic_load(&s->c.nintervals);
    if (n > s->ncmd)
        n = s->ncmd;
    samples_t v = {dr_malloc(sizeof(int64_t) * (size_t)(n + 1)), n};
    for (int64_t i = 0; i < n; i++) {
        v.v[i] = s->intervals[i];
        /* 1 ms of slack: the interval is measured at the device, after broker hops. */
        p->below += o->interval_ms > 0 && s->intervals[i] < o->interval_ms - 1;
    }
    qsort(v.v, (size_t)n, sizeof(int64_t), cmp64);
    p->n = n;
    p->min = pct(&v, 0);
    p->p10 = pct(&v, 0.10);
    p->p50 = pct(&v, 0.50);
    p->p90 = pct(&v, 0.90);
    p->max = pct(&v, 1.0);
    free(v.v);
}

/* What the REST transport saw: every request by outcome, and the MQTT receipts that go with the 201s. */
static void print_rest(FILE *f, lt_counters_t *c)
{
    fprintf(f, "REST requests %" PRId64 ": 201 %" PRId64 ", 200 replayed %" PRId64 ", 429 %" PRId64 ", 503 %" PRId64
               ", other 4xx %" PRId64 ", other status %" PRId64 ", 2xx without an id %" PRId64 "; timeouts %" PRId64
               ", connection errors %" PRId64 "; retries %" PRId64 ", connections opened %" PRId64 "\n",
            atomic_load(&c->http_requests), atomic_load(&c->http_created), atomic_load(&c->http_replayed),
            atomic_load(&c->http_429), atomic_load(&c->http_503), atomic_load(&c->http_4xx),
            atomic_load(&c->http_other), atomic_load(&c->http_bad), atomic_load(&c->http_timeouts),
            atomic_load(&c->http_net_errors), atomic_load(&c->http_retries), atomic_load(&c->http_conns));
    fprintf(f, "REST: NOT_DELIVERED receipts over MQTT %" PRId64 ", ids differing from the HTTP answer %" PRId64
               "\n",
            atomic_load(&c->rest_receipts), atomic_load(&c->id_mismatch));
}

/* How the drain spreads over the devices: when each device got its first and its last command after
 * the reconnect, and how long its own commands took from the first to the last (the pacing alone
 * gives (commands per device - 1) x interval). A drain much longer than the median device's last
 * command means a few devices fell behind; a late first command means the reconnect storm. */
static void drain_spread(FILE *f, const lt_opts_t *o, lt_shm_t *s, int64_t from)
{
    int64_t n = o->devices;
    int64_t *first = dr_calloc((size_t)n, sizeof(int64_t)), *last = dr_calloc((size_t)n, sizeof(int64_t));
    for (int64_t k = 0; k < s->ncmd; k++) {
        int64_t dev = atomic_load(&s->rec[k].dev_us), d = lt_device_of(o, k);
        if (dev == 0)
            continue;
        if (first[d] == 0 || dev < first[d])
            first[d] = dev;
        if (dev > last[d])
            last[d] = dev;
    }
    samples_t a = {dr_malloc(sizeof(int64_t) * (size_t)n), 0}, b = {dr_malloc(sizeof(int64_t) * (size_t)n), 0},
              span = {dr_malloc(sizeof(int64_t) * (size_t)n), 0};
    for (int64_t d = 0; d < n; d++) {
        if (first[d] == 0)
            continue;
        a.v[a.n++] = (first[d] - from) / 1000;
        b.v[b.n++] = (last[d] - from) / 1000;
        span.v[span.n++] = (last[d] - first[d]) / 1000;
    }
    samples_t *all[] = {&a, &b, &span};
    for (int i = 0; i < 3; i++)
        qsort(all[i]->v, (size_t)all[i]->n, sizeof(int64_t), cmp64);
    if (a.n > 0)
        fprintf(f, "drain by device (s after reconnect, p10 p50 p90 max of %" PRId64 " devices): first command %.1f %.1f "
                   "%.1f %.1f; last command %.1f %.1f %.1f %.1f; first to last %.1f %.1f %.1f %.1f\n",
                a.n, pct(&a, 0.1) / 1e3, pct(&a, 0.5) / 1e3, pct(&a, 0.9) / 1e3, pct(&a, 1) / 1e3, pct(&b, 0.1) / 1e3,
                pct(&b, 0.5) / 1e3, pct(&b, 0.9) / 1e3, pct(&b, 1) / 1e3, pct(&span, 0.1) / 1e3,
                pct(&span, 0.5) / 1e3, pct(&span, 0.9) / 1e3, pct(&span, 1) / 1e3);
    free(first);
    free(last);
    for (int i = 0; i < 3; i++)
        free(all[i]->v);
}

static void print_summary(FILE *f, const lt_opts_t *o, int mode, lt_shm_t *s, const tally_t *t, const pacing_t *pc,
                          int64_t t0, int64_t t_end)
{
    lt_counters_t *c = &s->c;
    int64_t online = o->devices - o->devices * o->offline_pct / 100;
    fprintf(f, "\n== %s: %" PRId64 " devices (%" PRId64 " online, %" PRId64 " worker processes), %" PRId64
               " producers%s, rate %s, payload pad %" PRId64 " B, run %.1f s\n",
            lt_mode_name(mode), o->devices, online, (int64_t)o->workers, o->producers, o->rest ? " over REST" : "",
            o->rate ? "fixed" : "as fast as accepted", o->payload, (double)(t_end - t0) / 1e6);
    if (o->rest)
        fprintf(f, "   REST: %s, %" PRId64 " keep-alive connections per producer, window %" PRId64
                   ", timeout %" PRId64 " ms, %" PRId64 " retries\n",
                o->rest_url, o->rest_conns, o->window, o->rest_timeout_ms, o->rest_retries);
    if (o->rate)
        fprintf(f, "   configured rate %" PRId64 "/s\n", o->rate);
    fprintf(f, "commands: sent %" PRId64 ", accepted %" PRId64 ", rejected %" PRId64 ", send errors %" PRId64
               ", delivered to devices %" PRId64 ", DELIVERED notified %" PRId64 ", COMPLETED notified %" PRId64 "\n",
            t->sent, t->accepted, atomic_load(&c->rejected), atomic_load(&c->send_errors), t->at_device, t->notified,
            t->completed);
    int64_t from = o->backlog ? atomic_load(&c->reconnect_us) : t0;
    fprintf(f, "throughput (commands/s): accepted %.0f, delivered %.0f, acknowledged %.0f\n",
            rate(t->accepted, t0, t->last_acc), rate(t->at_device, from, t->last_dev),
            rate(t->notified, from, t->last_notif));
    fprintf(f, "full cycle, steady (%s between the 10th and 90th percentile of them): %.0f/s\n",
            mode == LT_MODE_RAW ? "device answers at the producer" : "DELIVERED at the producer", t->steady);
    fprintf(f, "latency (ms)                     p50       p90       p99       max         n\n");
    for (int i = 0; i < LT_L_COUNT; i++)
        lat_print(f, &t->lat[i]);
    fprintf(f, "duplicates: re-sent ids seen by devices %" PRId64 ", duplicate notifications %" PRId64
               ", unexpected messages %" PRId64 " (devices) %" PRId64 " (producers)\n",
            atomic_load(&c->dev_dups), atomic_load(&c->notif_dups), atomic_load(&c->dev_foreign),
            atomic_load(&c->notif_other));
    fprintf(f, "losses at end: accepted but never at an online device %" PRId64 ", answered but no DELIVERED %" PRId64
               ", sent but never accepted %" PRId64 ", receipt/device id mismatches %" PRId64 "\n",
            t->missing_dev, t->missing_notif, t->never_accepted, t->mismatch);
    if (o->rest)
        print_rest(f, c);
    fprintf(f, "device answers: acks sent %" PRId64 ", dropped on purpose %" PRId64 ", publish errors %" PRId64
               ", COMPLETED sent %" PRId64 "; connections: up at end %" PRId64 ", failed %" PRId64 ", lost %" PRId64 "\n",
            atomic_load(&c->acks_sent), atomic_load(&c->acks_lost), atomic_load(&c->ack_errors),
            atomic_load(&c->completes_sent), atomic_load(&c->connected), atomic_load(&c->connect_failed),
            atomic_load(&c->conn_lost));
    /* The baseline has no pacing: its intervals show the broker's natural spacing, nothing to compare. */
    if (pc->n > 0 && mode == LT_MODE_RAW)
        fprintf(f, "spacing at the device (ms between new commands, no pacing): n %" PRId64 ", min %.0f, p50 %.0f, "
                   "max %.0f\n", pc->n, pc->min, pc->p50, pc->max);
    else if (pc->n > 0)
        fprintf(f, "pacing at the device (ms between new commands): n %" PRId64 ", min %.0f, p10 %.0f, p50 %.0f, "
                   "p90 %.0f, max %.0f; configured %" PRId64 "; below configured %" PRId64 "\n",
                pc->n, pc->min, pc->p10, pc->p50, pc->p90, pc->max, o->interval_ms, pc->below);
    if (o->backlog && t->last_dev > 0 && mode == LT_MODE_RAW)
        fprintf(f, "backlog drain (broker sessions, no pacing): all delivered %.1f s after reconnect, all answered %.1f s\n",
                (double)(t->last_dev - from) / 1e6, t->last_notif > 0 ? (double)(t->last_notif - from) / 1e6 : 0.0);
    else if (o->backlog && t->last_dev > 0) {
        int64_t per_dev = (o->commands + o->devices - 1) / o->devices;
        double optimal = (double)(per_dev - 1) * (double)o->interval_ms / 1000.0;
        double drain = (double)(t->last_dev - from) / 1e6;
        fprintf(f, "backlog drain: all delivered %.1f s after reconnect, all DELIVERED notified %.1f s; "
                   "pacing-optimal %.1f s (%" PRId64 " commands/device x %" PRId64 " ms); drain/optimal %.2f\n",
                drain, t->last_notif > 0 ? (double)(t->last_notif - from) / 1e6 : 0.0, optimal, per_dev,
                o->interval_ms, optimal > 0 ? drain / optimal : 0.0);
    }
    if (o->backlog && t->last_dev > 0)
        drain_spread(f, o, s, from);
}

static void write_json(const lt_opts_t *o, int mode, lt_shm_t *s, const tally_t *t, const pacing_t *pc, int64_t t0,
                       const lt_result_t *res)
{
    FILE *f = fopen(o->json, "a");
    if (f == NULL) {
        perror("drover-load: json");
        return;
    }
    int64_t from = o->backlog ? atomic_load(&s->c.reconnect_us) : t0;
    fprintf(f, "{\"mode\":\"%s\",\"devices\":%" PRId64 ",\"producers\":%" PRId64 ",\"sent\":%" PRId64
               ",\"accepted\":%" PRId64 ",\"delivered\":%" PRId64 ",\"notified\":%" PRId64
               ",\"acc_rate\":%.1f,\"dev_rate\":%.1f,\"ack_rate\":%.1f,\"dups\":%" PRId64 ",\"missing_dev\":%" PRId64
               ",\"missing_notif\":%" PRId64 ",\"never_accepted\":%" PRId64 ",\"mismatch\":%" PRId64,
            lt_mode_name(mode), o->devices, o->producers, t->sent, t->accepted, t->at_device, t->notified,
            rate(t->accepted, t0, t->last_acc), rate(t->at_device, from, t->last_dev),
            rate(t->notified, from, t->last_notif), atomic_load(&s->c.dev_dups), t->missing_dev, t->missing_notif,
            t->never_accepted, t->mismatch);
    static const char *const keys[LT_L_COUNT] = {"send_acc", "send_dev", "acc_dev", "acc_notif", "dev_notif",
                                                 "acc_done"};
    for (int i = 0; i < LT_L_COUNT; i++)
        fprintf(f, ",\"%s_ms\":[%.2f,%.2f,%.2f,%.2f]", keys[i], t->lat[i].p50, t->lat[i].p90, t->lat[i].p99,
                t->lat[i].max);
    fprintf(f, ",\"pacing_ms\":[%.0f,%.0f,%.0f,%.0f],\"pacing_below\":%" PRId64, pc->min, pc->p10, pc->p50, pc->max,
            pc->below);
    fprintf(f, ",\"steady_rate\":%.1f,\"run_s\":%.2f", res->steady_rate, res->run_s);
    if (res->have_cpu) {
        fprintf(f, ",\"cpu_us_per_command\":{");
        for (int g = 0; g <= o->cpu.ngroups; g++)
            fprintf(f, "%s\"%s\":%.1f", g ? "," : "", g < o->cpu.ngroups ? o->cpu.name[g] : "load", res->cpu_us[g]);
        fprintf(f, "},\"drover_side_cpu_us_per_command\":%.1f", res->drover_cpu_us);
    }
    if (res->have_broker)
        fprintf(f, ",\"broker_publish_per_command\":%.3f,\"broker_packets_per_command\":%.3f,"
                   "\"broker_publish_rate\":%.1f",
                res->pub_per_cmd, res->pkt_per_cmd, res->pub_rate);
    if (o->backlog)
        fprintf(f, ",\"drain_s\":%.2f,\"drain_notified_s\":%.2f", (double)(t->last_dev - from) / 1e6,
                (double)(t->last_notif - from) / 1e6);
    if (o->rest) {
        lt_counters_t *c = &s->c;
        fprintf(f, ",\"transport\":\"rest\",\"http_requests\":%" PRId64 ",\"http_201\":%" PRId64
                   ",\"http_200_replayed\":%" PRId64 ",\"http_429\":%" PRId64 ",\"http_503\":%" PRId64
                   ",\"http_4xx\":%" PRId64 ",\"http_other\":%" PRId64 ",\"http_bad\":%" PRId64
                   ",\"http_timeouts\":%" PRId64 ",\"http_conn_errors\":%" PRId64 ",\"http_retries\":%" PRId64
                   ",\"receipts\":%" PRId64 ",\"receipt_id_mismatch\":%" PRId64,
                atomic_load(&c->http_requests), atomic_load(&c->http_created), atomic_load(&c->http_replayed),
                atomic_load(&c->http_429), atomic_load(&c->http_503), atomic_load(&c->http_4xx),
                atomic_load(&c->http_other), atomic_load(&c->http_bad), atomic_load(&c->http_timeouts),
                atomic_load(&c->http_net_errors), atomic_load(&c->http_retries), atomic_load(&c->rest_receipts),
                atomic_load(&c->id_mismatch));
    }
    fprintf(f, "}\n");
    fclose(f);
}

/* ---- CPU and broker messages ----------------------------------------------------------------------- */

/* The groups that make up "Drover side": the services and the servers only Drover uses. */
static int drover_side(const char *name)
{
    return strcmp(name, "redis") == 0 || strcmp(name, "ingress") == 0 || strcmp(name, "dispatcher") == 0 ||
           strcmp(name, "nats") == 0;
}

/* Fills the CPU and broker figures of res from u, per full cycle (res->notified). */
static void usage_figures(const lt_opts_t *o, const lt_usage_t *u, double run_s, lt_result_t *res)
{
    double tick = lt_cpu_tick_s(), n = (double)res->notified;
    res->have_cpu = 1;
    for (int g = 0; g <= o->cpu.ngroups; g++) {
        res->cpu_s[g] = (double)(u->cpu1.ticks[g] - u->cpu0.ticks[g]) * tick;
        res->cpu_us[g] = n > 0 ? res->cpu_s[g] * 1e6 / n : 0;
        if (g < o->cpu.ngroups && drover_side(o->cpu.name[g]))
            res->drover_cpu_us += res->cpu_us[g];
    }
    if (!u->have_broker)
        return;
    res->have_broker = 1;
    double pub = (double)(u->b1.pub_in - u->b0.pub_in + u->b1.pub_out - u->b0.pub_out);
    double pkt = (double)(u->b1.pkt_in - u->b0.pkt_in + u->b1.pkt_out - u->b0.pkt_out);
    res->pub_per_cmd = n > 0 ? pub / n : 0;
    res->pkt_per_cmd = n > 0 ? pkt / n : 0;
    res->pub_rate = run_s > 0 ? pub / run_s : 0;
}

static void print_usage(FILE *f, const lt_opts_t *o, int mode, const lt_usage_t *u, const lt_result_t *res)
{
    fprintf(f, "cpu from the first send to the end (%.1f s; user+sys of each process tree):\n", res->run_s);
    fprintf(f, "  %-44s %9s %12s %7s\n", "", "seconds", "us/command", "cores");
    double side_s = 0;
    for (int g = 0; g <= o->cpu.ngroups; g++) {
        const char *name = g < o->cpu.ngroups ? o->cpu.name[g] : "load tool (drover-load)";
        fprintf(f, "  %-44s %9.2f %12.0f %7.2f\n", name, res->cpu_s[g], res->cpu_us[g],
                res->run_s > 0 ? res->cpu_s[g] / res->run_s : 0);
        if (g < o->cpu.ngroups && drover_side(o->cpu.name[g]))
            side_s += res->cpu_s[g];
    }
    if (o->cpu.ngroups > 0)
        fprintf(f, "  %-44s %9.2f %12.0f %7.2f%s\n", "Drover side (redis+ingress+dispatcher+nats)", side_s,
                res->drover_cpu_us, res->run_s > 0 ? side_s / res->run_s : 0,
                mode == LT_MODE_RAW ? "  (idle: not in the raw path)" : "  (target 200 us/command)");
    if (!u->have_broker)
        return;
    fprintf(f, "broker: PUBLISH packets in %" PRId64 ", out %" PRId64 " = %.2f per full cycle (%.0f/s); packets of any "
               "type %.2f per full cycle\n",
            u->b1.pub_in - u->b0.pub_in, u->b1.pub_out - u->b0.pub_out, res->pub_per_cmd, res->pub_rate,
            res->pkt_per_cmd);
}

void lt_report_summary(const lt_opts_t *o, int mode, lt_shm_t *s, int64_t t0_us, int64_t t_end_us,
                       const lt_usage_t *u)
{
    tally_t t;
    pacing_t pc;
    tally(o, s, &t);
    pacing(o, s, &pc);
    int64_t from = o->backlog ? atomic_load(&s->c.reconnect_us) : t0_us;
    lt_result_t *res = &s->res;
    memset(res, 0, sizeof(*res));
    res->acc_rate = rate(t.accepted, t0_us, t.last_acc);
    res->dev_rate = rate(t.at_device, from, t.last_dev);
    res->ack_rate = rate(t.notified, from, t.last_notif);
    res->steady_rate = t.steady;
    res->run_s = (double)(t_end_us - t0_us) / 1e6;
    res->accepted = t.accepted;
    res->delivered = t.at_device;
    res->notified = t.notified;
    for (int i = 0; i < LT_L_COUNT; i++) {
        res->p50_ms[i] = t.lat[i].p50;
        res->p99_ms[i] = t.lat[i].p99;
    }
    if (u != NULL)
        usage_figures(o, u, res->run_s, res);
    print_summary(stdout, o, mode, s, &t, &pc, t0_us, t_end_us);
    if (u != NULL)
        print_usage(stdout, o, mode, u, res);
    if (o->json[0])
        write_json(o, mode, s, &t, &pc, t0_us, res);
    res->valid = 1;
    for (int i = 0; i < LT_L_COUNT; i++)
        free(t.lat[i].s.v);
}
