/* A writer of the Prometheus text exposition format, version 0.0.4.
 *
 * The text is built in a growing buffer owned by the writer: one family header (# HELP, # TYPE), then
 * its samples. Help text and label values are escaped here (backslash, double quote in label values,
 * and line feed), so callers can pass any bytes; metric and label names are the caller's constants and
 * must match [a-zA-Z_:][a-zA-Z0-9_:]* (a sample with a bad name is dropped, see dr_prom_valid_name).
 * Not thread-safe: one writer per scrape, on the thread that answers it.
 */
#ifndef DR_PROM_H
#define DR_PROM_H

#include <stddef.h>

#include "dr/hist.h"

/* Content-Type of the text format. */
#define DR_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct {
    /* read-only */
    char *buf; /* NUL-terminated text, owned by the writer */
    size_t len;
    /* private */
    size_t cap;
} dr_prom_t;

void dr_prom_init(dr_prom_t *p);
/* Frees the buffer (p may be reused after dr_prom_init). */
void dr_prom_dispose(dr_prom_t *p);

/* 1 when name is a valid metric name (also used for label names, which may not hold ':'). */
int dr_prom_valid_name(const char *name, int label);

/* Writes "# HELP name help" and "# TYPE name type" (type: counter, gauge, histogram, untyped). */
void dr_prom_family(dr_prom_t *p, const char *name, const char *type, const char *help);

/* Writes one sample line. labels: NULL, or a NULL-terminated list of name, value pairs (borrowed). */
void dr_prom_sample(dr_prom_t *p, const char *name, const char *const *labels, double v);

/* Writes a histogram family: header, name_bucket{le=...} for every bound and +Inf, name_sum and
 * name_count. labels (as for dr_prom_sample) are added to every line. */
void dr_prom_histogram(dr_prom_t *p, const char *name, const char *help, const char *const *labels,
                       const dr_hist_snap_t *s);

#endif
