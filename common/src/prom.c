/* Prometheus text exposition writer (see dr/prom.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/mem.h"
#include "dr/prom.h"

void dr_prom_init(dr_prom_t *p)
{
    p->cap = 4096;
    p->buf = dr_malloc(p->cap);
    p->buf[0] = '\0';
    p->len = 0;
}

void dr_prom_dispose(dr_prom_t *p)
{
    free(p->buf);
    p->buf = NULL;
    p->len = p->cap = 0;
}

static void reserve(dr_prom_t *p, size_t more)
{
    if (p->len + more + 1 <= p->cap)
        return;
    while (p->len + more + 1 > p->cap)
        p->cap *= 2;
    p->buf = dr_realloc(p->buf, p->cap);
}

static void put(dr_prom_t *p, const char *s, size_t n)
{
    reserve(p, n);
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

static void puts_(dr_prom_t *p, const char *s)
{
    put(p, s, strlen(s));
}

/* Escapes for HELP text (backslash, line feed) or, with quote set, label values (also '"'). */
static void put_escaped(dr_prom_t *p, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(p, "\\\\", 2);
        else if (*s == '\n')
            put(p, "\\n", 2);
        else if (quote && *s == '"')
            put(p, "\\\"", 2);
        else
            put(p, s, 1);
    }
}

/* The shortest of %.15g..%.17g that reads back as the same double: bounds such as 0.005 stay short. */
static void fmt_double(char *b, size_t size, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, size, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            return;
    }
}

/* Integers print exactly (counters are int64 up to 2^53 without loss); other values with 17
 * significant digits so a scrape reads back the same double. */
static void put_value(dr_prom_t *p, double v)
{
    char b[40];
    if (isnan(v))
        snprintf(b, sizeof(b), "NaN");
    else if (isinf(v))
        snprintf(b, sizeof(b), v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(b, sizeof(b), "%lld", (long long)v);
    else
        fmt_double(b, sizeof(b), v);
    puts_(p, b);
}

int dr_prom_valid_name(const char *name, int label)
{
    if (name == NULL || name[0] == '\0' || (name[0] >= '0' && name[0] <= '9'))
        return 0;
    for (const char *c = name; *c; c++) {
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                 *c == '_' || (!label && *c == ':');
        if (!ok)
            return 0;
    }
    /* Names starting with "__" are reserved for Prometheus's own labels. */
    return !(label && name[0] == '_' && name[1] == '_');
}

void dr_prom_family(dr_prom_t *p, const char *name, const char *type, const char *help)
{
    if (!dr_prom_valid_name(name, 0))
        return;
    puts_(p, "# HELP ");
    puts_(p, name);
    puts_(p, " ");
    put_escaped(p, help, 0);
    puts_(p, "\n# TYPE ");
    puts_(p, name);
    puts_(p, " ");
    puts_(p, type);
    puts_(p, "\n");
}

static int labels_ok(const char *const *labels)
{
    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        if (!dr_prom_valid_name(labels[i], 1) || labels[i + 1] == NULL)
            return 0;
    }
    return 1;
}

/* Writes name{labels[,extra_name="extra_value"]} value. */
static void sample(dr_prom_t *p, const char *name, const char *suffix, const char *const *labels,
                   const char *extra_name, const char *extra_value, double v)
{
    puts_(p, name);
    puts_(p, suffix);
    int first = 1;
    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        puts_(p, first ? "{" : ",");
        first = 0;
        puts_(p, labels[i]);
        puts_(p, "=\"");
        put_escaped(p, labels[i + 1], 1);
        puts_(p, "\"");
    }
    if (extra_name != NULL) {
        puts_(p, first ? "{" : ",");
        first = 0;
        puts_(p, extra_name);
        puts_(p, "=\"");
        put_escaped(p, extra_value, 1);
        puts_(p, "\"");
    }
    if (!first)
        puts_(p, "}");
    puts_(p, " ");
    put_value(p, v);
    puts_(p, "\n");
}

void dr_prom_sample(dr_prom_t *p, const char *name, const char *const *labels, double v)
{
    if (!dr_prom_valid_name(name, 0) || !labels_ok(labels))
        return;
    sample(p, name, "", labels, NULL, NULL, v);
}

void dr_prom_histogram(dr_prom_t *p, const char *name, const char *help, const char *const *labels,
                       const dr_hist_snap_t *s)
{
    if (!dr_prom_valid_name(name, 0) || !labels_ok(labels))
        return;
    dr_prom_family(p, name, "histogram", help);
    char le[40];
    for (size_t i = 0; i < s->nbounds; i++) {
        fmt_double(le, sizeof(le), s->bounds[i]);
        sample(p, name, "_bucket", labels, "le", le, (double)s->cumulative[i]);
    }
    sample(p, name, "_bucket", labels, "le", "+Inf", (double)s->count);
    sample(p, name, "_sum", labels, NULL, NULL, s->sum);
    sample(p, name, "_count", labels, NULL, NULL, (double)s->count);
}
