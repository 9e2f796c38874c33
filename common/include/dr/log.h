/* Logging: one key=value line per event on stderr.
 *
 * dr_log() checks the level before formatting anything, so disabled DEBUG lines cost one comparison.
 * Each .c file defines DR_MODULE (e.g. "ingress/mqtt_in") before including this header.
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef DR_LOG_H
#define DR_LOG_H

enum dr_log_level { DR_LOG_DEBUG = 0, DR_LOG_VERBOSE, DR_LOG_NOTICE, DR_LOG_WARNING };

extern int dr_log_level; /* lines below this level are dropped; default DR_LOG_NOTICE */

#ifndef DR_MODULE
#define DR_MODULE "drover"
#endif

#define dr_log(level, ...)                                                                                   \
    do {                                                                                                     \
        if ((level) >= dr_log_level)                                                                         \
            dr_log_write((level), DR_MODULE, __VA_ARGS__);                                                   \
    } while (0)

/* Writes one line "ts=... level=... module=... <formatted text>". Use dr_log() instead. */
void dr_log_write(int level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parses "debug", "verbose", "notice" or "warning"; returns the level or -1. */
int dr_log_parse_level(const char *name);

/* Sets the process name shown as svc=... on every line (borrowed; must outlive logging). */
void dr_log_set_service(const char *name);

/* A budget of lines a second for an event that input can cause at will (rejected producer messages,
 * unreadable log entries), so that no input can flood the log. Zero-initialise one per event. Not
 * thread-safe: use it from one thread (a service's loop). */
typedef struct {
    long long window_start_ms; /* monotonic */
    int count, left_out;
} dr_log_limit_t;

/* True when one more line may be written now: at most max a second. When a second begins that
 * follows one which left lines out, first writes "event=<left_out_event> count=N" at level. */
int dr_log_limit_ok(dr_log_limit_t *l, int max, int level, const char *module, const char *left_out_event);

#endif
