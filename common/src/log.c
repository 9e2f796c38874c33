/* Logging backend: formats one line and writes it to stderr with a single write(2) so lines from
 * different threads (paho and nats.c call back on their own threads) never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dr/log.h"
#include "dr/mem.h"

int dr_log_level = DR_LOG_NOTICE;
static const char *service = "drover";
static const char *level_names[] = {"debug", "verbose", "notice", "warning"};

void dr_log_set_service(const char *name)
{
    service = name;
}

int dr_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void dr_log_write(int level, const char *module, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (level < 0 || level > DR_LOG_WARNING)
        level = DR_LOG_WARNING;
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ svc=%s level=%s module=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, service, level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void dr_mem_oom(size_t size)
{
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "fatal: out of memory allocating %zu bytes\n", size);
    ssize_t w = write(STDERR_FILENO, msg, (size_t)n);
    (void)w;
    abort();
}

int dr_log_limit_ok(dr_log_limit_t *l, int max, int level, const char *module, const char *left_out_event)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - l->window_start_ms >= 1000) {
        if (l->left_out > 0 && level >= dr_log_level)
            dr_log_write(level, module, "event=%s count=%d", left_out_event, l->left_out);
        l->window_start_ms = now;
        l->count = 0;
        l->left_out = 0;
    }
    if (l->count++ < max)
        return 1;
    l->left_out++;
    return 0;
}
