/* drover-ctl: operator command line for what the REST API does not cover yet: per-device pacing,
 * queue inspection, message status and history, API keys, and the counters of every node.
 *
 * It reads the same configuration as the services, so `drover-ctl -c drover.conf ...` reaches the
 * right Redis. Devices and messages live in the data layout of dr/store.h, so those commands go
 * through the same typed calls as the services (dr_store_* on a dr_redis_t and a loop of their own,
 * run until the one answer arrived): key names and Redis functions keep a single owner. The global
 * keys outside that layout (API keys <prefix>ak:<id>, <prefix>metrics:<node>) are read and written
 * with blocking hiredis calls, which suits a command line tool; their names come from dr/store.h too.
 */
#define DR_MODULE "ctl"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "dr/apikey.h"
#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/loop.h"
#include "dr/mem.h"
#include "dr/redis.h"
#include "dr/settings.h"
#include "dr/shard.h"
#include "dr/status.h"
#include "dr/store.h"
#include "dr/passwd.h"
#include "dr/registry.h"

static const char *usage =
    "usage: drover-ctl [-c FILE] [--key=value ...] COMMAND\n"
    "commands:\n"
    "  device show DEVICE                      queue depth, in flight, scheduled, pacing, last send/ack\n"
    "  device set DEVICE [interval_ms=N] [window=N] [max_message=N]\n"
    "                                               per-device pacing and message size overrides\n"
    "  device reset DEVICE                     remove the overrides (use the global defaults)\n"
    "  message show ID                         status, fields and full transition history\n"
    "  ids advance [N]                         after a restore from an older backup: move every shard's id\n"
    "                                               counter N ids on (default: half its id space)\n"
    "  metrics                                 counters of every node, and their sums\n"
    "  key create producer|admin [NAME]        new REST API key (printed once; only its hash is stored)\n"
    "  key create device DEVICE [NAME]         new key bound to one device\n"
    "  key list                                ids, scopes, devices and names of all keys\n"
    "  key revoke ID                           revoke a key (effective within http.key_cache_ms)\n"
    "  user create ID [--role MAN|DEVISE] [--description TEXT] [--password-stdin]\n"
    "                                          new registry client (a generated password is printed once)\n"
    "  user list [PREFIX]                      registry clients (id, role, state, description)\n"
    "  user delete|disable|enable ID           delete, disable or enable a client (revokes its tokens)\n"
    "  user passwd ID [--password-stdin]       new password (revokes its tokens)\n";

static dr_settings_t cfg;

/* ---- blocking calls (global keys) ---------------------------------------------------------------- */

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        fprintf(stderr, "drover-ctl: redis: %s\n", c->errstr);
        exit(2);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "drover-ctl: redis: %s\n", r->str);
        exit(2);
    }
    return r;
}

static long long int_of(redisContext *c, const char *fmt, const char *a, const char *b)
{
    redisReply *r = cmd(c, fmt, a, b);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    return v;
}

