/* drover-load: argv -> options -> one process per phase -> comparisons. The phases themselves run in
 * phase.c; this process only orders them and outlives them, so a phase that dies or hangs cannot
 * take the report of the others with it. It checks the REST API and key up front (one plain HTTP
 * request, no paho), so a wrong one fails before any device connects.
 *
 * Orders: mode=drover or raw runs that phase `repeat` times; mode=both runs a Drover phase and then
 * a raw phase, `repeat` times (3 by default), and prints median and spread; mode=latency runs a
 * Drover phase as fast as accepted, then one at half of its steady full-cycle rate.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dr/mem.h"
#include "load.h"

#define RAW_MIN_S 5 /* shortest raw phase of mode=both when it follows the Drover phase's length */

/* Runs one phase in a child process and returns its results (valid = 0 if it failed). tag makes
 * the phase's device and producer ids its own, so persistent sessions or late messages of one phase
 * can never reach another. */
static lt_result_t run_phase(const lt_opts_t *o, int mode, const char *tag)
{
    lt_result_t res = {0};
    lt_shm_t *s = lt_shm_new(o->commands);
    lt_opts_t po = *o;
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "%s%s", o->prefix, tag);
    po.prefix = prefix;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("drover-load: fork");
        lt_shm_free(s);
        return res;
    }
    if (pid == 0)
        lt_phase_run(&po, mode, s);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        res = s->res;
    else
        fprintf(stderr, "drover-load: %s phase failed (status %d)\n", lt_mode_name(mode), st);
    lt_shm_free(s);
    return res;
}

/* The options of the raw phase that follows Drover phase drv in mode=both. As fast as accepted, it
 * sends for raw.duration_s (or as long as the Drover phase ran, at least RAW_MIN_S), so that the
 * baseline is as steady as the phase it is compared with, however much faster it is. */
static lt_opts_t raw_opts(const lt_opts_t *o, const lt_result_t *drv)
{
    lt_opts_t ro = *o;
    if (o->rate > 0 || o->backlog)
        return ro; /* a fixed rate or a backlog: the same commands in both phases */
    int64_t d = o->raw_duration_s;
    if (d == 0)
        d = drv->valid ? (int64_t)(drv->run_s + 0.999) : o->duration_s;
    ro.duration_s = d < RAW_MIN_S ? RAW_MIN_S : d;
    ro.commands = o->raw_commands;
    ro.raw_by_time = 1;
    return ro;
}

static int run_both(const lt_opts_t *o)
{
    int n = (int)o->repeat, ok = 1;
    lt_result_t *raw = dr_calloc((size_t)n, sizeof(lt_result_t)), *drv = dr_calloc((size_t)n, sizeof(lt_result_t));
    for (int i = 0; i < n; i++) {
        char tag[16];
        if (i > 0)
            sleep(1); /* let the broker settle the previous phase's disconnects */
        printf("\n#### repetition %d of %d\n", i + 1, n);
        snprintf(tag, sizeof(tag), "d%d", i + 1);
        drv[i] = run_phase(o, LT_MODE_DROVER, tag);
        sleep(1);
        lt_opts_t ro = raw_opts(o, &drv[i]);
        if (ro.raw_by_time)
            printf("\n(raw phase: as fast as accepted for %lld s, at most %lld commands)\n", (long long)ro.duration_s,
                   (long long)ro.commands);
        snprintf(tag, sizeof(tag), "r%d", i + 1);
        raw[i] = run_phase(&ro, LT_MODE_RAW, tag);
        lt_report_ratio(o, &raw[i], &drv[i]);
        ok &= raw[i].valid && drv[i].valid;
    }
    lt_report_repeats(o, raw, drv, n);
    free(raw);
    free(drv);
    return ok;
}

static int run_latency(const lt_opts_t *o)
{
    lt_opts_t po = *o;
    po.rate = 0;
    printf("\n#### half load, step 1: full-cycle rate, as fast as accepted\n");
    lt_result_t probe = run_phase(&po, LT_MODE_DROVER, "d1");
    if (!probe.valid || probe.steady_rate < 2) {
        fprintf(stderr, "drover-load: mode=latency: the rate run measured no full-cycle rate\n");
        return 0;
    }
    po.rate = (int64_t)(probe.steady_rate / 2);
    printf("\n#### half load, step 2: %lld commands/s\n", (long long)po.rate);
    sleep(1);
    lt_result_t half = run_phase(&po, LT_MODE_DROVER, "d2");
    lt_report_latency(&po, &probe, &half);
    return half.valid;
}

int main(int argc, char **argv)
{
    lt_opts_t o;
    if (lt_opts_load(&o, argc, argv) != 0) {
        lt_opts_free(&o);
        return 2;
    }
    /* libcurl's global set-up, before any thread exists (the phases inherit it through fork). */
    if (o.rest && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "drover-load: curl_global_init failed\n");
        lt_opts_free(&o);
        return 2;
    }
    /* A wrong URL or key shows before thousands of devices connect. */
    if (o.rest && lt_rest_check(&o) != 0) {
        curl_global_cleanup();
        lt_opts_free(&o);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The hard limit: SIGALRM's default action ends this process, and the phase and worker processes
     * follow through PR_SET_PDEATHSIG. */
    alarm((unsigned)o.timeout_s);
    int ok = 1;
    if (o.mode_bits == LT_MODE_BOTH) {
        ok = run_both(&o);
    } else if (o.mode_bits == LT_MODE_LATENCY) {
        ok = run_latency(&o);
    } else {
        for (int i = 0; i < o.repeat; i++) {
            char tag[16];
            snprintf(tag, sizeof(tag), "%c%d", o.mode_bits == LT_MODE_RAW ? 'r' : 'd', i + 1);
            if (i > 0)
                sleep(1);
            ok &= run_phase(&o, o.mode_bits, tag).valid;
        }
    }
    if (o.rest)
        curl_global_cleanup();
    lt_opts_free(&o);
    return ok ? 0 : 1;
}
