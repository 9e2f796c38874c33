/* Table-driven configuration: defaults, then a key = value file, then DR_* environment variables, then
 * command-line flags. Each source goes through dr_config_set(), so parsing and bounds are checked in
 * exactly one place whatever the source. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/config.h"
#include "dr/mem.h"

static const dr_config_opt_t *find(const dr_config_opt_t *opts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

int dr_config_set(const dr_config_opt_t *opts, size_t n, const char *name, const char *value, char *err)
{
    const dr_config_opt_t *o = find(opts, n, name);
    if (o == NULL) {
        snprintf(err, DR_ERR_LEN, "unknown option '%s'", name);
        return DR_ECONFIG;
    }
    char *end;
    switch (o->type) {
    case DR_CFG_STR: {
        size_t len = strlen(value);
        if ((double)len < o->min || (double)len > o->max) {
            snprintf(err, DR_ERR_LEN, "option '%s': length %zu outside [%.0f, %.0f]", name, len, o->min, o->max);
            return DR_ECONFIG;
        }
        char **f = o->field;
        free(*f);
        *f = dr_strdup(value);
        return 0;
    }
    case DR_CFG_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            snprintf(err, DR_ERR_LEN, "option '%s': '%s' is not an integer", name, value);
            return DR_ECONFIG;
        }
        if ((double)v < o->min || (double)v > o->max) {
            snprintf(err, DR_ERR_LEN, "option '%s': %lld outside [%.0f, %.0f]", name, v, o->min, o->max);
            return DR_ECONFIG;
        }
        *(int64_t *)o->field = v;
        return 0;
    }
    case DR_CFG_DBL: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !isfinite(v)) {
            snprintf(err, DR_ERR_LEN, "option '%s': '%s' is not a number", name, value);
            return DR_ECONFIG;
        }
        if (v < o->min || v > o->max) {
            snprintf(err, DR_ERR_LEN, "option '%s': %g outside [%g, %g]", name, v, o->min, o->max);
            return DR_ECONFIG;
        }
        *(double *)o->field = v;
        return 0;
    }
    }
    snprintf(err, DR_ERR_LEN, "option '%s': bad type", name);
    return DR_ECONFIG;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(const dr_config_opt_t *opts, size_t n, const char *path, char *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, DR_ERR_LEN, "cannot open config file '%s': %s", path, strerror(errno));
        return DR_ECONFIG;
    }
    char line[4096], sub[DR_ERR_LEN];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t ll = strlen(line);
        if (ll == sizeof(line) - 1 && line[ll - 1] != '\n' && !feof(f)) {
            snprintf(err, DR_ERR_LEN, "%s:%d: line longer than %zu bytes", path, lineno, sizeof(line) - 2);
            rc = DR_ECONFIG;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, DR_ERR_LEN, "%s:%d: expected 'key = value'", path, lineno);
            rc = DR_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = '\0';
            val++;
        }
        if (dr_config_set(opts, n, key, val, sub) != 0) {
            snprintf(err, DR_ERR_LEN, "%s:%d: %s", path, lineno, sub);
            rc = DR_ECONFIG;
            break;
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const char *name, char *out, size_t cap)
{
    size_t j = 0;
    j += (size_t)snprintf(out, cap, "DR_");
    for (const char *p = name; *p && j + 1 < cap; p++)
        out[j++] = (*p == '.') ? '_' : (char)toupper((unsigned char)*p);
    out[j] = '\0';
}

int dr_config_load(const dr_config_opt_t *opts, size_t n, int argc, char **argv, int *want_help, char *err)
{
    *want_help = 0;
    for (size_t i = 0; i < n; i++)
        if (opts[i].def != NULL && dr_config_set(opts, n, opts[i].name, opts[i].def, err) != 0)
            return DR_ECONFIG;

    /* The file comes before everything else on the command line, whatever its position. */
    for (int i = 1; i < argc; i++) {
        const char *file = NULL;
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, DR_ERR_LEN, "%s needs a file name", argv[i]);
                return DR_ECONFIG;
            }
            file = argv[i + 1];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        }
        if (file != NULL && load_file(opts, n, file, err) != 0)
            return DR_ECONFIG;
    }

    char ename[128];
    for (size_t i = 0; i < n; i++) {
        env_name(opts[i].name, ename, sizeof(ename));
        const char *v = getenv(ename);
        if (v != NULL) {
            char sub[DR_ERR_LEN];
            if (dr_config_set(opts, n, opts[i].name, v, sub) != 0) {
                snprintf(err, DR_ERR_LEN, "environment %s: %s", ename, sub);
                return DR_ECONFIG;
            }
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *want_help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, DR_ERR_LEN, "unexpected argument '%s'", a);
            return DR_ECONFIG;
        }
        char key[128];
        const char *val;
        const char *eq = strchr(a + 2, '=');
        if (eq != NULL) {
            snprintf(key, sizeof(key), "%.*s", (int)(eq - (a + 2)), a + 2);
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, DR_ERR_LEN, "option '%s' needs a value", a);
                return DR_ECONFIG;
            }
            snprintf(key, sizeof(key), "%s", a + 2);
            val = argv[++i];
        }
        if (dr_config_set(opts, n, key, val, err) != 0)
            return DR_ECONFIG;
    }
    return 0;
}

void dr_config_dispose(const dr_config_opt_t *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (opts[i].type == DR_CFG_STR) {
            char **f = opts[i].field;
            free(*f);
            *f = NULL;
        }
    }
}

void dr_config_print_help(const dr_config_opt_t *opts, size_t n, const char *usage)
{
    printf("%s\n\nOptions (file key = value, env DR_<KEY>, or --key=value):\n", usage);
    for (size_t i = 0; i < n; i++)
        printf("  %-26s %s (default: %s)\n", opts[i].name, opts[i].help,
               (opts[i].flags & DR_CFG_SECRET) ? "none" : (opts[i].def ? opts[i].def : ""));
}