static redisContext *connect_sync(void)
{
    struct timeval tv = {.tv_sec = cfg.redis_timeout_ms / 1000, .tv_usec = (cfg.redis_timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(cfg.redis_host, (int)cfg.redis_port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "drover-ctl: cannot connect to redis at %s:%lld: %s\n", cfg.redis_host,
                (long long)cfg.redis_port, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (cfg.redis_password[0])
        freeReplyObject(cmd(c, "AUTH %s", cfg.redis_password));
    return c;
}

/* The data layer's view of the configuration (key names and store calls). */
static dr_store_t store_of_cfg(void)
{
    return (dr_store_t){.prefix = cfg.redis_prefix, .shards = (uint32_t)cfg.shards,
                        .retention_s = cfg.retention_s, .node = cfg.node_id};
}

/* ---- store calls on a loop (devices and messages) ------------------------------------------------ */

typedef struct ctl ctl_t;

/* Issues the command's first store call once Redis is ready; returns 0 or a DR_E* code. */
typedef int ctl_start_fn(ctl_t *c);

struct ctl {
    dr_loop_t loop;
    dr_redis_t *redis;
    dr_store_t store;
    uv_timer_t timer;            /* the overall deadline, then the deferred close */
    ctl_start_fn *start;
    int started;                 /* the first call was issued */
    int finished;                /* the answer (or a failure) was printed: close everything */
    int rc;                      /* exit code */
    /* the command's arguments */
    const char *dev;
    int64_t id;
    int64_t interval_ms, window, max_message; /* dr_store_devset: < 0 leaves, DR_STORE_UNSET removes */
    const char *mode;            /* dr_store_devset: NULL leaves, "" removes */
    int64_t by;                  /* ids advance: ids per shard, 0 for half the shard's id space */
    uint32_t shard;              /* ids advance: the shard being moved */
};

static void on_closed(uv_handle_t *h)
{
    ctl_t *c = h->data;
    dr_loop_close(&c->loop);
}

/* Closes the client outside any of its callbacks (it may be the caller), then the loop. */
static void on_close_timer(uv_timer_t *t)
{
    ctl_t *c = t->data;
    dr_redis_free(c->redis);
    c->redis = NULL;
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void finish(ctl_t *c, int rc)
{
    if (c->finished)
        return;
    c->finished = 1;
    c->rc = rc;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_close_timer, 0, 0);
}

/* Prints a failed call and finishes with exit code 2; returns 1 when err is set. */
static int call_failed(ctl_t *c, int err, const char *errstr)
{
    if (err == 0)
        return 0;
    if (!c->finished)
        fprintf(stderr, "drover-ctl: redis: %s\n", errstr ? errstr : dr_strerror(err));
    finish(c, 2);
    return 1;
}

static void on_deadline(uv_timer_t *t)
{
    ctl_t *c = t->data;
    fprintf(stderr, "drover-ctl: redis at %s:%lld did not answer in time\n", cfg.redis_host, (long long)cfg.redis_port);
    finish(c, 2);
}

static void on_layout(void *data, int err, const char *errstr, int64_t result)
{
    (void)result;
    ctl_t *c = data;
    if (call_failed(c, err, errstr))
        return; /* e.g. another cluster.shards: the command would touch the wrong keys */
    int rc = c->start(c);
    if (rc != 0)
        call_failed(c, rc, NULL);
}

static void on_redis_state(dr_redis_t *r, int ready, void *data)
{
    (void)r;
    ctl_t *c = data;
    if (!ready || c->started || c->finished)
        return;
    c->started = 1;
    int rc = dr_store_check_layout(c->redis, &c->store, on_layout, c);
    if (rc != 0)
        call_failed(c, rc, NULL);
}

/* Runs one command's store calls to completion; returns its exit code. */
static int run_store(ctl_t *c, ctl_start_fn *start)
{
    if (dr_loop_init(&c->loop) != 0) {
        fprintf(stderr, "drover-ctl: cannot create an event loop\n");
        return 2;
    }
    dr_redis_options_t o = {.host = cfg.redis_host, .port = (int)cfg.redis_port, .password = cfg.redis_password,
                            .timeout_ms = (int)cfg.redis_timeout_ms};
    c->redis = dr_redis_new(&c->loop, &o);
    c->store = store_of_cfg();
    dr_store_register(c->redis);
    dr_redis_on_state(c->redis, on_redis_state, c);
    c->start = start;
    uv_timer_init(c->loop.uv, &c->timer);
    c->timer.data = c;
    /* One connection attempt plus one command, each bounded by redis.timeout_ms, and some slack. */
    uv_timer_start(&c->timer, on_deadline, (uint64_t)cfg.redis_timeout_ms * 2 + 500, 0);
    uv_run(c->loop.uv, UV_RUN_DEFAULT);
    return c->rc;
}

/* ---- JSON output ---------------------------------------------------------------------------------- */

static void print_str(const char *name, const char *v, const char *sep)
{
    char *q = dr_codec_json_string(v ? v : "");
    printf("  \"%s\": %s%s\n", name, q, sep);
    free(q);
}

/* v < 0 (or 0 with zero_is_null) prints null. */
static void print_opt(const char *name, int64_t v, int zero_is_null)
{
    if (v < 0 || (zero_is_null && v == 0))
        printf("  \"%s\": null,\n", name);
    else
        printf("  \"%s\": %lld,\n", name, (long long)v);
}

/* ---- device show / set / reset -------------------------------------------------------------------- */

static void on_devinfo(void *data, int err, const char *errstr, const dr_store_devinfo_t *d)
{
    ctl_t *c = data;
    if (call_failed(c, err, errstr))
        return;
    printf("{\n");
    print_str("device", c->dev, ",");
    printf("  \"shard\": %u,\n", dr_shard_of(c->dev, strlen(c->dev), c->store.shards));
    printf("  \"queued\": %lld,\n  \"inFlight\": %lld,\n  \"scheduled\": %lld,\n", (long long)d->queued,
           (long long)d->in_flight, (long long)d->scheduled);
    print_opt("nextSendAllowedMs", d->next_ms, 0);
    print_opt("lastSendMs", d->last_send_ms, 0);
    print_opt("lastAckMs", d->last_ack_ms, 0);
    print_opt("intervalMs", d->interval_ms, 0);
    print_opt("window", d->window, 0);
    print_opt("maxMessage", d->max_message, 0);
    print_str("mode", d->mode[0] ? d->mode : "mqtt", ",");
    printf("  \"defaults\": {\"intervalMs\": %lld, \"window\": %lld, \"maxMessage\": %lld}\n}\n",
           (long long)cfg.interval_ms, (long long)cfg.window, (long long)cfg.device_max_message);
    finish(c, 0);
}

static int start_show(ctl_t *c)
{
    return dr_store_devinfo(c->redis, &c->store, c->dev, on_devinfo, c);
}

static void on_devset(void *data, int err, const char *errstr, int64_t result)
{
    (void)result;
    ctl_t *c = data;
    if (call_failed(c, err, errstr))
        return;
    int rc = start_show(c); /* the same connection answers in order: the new values show */
    if (rc != 0)
        call_failed(c, rc, NULL);
}

static int start_set(ctl_t *c)
{
    return dr_store_devset(c->redis, &c->store, c->dev, c->interval_ms, c->window, c->mode, c->max_message,
                           on_devset, c);
}

static int check_device(const char *dev)
{
    if (dr_codec_check_id(dev, strlen(dev), (size_t)cfg.ingress_max_device_id) != 0) {
        fprintf(stderr, "drover-ctl: invalid device id\n");
        return -1;
    }
    return 0;
}

static int device_show(const char *dev)
{
    if (check_device(dev) != 0)
        return 1;
    ctl_t c = {.dev = dev};
    return run_store(&c, start_show);
}

static int parse_kv(const char *arg, const char *key, long long min, long long max, long long *out)
{
    size_t kl = strlen(key);
    if (strncmp(arg, key, kl) != 0 || arg[kl] != '=')
        return 0;
    char *end;
    long long v = strtoll(arg + kl + 1, &end, 10);
    if (*end != '\0' || end == arg + kl + 1 || v < min || v > max) {
        fprintf(stderr, "drover-ctl: %s must be an integer in [%lld, %lld]\n", key, min, max);
        exit(1);
    }
    *out = v;
    return 1;
}

static int device_set(const char *dev, int argc, char **argv)
{
    if (check_device(dev) != 0)
        return 1;
    if (argc == 0) {
        fprintf(stderr, "%s", usage);
        return 1;
    }
    ctl_t c = {.dev = dev, .interval_ms = -1, .window = -1, .max_message = -1};
    for (int i = 0; i < argc; i++) {
        long long v;
        if (parse_kv(argv[i], "interval_ms", 0, 86400000, &v))
            c.interval_ms = v;
        else if (parse_kv(argv[i], "window", 1, 64, &v))
            c.window = v;
        else if (parse_kv(argv[i], "max_message", 128, 16777216, &v))
            c.max_message = v;
        else {
            fprintf(stderr, "drover-ctl: unknown setting '%s' (interval_ms=N, window=N or max_message=N)\n",
                    argv[i]);
            return 1;
        }
    }
    return run_store(&c, start_set);
}

/* Removes every override (interval, window, mode, message size): the device follows the global
 * defaults again. */
static int device_reset(const char *dev)
{
    if (check_device(dev) != 0)
        return 1;
    ctl_t c = {.dev = dev, .interval_ms = DR_STORE_UNSET, .window = DR_STORE_UNSET, .mode = "",
               .max_message = DR_STORE_UNSET};
    return run_store(&c, start_set);
}

/* ---- ids advance ----------------------------------------------------------------------------------- */

static int start_advance(ctl_t *c);

static void on_advanced(void *data, int err, const char *errstr, int64_t next)
{
    ctl_t *c = data;
    if (call_failed(c, err, errstr))
        return;
    if (c->shard == 0 || c->shard + 1 == c->store.shards)
        printf("shard %u: next id %lld\n", c->shard, (long long)next);
    if (++c->shard < c->store.shards) {
        int rc = start_advance(c);
        if (rc != 0)
            call_failed(c, rc, NULL);
        return;
    }
    printf("advanced the id counters of %u shards\n", c->store.shards);
    finish(c, 0);
}

/* One call per shard, each in its own slot, as on Redis Cluster. */
static int start_advance(ctl_t *c)
{
    return dr_store_ids_advance(c->redis, &c->store, c->shard, cfg.ids_max, c->by, on_advanced, c);
}

/* After a restore from an older backup, ids handed out since the backup would come again: move every
 * shard's counter away from them (docs/operations.md, "Restoring Redis"). */
static int ids_advance(int argc, char **argv)
{
    ctl_t c = {.by = 0};
    if (argc > 1) {
        fprintf(stderr, "%s", usage);
        return 1;
    }
    if (argc == 1) {
        char *end;
        long long v = strtoll(argv[0], &end, 10);
        if (*end != '\0' || v < 1 || v > cfg.ids_max / (long long)cfg.shards) {
            fprintf(stderr, "drover-ctl: ids per shard must be an integer from 1 to %lld\n",
                    (long long)(cfg.ids_max / cfg.shards));
            return 1;
        }
        c.by = v;
    }
    return run_store(&c, start_advance);
}

/* ---- message show ---------------------------------------------------------------------------------- */

static void print_message(const dr_store_msg_t *m, uint32_t shard)
{
    printf("{\n  \"id\": %lld,\n  \"shard\": %u,\n", (long long)m->id, shard);
    print_str("device", m->dev, ",");
    print_str("status", dr_status_name(m->status), ",");
    print_str("guarantee", dr_guarantee_name(m->guarantee), ",");
    print_str("command", m->command, ",");
    printf("  \"data\": %s,\n", m->data ? m->data : "null"); /* stored as JSON text */
    printf("  \"attempts\": %lld,\n", (long long)m->attempts);
    print_opt("acceptedMs", m->accepted_ms, 0);
    print_opt("changedMs", m->changed_ms, 0);
    print_opt("lastSendMs", m->last_send_ms, 1);
    print_opt("nextRetryMs", m->next_retry_ms, 1);
    print_opt("deliverBy", m->deliver_by, 1);
    print_opt("maxAttempts", m->max_attempts, 1);
    print_opt("notBefore", m->not_before, 1);
    if (m->has_tmp) {
        print_str("producerDeviseId", m->pd, ",");
        printf("  \"tmpId\": %lld,\n", (long long)m->tmp);
    }
    printf("  \"ext\": %s,\n", m->ext ? "true" : "false");
    print_str("idempotencyKey", m->idem_key, ",");
    print_str("apiKeyId", m->key_id, ",");
    printf("  \"history\": [\n");
    for (size_t i = 0; i < m->nhistory; i++) {
        const dr_store_hist_t *h = &m->history[i];
        char *ev = dr_codec_json_string(h->event);
        printf("    {\"ts\": %lld, \"status\": \"%s\", \"attempt\": %lld, \"event\": %s}%s\n", (long long)h->ts,
               dr_status_name(h->status), (long long)h->attempt, ev, i + 1 < m->nhistory ? "," : "");
        free(ev);
    }
    printf("  ]\n}\n");
}

static void on_message(void *data, int err, const char *errstr, const dr_store_msg_t *msgs, size_t n)
{
    ctl_t *c = data;
    if (call_failed(c, err, errstr))
        return;
    if (n != 1 || !msgs[0].found) {
        fprintf(stderr, "drover-ctl: message %lld not found (never existed, or its retention ended)\n",
                (long long)c->id);
        finish(c, 3);
        return;
    }
    print_message(&msgs[0], dr_store_shard_of_id(&c->store, c->id));
    finish(c, 0);
}

static int start_message(ctl_t *c)
{
    return dr_store_get(c->redis, &c->store, &c->id, 1, on_message, c);
}

static int message_show(const char *id)
{
    char *end;
    long long n = strtoll(id, &end, 10);
    if (*end != '\0' || n <= 0) {
        fprintf(stderr, "drover-ctl: message id must be a positive integer\n");
        return 1;
    }
    ctl_t c = {.id = n};
    return run_store(&c, start_message);
}

/* ---- registry clients (user ...) ------------------------------------------------------------------ */

/* A user command: the store context first, so the ctl_t callbacks can find the rest. */
typedef struct {
    ctl_t c;
    const char *op;              /* create, list, delete, disable, enable, passwd */
    const char *name;
    const char *desc;
    int role;
    char hash[DR_PASSWD_HASH_LEN + 1];
    char after[256];             /* list: the last name printed */
    const char *prefix;
} user_t;

static void on_user_list(void *data, int err, const char *errstr, const dr_reg_client_t *cl, size_t n, int more);

static int start_user_list(ctl_t *c)
{
    user_t *u = (user_t *)c;
    return dr_reg_list(c->redis, &c->store, u->prefix, u->after, 1000, on_user_list, u);
}

static void on_user_list(void *data, int err, const char *errstr, const dr_reg_client_t *cl, size_t n, int more)
{
    user_t *u = data;
    if (call_failed(&u->c, err, errstr))
        return;
    for (size_t i = 0; i < n; i++)
        printf("%-6lld %-32s %-7s %-8s %s\n", (long long)cl[i].id, cl[i].devise_id, dr_reg_role_name(cl[i].role),
               cl[i].enabled ? "enabled" : "disabled", cl[i].description);
    if (!more || n == 0) {
        finish(&u->c, 0);
        return;
    }
    snprintf(u->after, sizeof(u->after), "%s", cl[n - 1].devise_id);
    int rc = start_user_list(&u->c);
    if (rc != 0)
        call_failed(&u->c, rc, NULL);
}

static void on_user_done(void *data, int err, const char *errstr, int result, const dr_reg_client_t *cl, int64_t aux)
{
    (void)aux;
    user_t *u = data;
    if (call_failed(&u->c, err, errstr))
        return;
    if (result == DR_REG_EXISTS) {
        fprintf(stderr, "drover-ctl: client %s exists\n", u->name);
        finish(&u->c, 3);
        return;
    }
    if (result != DR_REG_OK) {
        fprintf(stderr, "drover-ctl: no client %s\n", u->name);
        finish(&u->c, 3);
        return;
    }
    fprintf(stderr, "drover-ctl: client %s (id %lld, %s, %s): %s done\n", cl->devise_id, (long long)cl->id,
            dr_reg_role_name(cl->role), cl->enabled ? "enabled" : "disabled", u->op);
    finish(&u->c, 0);
}

/* disable, enable and passwd address the client by number: look it up by name first. */
static void on_user_target(void *data, int err, const char *errstr, int result, const dr_reg_client_t *cl,
                           int64_t aux)
{
    user_t *u = data;
    if (call_failed(&u->c, err, errstr))
        return;
    if (result != DR_REG_OK) {
        on_user_done(data, err, errstr, result, cl, aux);
        return;
    }
    dr_reg_change_t ch = {.role = -1, .enabled = -1};
    if (strcmp(u->op, "passwd") == 0)
        ch.hash = u->hash;
    else
        ch.enabled = strcmp(u->op, "enable") == 0;
    int rc = dr_reg_update(u->c.redis, &u->c.store, cl->id, &ch, on_user_done, u);
    if (rc != 0)
        call_failed(&u->c, rc, NULL);
}

static int start_user(ctl_t *c)
{
    user_t *u = (user_t *)c;
    if (strcmp(u->op, "create") == 0)
        return dr_reg_create(c->redis, &c->store, u->name, u->desc, u->role, u->hash, 1, on_user_done, u);
    if (strcmp(u->op, "delete") == 0)
        return dr_reg_delete(c->redis, &c->store, 0, u->name, on_user_done, u);
    return dr_reg_get(c->redis, &c->store, 0, u->name, on_user_target, u);
}

/* The new password: the first line of stdin with --password-stdin, else a generated one that is
 * printed once. Returns 0 with u->hash set. */
static int user_password(user_t *u, int from_stdin)
{
    char pw[512];
    if (from_stdin) {
        if (fgets(pw, sizeof(pw), stdin) == NULL) {
            fprintf(stderr, "drover-ctl: no password on stdin\n");
            return 1;
        }
        pw[strcspn(pw, "\r\n")] = '\0';
        if (pw[0] == '\0' || strlen(pw) > DR_PASSWD_MAX) {
            fprintf(stderr, "drover-ctl: the password must be 1..%d bytes\n", DR_PASSWD_MAX);
            return 1;
        }
    } else if (dr_passwd_random(pw, 24) != 0) {
        fprintf(stderr, "drover-ctl: the random source failed\n");
        return 2;
    } else {
        printf("%s\n", pw);
        fprintf(stderr, "drover-ctl: generated password of %s printed above; it is shown only now\n", u->name);
    }
    int rc = dr_passwd_hash(pw, (int)cfg.auth_bcrypt_cost, u->hash);
    memset(pw, 0, sizeof(pw));
    if (rc != 0) {
        fprintf(stderr, "drover-ctl: hashing failed\n");
        return 2;
    }
    return 0;
}

static int user_command(int nargs, char **args)
{
    user_t u = {.op = nargs >= 2 ? args[1] : "", .role = DR_REG_DEVISE, .desc = "", .prefix = ""};
    if (strcmp(u.op, "list") == 0 && nargs <= 3) {
        u.prefix = nargs == 3 ? args[2] : "";
        return run_store(&u.c, start_user_list);
    }
    static const char *ops[] = {"create", "delete", "disable", "enable", "passwd"};
    int known = 0;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        known |= strcmp(u.op, ops[i]) == 0;
    if (!known || nargs < 3) {
        fprintf(stderr, "%s", usage);
        return 1;
    }
    u.name = args[2];
    if (dr_codec_check_id(u.name, strlen(u.name), (size_t)cfg.ingress_max_device_id) != 0) {
        fprintf(stderr, "drover-ctl: invalid client id\n");
        return 1;
    }
    int from_stdin = 0, wants_pw = strcmp(u.op, "create") == 0 || strcmp(u.op, "passwd") == 0;
    for (int i = 3; i < nargs; i++) {
        if (wants_pw && strcmp(args[i], "--password-stdin") == 0) {
            from_stdin = 1;
        } else if (strcmp(u.op, "create") == 0 && strcmp(args[i], "--role") == 0 && i + 1 < nargs &&
                   dr_reg_role_parse(args[i + 1]) >= 0) {
            u.role = dr_reg_role_parse(args[++i]);
        } else if (strcmp(u.op, "create") == 0 && strcmp(args[i], "--description") == 0 && i + 1 < nargs &&
                   strlen(args[i + 1]) <= DR_REG_MAX_DESC) {
            u.desc = args[++i];
        } else {
            fprintf(stderr, "drover-ctl: unexpected argument '%s' (roles are DEVISE and MAN)\n", args[i]);
            return 1;
        }
    }
    if (wants_pw) {
        int rc = user_password(&u, from_stdin);
        if (rc != 0)
            return rc;
    }
    return run_store(&u.c, start_user);
}

/* ---- metrics and API keys (blocking) --------------------------------------------------------------- */

/* Cluster-wide sums of the counters, by name, in first-seen order. */
typedef struct {
    char name[64];
    long long sum;
} metric_sum_t;

static void add_sum(metric_sum_t **sums, size_t *n, const char *name, const char *value)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || strlen(name) >= sizeof((*sums)->name))
        return; /* not a counter */
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*sums)[i].name, name) == 0) {
            (*sums)[i].sum += v;
            return;
        }
    }
    *sums = dr_realloc(*sums, (*n + 1) * sizeof(**sums));
    snprintf((*sums)[*n].name, sizeof((*sums)[*n].name), "%s", name);
    (*sums)[(*n)++].sum = v;
}

