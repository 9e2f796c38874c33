/* Unit tests for the histogram (common/src/hist.c), the Prometheus text writer (common/src/prom.c) and
 * the common metric families (common/src/metrics.c). Expected texts are written out literally, so any
 * change of escaping, number format or bucket layout shows up here. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "dr/err.h"
#include "dr/hist.h"
#include "dr/metrics.h"
#include "dr/prom.h"
#include "t.h"

static const double bounds[] = {0.005, 0.1, 1};

static void test_hist_buckets(void)
{
    dr_hist_t h;
    CHECK_EQ_INT(dr_hist_init(&h, bounds, 3), 0);
    /* Upper bounds are inclusive (Prometheus "le"). */
    double obs[] = {0.001, 0.005, 0.0051, 0.1, 0.5, 1, 2, 1e9};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        dr_hist_observe(&h, obs[i]);
    dr_hist_observe(&h, NAN); /* ignored */
    dr_hist_snap_t s;
    dr_hist_snapshot(&h, &s);
    CHECK_EQ_U64(s.nbounds, 3);
    CHECK_EQ_U64(s.cumulative[0], 2);
    CHECK_EQ_U64(s.cumulative[1], 4);
    CHECK_EQ_U64(s.cumulative[2], 6);
    CHECK_EQ_U64(s.cumulative[3], 8);
    CHECK_EQ_U64(s.count, 8);
    double sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        sum += obs[i];
    CHECK(fabs(s.sum - sum) < 1e-6);
}

static void test_hist_bad_bounds(void)
{
    dr_hist_t h;
    static const double unsorted[] = {1, 0.5};
    static const double dup[] = {1, 1};
    static const double inf[] = {1, INFINITY};
    CHECK_EQ_INT(dr_hist_init(&h, unsorted, 2), DR_EINVAL);
    CHECK_EQ_INT(dr_hist_init(&h, dup, 2), DR_EINVAL);
    CHECK_EQ_INT(dr_hist_init(&h, inf, 2), DR_EINVAL);
    CHECK_EQ_INT(dr_hist_init(&h, bounds, 0), DR_EINVAL);
    CHECK_EQ_INT(dr_hist_init(&h, bounds, DR_HIST_MAX_BOUNDS + 1), DR_EINVAL);
    /* An unusable histogram ignores observations instead of writing out of bounds. */
    dr_hist_observe(&h, 1);
    dr_hist_snap_t s;
    dr_hist_snapshot(&h, &s);
    CHECK_EQ_U64(s.count, 0);
}

#define THREADS 4
#define PER_THREAD 20000

static dr_hist_t shared;

static void *observer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++)
        dr_hist_observe(&shared, (i % 3) == 0 ? 0.001 : 0.5);
    return NULL;
}

