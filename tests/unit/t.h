/* A tiny unit-test harness shared by tests/unit/test_*.c (no external framework).
 *
 * Each CHECK* macro only captures __FILE__/__LINE__ and the expression text, then calls a static
 * inline function that counts the result and, on failure, prints file:line with both values to
 * stderr. Every check evaluates its arguments exactly once and returns 1 when it passed, so a test
 * can skip dependent checks with `if (CHECK(p != NULL)) ...`.
 * The *_AT variants take an explicit file and line, for helpers that check on behalf of a caller.
 * A test file's main() calls its test functions and returns t_report("test_<mod>"), which prints
 * "test_<mod>: N passed, M failed" and returns non-zero when anything failed.
 */
#ifndef DR_TESTS_UNIT_T_H
#define DR_TESTS_UNIT_T_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int t_passed; /* checks that passed in this binary */
static int t_failed; /* checks that failed in this binary */

static inline int t_count(int ok)
{
    if (ok)
        t_passed++;
    else
        t_failed++;
    return ok;
}

static inline int t_check(const char *file, int line, const char *expr, int ok)
{
    if (!ok)
        fprintf(stderr, "%s:%d: CHECK(%s) failed\n", file, line, expr);
    return t_count(ok);
}

static inline int t_eq_int(const char *file, int line, const char *ea, const char *eb, long long a, long long b)
{
    if (a != b)
        fprintf(stderr, "%s:%d: CHECK_EQ_INT(%s, %s) failed: %lld != %lld\n", file, line, ea, eb, a, b);
    return t_count(a == b);
}

static inline int t_eq_u64(const char *file, int line, const char *ea, const char *eb, uint64_t a, uint64_t b)
{
    if (a != b)
        fprintf(stderr, "%s:%d: CHECK_EQ_U64(%s, %s) failed: 0x%016" PRIx64 " != 0x%016" PRIx64 "\n", file, line, ea,
                eb, a, b);
    return t_count(a == b);
}

static inline int t_eq_str(const char *file, int line, const char *ea, const char *eb, const char *a, const char *b)
{
    int ok = (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
    if (!ok)
        fprintf(stderr, "%s:%d: CHECK_EQ_STR(%s, %s) failed:\n    got:      %s%s%s\n    expected: %s%s%s\n", file, line,
                ea, eb, a ? "\"" : "", a ? a : "(null)", a ? "\"" : "", b ? "\"" : "", b ? b : "(null)", b ? "\"" : "");
    return t_count(ok);
}

#define CHECK(cond) t_check(__FILE__, __LINE__, #cond, (cond) ? 1 : 0)
#define CHECK_EQ_INT(a, b) t_eq_int(__FILE__, __LINE__, #a, #b, (long long)(a), (long long)(b))
#define CHECK_EQ_U64(a, b) t_eq_u64(__FILE__, __LINE__, #a, #b, (uint64_t)(a), (uint64_t)(b))
#define CHECK_EQ_STR(a, b) t_eq_str(__FILE__, __LINE__, #a, #b, (a), (b))

#define CHECK_AT(file, line, cond) t_check((file), (line), #cond, (cond) ? 1 : 0)
#define CHECK_EQ_INT_AT(file, line, a, b) t_eq_int((file), (line), #a, #b, (long long)(a), (long long)(b))
#define CHECK_EQ_STR_AT(file, line, a, b) t_eq_str((file), (line), #a, #b, (a), (b))

/* Prints the summary line and returns the process exit status for main(). */
static inline int t_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, t_passed, t_failed);
    fflush(stdout);
    return t_failed == 0 ? 0 : 1;
}

#endif