static int metrics(redisContext *c)
{
    char pattern[128], cursor[32] = "0";
    metric_sum_t *sums = NULL;
    size_t nsums = 0, nodes = 0;
    const dr_store_t st = store_of_cfg();
    dr_store_match_metrics(&st, pattern, sizeof(pattern));
    do { /* SCAN, never KEYS: it must not stall a production Redis */
        redisReply *page = cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof(cursor), "%s", page->element[0]->str);
        redisReply *keys = page->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *key = keys->element[i]->str, *node = dr_store_node_of_metrics_key(&st, key);
            redisReply *h = cmd(c, "HGETALL %s", key);
            printf("%s\n", node ? node : key);
            for (size_t j = 0; j + 1 < h->elements; j += 2) {
                const char *name = h->element[j]->str;
                printf("  %-24s %s\n", name, h->element[j + 1]->str);
                /* Gauges and flush times are a node's current state, not counts: summing them means
                 * nothing (GET /v1/stats combines fresh dispatchers' gauges). */
                if (strncmp(name, "gauge_", 6) != 0 && strcmp(name, "flushed_at_ms") != 0)
                    add_sum(&sums, &nsums, name, h->element[j + 1]->str);
            }
            nodes++;
            freeReplyObject(h);
        }
        freeReplyObject(page);
    } while (strcmp(cursor, "0") != 0);
    /* Each node's hash holds its own counts, so the cluster's counters are plain sums. */
    printf("cluster (sum over %zu node%s)\n", nodes, nodes == 1 ? "" : "s");
    for (size_t i = 0; i < nsums; i++)
        printf("  %-24s %lld\n", sums[i].name, sums[i].sum);
    free(sums);
    return 0;
}

