/* Wire codec (see dr/codec.h). Parsing uses jansson with duplicate-key rejection; encoders build the
 * exact byte layout with a small growable buffer instead of jansson so key order is guaranteed. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/topic.h"
#include "dr/err.h"
#include "dr/mem.h"
#include "dr/shard.h"
#include "dr/status.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static int fail(dr_codec_err_t *err, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(dr_codec_err_t *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return DR_EINVAL;
}

int dr_codec_check_id(const char *s, size_t len, size_t max)
{
    return dr_topic_check_level(s, len, max);
}

/* Reads an optional integer member; 0 = absent or null, 1 = present, -1 = wrong type. */
static int opt_int(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 1;
}

/* ---- producer message ------------------------------------------------------------------------- */

/* ---- raw member extraction ------------------------------------------------------------------ */

/* Skips one JSON value starting at p (already validated by jansson); returns the end. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (depth == 0)
                return p + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth <= 0)
                return depth == 0 ? p + 1 : p;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
            return p;
        }
    }
    return p;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Returns a compact copy (whitespace outside strings removed) of the value of the top-level member
 * named key in a JSON object already validated by jansson, spelled exactly as in the input; NULL when
 * the key does not appear literally (e.g. written with escapes). */
static char *raw_member(const char *buf, size_t len, const char *key)
{
    const char *p = buf, *end = buf + len;
    size_t kl = strlen(key);
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p++;
    while (p < end) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"')
            return NULL;
        const char *k = p + 1, *kend = skip_value(p, end) - 1;
        p = skip_ws(kend + 1, end);
        if (p >= end || *p != ':')
            return NULL;
        p = skip_ws(p + 1, end);
        const char *v = p, *vend = skip_value(p, end);
        if ((size_t)(kend - k) == kl && memcmp(k, key, kl) == 0 && memchr(v, '\0', (size_t)(vend - v)) == NULL) {
            char *out = dr_malloc((size_t)(vend - v) + 1);
            size_t o = 0;
            int in_str = 0;
            for (const char *q = v; q < vend; q++) {
                if (in_str) {
                    out[o++] = *q;
                    if (*q == '\\' && q + 1 < vend)
                        out[o++] = *++q;
                    else if (*q == '"')
                        in_str = 0;
                } else if (*q == '"') {
                    in_str = 1;
                    out[o++] = *q;
                } else if (*q != ' ' && *q != '\t' && *q != '\r' && *q != '\n') {
                    out[o++] = *q;
                }
            }
            out[o] = '\0';
            return out;
        }
        p = skip_ws(vend, end);
        if (p < end && *p == ',')
            p++;
    }
    return NULL;
}

/* Parses buf as one JSON object (strict). Returns it (caller decrefs) or NULL with err filled. */
static json_t *load_object(const char *buf, size_t len, const char *what, dr_codec_err_t *err)
{
    json_error_t jerr;
    /* jansson lets a raw NUL through in places; JSON text never contains one (RFC 8259 §7). */
    if (memchr(buf, '\0', len) != NULL) {
        fail(err, "BAD_JSON", "the %s contains a NUL byte", what);
        return NULL;
    }
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        fail(err, "BAD_JSON", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        fail(err, "BAD_JSON", "the %s must be a JSON object", what);
        json_decref(root);
        return NULL;
    }
    return root;
}

static void read_cert(json_t *root, dr_codec_err_t *err)
{
    json_t *cert = json_object_get(root, "messageBirthCertificate");
    if (!json_is_object(cert))
        return;
    json_t *tmp = json_object_get(cert, "tmpId"), *pd = json_object_get(cert, "producerDeviseId");
    if (json_is_integer(tmp) && json_is_string(pd) &&
        dr_codec_check_id(json_string_value(pd), json_string_length(pd), DR_MAX_PRODUCER_ID) == 0) {
        err->has_cert = 1;
        err->tmp_id = (int64_t)json_integer_value(tmp);
        snprintf(err->producer_id, sizeof(err->producer_id), "%s", json_string_value(pd));
    }
}

