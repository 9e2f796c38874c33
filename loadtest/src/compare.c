/* Reports that compare phases: the Drover/raw ratio of one repetition of mode=both, the median and
 * spread over all repetitions with the ceiling the broker sets, and the half-load latency of
 * mode=latency. The phases' own figures come from report.c through lt_result_t.
 *
 * DESIGN
 * The ratio compares steady full-cycle rates (report.c leaves out the first and last 10 % of
 * answers), so neither phase's start-up or last stragglers weigh in, and it is taken per repetition
 * (a Drover phase and the raw phase right after it) before the median: the machine's load drifts
 * between repetitions more than within one. The ceiling is what the broker allows if it were the
 * only limit: the PUBLISH packets per second it moved in the raw phase, divided by the PUBLISH
 * packets one Drover command costs. The raw phase is itself limited by the load tool and the shared
 * cores, so this is a lower bound on the broker's capacity and the ceiling is one too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load.h"

#define TARGET_RATIO 0.35 /* full cycles >= 0.35 x the raw broker in the same run (docs/benchmarks.md) */
#define TARGET_CPU_US 200.0

typedef struct {
    double med, min, max;
} spread_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static spread_t spread(double *v, int n)
{
    spread_t s = {0, 0, 0};
    if (n == 0)
        return s;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return s;
}

static void print_spread(const char *label, spread_t s, int decimals, const char *unit)
{
    printf("  %-46s %10.*f  [%.*f .. %.*f]%s\n", label, decimals, s.med, decimals, s.min, decimals, s.max,
           unit);
}

/* True when the raw phase ran as fast as accepted over its whole time, so that its broker message
 * rate is a capacity (a fixed rate or a backlog's wait for reconnects is not). */
static int capacity_run(const lt_opts_t *o)
{
    return o->rate == 0 && !o->backlog;
}

void lt_report_ratio(const lt_opts_t *o, const lt_result_t *raw, const lt_result_t *drv)
{
    if (!raw->valid || !drv->valid) {
        printf("\nratio: not available (a phase failed)\n");
        return;
    }
    double r = raw->steady_rate > 0 ? drv->steady_rate / raw->steady_rate : 0;
    printf("\n== Drover vs raw broker (same devices, producers and client library)\n");
    printf("full cycle, steady: drover %.0f/s, raw %.0f/s, ratio %.2f (target >= %.2f)\n", drv->steady_rate,
           raw->steady_rate, r, TARGET_RATIO);
    printf("full cycle, first send to last answer: drover %.0f/s, raw %.0f/s; delivered to devices: drover "
           "%.0f/s, "
           "raw %.0f/s\n",
           drv->ack_rate, raw->ack_rate, drv->dev_rate, raw->dev_rate);
    if (raw->have_broker && drv->have_broker && drv->pub_per_cmd > 0 && !capacity_run(o))
        printf("broker PUBLISH packets per command: raw %.2f, drover %.2f (no ceiling: the raw phase did not "
               "run "
               "as fast as accepted)\n",
               raw->pub_per_cmd, drv->pub_per_cmd);
    else if (raw->have_broker && drv->have_broker && drv->pub_per_cmd > 0)
        printf("broker PUBLISH packets per command: raw %.2f, drover %.2f; ceiling %.0f/s / %.2f = %.0f "
               "commands/s "
               "(ratio %.2f)\n",
               raw->pub_per_cmd, drv->pub_per_cmd, raw->pub_rate, drv->pub_per_cmd,
               raw->pub_rate / drv->pub_per_cmd, raw->pub_per_cmd / drv->pub_per_cmd);
    if (o->rate > 0)
        printf("note: both phases ran at the fixed producer.rate of %lld/s, so the ratio only says whether "
               "Drover "
               "kept up; capacity ratios need producer.rate=0\n",
               (long long)o->rate);
}

