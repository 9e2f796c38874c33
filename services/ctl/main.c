/* drover-ctl: operator command line for what the REST API does not cover yet: per-device pacing,
 * queue inspection, message status and history, and the counters of every node.
 *
 * It talks to Redis directly with blocking hiredis calls (it has no event loop) and reads the same
 * configuration as the services, so `drover-ctl -c drover.conf ...` reaches the right Redis.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "dr/apikey.h"
#include "dr/codec.h"
#include "dr/err.h"
#include "dr/settings.h"

static const char *usage =
    "usage: drover-ctl [-c FILE] [--key=value ...] COMMAND\n"
    "commands:\n"
    "  device show DEVICE                      queue depth, in flight, scheduled, pacing, last send/ack\n"
    "  device set DEVICE [interval_ms=N] [window=N]   per-device pacing overrides\n"
    "  device reset DEVICE                     remove the overrides (use the global defaults)\n"
    "  message show ID                         status, fields and full transition history\n"
    "  metrics                                 counters of every node\n"
    "  key create producer|admin [NAME]        new REST API key (printed once; only its hash is stored)\n"
    "  key create device DEVICE [NAME]         new key bound to one device\n"
    "  key list                                ids, scopes, devices and names of all keys\n"
    "  key revoke ID                           revoke a key (effective within http.key_cache_ms)\n";

static dr_settings_t cfg;

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

static void print_field(const char *name, const redisReply *v, int last)
{
    char *q = v && v->type == REDIS_REPLY_STRING ? dr_codec_json_string(v->str) : NULL;
    printf("  \"%s\": %s%s\n", name, q ? q : "null", last ? "" : ",");
    free(q);
}

static void print_num(const char *name, const redisReply *v)
{
    printf("  \"%s\": %s,\n", name, v && v->type == REDIS_REPLY_STRING ? v->str : "null");
}

static int device_show(redisContext *c, const char *dev)
{
    const char *p = cfg.redis_prefix;
    char q[512];
    snprintf(q, sizeof(q), "%sq:%s", p, dev);
    long long depth = int_of(c, "XLEN %s", q, NULL);
    long long inflight = 0;
    if (depth > 0) {
        redisReply *r = cmd(c, "XPENDING %s g", q);
        if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER)
            inflight = r->element[0]->integer;
        freeReplyObject(r);
    }
    char k[512];
    snprintf(k, sizeof(k), "%ssc:%s", p, dev);
    long long sched = int_of(c, "ZCARD %s", k, NULL);
    snprintf(k, sizeof(k), "%sds:%s", p, dev);
    redisReply *st = cmd(c, "HMGET %s next last ack", k);
    snprintf(k, sizeof(k), "%sdc:%s", p, dev);
    redisReply *dc = cmd(c, "HMGET %s iv win", k);
    char *qdev = dr_codec_json_string(dev);
    printf("{\n  \"device\": %s,\n  \"queued\": %lld,\n  \"inFlight\": %lld,\n  \"scheduled\": %lld,\n", qdev,
           depth - inflight, inflight, sched);
    free(qdev);
    print_num("nextSendAllowedMs", st->element[0]);
    print_num("lastSendMs", st->element[1]);
    print_num("lastAckMs", st->element[2]);
    print_num("intervalMs", dc->element[0]);
    print_num("window", dc->element[1]);
    printf("  \"defaults\": {\"intervalMs\": %lld, \"window\": %lld}\n}\n", (long long)cfg.interval_ms,
           (long long)cfg.window);
    freeReplyObject(st);
    freeReplyObject(dc);
    return 0;
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

static int device_set(redisContext *c, const char *dev, int argc, char **argv)
{
    if (dr_codec_check_id(dev, strlen(dev), (size_t)cfg.ingress_max_device_id) != 0) {
        fprintf(stderr, "drover-ctl: invalid device id\n");
        return 1;
    }
    char k[512];
    snprintf(k, sizeof(k), "%sdc:%s", cfg.redis_prefix, dev);
    if (argc == 0) {
        fprintf(stderr, "%s", usage);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        long long v;
        if (parse_kv(argv[i], "interval_ms", 0, 86400000, &v))
            freeReplyObject(cmd(c, "HSET %s iv %lld", k, v));
        else if (parse_kv(argv[i], "window", 1, 64, &v))
            freeReplyObject(cmd(c, "HSET %s win %lld", k, v));
        else {
            fprintf(stderr, "drover-ctl: unknown setting '%s' (interval_ms=N or window=N)\n", argv[i]);
            return 1;
        }
    }
    return device_show(c, dev);
}

static int message_show(redisContext *c, const char *id)
{
    char *end;
    long long n = strtoll(id, &end, 10);
    if (*end != '\0' || n <= 0) {
        fprintf(stderr, "drover-ctl: message id must be a positive integer\n");
        return 1;
    }
    char k[128];
    snprintf(k, sizeof(k), "%sm:%lld", cfg.redis_prefix, n);
    redisReply *m = cmd(c, "HGETALL %s", k);
    if (m->elements == 0) {
        fprintf(stderr, "drover-ctl: message %lld not found (never existed, or its retention ended)\n", n);
        freeReplyObject(m);
        return 3;
    }
    snprintf(k, sizeof(k), "%sh:%lld", cfg.redis_prefix, n);
    redisReply *h = cmd(c, "LRANGE %s 0 -1", k);
    printf("{\n  \"id\": %lld,\n", n);
    for (size_t i = 0; i + 1 < m->elements; i += 2) {
        if (strcmp(m->element[i]->str, "data") == 0) {
            printf("  \"data\": %s,\n", m->element[i + 1]->str); /* stored as JSON text */
            continue;
        }
        print_field(m->element[i]->str, m->element[i + 1], 0);
    }
    printf("  \"history\": [\n");
    for (size_t i = 0; i < h->elements; i++)
        printf("    %s%s\n", h->element[i]->str, i + 1 < h->elements ? "," : "");
    printf("  ]\n}\n");
    freeReplyObject(m);
    freeReplyObject(h);
    return 0;
}

