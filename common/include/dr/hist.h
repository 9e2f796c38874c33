/* Fixed-bucket histograms that any thread may update.
 *
 * A histogram counts observations into buckets whose upper bounds are fixed when it is initialised
 * (ascending, at most DR_HIST_MAX_BOUNDS; one more bucket above the last bound stands for +Inf) and
 * keeps their sum. Observing is lock-free (relaxed atomics); a snapshot may be a moment behind a
 * concurrent observation but is always self-consistent: its count is the sum of its buckets, which
 * is what the Prometheus exposition requires of the +Inf bucket.
 */
#ifndef DR_HIST_H
#define DR_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define DR_HIST_MAX_BOUNDS 20

typedef struct {
    /* private */
    const double *bounds; /* borrowed, static storage */
    size_t nbounds;
    atomic_ullong buckets[DR_HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative; last: above all bounds */
    _Atomic double sum;
} dr_hist_t;

/* A point-in-time copy, cumulative as Prometheus reports it. */
typedef struct {
    size_t nbounds;
    const double *bounds;
    uint64_t cumulative[DR_HIST_MAX_BOUNDS + 1]; /* observations <= bounds[i]; last: all (+Inf) */
    uint64_t count;
    double sum;
} dr_hist_snap_t;

/* Prepares h with the n upper bounds (borrowed: static storage, strictly ascending, n at most
 * DR_HIST_MAX_BOUNDS). Returns 0, or DR_EINVAL when the bounds are not usable (h is then unusable). */
int dr_hist_init(dr_hist_t *h, const double *bounds, size_t n);

/* Counts one observation v (NaN is ignored). Any thread. */
void dr_hist_observe(dr_hist_t *h, double v);

/* Copies h into out. Any thread. */
void dr_hist_snapshot(const dr_hist_t *h, dr_hist_snap_t *out);

#endif