void lt_report_repeats(const lt_opts_t *o, const lt_result_t *raw, const lt_result_t *drv, int n)
{
    double rs[64], ds[64], ratio[64], rpub[64], dpub[64], rate[64], ceil[64], cratio[64], cpu[64];
    double group[LT_CPU_GROUPS + 1][64], rgroup[LT_CPU_GROUPS + 1][64];
    int nv = 0, nb = 0, nc = 0;
    for (int i = 0; i < n && i < 64; i++) {
        if (!raw[i].valid || !drv[i].valid)
            continue;
        rs[nv] = raw[i].steady_rate;
        ds[nv] = drv[i].steady_rate;
        ratio[nv] = raw[i].steady_rate > 0 ? drv[i].steady_rate / raw[i].steady_rate : 0;
        nv++;
        if (raw[i].have_broker && drv[i].have_broker && drv[i].pub_per_cmd > 0) {
            rpub[nb] = raw[i].pub_per_cmd;
            dpub[nb] = drv[i].pub_per_cmd;
            rate[nb] = raw[i].pub_rate;
            ceil[nb] = raw[i].pub_rate / drv[i].pub_per_cmd;
            cratio[nb] = raw[i].pub_per_cmd / drv[i].pub_per_cmd;
            nb++;
        }
        if (drv[i].have_cpu) {
            cpu[nc] = drv[i].drover_cpu_us;
            for (int g = 0; g <= o->cpu.ngroups; g++) {
                group[g][nc] = drv[i].cpu_us[g];
                rgroup[g][nc] = raw[i].cpu_us[g];
            }
            nc++;
        }
    }
    printf("\n== Drover vs raw broker over %d repetitions (%d complete): median [min .. max]\n", n, nv);
    if (nv == 0)
        return;
    print_spread("full cycle, steady, drover (commands/s)", spread(ds, nv), 0, "");
    print_spread("full cycle, steady, raw (commands/s)", spread(rs, nv), 0, "");
    spread_t r = spread(ratio, nv);
    print_spread("ratio drover/raw (per repetition)", r, 3,
                 r.med >= TARGET_RATIO ? "  target >= 0.35: met" : "  target >= 0.35: NOT met");
    if (nb > 0) {
        print_spread("broker PUBLISH packets per command, raw", spread(rpub, nb), 2, "");
        print_spread("broker PUBLISH packets per command, drover", spread(dpub, nb), 2, "");
        print_spread("ceiling as a ratio (raw's / drover's per cmd)", spread(cratio, nb), 3, "");
        if (capacity_run(o)) {
            print_spread("broker PUBLISH packets/s in the raw phase", spread(rate, nb), 0, "");
            print_spread("ceiling: that / drover's per command (cmd/s)", spread(ceil, nb), 0, "");
        } else {
            printf("  (no ceiling in commands/s: the raw phase did not run as fast as accepted)\n");
        }
    }
    if (nc > 0) {
        print_spread("Drover side cpu, us per command", spread(cpu, nc), 0, "  target 200");
        for (int g = 0; g <= o->cpu.ngroups; g++) {
            char label[64];
            snprintf(label, sizeof(label), "  %s, us per command (drover | raw)",
                     g < o->cpu.ngroups ? o->cpu.name[g] : "load tool");
            spread_t d = spread(group[g], nc), w = spread(rgroup[g], nc);
            printf("  %-46s %10.0f  [%.0f .. %.0f] | %.0f [%.0f .. %.0f]\n", label, d.med, d.min, d.max,
                   w.med, w.min, w.max);
        }
    }
}

void lt_report_latency(const lt_opts_t *o, const lt_result_t *probe, const lt_result_t *half)
{
    printf("\n== half load: full cycle measured at %.0f/s (steady), then %lld commands at %lld/s\n",
           probe->steady_rate, (long long)o->commands, (long long)o->rate);
    if (!half->valid) {
        printf("the half-load phase failed\n");
        return;
    }
    printf("  %-52s %10s %10s\n", "path", "p50 ms", "p99 ms");
    const char *receipt = o->rest ? "POST -> 201 answer (the stored command's id)"
                                  : "publish -> receipt (NOT_DELIVERED at the producer)";
    printf("  %-52s %10.1f %10.1f\n", receipt, half->p50_ms[LT_L_SEND_ACC], half->p99_ms[LT_L_SEND_ACC]);
    printf("  %-52s %10.1f %10.1f\n", "publish -> device", half->p50_ms[LT_L_SEND_DEV],
           half->p99_ms[LT_L_SEND_DEV]);
    printf("  %-52s %10.1f %10.1f\n", "device ack -> DELIVERED at the producer", half->p50_ms[LT_L_DEV_NOTIF],
           half->p99_ms[LT_L_DEV_NOTIF]);
    printf("  achieved full cycle %.0f/s over %lld commands (%lld answered)\n", half->steady_rate,
           (long long)half->accepted, (long long)half->notified);
}
