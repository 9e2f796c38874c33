/* Drover device SDK (see drover_device.h): a strict JSON scanner for the device message, the ring of
 * executed ids with its persistence hooks, and the ack and topic builders.
 *
 * DESIGN
 * The scanner reads [p, end) and nothing else: every byte access is preceded by a bounds check, so a
 * payload that is not NUL-terminated, or cut anywhere, is safe. It is iterative: nesting is tracked in
 * one uint32_t (bit d set when the container at depth d is an array), so stack use is fixed and a deep
 * payload costs no recursion. It validates everything it passes over, including unknown members and
 * the whole of `data`, because a message the device acknowledges must be one it understood.
 * The file includes no libc header beyond the freestanding ones (<limits.h>, <stddef.h>, <stdint.h>),
 * so it builds for any target as is.
 */
#include <limits.h>

#include "drover_device.h"

#if DR_DEVICE_RING_SIZE < 2 || DR_DEVICE_RING_SIZE > 65534 || DR_DEVICE_RING_SIZE % 2 != 0
#error "DR_DEVICE_RING_SIZE must be even and between 2 and 65534 (the ring image then has no padding)"
#endif
#if DR_DEVICE_MAX_DEPTH < 1 || DR_DEVICE_MAX_DEPTH > 32
#error "DR_DEVICE_MAX_DEPTH must be between 1 and 32"
#endif

/* The ring image has no padding, so its checksum covers only meaningful bytes on every ABI. */
typedef char ring_image_is_packed[sizeof(dr_device_ring_t) == 16 + 12 * (size_t)DR_DEVICE_RING_SIZE ? 1 : -1];

#define ST_SHIFT 56 /* a ring entry is id | status << ST_SHIFT; ids use the low 53 bits */

/* ---- Small helpers ------------------------------------------------------------------------------- */

static size_t cstr_len(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0')
        n++;
    return n;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static uint64_t entry_id(uint64_t e)
{
    return e & DR_DEVICE_ID_MAX;
}

static dr_device_status_t entry_status(uint64_t e)
{
    return (dr_device_status_t)((e >> ST_SHIFT) & 3u);
}

static uint64_t entry_make(uint64_t id, dr_device_status_t st)
{
    return id | (uint64_t)st << ST_SHIFT;
}

static int status_valid(dr_device_status_t st)
{
    return st == DR_DEVICE_DELIVERED || st == DR_DEVICE_COMPLETED || st == DR_DEVICE_COMPLETED_WITH_ERROR;
}

/* ---- Strings: escapes and UTF-8 ------------------------------------------------------------------ */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The value of the 4 hex digits at p (the caller checked that they are in bounds), or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decodes the escape sequence at *pp (which points at a backslash, before end) into UTF-8 bytes in out,
 * advances *pp past it and returns the number of bytes (1 to 4). Returns 0 for a malformed escape, an
 * unpaired surrogate or \u0000 (which Drover never sends and a C string cannot hold). */
static int unescape(const char **pp, const char *end, unsigned char out[4])
{
    const char *p = *pp + 1;
    long cp, lo;

    if (p >= end)
        return 0;
    switch (*p) {
    case '"':
    case '\\':
    case '/':
        out[0] = (unsigned char)*p;
        break;
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        if (end - p < 5 || (cp = hex4(p + 1)) < 0)
            return 0;
        p += 5;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || (lo = hex4(p + 2)) < 0xDC00 || lo > 0xDFFF)
                return 0;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
            return 0;
        }
        *pp = p;
        if (cp < 0x80) {
            out[0] = (unsigned char)cp;
            return 1;
        }
        if (cp < 0x800) {
            out[0] = (unsigned char)(0xC0 | cp >> 6);
            out[1] = (unsigned char)(0x80 | (cp & 0x3F));
            return 2;
        }
        if (cp < 0x10000) {
            out[0] = (unsigned char)(0xE0 | cp >> 12);
            out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
            out[2] = (unsigned char)(0x80 | (cp & 0x3F));
            return 3;
        }
        out[0] = (unsigned char)(0xF0 | cp >> 18);
        out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[3] = (unsigned char)(0x80 | (cp & 0x3F));
        return 4;
    default:
        return 0;
    }
    *pp = p + 1;
    return 1;
}