static void test_hist_threads(void)
{
    CHECK_EQ_INT(dr_hist_init(&shared, bounds, 3), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, observer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    dr_hist_snap_t s;
    dr_hist_snapshot(&shared, &s);
    uint64_t small = 0;
    for (int i = 0; i < PER_THREAD; i++)
        small += (i % 3) == 0;
    CHECK_EQ_U64(s.count, (uint64_t)THREADS * PER_THREAD);
    CHECK_EQ_U64(s.cumulative[0], THREADS * small);
    CHECK(fabs(s.sum - THREADS * (small * 0.001 + (PER_THREAD - small) * 0.5)) < 1e-3);
}

static void test_prom_escaping(void)
{
    dr_prom_t p;
    dr_prom_init(&p);
    dr_prom_family(&p, "drover_x_total", "counter", "Help with \\ backslash\nand newline \"quoted\".");
    dr_prom_sample(&p, "drover_x_total", (const char *[]){"a", "q\"uote", "b", "back\\slash\nnl", NULL}, 3);
    dr_prom_sample(&p, "drover_x_total", NULL, 0.25);
    CHECK_EQ_STR(p.buf, "# HELP drover_x_total Help with \\\\ backslash\\nand newline \"quoted\".\n"
                        "# TYPE drover_x_total counter\n"
                        "drover_x_total{a=\"q\\\"uote\",b=\"back\\\\slash\\nnl\"} 3\n"
                        "drover_x_total 0.25\n");
    dr_prom_dispose(&p);
}

static void test_prom_values_and_names(void)
{
    dr_prom_t p;
    dr_prom_init(&p);
    dr_prom_sample(&p, "v", NULL, 9007199254740991.0);
    dr_prom_sample(&p, "v", NULL, -2);
    dr_prom_sample(&p, "v", NULL, 0.1);
    dr_prom_sample(&p, "v", NULL, INFINITY);
    dr_prom_sample(&p, "v", NULL, -INFINITY);
    dr_prom_sample(&p, "v", NULL, NAN);
    dr_prom_sample(&p, "v", NULL, 1e300);
    /* Bad metric or label names are dropped, never written half. */
    dr_prom_sample(&p, "9bad", NULL, 1);
    dr_prom_sample(&p, "bad-name", NULL, 1);
    dr_prom_sample(&p, "ok", (const char *[]){"bad:label", "x", NULL}, 1);
    dr_prom_sample(&p, "ok", (const char *[]){"__reserved", "x", NULL}, 1);
    dr_prom_sample(&p, "ok", (const char *[]){"dangling", NULL}, 1);
    CHECK_EQ_STR(p.buf, "v 9007199254740991\nv -2\nv 0.1\nv +Inf\nv -Inf\nv NaN\nv 1e+300\n");
    CHECK(dr_prom_valid_name("drover:rule_x", 0));
    CHECK(!dr_prom_valid_name("drover:rule_x", 1));
    CHECK(!dr_prom_valid_name("", 0));
    CHECK(!dr_prom_valid_name(NULL, 0));
    dr_prom_dispose(&p);
}

static void test_prom_histogram(void)
{
    dr_hist_t h;
    dr_hist_init(&h, bounds, 3);
    dr_hist_observe(&h, 0.05);
    dr_hist_observe(&h, 3);
    dr_hist_snap_t s;
    dr_hist_snapshot(&h, &s);
    dr_prom_t p;
    dr_prom_init(&p);
    dr_prom_histogram(&p, "drover_h_seconds", "H.", (const char *[]){"k", "v", NULL}, &s);
    CHECK_EQ_STR(p.buf, "# HELP drover_h_seconds H.\n"
                        "# TYPE drover_h_seconds histogram\n"
                        "drover_h_seconds_bucket{k=\"v\",le=\"0.005\"} 0\n"
                        "drover_h_seconds_bucket{k=\"v\",le=\"0.1\"} 1\n"
                        "drover_h_seconds_bucket{k=\"v\",le=\"1\"} 1\n"
                        "drover_h_seconds_bucket{k=\"v\",le=\"+Inf\"} 2\n"
                        "drover_h_seconds_sum{k=\"v\"} 3.05\n"
                        "drover_h_seconds_count{k=\"v\"} 2\n");
    dr_prom_dispose(&p);
}

/* Counts the lines of text that start with prefix. */
static int lines_with(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, prefix, len) == 0)
            n++;
    }
    return n;
}

static void test_expose(void)
{
    dr_metrics_add(DR_M_PRODUCER_ACCEPTED, 5);
    dr_metrics_add(DR_M_PRODUCER_ACCEPTED_REST, 2);
    dr_metrics_add(DR_M_ACK_WRONG_DEVICE, 4);
    dr_metrics_status(1, 7);  /* COMPLETED */
    dr_metrics_status(99, 1); /* out of range: ignored */
    dr_metrics_observe(DR_H_INGEST_BATCH, 3);
    dr_metrics_observe(DR_H_COUNT, 3); /* out of range: ignored */
    dr_prom_t p;
    dr_prom_init(&p);
    dr_metrics_expose(&p, "1.2.3-\"x\"");
    CHECK(strstr(p.buf, "drover_commands_accepted_total{transport=\"mqtt\"} 3\n") != NULL);
    CHECK(strstr(p.buf, "drover_commands_accepted_total{transport=\"rest\"} 2\n") != NULL);
    CHECK(strstr(p.buf, "drover_acks_total{outcome=\"wrong_device\"} 4\n") != NULL);
    CHECK(strstr(p.buf, "drover_status_changes_total{status=\"COMPLETED\"} 7\n") != NULL);
    CHECK(strstr(p.buf, "drover_ingest_batch_size_bucket{le=\"2\"} 0\n") != NULL);
    CHECK(strstr(p.buf, "drover_ingest_batch_size_bucket{le=\"4\"} 1\n") != NULL);
    CHECK(strstr(p.buf, "drover_build_info{version=\"1.2.3-\\\"x\\\"\"} 1\n") != NULL);
    /* Every family has exactly one HELP and one TYPE line, and every TYPE is a known type. */
    CHECK_EQ_INT(lines_with(p.buf, "# HELP "), lines_with(p.buf, "# TYPE "));
    CHECK_EQ_INT(lines_with(p.buf, "# TYPE drover_acks_total counter"), 1);
    CHECK_EQ_INT(lines_with(p.buf, "# TYPE drover_redis_call_seconds histogram"), 1);
    CHECK_EQ_INT(lines_with(p.buf, "# TYPE drover_build_info gauge"), 1);
    dr_prom_dispose(&p);
}

int main(void)
{
    test_hist_buckets();
    test_hist_bad_bounds();
    test_hist_threads();
    test_prom_escaping();
    test_prom_values_and_names();
    test_prom_histogram();
    test_expose();
    return t_report("test_metrics");
}
