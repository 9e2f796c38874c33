/* Table-driven configuration loading.
 *
 * A service describes each option once ({name, type, min, max, default, &field}); dr_config_load() fills
 * the fields in the order defaults -> file -> environment (DR_<NAME>, upper case, '.' -> '_') -> argv,
 * then validates everything in one pass. Not thread-safe: call at startup.
 */
#ifndef DR_CONFIG_H
#define DR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dr/err.h"

typedef enum {
    DR_CFG_STR,  /* field is char ** (heap copy owned by the config; freed by dr_config_dispose) */
    DR_CFG_INT,  /* field is int64_t *, checked against [min, max] */
    DR_CFG_DBL,  /* field is double *, checked against [min, max] */
} dr_config_type_t;

#define DR_CFG_SECRET 0x1 /* never print the value */

typedef struct {
    const char *name;      /* dotted key, e.g. "redis.port" */
    dr_config_type_t type;
    double min, max;       /* inclusive bounds for INT and DBL; for STR, bounds on the length */
    const char *def;       /* default as text; parsed like any other source */
    void *field;
    int flags;
    const char *help;      /* one line for --help and docs */
} dr_config_opt_t;

/* Loads options. argv accepts "-c FILE", "--config=FILE", "--name=value" and "--name value";
 * "-h"/"--help" sets *want_help. On failure returns DR_ECONFIG and describes the first problem in err
 * (which has DR_ERR_LEN bytes). opts and argv are borrowed. */
int dr_config_load(const dr_config_opt_t *opts, size_t n, int argc, char **argv, int *want_help, char *err);

/* Sets one option from text (as a file line would); returns 0 or DR_ECONFIG with err filled. */
int dr_config_set(const dr_config_opt_t *opts, size_t n, const char *name, const char *value, char *err);

/* Frees the strings held by the STR options. */
void dr_config_dispose(const dr_config_opt_t *opts, size_t n);

/* Prints name, default and help of every option to stdout. */
void dr_config_print_help(const dr_config_opt_t *opts, size_t n, const char *usage);

#endif
