/* Fixed-bucket histograms (see dr/hist.h). */
#include <math.h>
#include <string.h>

#include "dr/err.h"
#include "dr/hist.h"

int dr_hist_init(dr_hist_t *h, const double *bounds, size_t n)
{
    memset(h, 0, sizeof(*h));
    if (bounds == NULL || n == 0 || n > DR_HIST_MAX_BOUNDS)
        return DR_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            return DR_EINVAL;
    }
    h->bounds = bounds;
    h->nbounds = n;
    for (size_t i = 0; i <= n; i++)
        atomic_init(&h->buckets[i], 0);
    atomic_init(&h->sum, 0.0);
    return 0;
}

void dr_hist_observe(dr_hist_t *h, double v)
{
    if (h->nbounds == 0 || isnan(v))
        return;
    /* Bucket lists are short (at most 20): a linear scan is as fast as a binary search here. */
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    /* C11 has no atomic add for doubles: a compare-and-swap loop. */
    double old = atomic_load_explicit(&h->sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum, &old, old + v, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void dr_hist_snapshot(const dr_hist_t *h, dr_hist_snap_t *out)
{
    memset(out, 0, sizeof(*out));
    out->nbounds = h->nbounds;
    out->bounds = h->bounds;
    if (h->nbounds == 0)
        return;
    uint64_t total = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        /* The atomics are read-only here; the cast drops const for the C11 load signature. */
        total += atomic_load_explicit((atomic_ullong *)&h->buckets[i], memory_order_relaxed);
        out->cumulative[i] = total;
    }
    out->count = total;
    out->sum = atomic_load_explicit((_Atomic double *)&h->sum, memory_order_relaxed);
}