static int parse_cert(json_t *root, dr_producer_msg_t *m, dr_codec_err_t *err)
{
    json_t *cert = json_object_get(root, "messageBirthCertificate");
    if (cert == NULL || json_is_null(cert))
        return 0;
    if (!json_is_object(cert))
        return fail(err, "BAD_TYPE", "messageBirthCertificate must be an object or null");
    json_t *tmp = json_object_get(cert, "tmpId"), *pd = json_object_get(cert, "producerDeviseId");
    if (tmp != NULL && !json_is_null(tmp) && !json_is_integer(tmp))
        return fail(err, "BAD_TYPE", "messageBirthCertificate.tmpId must be an integer");
    if (pd != NULL && !json_is_null(pd) && !json_is_string(pd))
        return fail(err, "BAD_TYPE", "messageBirthCertificate.producerDeviseId must be a string");
    if (!json_is_integer(tmp) || !json_is_string(pd))
        return 0; /* Duster: subscribed only when both are present */
    if (dr_codec_check_id(json_string_value(pd), json_string_length(pd), DR_MAX_PRODUCER_ID) != 0)
        return fail(err, "BAD_FIELD", "producerDeviseId must be 1..%d bytes without '/', '+', '#' or control characters",
                    DR_MAX_PRODUCER_ID);
    m->has_cert = 1;
    m->tmp_id = (int64_t)json_integer_value(tmp);
    m->producer_id = dr_strdup(json_string_value(pd));
    return 0;
}

static int parse_ext(json_t *root, dr_producer_msg_t *m, dr_codec_err_t *err)
{
    static const struct {
        const char *key;
        size_t off;
        int64_t min, max;
    } ints[] = {
        {"ttlMs", offsetof(dr_producer_msg_t, ttl_ms), 1, INT64_C(315360000000)},
        {"deliverBy", offsetof(dr_producer_msg_t, deliver_by), 1, INT64_C(253402300799999)},
        {"maxAttempts", offsetof(dr_producer_msg_t, max_attempts), 1, 1000000},
        {"notBefore", offsetof(dr_producer_msg_t, not_before), 0, INT64_C(253402300799999)},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int64_t v = 0;
        int r = opt_int(root, ints[i].key, &v);
        if (r < 0)
            return fail(err, "BAD_TYPE", "%s must be an integer", ints[i].key);
        if (r == 0)
            continue;
        if (v < ints[i].min || v > ints[i].max)
            return fail(err, "BAD_FIELD", "%s must be between %lld and %lld", ints[i].key,
                        (long long)ints[i].min, (long long)ints[i].max);
        *(int64_t *)((char *)m + ints[i].off) = v;
        m->ext = 1;
    }
    json_t *k = json_object_get(root, "idempotencyKey");
    if (k != NULL && !json_is_null(k)) {
        if (!json_is_string(k))
            return fail(err, "BAD_TYPE", "idempotencyKey must be a string");
        size_t kl = json_string_length(k);
        if (kl == 0 || kl > DR_MAX_IDEM_KEY || memchr(json_string_value(k), '\0', kl) != NULL)
            return fail(err, "BAD_FIELD", "idempotencyKey must be 1..%d bytes", DR_MAX_IDEM_KEY);
        m->idem_key = dr_strdup(json_string_value(k));
        m->ext = 1;
    }
    return 0;
}

int dr_codec_parse_producer(const char *buf, size_t len, dr_producer_msg_t *m, dr_codec_err_t *err)
{
    memset(m, 0, sizeof(*m));
    memset(err, 0, sizeof(*err));
    json_t *root = load_object(buf, len, "message", err);
    if (root == NULL)
        return DR_EINVAL;
    int rc = DR_EINVAL;
    read_cert(root, err);

    m->guarantee = DR_G_RECEIPT_CONFIRMATION;
    json_t *g = json_object_get(root, "believerGuarantee");
    if (g != NULL && !json_is_null(g)) {
        if (!json_is_string(g) || (m->guarantee = dr_guarantee_parse(json_string_value(g), json_string_length(g))) < 0) {
            fail(err, "BAD_GUARANTEE", "believerGuarantee must be NO, RECEIPT_CONFIRMATION or ONLY_LAST");
            goto out;
        }
    }
    json_t *c = json_object_get(root, "command");
    if (c != NULL && !json_is_null(c) && !json_is_string(c)) {
        fail(err, "BAD_TYPE", "command must be a string");
        goto out;
    }
    if (json_is_string(c) && memchr(json_string_value(c), '\0', json_string_length(c)) != NULL) {
        fail(err, "BAD_FIELD", "command must not contain NUL characters");
        goto out;
    }
    json_t *d = json_object_get(root, "data");
    if (d != NULL && !json_is_null(d) && !json_is_object(d)) {
        fail(err, "BAD_DATA", "data must be a JSON object or null");
        goto out;
    }
    if (parse_cert(root, m, err) != 0 || parse_ext(root, m, err) != 0)
        goto out;
    m->command = dr_strdup(json_is_string(c) ? json_string_value(c) : "");
    if (json_is_object(d) && (m->data = raw_member(buf, len, "data")) != NULL) {
        /* the producer's own spelling of numbers survives (jansson would print 0.1 as 0.10000000000000001) */
    } else if (json_is_object(d)) {
        char *txt = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
        if (txt == NULL) {
            fail(err, "BAD_DATA", "data could not be serialised");
            goto out;
        }
        m->data = dr_strdup(txt);
        free(txt);
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0)
        dr_producer_msg_dispose(m);
    return rc;
}

