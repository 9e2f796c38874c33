/* Unit tests for the device SDK (firmware/sdk/drover_device.c): parsing of the device message with its
 * error codes, de-duplication (every guarantee, ring wrap-around, out-of-order re-sends), the
 * persistence hooks, the ack and topic builders, the `data` getters, and a bounded mutation loop.
 *
 * Every payload is parsed from a heap block of exactly its length, so a read one byte past the input
 * is an AddressSanitizer report (the tests run with DR_SANITIZE=ON). Jansson, which the services use,
 * serves as the reference parser: whatever the SDK accepts must be valid JSON with the same id and
 * command. The SDK itself depends on nothing. Wire reference: docs/protocol.md §2.2, §2.3, §9. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drover_device.h"
#include "t.h"

#if DR_DEVICE_RING_SIZE < 8
#error "these tests keep up to 8 ids at once: build them with DR_DEVICE_RING_SIZE >= 8"
#endif

/* ---- Helpers ------------------------------------------------------------------------------------ */

/* A heap copy of len bytes in a block of exactly len bytes (a 1-byte block for len 0). */
static char *dup_exact(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    if (p == NULL)
        abort();
    if (len)
        memcpy(p, s, len);
    return p;
}

/* Parses a literal (which may hold NUL or invalid UTF-8 bytes: its length comes from sizeof). */
#define PARSE_OK(lit, cmd, keep) parse_ok_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (cmd), (keep))
#define PARSE_BAD(lit, code) parse_bad_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (code))

/* Expects buf to parse. *keep receives the exact-size copy the spans point into (free it). */
static int parse_ok_at(const char *file, int line, const char *buf, size_t len, dr_device_cmd_t *cmd,
                       char **keep)
{
    char *copy = dup_exact(buf, len);
    int rc = dr_device_parse(copy, len, cmd);
    *keep = copy;
    if (!CHECK_EQ_INT_AT(file, line, rc, 0)) {
        fprintf(stderr, "    input: %.*s\n    error: %s\n", (int)len, buf, dr_device_strerror(rc));
        return 0;
    }
    return 1;
}

/* Expects buf to be rejected with code and *cmd to be left cleared. */
static void parse_bad_at(const char *file, int line, const char *buf, size_t len, int code)
{
    dr_device_cmd_t cmd;
    char *copy = dup_exact(buf, len);
    int rc = dr_device_parse(copy, len, &cmd);
    if (!CHECK_EQ_INT_AT(file, line, rc, code))
        fprintf(stderr, "    input: %.*s\n", (int)len, buf);
    CHECK_AT(file, line, cmd.id == 0 && cmd.data.p == NULL && cmd.command.len == 0);
    free(copy);
}

/* The span as a NUL-terminated string (raw bytes, for comparisons in tests). */
static const char *span_str(dr_device_span_t s)
{
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    if (s.p == NULL)
        return "(null)";
    snprintf(b, sizeof(buf[0]), "%.*s", (int)s.len, s.p);
    return b;
}

/* Feeds a literal payload to dev; returns dr_device_receive()'s result and fills *cmd. */
static int receive(dr_device_t *dev, const char *payload, dr_device_cmd_t *cmd)
{
    size_t len = strlen(payload);
    char *copy = dup_exact(payload, len);
    int rc = dr_device_receive(dev, copy, len, cmd);
    /* The spans die with the copy: keep only the scalar fields. */
    cmd->command.p = "";
    cmd->command.len = 0;
    cmd->data.p = NULL;
    cmd->data.len = 0;
    free(copy);
    return rc;
}

/* A device message as Drover writes it. */
static const char *msg(uint64_t id, const char *guarantee, uint64_t ts)
{
    static char buf[256];
    snprintf(buf, sizeof(buf),
             "{\"id\":%llu,\"believerGuarantee\":\"%s\",\"command\":\"c\",\"currentTimestamp\":%llu,\"data\":"
             "null}",
             (unsigned long long)id, guarantee, (unsigned long long)ts);
    return buf;
}

/* An in-memory stand-in for NVS: one blob, with switches to make the hooks fail. */
typedef struct {
    unsigned char blob[sizeof(dr_device_ring_t)];
    size_t len;    /* 0: nothing stored */
    int saves;     /* successful saves */
    int loads;     /* load calls */
    int fail_save; /* save returns an error */
    int fail_load; /* load returns an I/O error (not "not found") */
} store_t;

static int on_save(void *ctx, const void *image, size_t len)
{
    store_t *st = ctx;
    if (st->fail_save || len > sizeof(st->blob))
        return -1;
    memcpy(st->blob, image, len);
    st->len = len;
    st->saves++;
    return 0;
}

static int on_load(void *ctx, void *image, size_t len)
{
    store_t *st = ctx;
    st->loads++;
    if (st->fail_load)
        return -5;
    if (st->len == 0)
        return DR_DEVICE_ENOTFOUND;
    if (st->len != len)
        return -1;
    memcpy(image, st->blob, len);
    return 0;
}

/* Recomputes an image's checksum as drover_device.h documents it: FNV-1a over the image, `check` zero. */
static void seal(dr_device_ring_t *r)
{
    uint32_t h = 2166136261u;
    r->check = 0;
    for (size_t i = 0; i < sizeof(*r); i++)
        h = (h ^ ((const unsigned char *)r)[i]) * 16777619u;
    r->check = h;
}

static int init_with(dr_device_t *dev, store_t *st, unsigned flags)
{
    dr_device_opts_t o = {on_save, on_load, st, flags};
    return dr_device_init(dev, &o);
}

/* ---- Parsing valid messages --------------------------------------------------------------------- */

static void test_parse_examples(void)
{
    dr_device_cmd_t c;
    char *keep;
    int64_t v;
    int b;

    /* docs/protocol.md §2.2 */
    if (PARSE_OK("{\"id\":1,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
                 "\"currentTimestamp\":1795385793983,\"data\":{\"pinNumber\":13,\"pinValue\":true}}",
                 &c, &keep)) {
        CHECK_EQ_U64(c.id, 1);
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_RECEIPT_CONFIRMATION);
        CHECK_EQ_STR(span_str(c.command), "digitalWrite");
        CHECK(dr_device_str_eq(c.command, "digitalWrite"));
        CHECK_EQ_U64(c.current_timestamp, 1795385793983ULL);
        CHECK_EQ_STR(span_str(c.data), "{\"pinNumber\":13,\"pinValue\":true}");
        CHECK_EQ_INT(c.action, DR_DEVICE_EXECUTE);
        CHECK(dr_device_get_int(c.data, "pinNumber", &v) == 0 && v == 13);
        CHECK(dr_device_get_bool(c.data, "pinValue", &b) == 0 && b == 1);
        /* spans point into the caller's buffer */
        CHECK(c.command.p > keep && c.data.p > keep);
    }
    free(keep);

    /* duster-compat.md §1.2 (Jackson's order: id first, then alphabetical) */
    if (PARSE_OK("{\"id\":2,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
                 "\"currentTimestamp\":1772021717684,\"data\":{\"pinNumber\":13,\"pinValue\":true}}",
                 &c, &keep)) {
        CHECK_EQ_U64(c.id, 2);
        CHECK_EQ_U64(c.current_timestamp, 1772021717684ULL);
    }
    free(keep);

    /* docs/protocol.md §14.2: ONLY_LAST */
    if (PARSE_OK("{\"id\":5,\"believerGuarantee\":\"ONLY_LAST\",\"command\":\"setpoint\","
                 "\"currentTimestamp\":1795385847090,\"data\":{\"c\":22}}",
                 &c, &keep)) {
        CHECK_EQ_U64(c.id, 5);
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_ONLY_LAST);
        CHECK(dr_device_get_int(c.data, "c", &v) == 0 && v == 22);
    }
    free(keep);

    /* NO with data null and an empty command (a producer that gave neither) */
    if (PARSE_OK(
            "{\"id\":7,\"believerGuarantee\":\"NO\",\"command\":\"\",\"currentTimestamp\":1,\"data\":null}",
            &c, &keep)) {
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_NO);
        CHECK_EQ_INT((int)c.command.len, 0);
        CHECK(dr_device_str_eq(c.command, ""));
        CHECK(c.data.p == NULL && c.data.len == 0);
        CHECK_EQ_INT(dr_device_get_int(c.data, "x", &v), DR_DEVICE_ENOTFOUND);
    }
    free(keep);

    /* The 5 members in any order, with whitespace everywhere, plus unknown members of every kind. */
    if (PARSE_OK(
            " \r\n\t{ \"data\" : { \"a\" : [ 1 , { \"b\" : null } , [ ] , { } ] , \"s\" : \"x\\\"}\" } ,\n"
            "  \"extra\" : {\"messageBirthCertificate\":{\"tmpId\":42,\"producerDeviseId\":\"0\"}},\n"
            "  \"currentTimestamp\" : 0 , \"n\": -1.5e-3, \"t\": true, \"f\": false, \"z\": null,\n"
            "  \"arr\": [\"]\", \"}\", \"\\\\\"],\n"
            "  \"command\" : \"blink\" , \"believerGuarantee\" : \"RECEIPT_CONFIRMATION\" , \"id\" : 42 } \n",
            &c, &keep)) {
        CHECK_EQ_U64(c.id, 42);
        CHECK_EQ_STR(span_str(c.command), "blink");
        CHECK_EQ_U64(c.current_timestamp, 0);
        CHECK_EQ_STR(span_str(c.data),
                     "{ \"a\" : [ 1 , { \"b\" : null } , [ ] , { } ] , \"s\" : \"x\\\"}\" }");
    }
    free(keep);

    /* Only id: the rest takes the defaults. */
    if (PARSE_OK("{\"id\":3}", &c, &keep)) {
        CHECK_EQ_U64(c.id, 3);
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_RECEIPT_CONFIRMATION);
        CHECK(dr_device_str_eq(c.command, ""));
        CHECK(c.data.p == NULL);
        CHECK_EQ_U64(c.current_timestamp, 0);
    }
    free(keep);

    /* null members mean "absent"; an unknown guarantee name is handled as RECEIPT_CONFIRMATION */
    if (PARSE_OK(
            "{\"id\":3,\"believerGuarantee\":null,\"command\":null,\"currentTimestamp\":null,\"data\":null}",
            &c, &keep)) {
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_RECEIPT_CONFIRMATION);
        CHECK(dr_device_str_eq(c.command, ""));
    }
    free(keep);
    if (PARSE_OK("{\"id\":3,\"believerGuarantee\":\"EXACTLY_ONCE\"}", &c, &keep))
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_OTHER);
    free(keep);
    if (PARSE_OK("{\"id\":3,\"believerGuarantee\":\"no\"}", &c, &keep)) /* names are case-sensitive */
        CHECK_EQ_INT(c.guarantee, DR_DEVICE_G_OTHER);
    free(keep);
}

