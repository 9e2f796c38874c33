/* Allocation helpers that abort on out-of-memory, so callers never check for NULL
 * (the approach of Redis zmalloc and h2o h2o_mem_alloc). */
#ifndef DR_MEM_H
#define DR_MEM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void dr_mem_oom(size_t size) __attribute__((noreturn));

static inline void *dr_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        dr_mem_oom(n);
    return p;
}

static inline void *dr_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL)
        dr_mem_oom(count * n);
    return p;
}

static inline void *dr_realloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (p == NULL)
        dr_mem_oom(n);
    return p;
}

/* Returns a NUL-terminated copy of the n bytes at s (which need not be terminated). */
static inline char *dr_strndup(const char *s, size_t n)
{
    char *p = dr_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static inline char *dr_strdup(const char *s)
{
    return dr_strndup(s, strlen(s));
}

#endif
