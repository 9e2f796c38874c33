/* CPU accounting of a run: the user + system time of the servers around Drover, of Drover's own
 * processes and of the load tool, per phase.
 *
 * DESIGN
 * The scenarios name the root processes (cpu.pids: redis-server, nats-server, mosquitto, every
 * ingress and dispatcher). A root counts together with every process below it, because the
 * load tool forks device workers.
 * One sample reads /proc/<pid>/stat of every process once: utime + stime of the live ones, plus
 * cutime + cstime, which hold the time of children already reaped. A child that is reaped during
 * the run therefore counts its whole life, a little more than its share of the window; the
 * processes measured here live for the whole phase. No cgroup is needed, so the scenarios run
 * unchanged inside containers and next to other stacks. Resolution is one clock tick (10 ms) per
 * process and sample.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/mem.h"
#include "load.h"

#define MAX_DEPTH 64 /* ancestors followed when looking for a root */

int lt_cpu_parse(lt_opts_t *o, char *err, size_t errlen)
{
    lt_cpu_set_t *c = &o->cpu;
    memset(c, 0, sizeof(*c));
    const char *p = o->cpu_pids;
    while (*p) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        if (eq == NULL || eq > end || eq == p || eq - p >= (long)sizeof(c->name[0])) {
            snprintf(err, errlen, "'%.*s' is not name=pid (name of 1..15 characters)", (int)(end - p), p);
            return -1;
        }
        char *e;
        long pid = strtol(eq + 1, &e, 10);
        if (e != end || pid <= 1) {
            snprintf(err, errlen, "'%.*s': the pid is not a number above 1", (int)(end - p), p);
            return -1;
        }
        int g = 0;
        while (g < c->ngroups &&
               (strlen(c->name[g]) != (size_t)(eq - p) || strncmp(c->name[g], p, (size_t)(eq - p))))
            g++;
        if (g == c->ngroups) {
            if (c->ngroups == LT_CPU_GROUPS) {
                snprintf(err, errlen, "at most %d different names", LT_CPU_GROUPS);
                return -1;
            }
            memcpy(c->name[g], p, (size_t)(eq - p));
            c->ngroups++;
        }
        if (c->npids == LT_CPU_PIDS) {
            snprintf(err, errlen, "at most %d processes", LT_CPU_PIDS);
            return -1;
        }
        c->pid[c->npids] = (pid_t)pid;
        c->group[c->npids++] = g;
        p = *end ? end + 1 : end;
    }
    return 0;
}

double lt_cpu_tick_s(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    return 1.0 / (double)(hz > 0 ? hz : 100);
}

typedef struct {
    pid_t pid, ppid;
    int64_t ticks;
} proc_t;

static int by_pid(const void *a, const void *b)
{
    pid_t x = ((const proc_t *)a)->pid, y = ((const proc_t *)b)->pid;
    return (x > y) - (x < y);
}

/* Reads ppid and utime + stime + cutime + cstime of one process. Returns 0, or -1 when it is gone. */
static int read_stat(pid_t pid, proc_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    char state;
    int ppid;
    unsigned long long ut, st;
    long long cut, cst;
    if (sscanf(p + 1, " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &state, &ppid, &ut,
               &st, &cut, &cst) != 6)
        return -1;
    out->pid = pid;
    out->ppid = ppid;
    out->ticks = (int64_t)(ut + st) + cut + cst;
    return 0;
}

/* Index of the root (in o->cpu.pid, or npids for self) that pid is or descends from, or -1. */
static int root_of(const lt_opts_t *o, pid_t self, const proc_t *all, size_t n, pid_t pid)
{
    for (int depth = 0; depth < MAX_DEPTH && pid > 1; depth++) {
        if (pid == self)
            return o->cpu.npids;
        for (int i = 0; i < o->cpu.npids; i++)
            if (o->cpu.pid[i] == pid)
                return i;
        proc_t key = {.pid = pid};
        const proc_t *p = bsearch(&key, all, n, sizeof(proc_t), by_pid);
        if (p == NULL)
            return -1;
        pid = p->ppid;
    }
    return -1;
}

void lt_cpu_sample(const lt_opts_t *o, pid_t self, lt_cpu_sample_t *out)
{
    memset(out, 0, sizeof(*out));
    DIR *d = opendir("/proc");
    if (d == NULL)
        return;
    size_t n = 0, cap = 512;
    proc_t *all = dr_malloc(cap * sizeof(proc_t));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        if (n == cap) {
            cap *= 2;
            all = dr_realloc(all, cap * sizeof(proc_t));
        }
        if (read_stat((pid_t)atoi(e->d_name), &all[n]) == 0)
            n++;
    }
    closedir(d);
    qsort(all, n, sizeof(proc_t), by_pid);
    for (size_t i = 0; i < n; i++) {
        int r = root_of(o, self, all, n, all[i].pid);
        if (r < 0)
            continue;
        int g = r == o->cpu.npids ? o->cpu.ngroups : o->cpu.group[r];
        out->ticks[g] += all[i].ticks;
    }
    free(all);
}