static void test_parse_ids(void)
{
    dr_device_cmd_t c;
    char *keep;

    if (PARSE_OK("{\"id\":2147483647}", &c, &keep)) /* Drover's default ids.max */
        CHECK_EQ_U64(c.id, 2147483647ULL);
    free(keep);
    if (PARSE_OK("{\"id\":2147483648}", &c, &keep)) /* where Duster's 32-bit firmware breaks */
        CHECK_EQ_U64(c.id, 2147483648ULL);
    free(keep);
    if (PARSE_OK("{\"id\":4294967296}", &c, &keep))
        CHECK_EQ_U64(c.id, 4294967296ULL);
    free(keep);
    if (PARSE_OK("{\"id\":9007199254740991}", &c, &keep)) /* 2^53 - 1 */
        CHECK_EQ_U64(c.id, DR_DEVICE_ID_MAX);
    free(keep);
    if (PARSE_OK("{\"currentTimestamp\":9007199254740991,\"id\":1}", &c, &keep))
        CHECK_EQ_U64(c.current_timestamp, 9007199254740991ULL);
    free(keep);

    PARSE_BAD("{\"id\":9007199254740992}", DR_DEVICE_EID); /* 2^53 */
    PARSE_BAD("{\"id\":18446744073709551615}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":18446744073709551616}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":99999999999999999999999999999}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":0}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":-0}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":-1}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":1.5}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":1.0}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":1e3}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":\"7\"}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":null}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":true}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":{}}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":[1]}", DR_DEVICE_EID);
    PARSE_BAD("{}", DR_DEVICE_EID);
    PARSE_BAD("{\"ID\":1}", DR_DEVICE_EID);
    PARSE_BAD("{\"command\":\"x\",\"data\":{\"id\":1}}", DR_DEVICE_EID); /* a nested id does not count */
}

static void test_parse_strings(void)
{
    dr_device_cmd_t c;
    char *keep;
    char buf[64];

    /* Escapes in the command: str_eq and str_copy unescape, the span stays raw. */
    if (PARSE_OK("{\"id\":1,\"command\":\"say \\\"hi\\\"\\n\\t\\/\\\\ \\u00e9\\u20ac\\ud83d\\ude00\"}", &c,
                 &keep)) {
        CHECK_EQ_STR(span_str(c.command), "say \\\"hi\\\"\\n\\t\\/\\\\ \\u00e9\\u20ac\\ud83d\\ude00");
        CHECK(dr_device_str_eq(c.command, "say \"hi\"\n\t/\\ \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
        CHECK(!dr_device_str_eq(c.command, "say \"hi\"\n\t/\\ \xc3\xa9\xe2\x82\xac\xf0\x9f\x98"));
        CHECK(!dr_device_str_eq(c.command, "say"));
        CHECK_EQ_INT(dr_device_str_copy(c.command, buf, sizeof(buf)), 22);
        CHECK_EQ_STR(buf, "say \"hi\"\n\t/\\ \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        CHECK_EQ_INT(dr_device_str_copy(c.command, buf, 22), DR_DEVICE_ENOSPACE);
        CHECK_EQ_STR(buf, "");
        CHECK_EQ_INT(dr_device_str_copy(c.command, buf, 23), 22);
    }
    free(keep);

    /* Raw UTF-8 is passed through; keys may be escaped. */
    if (PARSE_OK("{\"\\u0069d\":9,\"comm\\u0061nd\":\"\xc3\xa9t\xc3\xa9\"}", &c, &keep)) {
        CHECK_EQ_U64(c.id, 9);
        CHECK(dr_device_str_eq(c.command, "\xc3\xa9t\xc3\xa9"));
    }
    free(keep);
    /* Escaped spelling of a known key is the same key: a duplicate. */
    PARSE_BAD("{\"id\":1,\"\\u0069d\":2}", DR_DEVICE_EJSON);

    PARSE_BAD("{\"id\":1,\"command\":\"\\x\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\\u12\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\\u12g4\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\\u0000\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\\ud83d\"}", DR_DEVICE_EJSON); /* lone high surrogate */
    PARSE_BAD("{\"id\":1,\"command\":\"\\ud83dx\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\\ud83d\\u0041\"}", DR_DEVICE_EJSON); /* high + non-low */
    PARSE_BAD("{\"id\":1,\"command\":\"\\ude00\"}", DR_DEVICE_EJSON);        /* lone low surrogate */
    PARSE_BAD("{\"id\":1,\"command\":\"a\tb\"}", DR_DEVICE_EJSON);           /* raw control character */
    PARSE_BAD("{\"id\":1,\"command\":\"a\nb\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"a\0b\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"\xff\"}", DR_DEVICE_EJSON);             /* invalid UTF-8 */
    PARSE_BAD("{\"id\":1,\"command\":\"\xc0\x80\"}", DR_DEVICE_EJSON);         /* overlong NUL */
    PARSE_BAD("{\"id\":1,\"command\":\"\xe0\x80\xaf\"}", DR_DEVICE_EJSON);     /* overlong '/' */
    PARSE_BAD("{\"id\":1,\"command\":\"\xed\xa0\x80\"}", DR_DEVICE_EJSON);     /* encoded surrogate */
    PARSE_BAD("{\"id\":1,\"command\":\"\xf4\x90\x80\x80\"}", DR_DEVICE_EJSON); /* above U+10FFFF */
    PARSE_BAD("{\"id\":1,\"command\":\"\xc3\"}", DR_DEVICE_EJSON);             /* cut sequence */
    PARSE_BAD("{\"id\":1,\"command\":\"\xe2\x82\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":\"\xff\"}", DR_DEVICE_EJSON); /* unknown members too */
    PARSE_BAD("{\"id\":1,\"data\":{\"\xff\":1}}", DR_DEVICE_EJSON);

    /* Wrong types of known members. */
    PARSE_BAD("{\"id\":1,\"command\":5}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"command\":{}}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"believerGuarantee\":1}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"believerGuarantee\":[\"NO\"]}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"data\":[]}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"data\":\"{}\"}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"data\":1}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"data\":true}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"currentTimestamp\":\"1\"}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"currentTimestamp\":-1}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"currentTimestamp\":1.5}", DR_DEVICE_EFIELD);
    PARSE_BAD("{\"id\":1,\"currentTimestamp\":9007199254740992}", DR_DEVICE_EFIELD);

    /* Precedence: syntax over id over other fields, wherever they appear. */
    PARSE_BAD("{\"command\":5,\"id\":0}", DR_DEVICE_EID);
    PARSE_BAD("{\"id\":0,\"command\":5,}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"command\":5,\"id\":1,\"x\":tru}", DR_DEVICE_EJSON);
}

static void test_parse_malformed(void)
{
    PARSE_BAD("", DR_DEVICE_EJSON);
    PARSE_BAD(" \n", DR_DEVICE_EJSON);
    PARSE_BAD("null", DR_DEVICE_EJSON);
    PARSE_BAD("1", DR_DEVICE_EJSON);
    PARSE_BAD("\"id\"", DR_DEVICE_EJSON);
    PARSE_BAD("[{\"id\":1}]", DR_DEVICE_EJSON);
    PARSE_BAD("{", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\"", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,}", DR_DEVICE_EJSON);
    PARSE_BAD("{,\"id\":1}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\" 1}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1 \"command\":\"x\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{id:1}", DR_DEVICE_EJSON);
    PARSE_BAD("{'id':1}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1}x", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1}{}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1}\0", DR_DEVICE_EJSON);
    PARSE_BAD("\xef\xbb\xbf{\"id\":1}", DR_DEVICE_EJSON); /* byte order mark */
    PARSE_BAD("{\"id\":01}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":+1}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":.5}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":1.}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":1e}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":1e+}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":-}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":0x10}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":NaN}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":Infinity}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":tru}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":nul}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":True}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":[1,]}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":[,1]}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":[1}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":{\"a\":1]}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":{\"a\"}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"x\":{1:1}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"data\":{\"a\":1,}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"data\":{\"a\":1 \"b\":2}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"x}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"command\":\"x\\\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"id\":1}", DR_DEVICE_EJSON); /* duplicates of known members */
    PARSE_BAD("{\"id\":1,\"command\":\"a\",\"command\":\"b\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"data\":null,\"data\":{}}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"believerGuarantee\":\"NO\",\"believerGuarantee\":\"NO\"}", DR_DEVICE_EJSON);
    PARSE_BAD("{\"id\":1,\"currentTimestamp\":1,\"currentTimestamp\":1}", DR_DEVICE_EJSON);

    /* Nesting limits: see test_depth_limit. */
    {
        /* a 100-level array inside an unknown member is rejected as too deep, not by recursion */
        char big[400];
        int m = snprintf(big, sizeof(big), "{\"id\":1,\"x\":");
        for (int i = 0; i < 100; i++)
            big[m++] = '[';
        for (int i = 0; i < 100; i++)
            big[m++] = ']';
        big[m++] = '}';
        parse_bad_at(__FILE__, __LINE__, big, (size_t)m, DR_DEVICE_EJSON);
    }
}