void dr_producer_msg_dispose(dr_producer_msg_t *m)
{
    free(m->command);
    free(m->data);
    free(m->producer_id);
    free(m->idem_key);
    memset(m, 0, sizeof(*m));
    m->guarantee = DR_G_RECEIPT_CONFIRMATION;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    /* length first, so "ab"+"c" and "a"+"bc" differ */
    size_t len = s ? strlen(s) + 1 : 0;
    h = dr_fnv1a64(&len, sizeof(len), h);
    return s ? dr_fnv1a64(s, len, h) : h;
}

uint64_t dr_producer_msg_fingerprint(const dr_producer_msg_t *m, const char *dev)
{
    int64_t nums[8] = {m->guarantee, m->has_cert, m->tmp_id, m->ttl_ms, m->deliver_by, m->max_attempts, m->not_before, 0};
    uint64_t h = DR_FNV64_BASIS;
    h = mix_str(h, dev);
    h = mix_str(h, m->command);
    h = mix_str(h, m->data);
    h = mix_str(h, m->producer_id);
    return dr_fnv1a64(nums, sizeof(nums), h);
}

/* ---- ack -------------------------------------------------------------------------------------- */

int dr_codec_parse_ack(const char *buf, size_t len, dr_ack_t *out, dr_codec_err_t *err)
{
    memset(err, 0, sizeof(*err));
    json_t *root = load_object(buf, len, "ack", err);
    if (root == NULL)
        return DR_EINVAL;
    int rc = DR_EINVAL;
    json_t *id = json_object_get(root, "id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0) {
        fail(err, "BAD_ID", "id must be a positive integer");
        goto out;
    }
    out->id = (int64_t)json_integer_value(id);
    out->status = DR_ST_DELIVERED;
    json_t *st = json_object_get(root, "deliveryStatus");
    if (st != NULL && !json_is_null(st)) {
        int s = json_is_string(st) ? dr_status_parse(json_string_value(st), json_string_length(st)) : -1;
        if (!dr_status_is_ack(s)) {
            fail(err, "BAD_STATUS", "deliveryStatus must be DELIVERED, COMPLETED or COMPLETED_WITH_ERROR");
            goto out;
        }
        out->status = s;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---- encoders --------------------------------------------------------------------------------- */

static char *json_quote(const char *s)
{
    json_t *j = json_string(s);
    char *txt = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (txt == NULL)
        return dr_strdup("\"\""); /* not valid UTF-8: cannot happen for parsed input */
    char *copy = dr_strdup(txt);
    free(txt);
    return copy;
}

int dr_codec_json_depth(const char *buf, size_t len)
{
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

char *dr_codec_json_string(const char *s)
{
    return json_quote(s);
}

char *dr_codec_encode_consumer(int64_t id, int guarantee, const char *command, int64_t now_ms, const char *data_json)
{
    char *cmd = json_quote(command ? command : "");
    const char *data = data_json ? data_json : "null";
    size_t cap = strlen(cmd) + strlen(data) + 128;
    char *out = dr_malloc(cap);
    snprintf(out, cap, "{\"id\":%lld,\"believerGuarantee\":\"%s\",\"command\":%s,\"currentTimestamp\":%lld,\"data\":%s}",
             (long long)id, dr_guarantee_name(guarantee), cmd, (long long)now_ms, data);
    free(cmd);
    return out;
}

char *dr_codec_encode_producer(int64_t id, int has_tmp, int64_t tmp_id, int status)
{
    char *out = dr_malloc(128);
    if (has_tmp)
        snprintf(out, 128, "{\"id\":%lld,\"tmpId\":%lld,\"deliveryStatus\":\"%s\"}", (long long)id, (long long)tmp_id,
                 dr_status_name(status));
    else
        snprintf(out, 128, "{\"id\":%lld,\"tmpId\":null,\"deliveryStatus\":\"%s\"}", (long long)id, dr_status_name(status));
    return out;
}

char *dr_codec_encode_error(int64_t tmp_id, const char *code, const char *message)
{
    char *msg = json_quote(message);
    size_t cap = strlen(msg) + strlen(code) + 96;
    char *out = dr_malloc(cap);
    snprintf(out, cap, "{\"tmpId\":%lld,\"error\":{\"code\":\"%s\",\"message\":%s}}", (long long)tmp_id, code, msg);
    free(msg);
    return out;
}