/* Length of the well-formed UTF-8 sequence at p (before end): 1 to 4, or 0 for an invalid lead or
 * continuation byte, an overlong form, a surrogate, a code point above U+10FFFF or a cut sequence. */
static int utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    int n;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (end - p < n || p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Decodes one character of a string's contents at *pp into out and advances; returns 1..4, 0 if bad. */
static int next_char(const char **pp, const char *end, unsigned char out[4])
{
    if (**pp == '\\')
        return unescape(pp, end, out);
    out[0] = (unsigned char)**pp;
    (*pp)++;
    return 1;
}

int dr_device_str_eq(dr_device_span_t s, const char *cstr)
{
    const char *p = s.p, *end = s.p + s.len;
    unsigned char ch[4];
    size_t k = 0;

    if (cstr == NULL || (p == NULL && s.len != 0))
        return 0;
    while (p < end) {
        int n = next_char(&p, end, ch);
        if (n == 0)
            return 0;
        for (int i = 0; i < n; i++, k++)
            if (cstr[k] == '\0' || (unsigned char)cstr[k] != ch[i])
                return 0;
    }
    return cstr[k] == '\0';
}

int dr_device_str_copy(dr_device_span_t s, char *buf, size_t cap)
{
    const char *p = s.p, *end = s.p + s.len;
    unsigned char ch[4];
    size_t k = 0;

    if (buf == NULL || cap == 0 || (p == NULL && s.len != 0))
        return DR_DEVICE_EINVAL;
    buf[0] = '\0';
    while (p < end) {
        int n = next_char(&p, end, ch);
        if (n == 0) {
            buf[0] = '\0';
            return DR_DEVICE_EJSON;
        }
        if (cap - 1 - k < (size_t)n) {
            buf[0] = '\0';
            return DR_DEVICE_ENOSPACE;
        }
        for (int i = 0; i < n; i++)
            buf[k++] = (char)ch[i];
    }
    if (k > (size_t)INT_MAX) {
        buf[0] = '\0';
        return DR_DEVICE_ENOSPACE;
    }
    buf[k] = '\0';
    return (int)k;
}

/* ---- JSON scanner -------------------------------------------------------------------------------- */

typedef struct {
    const char *p;   /* next byte to read */
    const char *end; /* one past the last byte */
} scan_t;

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Scans the string at s->p (which points at its opening quote) and sets *contents to the bytes between
 * the quotes. Checks escapes, UTF-8 and the absence of raw control characters. */
static int scan_string(scan_t *s, dr_device_span_t *contents)
{
    const char *p = s->p + 1, *start = p;
    unsigned char tmp[4];

    while (p < s->end) {
        unsigned char c = (unsigned char)*p;
        int n;
        if (c == '"') {
            contents->p = start;
            contents->len = (size_t)(p - start);
            s->p = p + 1;
            return 0;
        }
        if (c == '\\') {
            if (unescape(&p, s->end, tmp) == 0)
                return DR_DEVICE_EJSON;
            continue;
        }
        if (c < 0x20)
            return DR_DEVICE_EJSON;
        n = utf8_len((const unsigned char *)p, (const unsigned char *)s->end);
        if (n == 0)
            return DR_DEVICE_EJSON;
        p += n;
    }
    return DR_DEVICE_EJSON;
}

/* Scans a number by the JSON grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(scan_t *s)
{
    const char *p = s->p, *end = s->end;

    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return DR_DEVICE_EJSON;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return DR_DEVICE_EJSON;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return DR_DEVICE_EJSON;
        while (p < end && is_digit(*p))
            p++;
    }
    s->p = p;
    return 0;
}

static int scan_literal(scan_t *s, const char *lit)
{
    size_t n = cstr_len(lit);
    if ((size_t)(s->end - s->p) < n)
        return DR_DEVICE_EJSON;
    for (size_t i = 0; i < n; i++)
        if (s->p[i] != lit[i])
            return DR_DEVICE_EJSON;
    s->p += n;
    return 0;
}

/* Scans a string, number or literal at s->p (in bounds). */
static int scan_scalar(scan_t *s)
{
    dr_device_span_t unused;

    switch (*s->p) {
    case '"':
        return scan_string(s, &unused);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

/* Scans `"name" :` (with whitespace) and sets *name to the name's contents. */
static int scan_member_name(scan_t *s, dr_device_span_t *name)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != '"' || scan_string(s, name) != 0)
        return DR_DEVICE_EJSON;
    skip_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return DR_DEVICE_EJSON;
    s->p++;
    return 0;
}

/* Scans one complete JSON value of any kind and sets *raw to its text (without surrounding whitespace). */
static int scan_value(scan_t *s, dr_device_span_t *raw)
{
    dr_device_span_t name;
    uint32_t arrays = 0; /* bit d set: the container at depth d is an array */
    unsigned depth = 0;
    const char *start;

    skip_ws(s);
    start = s->p;
    for (;;) {
        char c;
        /* A value starts here. */
        skip_ws(s);
        if (s->p >= s->end)
            return DR_DEVICE_EJSON;
        c = *s->p;
        if (c == '{' || c == '[') {
            if (depth == DR_DEVICE_MAX_DEPTH)
                return DR_DEVICE_EJSON;
            s->p++;
            if (c == '[')
                arrays |= 1u << depth;
            else
                arrays &= ~(1u << depth);
            depth++;
            skip_ws(s);
            if (s->p >= s->end || *s->p != (c == '[' ? ']' : '}')) {
                if (c == '{' && scan_member_name(s, &name) != 0)
                    return DR_DEVICE_EJSON;
                continue; /* the container's first value */
            }
            s->p++; /* empty container */
            depth--;
        } else if (scan_scalar(s) != 0) {
            return DR_DEVICE_EJSON;
        }
        /* A value ended: close containers until one continues with a comma, or the top value is done. */
        for (;;) {
            unsigned in_array;
            if (depth == 0) {
                raw->p = start;
                raw->len = (size_t)(s->p - start);
                return 0;
            }
            skip_ws(s);
            if (s->p >= s->end)
                return DR_DEVICE_EJSON;
            in_array = (arrays >> (depth - 1)) & 1u;
            c = *s->p++;
            if (c == ',') {
                if (!in_array && scan_member_name(s, &name) != 0)
                    return DR_DEVICE_EJSON;
                break;
            }
            if (c != (in_array ? ']' : '}'))
                return DR_DEVICE_EJSON;
            depth--;
        }
    }
}

/* The value of a JSON number token if it is an integer in 0..max, else -1. */
static int number_to_uint(dr_device_span_t raw, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (raw.len == 0)
        return -1;
    for (size_t i = 0; i < raw.len; i++) {
        unsigned d;
        if (!is_digit(raw.p[i]))
            return -1; /* '-', '.', 'e': negative, fraction or exponent */
        d = (unsigned)(raw.p[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* ---- The device message -------------------------------------------------------------------------- */

enum { K_ID = 1, K_GUARANTEE = 2, K_COMMAND = 4, K_TIMESTAMP = 8, K_DATA = 16 };

static unsigned member_key(dr_device_span_t name)
{
    if (dr_device_str_eq(name, "id"))
        return K_ID;
    if (dr_device_str_eq(name, "believerGuarantee"))
        return K_GUARANTEE;
    if (dr_device_str_eq(name, "command"))
        return K_COMMAND;
    if (dr_device_str_eq(name, "currentTimestamp"))
        return K_TIMESTAMP;
    if (dr_device_str_eq(name, "data"))
        return K_DATA;
    return 0;
}

static void cmd_clear(dr_device_cmd_t *cmd)
{
    cmd->id = 0;
    cmd->guarantee = DR_DEVICE_G_RECEIPT_CONFIRMATION;
    cmd->command.p = "";
    cmd->command.len = 0;
    cmd->data.p = NULL;
    cmd->data.len = 0;
    cmd->current_timestamp = 0;
    cmd->action = DR_DEVICE_EXECUTE;
    cmd->status = DR_DEVICE_DELIVERED;
}

/* Applies one known member's raw value to cmd; returns 0, DR_DEVICE_EID or DR_DEVICE_EFIELD. */
static int apply_member(dr_device_cmd_t *cmd, unsigned key, dr_device_span_t v)
{
    char c = v.p[0]; /* a scanned value is never empty */
    dr_device_span_t str;

    str.p = v.p + 1;
    str.len = v.len >= 2 ? v.len - 2 : 0;
    switch (key) {
    case K_ID:
        if (c == '"' || number_to_uint(v, DR_DEVICE_ID_MAX, &cmd->id) != 0 || cmd->id == 0)
            return DR_DEVICE_EID;
        return 0;
    case K_GUARANTEE:
        if (c == 'n')
            return 0;
        if (c != '"')
            return DR_DEVICE_EFIELD;
        if (dr_device_str_eq(str, "NO"))
            cmd->guarantee = DR_DEVICE_G_NO;
        else if (dr_device_str_eq(str, "RECEIPT_CONFIRMATION"))
            cmd->guarantee = DR_DEVICE_G_RECEIPT_CONFIRMATION;
        else if (dr_device_str_eq(str, "ONLY_LAST"))
            cmd->guarantee = DR_DEVICE_G_ONLY_LAST;
        else
            cmd->guarantee = DR_DEVICE_G_OTHER;
        return 0;
    case K_COMMAND:
        if (c == 'n')
            return 0;
        if (c != '"')
            return DR_DEVICE_EFIELD;
        cmd->command = str;
        return 0;
    case K_TIMESTAMP:
        if (c == 'n')
            return 0;
        if (c == '"' || number_to_uint(v, DR_DEVICE_ID_MAX, &cmd->current_timestamp) != 0)
            return DR_DEVICE_EFIELD;
        return 0;
    case K_DATA:
        if (c == 'n')
            return 0;
        if (c != '{')
            return DR_DEVICE_EFIELD;
        cmd->data = v;
        return 0;
    default:
        return 0;
    }
}

int dr_device_parse(const char *payload, size_t len, dr_device_cmd_t *cmd)
{
    scan_t s;
    dr_device_span_t name, v;
    unsigned seen = 0;
    int id_err = DR_DEVICE_EID, field_err = 0, rc;

    if (cmd == NULL)
        return DR_DEVICE_EINVAL;
    cmd_clear(cmd);
    if (payload == NULL)
        return DR_DEVICE_EINVAL;
    if (len > DR_DEVICE_MAX_PAYLOAD)
        return DR_DEVICE_ETOOBIG;

    s.p = payload;
    s.end = payload + len;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return DR_DEVICE_EJSON;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            unsigned key;
            char c;
            if (scan_member_name(&s, &name) != 0 || scan_value(&s, &v) != 0)
                goto malformed;
            key = member_key(name);
            if (key != 0) {
                if (seen & key)
                    goto malformed; /* a duplicate: which one would count is ambiguous */
                seen |= key;
                rc = apply_member(cmd, key, v);
                if (key == K_ID)
                    id_err = rc;
                else if (rc != 0 && field_err == 0)
                    field_err = rc;
            }
            skip_ws(&s);
            if (s.p >= s.end)
                goto malformed;
            c = *s.p++;
            if (c == '}')
                break;
            if (c != ',')
                goto malformed;
        }
    }
    skip_ws(&s);
    if (s.p != s.end)
        goto malformed;
    rc = id_err != 0 ? id_err : field_err;
    if (rc != 0)
        cmd_clear(cmd);
    return rc;

malformed:
    cmd_clear(cmd);
    return DR_DEVICE_EJSON;
}

/* ---- The ring of executed ids -------------------------------------------------------------------- */

/* FNV-1a over the image, with the `check` field counted as zero. */
static uint32_t ring_check(const dr_device_ring_t *r)
{
    const unsigned char *b = (const unsigned char *)r;
    const size_t from = offsetof(dr_device_ring_t, check), to = from + sizeof(r->check);
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < sizeof(*r); i++)
        h = (h ^ (i >= from && i < to ? 0u : b[i])) * 16777619u;
    return h;
}

static void ring_clear(dr_device_ring_t *r)
{
    r->magic = DR_DEVICE_RING_MAGIC;
    r->size = DR_DEVICE_RING_SIZE;
    r->count = 0;
    r->check = 0;
    r->reserved = 0;
    for (size_t i = 0; i < DR_DEVICE_RING_SIZE; i++) {
        r->entries[i] = 0;
        r->prints[i] = 0;
    }
}

/* Fingerprint of a message's command and data as sent (FNV-1a, 32 bits), never 0. A re-send carries
 * both byte for byte, so a remembered id with another fingerprint is a new message reusing the id. */
static uint32_t fingerprint(const dr_device_cmd_t *cmd)
{
    uint32_t h = 2166136261u;
    const dr_device_span_t *parts[2] = {&cmd->command, &cmd->data};

    for (size_t k = 0; k < 2; k++) {
        const char *p = parts[k]->p;
        for (size_t i = 0; p != NULL && i < parts[k]->len; i++)
            h = (h ^ (unsigned char)p[i]) * 16777619u;
        h = (h ^ 0xffu) * 16777619u; /* separator: "ab"+"c" differs from "a"+"bc" */
    }
    return h != 0 ? h : 1;
}

/* 1 if a loaded image can be trusted entry by entry. */
static int ring_valid(const dr_device_ring_t *r)
{
    const uint64_t allowed = DR_DEVICE_ID_MAX | (uint64_t)3 << ST_SHIFT;

    if (r->magic != DR_DEVICE_RING_MAGIC || r->size != DR_DEVICE_RING_SIZE ||
        r->count > DR_DEVICE_RING_SIZE || r->reserved != 0 || r->check != ring_check(r))
        return 0;
    for (size_t i = 0; i < DR_DEVICE_RING_SIZE; i++) {
        uint64_t e = r->entries[i];
        if (i >= r->count ? e != 0 || r->prints[i] != 0
                          : entry_id(e) == 0 || (e & ~allowed) != 0 || !status_valid(entry_status(e)) ||
                                r->prints[i] == 0)
            return 0;
    }
    return 1;
}

/* Index of id in the ring (newest first, since recent ids are the likely re-sends), or -1. */
static long ring_find(const dr_device_ring_t *r, uint64_t id)
{
    for (long i = (long)r->count - 1; i >= 0; i--)
        if (entry_id(r->entries[i]) == id)
            return i;
    return -1;
}

static int ring_save(dr_device_t *dev)
{
    if (dev->save == NULL)
        return 0;
    dev->ring.check = ring_check(&dev->ring);
    return dev->save(dev->ctx, &dev->ring, sizeof(dev->ring)) == 0 ? 0 : DR_DEVICE_ESTORE;
}

int dr_device_init(dr_device_t *dev, const dr_device_opts_t *opts)
{
    int rc;

    if (dev == NULL)
        return DR_DEVICE_EINVAL;
    ring_clear(&dev->ring);
    dev->save = opts ? opts->save : NULL;
    dev->load = opts ? opts->load : NULL;
    dev->ctx = opts ? opts->ctx : NULL;
    dev->flags = opts ? opts->flags : 0;
    if (dev->load == NULL)
        return 0;
    rc = dev->load(dev->ctx, &dev->ring, sizeof(dev->ring));
    if (rc == 0 && ring_valid(&dev->ring))
        return 0;
    ring_clear(&dev->ring);
    return rc == DR_DEVICE_ENOTFOUND ? 0 : DR_DEVICE_ESTORE;
}

int dr_device_reset(dr_device_t *dev)
{
    if (dev == NULL)
        return DR_DEVICE_EINVAL;
    ring_clear(&dev->ring);
    return ring_save(dev);
}

size_t dr_device_count(const dr_device_t *dev)
{
    return dev ? dev->ring.count : 0;
}

int dr_device_receive(dr_device_t *dev, const char *payload, size_t len, dr_device_cmd_t *cmd)
{
    dr_device_ring_t *r;
    uint64_t e;
    uint32_t fp, p;
    size_t from;
    long i;
    int rc, removed;

    if (dev == NULL) {
        if (cmd != NULL)
            cmd_clear(cmd);
        return DR_DEVICE_EINVAL;
    }
    rc = dr_device_parse(payload, len, cmd);
    if (rc != 0)
        return rc;
    if (cmd->guarantee == DR_DEVICE_G_NO && !(dev->flags & DR_DEVICE_F_DEDUP_NO))
        return 0;

    r = &dev->ring;
    fp = fingerprint(cmd);
    i = ring_find(r, cmd->id);
    if (i >= 0 && r->prints[i] == fp) {
        /* Seen before: move it to the newest end so repeated re-sends keep it remembered. A failed save
         * is not reported: the stored image still holds the id, only in its older place. */
        e = r->entries[i];
        for (; i + 1 < (long)r->count; i++) {
            r->entries[i] = r->entries[i + 1];
            r->prints[i] = r->prints[i + 1];
        }
        r->entries[i] = e;
        r->prints[i] = fp;
        (void)ring_save(dev);
        cmd->action = DR_DEVICE_DUPLICATE;
        cmd->status = entry_status(e);
        return 0;
    }

    /* New: append, dropping the old entry of a reused id, else the oldest id when the ring is full;
     * undo if it cannot be saved. */
    from = i >= 0 ? (size_t)i : 0;
    removed = i >= 0 || r->count == DR_DEVICE_RING_SIZE;
    if (removed) {
        e = r->entries[from];
        p = r->prints[from];
        for (size_t k = from; k + 1 < r->count; k++) {
            r->entries[k] = r->entries[k + 1];
            r->prints[k] = r->prints[k + 1];
        }
        r->count--;
    }
    r->entries[r->count] = entry_make(cmd->id, DR_DEVICE_DELIVERED);
    r->prints[r->count] = fp;
    r->count++;
    if (ring_save(dev) == 0)
        return 0;
    /* Undo in place (no copy of the ring: device stacks are small). */
    r->count--;
    r->entries[r->count] = 0;
    r->prints[r->count] = 0;
    if (removed) {
        for (size_t k = r->count; k > from; k--) {
            r->entries[k] = r->entries[k - 1];
            r->prints[k] = r->prints[k - 1];
        }
        r->entries[from] = e;
        r->prints[from] = p;
        r->count++;
    }
    return DR_DEVICE_ESTORE;
}

int dr_device_set_status(dr_device_t *dev, uint64_t id, dr_device_status_t status)
{
    long i;

    if (dev == NULL || id == 0 || id > DR_DEVICE_ID_MAX || !status_valid(status))
        return DR_DEVICE_EINVAL;
    i = ring_find(&dev->ring, id);
    if (i < 0)
        return DR_DEVICE_ENOTFOUND;
    dev->ring.entries[i] = entry_make(id, status);
    return ring_save(dev);
}

int dr_device_lookup(const dr_device_t *dev, uint64_t id, dr_device_status_t *status)
{
    long i;

    if (dev == NULL || id == 0 || id > DR_DEVICE_ID_MAX)
        return DR_DEVICE_EINVAL;
    i = ring_find(&dev->ring, id);
    if (i < 0)
        return DR_DEVICE_ENOTFOUND;
    if (status != NULL)
        *status = entry_status(dev->ring.entries[i]);
    return 0;
}

/* ---- Builders ------------------------------------------------------------------------------------ */

/* Appends len bytes of s to buf at *n, keeping room for the NUL. */
static int put(char *buf, size_t cap, size_t *n, const char *s, size_t len)
{
    if (cap - *n <= len)
        return DR_DEVICE_ENOSPACE;
    for (size_t i = 0; i < len; i++)
        buf[(*n)++] = s[i];
    return 0;
}

static int finish(char *buf, size_t n, int rc)
{
    if (rc != 0) {
        buf[0] = '\0';
        return rc;
    }
    buf[n] = '\0';
    return (int)n;
}

static const char *const status_names[] = {"DELIVERED", "COMPLETED", "COMPLETED_WITH_ERROR"};
static const char *const guarantee_names[] = {"NO", "RECEIPT_CONFIRMATION", "ONLY_LAST"};

int dr_device_ack(char *buf, size_t cap, uint64_t id, dr_device_status_t status)
{
    char digits[20];
    size_t nd = 0, n = 0;
    int rc;

    if (buf == NULL || id == 0 || id > DR_DEVICE_ID_MAX || !status_valid(status))
        return DR_DEVICE_EINVAL;
    if (cap == 0)
        return DR_DEVICE_ENOSPACE;
    for (uint64_t v = id; v != 0; v /= 10)
        digits[sizeof(digits) - 1 - nd++] = (char)('0' + v % 10);
    rc = put(buf, cap, &n, "{\"id\":", 6);
    if (rc == 0)
        rc = put(buf, cap, &n, digits + sizeof(digits) - nd, nd);
    if (rc == 0 && status != DR_DEVICE_DELIVERED) {
        const char *name = status_names[status];
        rc = put(buf, cap, &n, ",\"deliveryStatus\":\"", 19);
        if (rc == 0)
            rc = put(buf, cap, &n, name, cstr_len(name));
        if (rc == 0)
            rc = put(buf, cap, &n, "\"", 1);
    }
    if (rc == 0)
        rc = put(buf, cap, &n, "}", 1);
    return finish(buf, n, rc);
}

static int build_topic(char *buf, size_t cap, const char *prefix, const char *device_id)
{
    size_t n = 0, len = 0;
    int rc;

    if (buf == NULL || device_id == NULL)
        return DR_DEVICE_EINVAL;
    while (len <= DR_DEVICE_NAME_MAX && device_id[len] != '\0') {
        unsigned char c = (unsigned char)device_id[len];
        if (c == '/' || c == '+' || c == '#' || c < 0x20 || c == 0x7F)
            return DR_DEVICE_EINVAL;
        len++;
    }
    if (len == 0 || len > DR_DEVICE_NAME_MAX)
        return DR_DEVICE_EINVAL;
    if (cap == 0)
        return DR_DEVICE_ENOSPACE;
    rc = put(buf, cap, &n, prefix, cstr_len(prefix));
    if (rc == 0)
        rc = put(buf, cap, &n, device_id, len);
    return finish(buf, n, rc);
}

int dr_device_topic_request(char *buf, size_t cap, const char *device_id)
{
    return build_topic(buf, cap, "consumer/request/", device_id);
}

int dr_device_topic_response(char *buf, size_t cap, const char *device_id)
{
    return build_topic(buf, cap, "consumer/response/", device_id);
}

/* ---- Reading `data` ------------------------------------------------------------------------------ */

int dr_device_get(dr_device_span_t obj, const char *key, dr_device_span_t *value)
{
    scan_t s;
    dr_device_span_t name, v, found = {NULL, 0};
    int matched = 0;

    if (key == NULL || value == NULL || (obj.p == NULL && obj.len != 0))
        return DR_DEVICE_EINVAL;
    if (obj.p == NULL)
        return DR_DEVICE_ENOTFOUND;
    s.p = obj.p;
    s.end = obj.p + obj.len;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return DR_DEVICE_EJSON;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}')
        s.p++;
    else
        for (;;) {
            char c;
            if (scan_member_name(&s, &name) != 0 || scan_value(&s, &v) != 0)
                return DR_DEVICE_EJSON;
            if (!matched && dr_device_str_eq(name, key)) {
                found = v;
                matched = 1;
            }
            skip_ws(&s);
            if (s.p >= s.end)
                return DR_DEVICE_EJSON;
            c = *s.p++;
            if (c == '}')
                break;
            if (c != ',')
                return DR_DEVICE_EJSON;
        }
    skip_ws(&s);
    if (s.p != s.end)
        return DR_DEVICE_EJSON;
    /* The whole object was well-formed: only now is the match worth returning. */
    if (!matched)
        return DR_DEVICE_ENOTFOUND;
    *value = found;
    return 0;
}

int dr_device_get_int(dr_device_span_t obj, const char *key, int64_t *out)
{
    dr_device_span_t v;
    uint64_t mag;
    int neg, rc;

    if (out == NULL)
        return DR_DEVICE_EINVAL;
    rc = dr_device_get(obj, key, &v);
    if (rc != 0)
        return rc;
    neg = v.p[0] == '-';
    if (neg) {
        v.p++;
        v.len--;
    }
    if (number_to_uint(v, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &mag) != 0)
        return DR_DEVICE_EFIELD;
    *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 0;
}

int dr_device_get_bool(dr_device_span_t obj, const char *key, int *out)
{
    dr_device_span_t v;
    int rc;

    if (out == NULL)
        return DR_DEVICE_EINVAL;
    rc = dr_device_get(obj, key, &v);
    if (rc != 0)
        return rc;
    if (v.p[0] == 't')
        *out = 1;
    else if (v.p[0] == 'f')
        *out = 0;
    else
        return DR_DEVICE_EFIELD;
    return 0;
}

int dr_device_get_str(dr_device_span_t obj, const char *key, char *buf, size_t cap)
{
    dr_device_span_t v;
    int rc;

    if (buf == NULL || cap == 0)
        return DR_DEVICE_EINVAL;
    buf[0] = '\0';
    rc = dr_device_get(obj, key, &v);
    if (rc != 0)
        return rc;
    if (v.p[0] != '"')
        return DR_DEVICE_EFIELD;
    v.p++;
    v.len -= 2;
    return dr_device_str_copy(v, buf, cap);
}

/* ---- Names --------------------------------------------------------------------------------------- */

const char *dr_device_guarantee_name(dr_device_guarantee_t g)
{
    return (unsigned)g < 3 ? guarantee_names[g] : "?";
}

const char *dr_device_status_name(dr_device_status_t status)
{
    return status_valid(status) ? status_names[status] : "?";
}

const char *dr_device_strerror(int code)
{
    switch (code) {
    case DR_DEVICE_OK:
        return "success";
    case DR_DEVICE_EINVAL:
        return "invalid argument";
    case DR_DEVICE_ETOOBIG:
        return "payload too large";
    case DR_DEVICE_EJSON:
        return "payload is not one well-formed JSON object";
    case DR_DEVICE_EID:
        return "id missing or not an integer in 1..2^53-1";
    case DR_DEVICE_EFIELD:
        return "a member has the wrong type or value";
    case DR_DEVICE_ENOSPACE:
        return "buffer too small";
    case DR_DEVICE_ENOTFOUND:
        return "not found";
    case DR_DEVICE_ESTORE:
        return "saving or loading the de-duplication state failed";
    default:
        return "unknown error";
    }
}