/* The exact nesting limit, built level by level: objects and arrays alternating. */
static void test_depth_limit(void)
{
    for (int depth = 1; depth <= DR_DEVICE_MAX_DEPTH + 1; depth++) {
        char buf[512];
        int n = snprintf(buf, sizeof(buf), "{\"id\":1,\"data\":");
        dr_device_cmd_t c;
        char *copy;
        int rc;
        /* depth containers: object, array, object, ... the outermost is the data object */
        for (int i = 0; i < depth; i++)
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, i % 2 == 0 ? "{\"k\":" : "[");
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "0");
        for (int i = depth - 1; i >= 0; i--)
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, i % 2 == 0 ? "}" : "]");
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
        copy = dup_exact(buf, (size_t)n);
        rc = dr_device_parse(copy, (size_t)n, &c);
        if (!CHECK_EQ_INT(rc, depth <= DR_DEVICE_MAX_DEPTH ? 0 : DR_DEVICE_EJSON))
            fprintf(stderr, "    depth %d: %s\n", depth, buf);
        free(copy);
    }
}

/* Every cut of valid messages is rejected (and read only within its length). */
static void test_truncated(void)
{
    static const char *const valid[] = {
        "{\"id\":1,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
        "\"currentTimestamp\":1795385793983,\"data\":{\"pinNumber\":13,\"pinValue\":true}}",
        "{\"id\":9007199254740991,\"command\":\"\\ud83d\\ude00\\\"\xc3\xa9\",\"data\":{\"a\":[1.5e-3,-0,null,"
        "{\"b\":\"\\u20ac\"}]}}",
        "  {\"data\":{},\"id\":12}  ",
    };
    for (size_t v = 0; v < sizeof(valid) / sizeof(valid[0]); v++) {
        size_t len = strlen(valid[v]);
        size_t ws = 0;
        while (ws < len && valid[v][len - 1 - ws] == ' ')
            ws++;
        for (size_t cut = 0; cut < len; cut++) {
            dr_device_cmd_t c;
            char *copy = dup_exact(valid[v], cut);
            int rc = dr_device_parse(copy, cut, &c);
            /* trailing whitespace may be cut without changing the message */
            if (cut >= len - ws)
                CHECK_EQ_INT(rc, 0);
            else if (!CHECK(rc == DR_DEVICE_EJSON || rc == DR_DEVICE_EID))
                fprintf(stderr, "    cut %zu of %s: %d\n", cut, valid[v], rc);
            free(copy);
        }
        {
            dr_device_cmd_t c;
            char *copy = dup_exact(valid[v], len);
            CHECK_EQ_INT(dr_device_parse(copy, len, &c), 0);
            free(copy);
        }
    }
}