static int metrics(redisContext *c)
{
    char pattern[128], cursor[32] = "0";
    snprintf(pattern, sizeof(pattern), "%smetrics:*", cfg.redis_prefix);
    do { /* SCAN, never KEYS: it must not stall a production Redis */
        redisReply *page = cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof(cursor), "%s", page->element[0]->str);
        redisReply *keys = page->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *h = cmd(c, "HGETALL %s", keys->element[i]->str);
            printf("%s\n", keys->element[i]->str + strlen(cfg.redis_prefix) + 8);
            for (size_t j = 0; j + 1 < h->elements; j += 2)
                printf("  %-20s %s\n", h->element[j]->str, h->element[j + 1]->str);
            freeReplyObject(h);
        }
        freeReplyObject(page);
    } while (strcmp(cursor, "0") != 0);
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
    snprintf(k, sizeof(k), "%sak:%s", cfg.redis_prefix, id);
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
    snprintf(pattern, sizeof(pattern), "%sak:*", cfg.redis_prefix);
    printf("%-14s %-9s %-8s %-24s %s\n", "ID", "SCOPE", "REVOKED", "DEVICE", "NAME");
    do {
        redisReply *page = cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof(cursor), "%s", page->element[0]->str);
        for (size_t i = 0; i < page->element[1]->elements; i++) {
            const char *key = page->element[1]->element[i]->str;
            redisReply *h = cmd(c, "HMGET %s scope revoked dev name", key);
            printf("%-14s %-9s %-8s %-24s %s\n", key + strlen(cfg.redis_prefix) + 3,
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
    snprintf(k, sizeof(k), "%sak:%s", cfg.redis_prefix, id);
    if (int_of(c, "EXISTS %s", k, NULL) == 0) {
        fprintf(stderr, "drover-ctl: no key %s\n", id);
        return 3;
    }
    freeReplyObject(cmd(c, "HSET %s revoked 1", k));
    printf("revoked %s\n", id);
    return 0;
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
    struct timeval tv = {.tv_sec = cfg.redis_timeout_ms / 1000, .tv_usec = (cfg.redis_timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(cfg.redis_host, (int)cfg.redis_port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "drover-ctl: cannot connect to redis at %s:%lld: %s\n", cfg.redis_host,
                (long long)cfg.redis_port, c ? c->errstr : "out of memory");
        return 2;
    }
    redisSetTimeout(c, tv);
    if (cfg.redis_password[0])
        freeReplyObject(cmd(c, "AUTH %s", cfg.redis_password));
    int rc = 1;
    if (nargs >= 3 && strcmp(args[0], "device") == 0 && strcmp(args[1], "show") == 0)
        rc = device_show(c, args[2]);
    else if (nargs >= 3 && strcmp(args[0], "device") == 0 && strcmp(args[1], "set") == 0)
        rc = device_set(c, args[2], nargs - 3, args + 3);
    else if (nargs == 3 && strcmp(args[0], "device") == 0 && strcmp(args[1], "reset") == 0) {
        char k[512];
        snprintf(k, sizeof(k), "%sdc:%s", cfg.redis_prefix, args[2]);
        freeReplyObject(cmd(c, "DEL %s", k));
        rc = device_show(c, args[2]);
    } else if (nargs == 3 && strcmp(args[0], "message") == 0 && strcmp(args[1], "show") == 0)
        rc = message_show(c, args[2]);
    else if (nargs == 1 && strcmp(args[0], "metrics") == 0)
        rc = metrics(c);
    else if (nargs >= 2 && strcmp(args[0], "key") == 0 && strcmp(args[1], "create") == 0)
        rc = key_create(c, nargs - 2, args + 2);
    else if (nargs == 2 && strcmp(args[0], "key") == 0 && strcmp(args[1], "list") == 0)
        rc = key_list(c);
    else if (nargs == 3 && strcmp(args[0], "key") == 0 && strcmp(args[1], "revoke") == 0)
        rc = key_revoke(c, args[2]);
    else
        fprintf(stderr, "%s", usage);
    redisFree(c);
    dr_settings_dispose(&cfg);
    return rc;
}