static int key_create(redisContext *c, int nargs, char **args)
{
    int scope = nargs >= 1 ? dr_scope_parse(args[0]) : -1;
    if (scope < 0 || (scope == DR_SCOPE_DEVICE && nargs < 2)) {
        fprintf(stderr, "%s", usage);
        return 1;
    }
    const char *dev = scope == DR_SCOPE_DEVICE ? args[1] : "";
    const char *name = nargs > (scope == DR_SCOPE_DEVICE ? 2 : 1) ? args[scope == DR_SCOPE_DEVICE ? 2 : 1] : "";
    if (scope == DR_SCOPE_DEVICE && dr_codec_check_id(dev, strlen(dev), (size_t)cfg.ingress_max_device_id) != 0) {
        fprintf(stderr, "drover-ctl: invalid device id\n");
        return 1;
    }
    char key[DR_APIKEY_LEN + 1], id[DR_APIKEY_ID_LEN + 1], hash[DR_APIKEY_HASH_LEN + 1], k[128];
    if (dr_apikey_generate(key, id) != 0) {
        fprintf(stderr, "drover-ctl: the random source failed\n");
        return 2;
    }
    dr_apikey_hash(key, strlen(key), hash);
    const dr_store_t st = store_of_cfg();
    dr_store_key_apikey(&st, id, k, sizeof(k));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    redisReply *r = cmd(c, "HSETNX %s h %s", k, hash);
    if (r->integer != 1) {
        fprintf(stderr, "drover-ctl: key id collision, run again\n");
        freeReplyObject(r);
        return 2;
    }
    freeReplyObject(r);
    freeReplyObject(cmd(c, "HSET %s scope %s dev %s name %s created %lld revoked 0", k, dr_scope_name(scope), dev, name,
                        (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000));
    printf("%s\n", key);
    fprintf(stderr, "drover-ctl: key %s (%s%s%s) created; it is shown only now\n", id, dr_scope_name(scope),
            dev[0] ? " of " : "", dev);
    return 0;
}

static int key_list(redisContext *c)
{
    char pattern[128], cursor[32] = "0";
    const dr_store_t st = store_of_cfg();
    dr_store_match_apikeys(&st, pattern, sizeof(pattern));
    printf("%-14s %-9s %-8s %-24s %s\n", "ID", "SCOPE", "REVOKED", "DEVICE", "NAME");
    do {
        redisReply *page = cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof(cursor), "%s", page->element[0]->str);
        for (size_t i = 0; i < page->element[1]->elements; i++) {
            const char *key = page->element[1]->element[i]->str, *id = dr_store_apikey_of_key(&st, key);
            redisReply *h = cmd(c, "HMGET %s scope revoked dev name", key);
            printf("%-14s %-9s %-8s %-24s %s\n", id ? id : key,
                   h->element[0]->str ? h->element[0]->str : "?",
                   h->element[1]->str && strcmp(h->element[1]->str, "1") == 0 ? "yes" : "no",
                   h->element[2]->str ? h->element[2]->str : "", h->element[3]->str ? h->element[3]->str : "");
            freeReplyObject(h);
        }
        freeReplyObject(page);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

static int key_revoke(redisContext *c, const char *id)
{
    char k[128];
    const dr_store_t st = store_of_cfg();
    dr_store_key_apikey(&st, id, k, sizeof(k));
    if (int_of(c, "EXISTS %s", k, NULL) == 0) {
        fprintf(stderr, "drover-ctl: no key %s\n", id);
        return 3;
    }
    freeReplyObject(cmd(c, "HSET %s revoked 1", k));
    printf("revoked %s\n", id);
    return 0;
}

/* metrics and key commands, on a blocking connection. */
static int blocking_command(int nargs, char **args)
{
    redisContext *c = connect_sync();
    if (c == NULL)
        return 2;
    int rc = 1;
    if (nargs == 1 && strcmp(args[0], "metrics") == 0)
        rc = metrics(c);
    else if (nargs >= 2 && strcmp(args[1], "create") == 0)
        rc = key_create(c, nargs - 2, args + 2);
    else if (nargs == 2 && strcmp(args[1], "list") == 0)
        rc = key_list(c);
    else if (nargs == 3 && strcmp(args[1], "revoke") == 0)
        rc = key_revoke(c, args[2]);
    else
        fprintf(stderr, "%s", usage);
    redisFree(c);
    return rc;
}

int main(int argc, char **argv)
{
    /* Options come first; the command starts at the first word that is not an option. */
    int first = 1;
    while (first < argc && argv[first][0] == '-') {
        if ((strcmp(argv[first], "-c") == 0 || strcmp(argv[first], "--config") == 0) ||
            (strncmp(argv[first], "--", 2) == 0 && strchr(argv[first], '=') == NULL && strcmp(argv[first], "--help")))
            first++;
        first++;
    }
    if (first > argc)
        first = argc;
    char err[DR_ERR_LEN];
    if (dr_settings_load(&cfg, "ctl", first, argv, err) != 0) {
        fprintf(stderr, "drover-ctl: %s\n", err);
        return 1;
    }
    int nargs = argc - first;
    char **args = argv + first;
    if (nargs < 1) {
        fprintf(stderr, "%s", usage);
        dr_settings_dispose(&cfg);
        return 1;
    }
    /* The default level would print the client's "redis_ready" line on every run. */
    if (dr_log_level == DR_LOG_NOTICE)
        dr_log_level = DR_LOG_WARNING;
    int rc = 1;
    int is_dev = nargs >= 3 && strcmp(args[0], "device") == 0;
    if (is_dev && strcmp(args[1], "show") == 0 && nargs == 3)
        rc = device_show(args[2]);
    else if (is_dev && strcmp(args[1], "set") == 0)
        rc = device_set(args[2], nargs - 3, args + 3);
    else if (is_dev && strcmp(args[1], "reset") == 0 && nargs == 3)
        rc = device_reset(args[2]);
    else if (nargs == 3 && strcmp(args[0], "message") == 0 && strcmp(args[1], "show") == 0)
        rc = message_show(args[2]);
    else if (nargs >= 2 && strcmp(args[0], "ids") == 0 && strcmp(args[1], "advance") == 0)
        rc = ids_advance(nargs - 2, args + 2);
    else if (nargs >= 2 && strcmp(args[0], "user") == 0)
        rc = user_command(nargs, args);
    else if ((nargs == 1 && strcmp(args[0], "metrics") == 0) || (nargs >= 2 && strcmp(args[0], "key") == 0))
        rc = blocking_command(nargs, args);
    else
        fprintf(stderr, "%s", usage);
    dr_settings_dispose(&cfg);
    return rc;
}