static void test_oversized_and_args(void)
{
    size_t max = DR_DEVICE_MAX_PAYLOAD;
    char *big = malloc(max + 1);
    dr_device_cmd_t c;
    dr_device_t dev;
    int n;

    /* exactly the limit: a valid message padded with a long string */
    n = snprintf(big, max + 1, "{\"id\":1,\"command\":\"");
    memset(big + n, 'a', max - (size_t)n - 2);
    big[max - 2] = '"';
    big[max - 1] = '}';
    CHECK_EQ_INT(dr_device_parse(big, max, &c), 0);
    CHECK_EQ_INT((int)c.command.len, (int)max - n - 2);
    /* one byte more (trailing whitespace) is too large, whatever it contains */
    big[max] = ' ';
    CHECK_EQ_INT(dr_device_parse(big, max + 1, &c), DR_DEVICE_ETOOBIG);
    CHECK(c.id == 0);
    CHECK_EQ_INT(dr_device_parse(big, (size_t)-1, &c), DR_DEVICE_ETOOBIG);
    free(big);

    CHECK_EQ_INT(dr_device_parse(NULL, 0, &c), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_parse("{\"id\":1}", 8, NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_receive(NULL, "{\"id\":1}", 8, &c), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_init(NULL, NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_init(&dev, NULL), 0);
    CHECK_EQ_INT(dr_device_receive(&dev, NULL, 0, &c), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_receive(&dev, "{\"id\":1}", 8, NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_reset(NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT((int)dr_device_count(NULL), 0);
    CHECK_EQ_INT(dr_device_set_status(NULL, 1, DR_DEVICE_COMPLETED), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_set_status(&dev, 0, DR_DEVICE_COMPLETED), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_set_status(&dev, 1, (dr_device_status_t)3), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_lookup(NULL, 1, NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_lookup(&dev, DR_DEVICE_ID_MAX + 1, NULL), DR_DEVICE_EINVAL);
    /* a malformed message leaves the state alone */
    CHECK_EQ_INT(dr_device_receive(&dev, "{\"id\":1,}", 9, &c), DR_DEVICE_EJSON);
    CHECK_EQ_INT((int)dr_device_count(&dev), 0);
}

/* ---- De-duplication ----------------------------------------------------------------------------- */

static void test_dedup_basic(void)
{
    dr_device_t dev;
    dr_device_cmd_t c;
    dr_device_status_t st;

    CHECK_EQ_INT(dr_device_init(&dev, NULL), 0);
    CHECK_EQ_INT((int)dr_device_count(&dev), 0);

    /* first arrival: execute; the id is remembered before the caller executes */
    CHECK_EQ_INT(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 1000), &c), 0);
    CHECK_EQ_INT(c.action, DR_DEVICE_EXECUTE);
    CHECK_EQ_U64(c.id, 1);
    CHECK_EQ_INT((int)dr_device_count(&dev), 1);
    CHECK(dr_device_lookup(&dev, 1, &st) == 0 && st == DR_DEVICE_DELIVERED);
    CHECK_EQ_INT(dr_device_lookup(&dev, 2, NULL), DR_DEVICE_ENOTFOUND);

    /* a re-send (same id, fresh currentTimestamp): duplicate, re-acknowledge with DELIVERED */
    CHECK_EQ_INT(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 16000), &c), 0);
    CHECK_EQ_INT(c.action, DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT(c.status, DR_DEVICE_DELIVERED);
    CHECK_EQ_U64(c.current_timestamp, 16000);
    CHECK_EQ_INT((int)dr_device_count(&dev), 1);

    /* after the outcome is recorded, a re-send is answered with it */
    CHECK_EQ_INT(dr_device_set_status(&dev, 1, DR_DEVICE_COMPLETED), 0);
    CHECK_EQ_INT(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 46000), &c), 0);
    CHECK_EQ_INT(c.action, DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT(c.status, DR_DEVICE_COMPLETED);
    CHECK_EQ_INT(dr_device_set_status(&dev, 1, DR_DEVICE_COMPLETED_WITH_ERROR), 0);
    CHECK(dr_device_lookup(&dev, 1, &st) == 0 && st == DR_DEVICE_COMPLETED_WITH_ERROR);
    CHECK_EQ_INT(dr_device_set_status(&dev, 99, DR_DEVICE_COMPLETED), DR_DEVICE_ENOTFOUND);

    /* large ids keep their status apart from the id bits */
    CHECK_EQ_INT(receive(&dev, msg(DR_DEVICE_ID_MAX, "ONLY_LAST", 1), &c), 0);
    CHECK_EQ_INT(c.action, DR_DEVICE_EXECUTE);
    CHECK_EQ_INT(dr_device_set_status(&dev, DR_DEVICE_ID_MAX, DR_DEVICE_COMPLETED_WITH_ERROR), 0);
    CHECK(dr_device_lookup(&dev, DR_DEVICE_ID_MAX, &st) == 0 && st == DR_DEVICE_COMPLETED_WITH_ERROR);
    CHECK_EQ_INT(dr_device_lookup(&dev, DR_DEVICE_ID_MAX - 1, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(receive(&dev, msg(DR_DEVICE_ID_MAX, "ONLY_LAST", 2), &c), 0);
    CHECK(c.action == DR_DEVICE_DUPLICATE && c.id == DR_DEVICE_ID_MAX &&
          c.status == DR_DEVICE_COMPLETED_WITH_ERROR);

    /* reset forgets everything (a server whose ids start again) */
    CHECK_EQ_INT(dr_device_reset(&dev), 0);
    CHECK_EQ_INT((int)dr_device_count(&dev), 0);
    CHECK_EQ_INT(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 1), &c), 0);
    CHECK_EQ_INT(c.action, DR_DEVICE_EXECUTE);
}

static void test_dedup_guarantees(void)
{
    dr_device_t dev;
    dr_device_cmd_t c;
    store_t st = {0};

    dr_device_init(&dev, NULL);
    /* RECEIPT_CONFIRMATION, ONLY_LAST and unknown names are de-duplicated */
    CHECK(receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 2), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK(receive(&dev, msg(11, "ONLY_LAST", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg(11, "ONLY_LAST", 2), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK(receive(&dev, msg(12, "FUTURE", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg(12, "FUTURE", 2), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK(receive(&dev, "{\"id\":13}", &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, "{\"id\":13}", &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT((int)dr_device_count(&dev), 4);

    /* NO is never re-sent: executed every time, no ring slot taken */
    CHECK(receive(&dev, msg(20, "NO", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE &&
          c.guarantee == DR_DEVICE_G_NO);
    CHECK(receive(&dev, msg(20, "NO", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK_EQ_INT((int)dr_device_count(&dev), 4);
    CHECK_EQ_INT(dr_device_lookup(&dev, 20, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_set_status(&dev, 20, DR_DEVICE_COMPLETED), DR_DEVICE_ENOTFOUND);
    /* but an id remembered from another guarantee still counts */
    CHECK(receive(&dev, msg(10, "NO", 3), &c) == 0 && c.action == DR_DEVICE_EXECUTE);

    /* with DR_DEVICE_F_DEDUP_NO, NO ids are remembered too (and saved) */
    CHECK_EQ_INT(init_with(&dev, &st, DR_DEVICE_F_DEDUP_NO), 0);
    CHECK(receive(&dev, msg(20, "NO", 1), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg(20, "NO", 1), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT((int)dr_device_count(&dev), 1);
    CHECK_EQ_INT(st.saves, 2);
}

static void test_ring_wrap(void)
{
    const uint64_t n = DR_DEVICE_RING_SIZE;
    dr_device_t dev;
    dr_device_cmd_t c;
    int ok = 1;

    dr_device_init(&dev, NULL);
    for (uint64_t id = 1; id <= n + 5; id++) {
        ok &= receive(&dev, msg(id, "RECEIPT_CONFIRMATION", id), &c) == 0 && c.action == DR_DEVICE_EXECUTE;
        ok &= dr_device_count(&dev) == (id < n ? id : n);
    }
    CHECK(ok);
    /* the 5 oldest fell out; the last n are remembered */
    for (uint64_t id = 1; id <= 5; id++)
        CHECK_EQ_INT(dr_device_lookup(&dev, id, NULL), DR_DEVICE_ENOTFOUND);
    ok = 1;
    for (uint64_t id = 6; id <= n + 5; id++)
        ok &= dr_device_lookup(&dev, id, NULL) == 0;
    CHECK(ok);
    /* a re-send of a remembered id is a duplicate and drops nothing */
    CHECK(receive(&dev, msg(6, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT(dr_device_lookup(&dev, 7, NULL), 0);
    /* the documented limit: an id older than the ring is executed again */
    CHECK(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    /* ... and pushed out the oldest, which is now 7 (6 was refreshed) */
    CHECK_EQ_INT(dr_device_lookup(&dev, 6, NULL), 0);
    CHECK_EQ_INT(dr_device_lookup(&dev, 7, NULL), DR_DEVICE_ENOTFOUND);

    /* many laps around the ring */
    ok = 1;
    for (uint64_t id = 1000; id < 1000 + 10 * n + 3; id++) {
        ok &= receive(&dev, msg(id, "ONLY_LAST", 0), &c) == 0 && c.action == DR_DEVICE_EXECUTE;
        ok &= receive(&dev, msg(id, "ONLY_LAST", 1), &c) == 0 && c.action == DR_DEVICE_DUPLICATE;
        if (id >= 1000 + n)
            ok &= dr_device_lookup(&dev, id - n, NULL) == DR_DEVICE_ENOTFOUND &&
                  dr_device_lookup(&dev, id - n + 1, NULL) == 0;
    }
    CHECK(ok);
    CHECK_EQ_INT((int)dr_device_count(&dev), (int)n);
}

/* A message with the given id, command and data text (a JSON value). */
static const char *msg_with(uint64_t id, const char *command, const char *data)
{
    static char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"id\":%llu,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"%s\","
             "\"currentTimestamp\":1,\"data\":%s}",
             (unsigned long long)id, command, data);
    return buf;
}

/* An id reused by a new message (the server's counter wrapped, or its database was restored from an
 * older backup) is executed: re-sends repeat command and data byte for byte, a new message does not. */
static void test_id_reuse(void)
{
    dr_device_t dev;
    dr_device_cmd_t c;
    dr_device_status_t s;

    dr_device_init(&dev, NULL);
    CHECK(receive(&dev, msg_with(7, "setpoint", "{\"c\":21}"), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK_EQ_INT(dr_device_set_status(&dev, 7, DR_DEVICE_COMPLETED), 0);
    receive(&dev, msg_with(8, "other", "null"), &c);
    /* the re-send: same bytes (a new currentTimestamp does not matter) */
    CHECK(receive(&dev, msg_with(7, "setpoint", "{\"c\":21}"), &c) == 0 && c.action == DR_DEVICE_DUPLICATE &&
          c.status == DR_DEVICE_COMPLETED);
    /* the same id with other data, another command, data moved between the two, no data */
    CHECK(receive(&dev, msg_with(7, "setpoint", "{\"c\":22}"), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(dr_device_lookup(&dev, 7, &s) == 0 && s == DR_DEVICE_DELIVERED); /* the new message's status */
    CHECK(receive(&dev, msg_with(7, "setpoint", "{\"c\":22}"), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK(receive(&dev, msg_with(7, "reboot", "{\"c\":22}"), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg_with(7, "reboot", "null"), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK(receive(&dev, msg_with(7, "rebo", "{\"t\":\"ot\"}"), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    /* one entry per id: the reuse replaced the old one rather than taking another slot */
    CHECK_EQ_INT((int)dr_device_count(&dev), 2);
    /* the new entry is the newest: it outlives 8 when the ring fills */
    for (uint64_t id = 100; id < 100 + DR_DEVICE_RING_SIZE - 2; id++)
        receive(&dev, msg_with(id, "x", "null"), &c);
    receive(&dev, msg_with(9999, "x", "null"), &c);
    CHECK_EQ_INT(dr_device_lookup(&dev, 8, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_lookup(&dev, 7, NULL), 0);

    /* a reuse that cannot be saved leaves the old entry as it was, in its place */
    {
        store_t st = {0};
        init_with(&dev, &st, 0);
        receive(&dev, msg_with(1, "a", "null"), &c);
        receive(&dev, msg_with(2, "a", "null"), &c);
        receive(&dev, msg_with(3, "a", "null"), &c);
        dr_device_set_status(&dev, 2, DR_DEVICE_COMPLETED);
        st.fail_save = 1;
        CHECK_EQ_INT(receive(&dev, msg_with(2, "b", "null"), &c), DR_DEVICE_ESTORE);
        st.fail_save = 0;
        CHECK_EQ_INT((int)dr_device_count(&dev), 3);
        CHECK(receive(&dev, msg_with(2, "a", "null"), &c) == 0 && c.action == DR_DEVICE_DUPLICATE &&
              c.status == DR_DEVICE_COMPLETED);
        /* 1 is still the oldest: it is the one a full ring drops */
        for (uint64_t id = 10; id < 10 + DR_DEVICE_RING_SIZE - 3; id++)
            receive(&dev, msg_with(id, "a", "null"), &c);
        receive(&dev, msg_with(500, "a", "null"), &c);
        CHECK_EQ_INT(dr_device_lookup(&dev, 1, NULL), DR_DEVICE_ENOTFOUND);
        CHECK_EQ_INT(dr_device_lookup(&dev, 3, NULL), 0);
    }
}

static void test_out_of_order(void)
{
    const uint64_t n = DR_DEVICE_RING_SIZE;
    static const uint64_t ids[] = {100, 50, 75, 1, 2147483647, 3, 9007199254740991ULL, 2};
    const size_t nids = sizeof(ids) / sizeof(ids[0]);
    dr_device_t dev;
    dr_device_cmd_t c;

    dr_device_init(&dev, NULL);
    /* ids arrive in any order (window > 1, id counter wrap-around): membership decides, not order */
    for (size_t i = 0; i < nids; i++)
        CHECK(receive(&dev, msg(ids[i], "RECEIPT_CONFIRMATION", 0), &c) == 0 &&
              c.action == DR_DEVICE_EXECUTE);
    for (size_t i = nids; i-- > 0;)
        CHECK(receive(&dev, msg(ids[i], "RECEIPT_CONFIRMATION", 1), &c) == 0 &&
              c.action == DR_DEVICE_DUPLICATE);
    /* smaller ids after larger ones are new messages, not re-sends */
    CHECK(receive(&dev, msg(49, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_EXECUTE);

    /* A re-send arriving after newer ids moves to the newest end: it outlives the ids executed after it. */
    dr_device_reset(&dev);
    receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 0), &c);
    receive(&dev, msg(11, "RECEIPT_CONFIRMATION", 0), &c);
    receive(&dev, msg(12, "RECEIPT_CONFIRMATION", 0), &c);
    CHECK(receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 15000), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    for (uint64_t id = 13; id < 13 + n - 3; id++) /* fills the ring: 11 12 10 13 ... */
        receive(&dev, msg(id, "RECEIPT_CONFIRMATION", 0), &c);
    CHECK_EQ_INT((int)dr_device_count(&dev), (int)n);
    receive(&dev, msg(5000, "RECEIPT_CONFIRMATION", 0), &c); /* drops 11 */
    CHECK_EQ_INT(dr_device_lookup(&dev, 11, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_lookup(&dev, 12, NULL), n > 1 ? 0 : DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_lookup(&dev, 10, NULL), 0);
    CHECK(receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 45000), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    /* ... and keeps its recorded status while moving */
    CHECK_EQ_INT(dr_device_set_status(&dev, 10, DR_DEVICE_COMPLETED), 0);
    receive(&dev, msg(12, "RECEIPT_CONFIRMATION", 0), &c);
    CHECK(receive(&dev, msg(10, "RECEIPT_CONFIRMATION", 1), &c) == 0 && c.status == DR_DEVICE_COMPLETED);
}

/* ---- Persistence -------------------------------------------------------------------------------- */

static void test_persistence(void)
{
    store_t st = {0};
    dr_device_t dev, rebooted;
    dr_device_cmd_t c;
    dr_device_status_t s;
    dr_device_ring_t *img = (dr_device_ring_t *)st.blob;

    /* first boot: nothing stored is not an error */
    CHECK_EQ_INT(init_with(&dev, &st, 0), 0);
    CHECK_EQ_INT(st.loads, 1);
    CHECK_EQ_INT(st.saves, 0);

    /* every change is saved before receive/set_status return */
    CHECK(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_EXECUTE);
    CHECK_EQ_INT(st.saves, 1);
    CHECK_EQ_INT((int)st.len, (int)sizeof(dr_device_ring_t));
    receive(&dev, msg(2, "RECEIPT_CONFIRMATION", 0), &c);
    receive(&dev, msg(3, "ONLY_LAST", 0), &c);
    CHECK_EQ_INT(dr_device_set_status(&dev, 2, DR_DEVICE_COMPLETED), 0);
    CHECK_EQ_INT(st.saves, 4);
    receive(&dev, msg(4, "NO", 0), &c); /* takes no slot, saves nothing */
    CHECK_EQ_INT(st.saves, 4);
    CHECK_EQ_INT((int)img->count, 3);
    CHECK_EQ_INT((int)img->magic, (int)DR_DEVICE_RING_MAGIC);
    CHECK_EQ_INT((int)img->size, DR_DEVICE_RING_SIZE);

    /* reboot: the same store gives back ids and statuses, so nothing runs twice */
    CHECK_EQ_INT(init_with(&rebooted, &st, 0), 0);
    CHECK_EQ_INT((int)dr_device_count(&rebooted), 3);
    CHECK(dr_device_lookup(&rebooted, 2, &s) == 0 && s == DR_DEVICE_COMPLETED);
    CHECK(dr_device_lookup(&rebooted, 3, &s) == 0 && s == DR_DEVICE_DELIVERED);
    CHECK(receive(&rebooted, msg(2, "RECEIPT_CONFIRMATION", 99), &c) == 0 &&
          c.action == DR_DEVICE_DUPLICATE && c.status == DR_DEVICE_COMPLETED);
    CHECK(receive(&rebooted, msg(1, "RECEIPT_CONFIRMATION", 99), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK(receive(&rebooted, msg(5, "RECEIPT_CONFIRMATION", 99), &c) == 0 && c.action == DR_DEVICE_EXECUTE);

    /* a full ring survives a reboot in order */
    for (uint64_t id = 100; id < 100 + DR_DEVICE_RING_SIZE; id++)
        receive(&rebooted, msg(id, "RECEIPT_CONFIRMATION", 0), &c);
    CHECK_EQ_INT(init_with(&dev, &st, 0), 0);
    CHECK_EQ_INT((int)dr_device_count(&dev), DR_DEVICE_RING_SIZE);
    CHECK_EQ_INT(dr_device_lookup(&dev, 100, NULL), 0);
    receive(&dev, msg(7777, "RECEIPT_CONFIRMATION", 0), &c); /* drops 100, the oldest */
    CHECK_EQ_INT(dr_device_lookup(&dev, 100, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_lookup(&dev, 101, NULL), DR_DEVICE_RING_SIZE > 1 ? 0 : DR_DEVICE_ENOTFOUND);

    /* reset is saved too */
    CHECK_EQ_INT(dr_device_reset(&dev), 0);
    CHECK_EQ_INT(init_with(&rebooted, &st, 0), 0);
    CHECK_EQ_INT((int)dr_device_count(&rebooted), 0);
}

static void test_persistence_failures(void)
{
    store_t st = {0};
    dr_device_t dev;
    dr_device_cmd_t c;
    dr_device_status_t s;
    dr_device_ring_t *img = (dr_device_ring_t *)st.blob;
    unsigned char good[sizeof(dr_device_ring_t)];

    init_with(&dev, &st, 0);
    receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 0), &c);
    receive(&dev, msg(2, "RECEIPT_CONFIRMATION", 0), &c);
    memcpy(good, st.blob, sizeof(good));

    /* A damaged image is refused: init reports it and starts empty but usable. */
    for (size_t byte = 0; byte < sizeof(good); byte += 1 + byte / 8) {
        memcpy(st.blob, good, sizeof(good));
        st.blob[byte] ^= 0x10;
        if (!CHECK_EQ_INT(init_with(&dev, &st, 0), DR_DEVICE_ESTORE))
            fprintf(stderr, "    flipped byte %zu\n", byte);
        CHECK_EQ_INT((int)dr_device_count(&dev), 0);
    }
    /* the checksum is the documented one: re-sealing a good image changes nothing */
    memcpy(st.blob, good, sizeof(good));
    seal(img);
    CHECK_EQ_INT(memcmp(st.blob, good, sizeof(good)), 0);
    CHECK_EQ_INT(init_with(&dev, &st, 0), 0);
    CHECK_EQ_INT((int)dr_device_count(&dev), 2);

    /* a consistent image with impossible content: wrong ring size, count, id 0, bad status, stray entry */
    {
        const int cases = 7;
        for (int k = 0; k < cases; k++) {
            memcpy(st.blob, good, sizeof(good));
            if (k == 0)
                img->size = DR_DEVICE_RING_SIZE + 1;
            else if (k == 1)
                img->count = DR_DEVICE_RING_SIZE + 1;
            else if (k == 2)
                img->entries[0] = (uint64_t)1 << 56; /* id 0 with a status */
            else if (k == 3)
                img->entries[0] = 1 | (uint64_t)3 << 56; /* status 3 */
            else if (k == 4 && DR_DEVICE_RING_SIZE > 2)
                img->entries[DR_DEVICE_RING_SIZE - 1] = 9; /* an entry beyond count */
            else if (k == 4)
                img->reserved = 1;
            else if (k == 5)
                img->prints[0] = 0; /* an entry without fingerprint */
            else if (DR_DEVICE_RING_SIZE > 2)
                img->prints[DR_DEVICE_RING_SIZE - 1] = 9; /* a fingerprint beyond count */
            else
                img->reserved = 2;
            seal(img); /* a consistent checksum, as a buggy writer would leave it */
            if (!CHECK_EQ_INT(init_with(&dev, &st, 0), DR_DEVICE_ESTORE))
                fprintf(stderr, "    case %d\n", k);
            CHECK_EQ_INT((int)dr_device_count(&dev), 0);
        }
    }
    /* the load hook failing, or a blob of another length */
    memcpy(st.blob, good, sizeof(good));
    st.fail_load = 1;
    CHECK_EQ_INT(init_with(&dev, &st, 0), DR_DEVICE_ESTORE);
    st.fail_load = 0;
    st.len = sizeof(good) - 8;
    CHECK_EQ_INT(init_with(&dev, &st, 0), DR_DEVICE_ESTORE);
    st.len = sizeof(good);
    CHECK_EQ_INT(init_with(&dev, &st, 0), 0);
    CHECK_EQ_INT((int)dr_device_count(&dev), 2);

    /* A failed save records nothing: do not execute, the re-send tries again. */
    st.fail_save = 1;
    CHECK_EQ_INT(receive(&dev, msg(3, "RECEIPT_CONFIRMATION", 0), &c), DR_DEVICE_ESTORE);
    CHECK_EQ_U64(c.id, 3); /* the message was parsed */
    CHECK_EQ_INT(dr_device_lookup(&dev, 3, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT((int)dr_device_count(&dev), 2);
    /* set_status keeps the new status in RAM and reports the failure */
    CHECK_EQ_INT(dr_device_set_status(&dev, 2, DR_DEVICE_COMPLETED), DR_DEVICE_ESTORE);
    CHECK(dr_device_lookup(&dev, 2, &s) == 0 && s == DR_DEVICE_COMPLETED);
    /* a duplicate is still recognised (its save failing changes nothing that matters) */
    CHECK(receive(&dev, msg(1, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_DUPLICATE);
    CHECK_EQ_INT(dr_device_reset(&dev), DR_DEVICE_ESTORE);
    CHECK_EQ_INT((int)dr_device_count(&dev), 0);
    st.fail_save = 0;
    CHECK(receive(&dev, msg(3, "RECEIPT_CONFIRMATION", 0), &c) == 0 && c.action == DR_DEVICE_EXECUTE);

    /* with a full ring, a failed save puts the dropped id back */
    dr_device_reset(&dev);
    for (uint64_t id = 1; id <= DR_DEVICE_RING_SIZE; id++)
        receive(&dev, msg(id, "RECEIPT_CONFIRMATION", 0), &c);
    st.fail_save = 1;
    CHECK_EQ_INT(receive(&dev, msg(500, "RECEIPT_CONFIRMATION", 0), &c), DR_DEVICE_ESTORE);
    CHECK_EQ_INT(dr_device_lookup(&dev, 1, NULL), 0);
    CHECK_EQ_INT(dr_device_lookup(&dev, DR_DEVICE_RING_SIZE, NULL), 0);
    CHECK_EQ_INT(dr_device_lookup(&dev, 500, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT((int)dr_device_count(&dev), DR_DEVICE_RING_SIZE);
    st.fail_save = 0;
    /* order was restored too: the next new id drops 1, the oldest */
    receive(&dev, msg(501, "RECEIPT_CONFIRMATION", 0), &c);
    CHECK_EQ_INT(dr_device_lookup(&dev, 1, NULL), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_lookup(&dev, 501, NULL), 0);
}

/* ---- Builders ----------------------------------------------------------------------------------- */

/* Builds with every capacity from 0 to the needed size + 1; only the last two may succeed. */
static void check_builder_caps(const char *what, int (*build)(char *, size_t, const void *), const void *arg,
                               const char *expect)
{
    size_t need = strlen(expect) + 1;
    for (size_t cap = 0; cap <= need + 1; cap++) {
        char *buf = malloc(cap ? cap : 1);
        int rc = build(buf, cap, arg);
        if (cap >= need) {
            if (!CHECK_EQ_INT(rc, (int)need - 1) || !CHECK_EQ_STR(buf, expect))
                fprintf(stderr, "    %s cap %zu\n", what, cap);
        } else {
            if (!CHECK_EQ_INT(rc, DR_DEVICE_ENOSPACE))
                fprintf(stderr, "    %s cap %zu\n", what, cap);
            if (cap > 0)
                CHECK(buf[0] == '\0');
        }
        free(buf);
    }
}

typedef struct {
    uint64_t id;
    dr_device_status_t st;
} ack_arg_t;

static int build_ack(char *buf, size_t cap, const void *arg)
{
    const ack_arg_t *a = arg;
    return dr_device_ack(buf, cap, a->id, a->st);
}

static int build_req(char *buf, size_t cap, const void *arg)
{
    return dr_device_topic_request(buf, cap, arg);
}

static int build_resp(char *buf, size_t cap, const void *arg)
{
    return dr_device_topic_response(buf, cap, arg);
}

static void test_ack_builder(void)
{
    char buf[DR_DEVICE_ACK_MAX];
    ack_arg_t a1 = {1, DR_DEVICE_DELIVERED}, a2 = {1, DR_DEVICE_COMPLETED},
              a3 = {42, DR_DEVICE_COMPLETED_WITH_ERROR};
    ack_arg_t big = {DR_DEVICE_ID_MAX, DR_DEVICE_COMPLETED_WITH_ERROR};

    /* docs/protocol.md §2.3 */
    check_builder_caps("ack", build_ack, &a1, "{\"id\":1}");
    check_builder_caps("ack", build_ack, &a2, "{\"id\":1,\"deliveryStatus\":\"COMPLETED\"}");
    check_builder_caps("ack", build_ack, &a3, "{\"id\":42,\"deliveryStatus\":\"COMPLETED_WITH_ERROR\"}");
    /* the longest ack fits DR_DEVICE_ACK_MAX exactly */
    check_builder_caps("ack", build_ack, &big,
                       "{\"id\":9007199254740991,\"deliveryStatus\":\"COMPLETED_WITH_ERROR\"}");
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), big.id, big.st), DR_DEVICE_ACK_MAX - 1);
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), 2147483647, DR_DEVICE_DELIVERED), 17);
    CHECK_EQ_STR(buf, "{\"id\":2147483647}");
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), 10, DR_DEVICE_DELIVERED), 9);
    CHECK_EQ_STR(buf, "{\"id\":10}");

    CHECK_EQ_INT(dr_device_ack(NULL, 64, 1, DR_DEVICE_DELIVERED), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), 0, DR_DEVICE_DELIVERED), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), DR_DEVICE_ID_MAX + 1, DR_DEVICE_DELIVERED),
                 DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), 1, (dr_device_status_t)3), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_ack(buf, sizeof(buf), 1, (dr_device_status_t)-1), DR_DEVICE_EINVAL);

    /* what the builder writes, the services' parser (jansson here) reads back */
    {
        json_error_t err;
        int n = dr_device_ack(buf, sizeof(buf), 77, DR_DEVICE_COMPLETED);
        json_t *j = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &err);
        CHECK(j != NULL && json_integer_value(json_object_get(j, "id")) == 77 &&
              strcmp(json_string_value(json_object_get(j, "deliveryStatus")), "COMPLETED") == 0);
        json_decref(j);
    }
}

static void test_topic_builder(void)
{
    char buf[DR_DEVICE_TOPIC_MAX];
    char id128[DR_DEVICE_NAME_MAX + 2];
    static const char *const bad[] = {"", "a/b", "a+b", "#", "lamp\x01", "\x7f", "tab\t", "/"};

    check_builder_caps("request", build_req, "lamp-7", "consumer/request/lamp-7");
    check_builder_caps("response", build_resp, "lamp-7", "consumer/response/lamp-7");
    check_builder_caps("request", build_req, "\xc3\xa9t\xc3\xa9 1", "consumer/request/\xc3\xa9t\xc3\xa9 1");

    /* 128 bytes is the longest id and fits DR_DEVICE_TOPIC_MAX exactly */
    memset(id128, 'x', DR_DEVICE_NAME_MAX);
    id128[DR_DEVICE_NAME_MAX] = '\0';
    CHECK_EQ_INT(dr_device_topic_response(buf, sizeof(buf), id128), DR_DEVICE_TOPIC_MAX - 1);
    CHECK_EQ_INT(dr_device_topic_request(buf, sizeof(buf), id128), DR_DEVICE_TOPIC_MAX - 2);
    id128[DR_DEVICE_NAME_MAX] = 'x';
    id128[DR_DEVICE_NAME_MAX + 1] = '\0';
    CHECK_EQ_INT(dr_device_topic_request(buf, sizeof(buf), id128), DR_DEVICE_EINVAL);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (!CHECK_EQ_INT(dr_device_topic_request(buf, sizeof(buf), bad[i]), DR_DEVICE_EINVAL))
            fprintf(stderr, "    id %zu\n", i);
        CHECK_EQ_INT(dr_device_topic_response(buf, sizeof(buf), bad[i]), DR_DEVICE_EINVAL);
    }
    CHECK_EQ_INT(dr_device_topic_request(buf, sizeof(buf), NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_topic_request(NULL, 10, "a"), DR_DEVICE_EINVAL);
    /* an invalid id is reported as such even when the buffer is also too small */
    CHECK_EQ_INT(dr_device_topic_request(buf, 0, "a/b"), DR_DEVICE_EINVAL);
}

/* ---- Reading `data` ----------------------------------------------------------------------------- */

static void test_getters(void)
{
    static const char data[] =
        "{ \"pinNumber\" : 13, \"pinValue\": true, \"off\":false, \"neg\": -9223372036854775808,"
        " \"max\":9223372036854775807, \"over\":9223372036854775808, \"frac\":1.0,"
        " \"exp\":1e2, \"name\":\"r\\u00e9lais \\\"1\\\"\", \"nested\":{\"a\":[1,{\"b\":2}]},"
        " \"null\":null, \"dup\":1, \"dup\":2, \"\\u006bey\":\"k\" }";
    char *copy = dup_exact(data, sizeof(data) - 1);
    dr_device_span_t obj = {copy, sizeof(data) - 1}, v, none = {NULL, 0};
    int64_t i = 0;
    int b = -1;
    char buf[32];

    CHECK(dr_device_get_int(obj, "pinNumber", &i) == 0 && i == 13);
    CHECK(dr_device_get_bool(obj, "pinValue", &b) == 0 && b == 1);
    CHECK(dr_device_get_bool(obj, "off", &b) == 0 && b == 0);
    CHECK(dr_device_get_int(obj, "neg", &i) == 0 && i == INT64_MIN);
    CHECK(dr_device_get_int(obj, "max", &i) == 0 && i == INT64_MAX);
    CHECK_EQ_INT(dr_device_get_int(obj, "over", &i), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_int(obj, "frac", &i), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_int(obj, "exp", &i), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_int(obj, "name", &i), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_int(obj, "pinValue", &i), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_bool(obj, "pinNumber", &b), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_bool(obj, "null", &b), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_int(obj, "missing", &i), DR_DEVICE_ENOTFOUND);
    CHECK_EQ_INT(dr_device_get_int(obj, "pinnumber", &i), DR_DEVICE_ENOTFOUND);

    CHECK_EQ_INT(dr_device_get_str(obj, "name", buf, sizeof(buf)), 11);
    CHECK_EQ_STR(buf, "r\xc3\xa9lais \"1\"");
    CHECK_EQ_INT(dr_device_get_str(obj, "name", buf, 11), DR_DEVICE_ENOSPACE);
    CHECK_EQ_STR(buf, "");
    CHECK_EQ_INT(dr_device_get_str(obj, "pinNumber", buf, sizeof(buf)), DR_DEVICE_EFIELD);
    CHECK_EQ_INT(dr_device_get_str(obj, "key", buf, sizeof(buf)), 1); /* escaped member name */
    CHECK_EQ_INT(dr_device_get_str(obj, "name", NULL, 4), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_get_str(obj, "name", buf, 0), DR_DEVICE_EINVAL);

    CHECK(dr_device_get(obj, "nested", &v) == 0 && strcmp(span_str(v), "{\"a\":[1,{\"b\":2}]}") == 0);
    CHECK(dr_device_get(v, "a", &v) == 0 && strcmp(span_str(v), "[1,{\"b\":2}]") == 0);
    CHECK_EQ_INT(dr_device_get(v, "a", &v), DR_DEVICE_EJSON); /* an array is not an object */
    CHECK(dr_device_get(obj, "null", &v) == 0 && strcmp(span_str(v), "null") == 0);
    CHECK(dr_device_get_int(obj, "dup", &i) == 0 && i == 1); /* the first one counts */
    CHECK_EQ_INT(dr_device_get(obj, NULL, &v), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_get(obj, "a", NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_get_int(obj, "a", NULL), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_get_bool(obj, "a", NULL), DR_DEVICE_EINVAL);

    /* data null (p NULL) has no members; a NULL pointer with a length is a caller bug */
    CHECK_EQ_INT(dr_device_get(none, "a", &v), DR_DEVICE_ENOTFOUND);
    none.len = 3;
    CHECK_EQ_INT(dr_device_get(none, "a", &v), DR_DEVICE_EINVAL);

    /* malformed objects (the getters also take spans that were never parsed) */
    {
        static const char *const bad[] = {"",
                                          "{",
                                          "{\"a\"",
                                          "{\"a\":",
                                          "{\"a\":1",
                                          "{\"a\":1,",
                                          "[1]",
                                          "{\"a\":}",
                                          "{\"x\":[}",
                                          "{\"a\" 1}",
                                          "{\"a\":1}x",
                                          "{}{}",
                                          "{\"x\":1 \"a\":2}",
                                          "{\"a\":1,\"b\":}"};
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            char *p = dup_exact(bad[k], strlen(bad[k]));
            dr_device_span_t o = {p, strlen(bad[k])};
            if (!CHECK_EQ_INT(dr_device_get(o, "a", &v), DR_DEVICE_EJSON))
                fprintf(stderr, "    %s\n", bad[k]);
            free(p);
        }
        CHECK_EQ_INT(dr_device_get((dr_device_span_t){"{}", 2}, "a", &v), DR_DEVICE_ENOTFOUND);
        CHECK_EQ_INT(dr_device_get((dr_device_span_t){" { } ", 5}, "a", &v), DR_DEVICE_ENOTFOUND);
    }

    /* str_eq / str_copy on raw spans */
    CHECK(dr_device_str_eq((dr_device_span_t){NULL, 0}, ""));
    CHECK(!dr_device_str_eq((dr_device_span_t){NULL, 0}, "a"));
    CHECK(!dr_device_str_eq((dr_device_span_t){"a", 1}, NULL));
    CHECK(!dr_device_str_eq((dr_device_span_t){"\\", 1}, "\\")); /* a cut escape never matches */
    CHECK(!dr_device_str_eq((dr_device_span_t){"\\u00", 4}, ""));
    CHECK(dr_device_str_eq((dr_device_span_t){"\\u0041", 6}, "A"));
    CHECK(!dr_device_str_eq((dr_device_span_t){"ab", 2}, "a"));
    CHECK(!dr_device_str_eq((dr_device_span_t){"a", 1}, "ab"));
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"\\q", 2}, buf, sizeof(buf)), DR_DEVICE_EJSON);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"abc", 3}, buf, 3), DR_DEVICE_ENOSPACE);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"abc", 3}, buf, 4), 3);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"abc", 3}, NULL, 4), DR_DEVICE_EINVAL);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){NULL, 0}, buf, 1), 0);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"\\u20ac", 6}, buf, 3), DR_DEVICE_ENOSPACE);
    CHECK_EQ_INT(dr_device_str_copy((dr_device_span_t){"\\u20ac", 6}, buf, 4), 3);
    free(copy);
}

static void test_names(void)
{
    CHECK_EQ_STR(dr_device_guarantee_name(DR_DEVICE_G_NO), "NO");
    CHECK_EQ_STR(dr_device_guarantee_name(DR_DEVICE_G_RECEIPT_CONFIRMATION), "RECEIPT_CONFIRMATION");
    CHECK_EQ_STR(dr_device_guarantee_name(DR_DEVICE_G_ONLY_LAST), "ONLY_LAST");
    CHECK_EQ_STR(dr_device_guarantee_name(DR_DEVICE_G_OTHER), "?");
    CHECK_EQ_STR(dr_device_status_name(DR_DEVICE_DELIVERED), "DELIVERED");
    CHECK_EQ_STR(dr_device_status_name(DR_DEVICE_COMPLETED), "COMPLETED");
    CHECK_EQ_STR(dr_device_status_name(DR_DEVICE_COMPLETED_WITH_ERROR), "COMPLETED_WITH_ERROR");
    CHECK_EQ_STR(dr_device_status_name((dr_device_status_t)7), "?");
    for (int code = 0; code >= DR_DEVICE_ESTORE; code--)
        CHECK(strcmp(dr_device_strerror(code), "unknown error") != 0);
    CHECK_EQ_STR(dr_device_strerror(-100), "unknown error");
    CHECK_EQ_STR(dr_device_strerror(1), "unknown error");
}

/* ---- Mutation loop ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL; /* fixed seed: every run tries the same inputs */

static uint64_t rng(void)
{
    uint64_t x = rng_state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static size_t mutate(char *buf, size_t len, size_t cap, const char *other, size_t other_len)
{
    static const char tokens[] = "{}[]\":,\\ \t\n0123456789-+.eEtrufalsn\x80\xc3\xe2\xf0\xff\x00u";
    int rounds = 1 + (int)(rng() % 4);
    for (int r = 0; r < rounds; r++) {
        size_t pos = len ? (size_t)(rng() % len) : 0;
        switch (rng() % 8) {
        case 0: /* flip a bit */
            if (len)
                buf[pos] ^= (char)(1u << (rng() % 8));
            break;
        case 1: /* replace with a structural or interesting byte */
            if (len)
                buf[pos] = tokens[rng() % (sizeof(tokens) - 1)];
            break;
        case 2: /* insert a byte */
            if (len < cap) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = tokens[rng() % (sizeof(tokens) - 1)];
                len++;
            }
            break;
        case 3: /* delete a run */
            if (len) {
                size_t n = 1 + (size_t)(rng() % 4);
                if (n > len - pos)
                    n = len - pos;
                memmove(buf + pos, buf + pos + n, len - pos - n);
                len -= n;
            }
            break;
        case 4: /* truncate */
            len = pos;
            break;
        case 5: { /* duplicate a chunk */
            size_t n = 1 + (size_t)(rng() % 16);
            if (n > len - pos)
                n = len - pos;
            if (len + n <= cap) {
                memmove(buf + pos + n, buf + pos, len - pos);
                len += n;
            }
            break;
        }
        case 6: { /* splice in a piece of another payload */
            size_t from = other_len ? (size_t)(rng() % other_len) : 0;
            size_t n = (size_t)(rng() % 24);
            if (n > other_len - from)
                n = other_len - from;
            if (pos + n > cap)
                n = cap - pos;
            memcpy(buf + pos, other + from, n);
            if (pos + n > len)
                len = pos + n;
            break;
        }
        default: /* random byte */
            if (len)
                buf[pos] = (char)rng();
            break;
        }
    }
    return len;
}

/* 1 if the span lies within [base, base + len); an empty span may point anywhere (absent command). */
static int span_inside(dr_device_span_t s, const char *base, size_t len)
{
    return s.len == 0 || (s.p != NULL && s.p >= base && s.len <= len && (size_t)(s.p - base) <= len - s.len);
}

static void test_mutations(void)
{
    static const char *const seeds[] = {
        "{\"id\":1,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
        "\"currentTimestamp\":1795385793983,\"data\":{\"pinNumber\":13,\"pinValue\":true}}",
        "{\"id\":4,\"believerGuarantee\":\"ONLY_LAST\",\"command\":\"setpoint\",\"currentTimestamp\":"
        "1795385845088,"
        "\"data\":{\"c\":21}}",
        "{\"id\":7,\"believerGuarantee\":\"NO\",\"command\":\"\",\"currentTimestamp\":1,\"data\":null}",
        "{ \"data\" : { \"a\" : [ 1.5e-3 , { \"b\" : null } , [ ] , { } ], \"s\" : "
        "\"\\u00e9\\ud83d\\ude00\\\"\" },"
        " \"id\" : 9007199254740991 , \"command\" : \"b\\\\l\\\"ink\" }",
        "{\"id\":2147483647,\"command\":\"\xc3\xa9t\xc3\xa9\",\"extra\":[true,false,null,-0,\"x\"]}",
    };
    const size_t nseeds = sizeof(seeds) / sizeof(seeds[0]);
    const int iterations = 200000;
    char work[1024];
    store_t st = {0};
    dr_device_t dev;
    int accepted = 0, rejected = 0, disagreements = 0, bad_spans = 0;

    init_with(&dev, &st, 0);
    for (int it = 0; it < iterations; it++) {
        const char *seed = seeds[rng() % nseeds], *other = seeds[rng() % nseeds];
        size_t len = strlen(seed), olen = strlen(other);
        dr_device_cmd_t c, c2;
        char *copy;
        int rc, rc2;

        memcpy(work, seed, len);
        len = mutate(work, len, sizeof(work), other, olen);
        copy = dup_exact(work, len);
        rc = dr_device_parse(copy, len, &c);
        rc2 = dr_device_receive(&dev, copy, len, &c2);
        if (rc2 != rc || (rc == 0 && (c2.id != c.id || c2.guarantee != c.guarantee)))
            disagreements++;
        if (rc != 0) {
            rejected++;
            if (c.id != 0 || c.data.p != NULL || c.command.len != 0)
                bad_spans++;
        } else {
            json_error_t err;
            json_t *j = json_loadb(copy, len, 0, &err);
            char name[256];
            int64_t iv;
            int bv;
            dr_device_span_t v;

            accepted++;
            if (!span_inside(c.command, copy, len) || !span_inside(c.data, copy, len) ||
                (c.data.p && (c.data.p[0] != '{' || c.data.p[c.data.len - 1] != '}')))
                bad_spans++;
            /* The reference parser must agree that it is JSON, with the same id and command (jansson
             * refuses numbers beyond 64-bit integers or doubles, which the SDK passes over inside
             * unknown members: JSON sets no limit). */
            if (j == NULL) {
                if (strstr(err.text, "too big") == NULL && strstr(err.text, "overflow") == NULL) {
                    disagreements++;
                    fprintf(stderr, "    accepted, jansson says %s: %.*s\n", err.text, (int)len, copy);
                }
            } else {
                json_t *jc = json_object_get(j, "command");
                int n = dr_device_str_copy(c.command, name, sizeof(name));
                if ((uint64_t)json_integer_value(json_object_get(j, "id")) != c.id ||
                    (json_is_string(jc) && (n < 0 || strcmp(json_string_value(jc), name) != 0))) {
                    disagreements++;
                    fprintf(stderr, "    disagreement on: %.*s\n", (int)len, copy);
                }
                json_decref(j);
            }
            /* the getters walk the accepted data object without trouble */
            (void)dr_device_get_int(c.data, "pinNumber", &iv);
            (void)dr_device_get_bool(c.data, "pinValue", &bv);
            (void)dr_device_get_str(c.data, "s", name, 8);
            (void)dr_device_get(c.data, "a", &v);
            (void)dr_device_str_eq(c.command, "digitalWrite");
        }
        /* the getters also survive unparsed input */
        {
            dr_device_span_t raw = {copy, len}, v;
            int64_t iv;
            char small[4];
            (void)dr_device_get(raw, "id", &v);
            (void)dr_device_get_int(raw, "data", &iv);
            (void)dr_device_str_copy(raw, small, sizeof(small));
            (void)dr_device_str_eq(raw, "id");
        }
        free(copy);
    }
    CHECK_EQ_INT(disagreements, 0);
    CHECK_EQ_INT(bad_spans, 0);
    /* the mutations must exercise both paths, or the loop proves little */
    CHECK(accepted > iterations / 50);
    CHECK(rejected > iterations / 2);
    CHECK(dr_device_count(&dev) <= DR_DEVICE_RING_SIZE);
    printf("mutations: %d accepted, %d rejected\n", accepted, rejected);
}

int main(void)
{
    test_parse_examples();
    test_parse_ids();
    test_parse_strings();
    test_parse_malformed();
    test_depth_limit();
    test_truncated();
    test_oversized_and_args();
    test_dedup_basic();
    test_dedup_guarantees();
    test_ring_wrap();
    test_id_reuse();
    test_out_of_order();
    test_persistence();
    test_persistence_failures();
    test_ack_builder();
    test_topic_builder();
    test_getters();
    test_names();
    test_mutations();
    return t_report("test_drover_device");
}
