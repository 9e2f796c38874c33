/* drover-load: argv -> options -> one process per phase -> ratio. The phases themselves run in
 * phase.c; this process only orders them and outlives them, so a phase that dies or hangs cannot
 * take the report of the other with it. It checks the REST API and key up front (a plain HTTP
 * request, no paho), so a wrong one fails before any device connects.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "load.h"

/* Runs one phase in a child process and returns its results (valid = 0 if it failed). */
static lt_result_t run_phase(const lt_opts_t *o, int mode)
{
    lt_result_t res = {0};
    lt_shm_t *s = lt_shm_new(o->commands);
    /* Each phase gets its own device and producer ids, so persistent sessions or late messages of
     * one phase can never reach the other. */
    lt_opts_t po = *o;
    char prefix[40];
    snprintf(prefix, sizeof(prefix), "%s%s", o->prefix, mode == LT_MODE_RAW ? "r" : "d");
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

int main(int argc, char **argv)
{
    lt_opts_t o;
    if (lt_opts_load(&o, argc, argv) != 0)
        return 2;
    /* A wrong URL or key shows before thousands of devices connect. */
    if (o.rest && lt_rest_check(&o) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The hard limit: SIGALRM's default action ends this process, and the phase and worker processes
     * follow through PR_SET_PDEATHSIG. */
    alarm((unsigned)o.timeout_s);
    lt_result_t raw = {0}, drv = {0};
    if (o.mode_bits & LT_MODE_RAW)
        raw = run_phase(&o, LT_MODE_RAW);
    if (o.mode_bits & LT_MODE_DROVER) {
        if (o.mode_bits & LT_MODE_RAW)
            sleep(1); /* let the broker settle the baseline's disconnects */
        drv = run_phase(&o, LT_MODE_DROVER);
    }
    if (o.mode_bits == LT_MODE_BOTH)
        lt_report_ratio(&o, &raw, &drv);
    int ok = (!(o.mode_bits & LT_MODE_RAW) || raw.valid) && (!(o.mode_bits & LT_MODE_DROVER) || drv.valid);
    return ok ? 0 : 1;
}
