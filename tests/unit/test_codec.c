/* Unit tests for the wire codec (common/src/codec.c): the Duster-compatible producer message and ack
 * parsers with their exact error codes, topic id checks, byte-exact encoders and the idempotency
 * fingerprint. Wire reference: duster-compat.md §1 and docs/SPEC-DRAFT.md. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/err.h"
#include "dr/status.h"
#include "t.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

/* Parses a literal (which may hold NUL or invalid UTF-8 bytes: its length comes from sizeof). */
#define ACCEPT(lit, m) accept_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (m))
#define REJECT(lit, code) reject_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (code), NULL)
#define REJECT_ERR(lit, code, err) reject_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (code), (err))
#define ACK_OK(lit, id, st) ack_ok_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (id), (st))
#define ACK_BAD(lit, code) ack_bad_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (code))

static void show_input(const char *buf, size_t len)
{
    fprintf(stderr, "    input: %.*s\n", (int)len, buf);
}

/* Expects buf to parse; m must be disposed by the caller. Returns 1 on success. */
static int accept_at(const char *file, int line, const char *buf, size_t len, dr_producer_msg_t *m)
{
    dr_codec_err_t err;
    int rc = dr_codec_parse_producer(buf, len, m, &err);
    if (!CHECK_EQ_INT_AT(file, line, rc, 0)) {
        show_input(buf, len);
        fprintf(stderr, "    error: %s: %s\n", err.code ? err.code : "(null)", err.message);
        return 0;
    }
    return 1;
}

/* Expects buf to be rejected with code and the message to be left empty. If out is given, the error
 * is copied there for further checks. */
static void reject_at(const char *file, int line, const char *buf, size_t len, const char *code, dr_codec_err_t *out)
{
    dr_producer_msg_t m;
    dr_codec_err_t err;
    memset(&m, 0x5a, sizeof(m)); /* the parser must clear it */
    int rc = dr_codec_parse_producer(buf, len, &m, &err);
    int ok = CHECK_EQ_INT_AT(file, line, rc, DR_EINVAL);
    if (rc == 0) {
        dr_producer_msg_dispose(&m);
        show_input(buf, len);
        return;
    }
    ok &= CHECK_EQ_STR_AT(file, line, err.code, code);
    ok &= CHECK_AT(file, line, err.message[0] != '\0');
    ok &= CHECK_AT(file, line, m.command == NULL && m.data == NULL && m.producer_id == NULL && m.idem_key == NULL);
    ok &= CHECK_AT(file, line, m.has_cert == 0 && m.ext == 0);
    if (!ok)
        show_input(buf, len);
    if (out != NULL)
        *out = err;
}

static void ack_ok_at(const char *file, int line, const char *buf, size_t len, int64_t id, int st)
{
    dr_ack_t a = {-1, -1};
    dr_codec_err_t err;
    int rc = dr_codec_parse_ack(buf, len, &a, &err);
    int ok = CHECK_EQ_INT_AT(file, line, rc, 0);
    if (rc == 0) {
        ok &= CHECK_EQ_INT_AT(file, line, a.id, id);
        ok &= CHECK_EQ_STR_AT(file, line, dr_status_name(a.status), dr_status_name(st));
    }
    if (!ok)
        show_input(buf, len);
}

static void ack_bad_at(const char *file, int line, const char *buf, size_t len, const char *code)
{
    dr_ack_t a = {0, 0};
    dr_codec_err_t err;
    int rc = dr_codec_parse_ack(buf, len, &a, &err);
    int ok = CHECK_EQ_INT_AT(file, line, rc, DR_EINVAL);
    if (rc != 0) {
        ok &= CHECK_EQ_STR_AT(file, line, err.code, code);
        ok &= CHECK_AT(file, line, err.message[0] != '\0');
    }
    if (!ok)
        show_input(buf, len);
}

/* Returns a heap string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- producer message: accepted shapes -------------------------------------------------------- */

static void test_producer_defaults(void)
{
    dr_producer_msg_t m;
    if (ACCEPT("{}", &m)) {
        CHECK_EQ_INT(m.guarantee, DR_G_RECEIPT_CONFIRMATION);
        CHECK_EQ_STR(m.command, "");
        CHECK(m.data == NULL);
        CHECK_EQ_INT(m.has_cert, 0);
        CHECK(m.producer_id == NULL);
        CHECK_EQ_INT(m.ext, 0);
        CHECK_EQ_INT(m.ttl_ms, 0);
        CHECK_EQ_INT(m.deliver_by, 0);
        CHECK_EQ_INT(m.max_attempts, 0);
        CHECK_EQ_INT(m.not_before, 0);
        CHECK(m.idem_key == NULL);
        dr_producer_msg_dispose(&m);
    }
    /* Explicit nulls mean the same as absent members. */
    if (ACCEPT("{\"believerGuarantee\":null,\"command\":null,\"data\":null,\"messageBirthCertificate\":null,"
               "\"ttlMs\":null,\"deliverBy\":null,\"maxAttempts\":null,\"notBefore\":null,\"idempotencyKey\":null}",
               &m)) {
        CHECK_EQ_INT(m.guarantee, DR_G_RECEIPT_CONFIRMATION);
        CHECK_EQ_STR(m.command, "");
        CHECK(m.data == NULL);
        CHECK_EQ_INT(m.has_cert, 0);
        CHECK_EQ_INT(m.ext, 0);
        CHECK(m.idem_key == NULL);
        dr_producer_msg_dispose(&m);
    }
    /* Whitespace around the object is fine. */
    if (ACCEPT(" \n\t{ \"command\" : \"x\" }\r\n ", &m)) {
        CHECK_EQ_STR(m.command, "x");
        dr_producer_msg_dispose(&m);
    }
}

static void test_producer_full_duster(void)
{
    dr_producer_msg_t m;
    if (ACCEPT("{\"believerGuarantee\":\"ONLY_LAST\",\"command\":\"digitalWrite\",\"data\":{\"pinNumber\":13},"
               "\"messageBirthCertificate\":{\"tmpId\":3,\"producerDeviseId\":\"0\"}}",
               &m)) {
        CHECK_EQ_INT(m.guarantee, DR_G_ONLY_LAST);
        CHECK_EQ_STR(m.command, "digitalWrite");
        CHECK_EQ_STR(m.data, "{\"pinNumber\":13}");
        CHECK_EQ_INT(m.has_cert, 1);
        CHECK_EQ_INT(m.tmp_id, 3);
        CHECK_EQ_STR(m.producer_id, "0");
        CHECK_EQ_INT(m.ext, 0);
        dr_producer_msg_dispose(&m);
    }
    if (ACCEPT("{\"believerGuarantee\":\"NO\"}", &m)) {
        CHECK_EQ_INT(m.guarantee, DR_G_NO);
        dr_producer_msg_dispose(&m);
    }
    if (ACCEPT("{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\"}", &m)) {
        CHECK_EQ_INT(m.guarantee, DR_G_RECEIPT_CONFIRMATION);
        dr_producer_msg_dispose(&m);
    }
    /* An empty command is accepted (Duster does not validate it); UTF-8 is kept byte for byte. */
    if (ACCEPT("{\"command\":\"\"}", &m)) {
        CHECK_EQ_STR(m.command, "");
        dr_producer_msg_dispose(&m);
    }
    if (ACCEPT("{\"command\":\"caf\xc3\xa9 \\u2713 \\\"q\\\"\"}", &m)) {
        CHECK_EQ_STR(m.command, "caf\xc3\xa9 \xe2\x9c\x93 \"q\"");
        dr_producer_msg_dispose(&m);
    }
}

static void test_producer_certificate(void)
{
    dr_producer_msg_t m;
    /* tmpId 0 still subscribes (Duster does not check it). */
    if (ACCEPT("{\"messageBirthCertificate\":{\"tmpId\":0,\"producerDeviseId\":\"p\"}}", &m)) {
        CHECK_EQ_INT(m.has_cert, 1);
        CHECK_EQ_INT(m.tmp_id, 0);
        CHECK_EQ_STR(m.producer_id, "p");
        dr_producer_msg_dispose(&m);
    }
    /* 64-bit tmpIds (later Duster versions use Long) survive exactly, negative ones too. */
    if (ACCEPT("{\"messageBirthCertificate\":{\"tmpId\":9007199254740993,\"producerDeviseId\":\"p\"}}", &m)) {
        CHECK_EQ_INT(m.tmp_id, INT64_C(9007199254740993));
        dr_producer_msg_dispose(&m);
    }
    if (ACCEPT("{\"messageBirthCertificate\":{\"tmpId\":-7,\"producerDeviseId\":\"p\"}}", &m)) {
        CHECK_EQ_INT(m.has_cert, 1);
        CHECK_EQ_INT(m.tmp_id, -7);
        dr_producer_msg_dispose(&m);
    }
    /* Both members are needed to subscribe; a partial certificate is not an error. */
    static const char *const partial[] = {
        "{\"messageBirthCertificate\":{}}",
        "{\"messageBirthCertificate\":{\"tmpId\":5}}",
        "{\"messageBirthCertificate\":{\"producerDeviseId\":\"p\"}}",
        "{\"messageBirthCertificate\":{\"tmpId\":null,\"producerDeviseId\":\"p\"}}",
        "{\"messageBirthCertificate\":{\"tmpId\":5,\"producerDeviseId\":null}}",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        dr_codec_err_t err;
        int rc = dr_codec_parse_producer(partial[i], strlen(partial[i]), &m, &err);
        if (CHECK_EQ_INT(rc, 0)) {
            if (!CHECK_EQ_INT(m.has_cert, 0) | !CHECK(m.producer_id == NULL))
                show_input(partial[i], strlen(partial[i]));
            dr_producer_msg_dispose(&m);
        } else {
            show_input(partial[i], strlen(partial[i]));
        }
    }
    /* A 128-byte producer id is the longest accepted; UTF-8 is fine. */
    char *id128 = repeat('p', DR_MAX_PRODUCER_ID);
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"%s\"}}", id128);
    if (accept_at(__FILE__, __LINE__, buf, strlen(buf), &m)) {
        CHECK_EQ_STR(m.producer_id, id128);
        dr_producer_msg_dispose(&m);
    }
    free(id128);
    if (ACCEPT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"\xd0\xb4\xd0\xb0\"}}", &m)) {
        CHECK_EQ_STR(m.producer_id, "\xd0\xb4\xd0\xb0");
        dr_producer_msg_dispose(&m);
    }
    /* Unknown members inside the certificate are ignored as well. */
    if (ACCEPT("{\"messageBirthCertificate\":{\"tmpId\":2,\"producerDeviseId\":\"p\",\"extra\":[1]}}", &m)) {
        CHECK_EQ_INT(m.has_cert, 1);
        dr_producer_msg_dispose(&m);
    }
}

static void test_producer_unknown_keys(void)
{
    dr_producer_msg_t m;
    if (ACCEPT("{\"foo\":1,\"bar\":[1,{\"x\":null}],\"command\":\"c\",\"baz\":{\"q\":\"r\"},\"Command\":5,"
               "\"believerguarantee\":\"bogus\"}",
               &m)) {
        CHECK_EQ_STR(m.command, "c");
        CHECK_EQ_INT(m.guarantee, DR_G_RECEIPT_CONFIRMATION);
        CHECK_EQ_INT(m.ext, 0);
        dr_producer_msg_dispose(&m);
    }
}

static void test_producer_data(void)
{
    static const struct {
        const char *in;
        const char *data;
    } cases[] = {
        {"{\"data\":{}}", "{}"},
        {"{\"data\":{\"pinNumber\":13}}", "{\"pinNumber\":13}"},
        {"{ \"data\" : { \"a\" : 1 ,\n \"b\" : [ 1 , 2 , { } ] , \"c\" : { \"d\" : \"e\" , \"f\" : null } } }",
         "{\"a\":1,\"b\":[1,2,{}],\"c\":{\"d\":\"e\",\"f\":null}}"},
        /* Member order is kept as sent. */
        {"{\"data\":{\"z\":1,\"a\":2,\"m\":3}}", "{\"z\":1,\"a\":2,\"m\":3}"},
        {"{\"data\":{\"t\":true,\"f\":false,\"s\":\"x\\\"y\",\"neg\":-5}}",
         "{\"t\":true,\"f\":false,\"s\":\"x\\\"y\",\"neg\":-5}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dr_producer_msg_t m;
        if (accept_at(__FILE__, __LINE__, cases[i].in, strlen(cases[i].in), &m)) {
            if (!CHECK_EQ_STR(m.data, cases[i].data))
                show_input(cases[i].in, strlen(cases[i].in));
            dr_producer_msg_dispose(&m);
        }
    }
    /* Whatever the form, the stored text is a valid JSON object equal to the input. */
    const char *in = "{\"data\":{\"u\":\"caf\\u00e9\",\"n\":1.5,\"deep\":{\"a\":[[1],[2]]}}}";
    dr_producer_msg_t m;
    if (accept_at(__FILE__, __LINE__, in, strlen(in), &m)) {
        json_t *got = json_loads(m.data, JSON_REJECT_DUPLICATES, NULL);
        json_t *want = json_loads("{\"u\":\"caf\xc3\xa9\",\"n\":1.5,\"deep\":{\"a\":[[1],[2]]}}", 0, NULL);
        CHECK(got != NULL && json_is_object(got));
        CHECK(got != NULL && want != NULL && json_equal(got, want));
        CHECK(strchr(m.data, ' ') == NULL && strchr(m.data, '\n') == NULL);
        json_decref(got);
        json_decref(want);
        dr_producer_msg_dispose(&m);
    }
}

static void test_producer_ext(void)
{
    dr_producer_msg_t m;
    if (ACCEPT("{\"command\":\"c\",\"ttlMs\":60000,\"deliverBy\":1772021717684,\"maxAttempts\":5,"
               "\"notBefore\":1772021000000,\"idempotencyKey\":\"order-42\"}",
               &m)) {
        CHECK_EQ_INT(m.ext, 1);
        CHECK_EQ_INT(m.ttl_ms, 60000);
        CHECK_EQ_INT(m.deliver_by, INT64_C(1772021717684));
        CHECK_EQ_INT(m.max_attempts, 5);
        CHECK_EQ_INT(m.not_before, INT64_C(1772021000000));
        CHECK_EQ_STR(m.idem_key, "order-42");
        dr_producer_msg_dispose(&m);
    }
    /* Each Drover-only field alone sets ext. */
    static const char *const one[] = {
        "{\"ttlMs\":1}",
        "{\"deliverBy\":1}",
        "{\"maxAttempts\":1}",
        "{\"maxAttempts\":1000000}",
        "{\"notBefore\":0}",
        "{\"idempotencyKey\":\"k\"}",
        "{\"ttlMs\":315360000000}",
    };
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
        if (accept_at(__FILE__, __LINE__, one[i], strlen(one[i]), &m)) {
            if (!CHECK_EQ_INT(m.ext, 1))
                show_input(one[i], strlen(one[i]));
            dr_producer_msg_dispose(&m);
        }
    }
    /* A 128-byte idempotency key is the longest accepted. */
    char *k = repeat('k', DR_MAX_IDEM_KEY);
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"idempotencyKey\":\"%s\"}", k);
    if (accept_at(__FILE__, __LINE__, buf, strlen(buf), &m)) {
        CHECK_EQ_STR(m.idem_key, k);
        CHECK_EQ_INT(m.ext, 1);
        dr_producer_msg_dispose(&m);
    }
    free(k);
}

/* ---- producer message: rejections ------------------------------------------------------------- */

static void test_producer_bad_json(void)
{
    REJECT("", "BAD_JSON");
    REJECT(" ", "BAD_JSON");
    REJECT("not json", "BAD_JSON");
    REJECT("{", "BAD_JSON");
    REJECT("{\"command\":", "BAD_JSON");
    REJECT("{'command':'x'}", "BAD_JSON");
    REJECT("{command:\"x\"}", "BAD_JSON");
    REJECT("{\"command\":\"x\",}", "BAD_JSON");
    /* Arrays and scalars are not messages. */
    REJECT("[]", "BAD_JSON");
    REJECT("[{\"command\":\"x\"}]", "BAD_JSON");
    REJECT("42", "BAD_JSON");
    REJECT("\"str\"", "BAD_JSON");
    REJECT("null", "BAD_JSON");
    REJECT("true", "BAD_JSON");
    /* Duplicate keys, at the top level and nested. */
    REJECT("{\"command\":\"a\",\"command\":\"b\"}", "BAD_JSON");
    REJECT("{\"command\":\"a\",\"command\":\"a\"}", "BAD_JSON");
    REJECT("{\"data\":{\"a\":1,\"a\":2}}", "BAD_JSON");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"tmpId\":2,\"producerDeviseId\":\"p\"}}", "BAD_JSON");
    REJECT("{\"foo\":1,\"foo\":2}", "BAD_JSON");
    /* Invalid UTF-8: a stray byte, an overlong form, a truncated sequence, a surrogate. */
    REJECT("{\"command\":\"\xff\"}", "BAD_JSON");
    REJECT("{\"command\":\"\xc0\xaf\"}", "BAD_JSON");
    REJECT("{\"command\":\"\xc3\"}", "BAD_JSON");
    REJECT("{\"command\":\"\xed\xa0\x80\"}", "BAD_JSON");
    REJECT("{\"data\":{\"k\":\"\xfe\"}}", "BAD_JSON");
    REJECT("{\"\xff\":1}", "BAD_JSON");
    /* Trailing garbage. */
    REJECT("{} x", "BAD_JSON");
    REJECT("{}{}", "BAD_JSON");
    REJECT("{\"command\":\"x\"}]", "BAD_JSON");
    REJECT("{}\0", "BAD_JSON");
    REJECT("{\"command\":\"x\"}\0{\"command\":\"y\"}", "BAD_JSON");
    /* A NUL inside a string is refused before it can truncate the command. */
    dr_codec_err_t err;
    REJECT_ERR("{\"command\":\"a\\u0000b\"}", "BAD_JSON", &err);
    CHECK_EQ_INT(err.has_cert, 0);
}

static void test_producer_bad_type(void)
{
    REJECT("{\"command\":5}", "BAD_TYPE");
    REJECT("{\"command\":true}", "BAD_TYPE");
    REJECT("{\"command\":{}}", "BAD_TYPE");
    REJECT("{\"command\":[\"x\"]}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":\"p\"}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":3}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":[]}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":true}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":\"3\",\"producerDeviseId\":\"p\"}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1.5,\"producerDeviseId\":\"p\"}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":true,\"producerDeviseId\":\"p\"}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":\"3\"}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":0}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":{}}}", "BAD_TYPE");
    REJECT("{\"messageBirthCertificate\":{\"producerDeviseId\":[\"p\"]}}", "BAD_TYPE");
    REJECT("{\"ttlMs\":\"1000\"}", "BAD_TYPE");
    REJECT("{\"ttlMs\":1000.5}", "BAD_TYPE");
    REJECT("{\"deliverBy\":true}", "BAD_TYPE");
    REJECT("{\"maxAttempts\":\"3\"}", "BAD_TYPE");
    REJECT("{\"notBefore\":{}}", "BAD_TYPE");
    REJECT("{\"idempotencyKey\":5}", "BAD_TYPE");
    REJECT("{\"idempotencyKey\":[\"k\"]}", "BAD_TYPE");
}

static void test_producer_bad_guarantee(void)
{
    REJECT("{\"believerGuarantee\":\"FOO\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"no\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"receipt_confirmation\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"Only_Last\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\" NO\"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"NO \"}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":\"NOT_DELIVERED\"}", "BAD_GUARANTEE");
    /* Ordinals are not accepted: the wire uses names only. */
    REJECT("{\"believerGuarantee\":0}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":1}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":true}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":[\"NO\"]}", "BAD_GUARANTEE");
    REJECT("{\"believerGuarantee\":{}}", "BAD_GUARANTEE");
}

static void test_producer_bad_data(void)
{
    REJECT("{\"data\":[]}", "BAD_DATA");
    REJECT("{\"data\":[1,2]}", "BAD_DATA");
    REJECT("{\"data\":\"{}\"}", "BAD_DATA");
    REJECT("{\"data\":\"x\"}", "BAD_DATA");
    REJECT("{\"data\":5}", "BAD_DATA");
    REJECT("{\"data\":0}", "BAD_DATA");
    REJECT("{\"data\":1.5}", "BAD_DATA");
    REJECT("{\"data\":true}", "BAD_DATA");
    REJECT("{\"data\":false}", "BAD_DATA");
}

static void test_producer_bad_field(void)
{
    REJECT("{\"idempotencyKey\":\"\"}", "BAD_FIELD");
    char *k = repeat('k', DR_MAX_IDEM_KEY + 1);
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"idempotencyKey\":\"%s\"}", k);
    reject_at(__FILE__, __LINE__, buf, strlen(buf), "BAD_FIELD", NULL);
    free(k);
    /* 64 two-byte characters are 128 bytes (accepted); 65 are 130 bytes (refused): bytes, not characters. */
    char key[300] = "";
    for (int i = 0; i < 65; i++)
        strcat(key, "\xc3\xa9");
    snprintf(buf, sizeof(buf), "{\"idempotencyKey\":\"%s\"}", key);
    reject_at(__FILE__, __LINE__, buf, strlen(buf), "BAD_FIELD", NULL);
    key[128] = '\0';
    snprintf(buf, sizeof(buf), "{\"idempotencyKey\":\"%s\"}", key);
    dr_producer_msg_t m;
    if (accept_at(__FILE__, __LINE__, buf, strlen(buf), &m))
        dr_producer_msg_dispose(&m);

    REJECT("{\"maxAttempts\":0}", "BAD_FIELD");
    REJECT("{\"maxAttempts\":-1}", "BAD_FIELD");
    REJECT("{\"maxAttempts\":1000001}", "BAD_FIELD");
    REJECT("{\"ttlMs\":0}", "BAD_FIELD");
    REJECT("{\"ttlMs\":-1000}", "BAD_FIELD");
    REJECT("{\"ttlMs\":315360000001}", "BAD_FIELD");
    REJECT("{\"deliverBy\":0}", "BAD_FIELD");
    REJECT("{\"deliverBy\":-1}", "BAD_FIELD");
    REJECT("{\"deliverBy\":253402300800000}", "BAD_FIELD");
    REJECT("{\"notBefore\":-1}", "BAD_FIELD");
    REJECT("{\"notBefore\":253402300800000}", "BAD_FIELD");

    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"a+b\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"+\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"a#\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"#\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"a/b\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"/\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"a\\nb\"}}", "BAD_FIELD");
    REJECT("{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"a\\u007f\"}}", "BAD_FIELD");
    char *p = repeat('p', DR_MAX_PRODUCER_ID + 1);
    snprintf(buf, sizeof(buf), "{\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"%s\"}}", p);
    reject_at(__FILE__, __LINE__, buf, strlen(buf), "BAD_FIELD", NULL);
    free(p);
}

/* The error reply goes to producer/error/{producerDeviseId}, so the certificate is read even when
 * something else in the message is wrong. */
static void test_producer_err_cert(void)
{
    static const struct {
        const char *in;
        const char *code;
    } cases[] = {
        {"{\"believerGuarantee\":\"nope\",\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"}}",
         "BAD_GUARANTEE"},
        {"{\"command\":5,\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"}}", "BAD_TYPE"},
        {"{\"data\":[1],\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"}}", "BAD_DATA"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"},\"ttlMs\":0}", "BAD_FIELD"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"},\"maxAttempts\":\"x\"}",
         "BAD_TYPE"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"prod-1\"},\"idempotencyKey\":\"\"}",
         "BAD_FIELD"},
        {"{\"messageBirthCertificate\":{\"producerDeviseId\":\"prod-1\",\"tmpId\":7},\"data\":\"s\","
         "\"believerGuarantee\":\"x\"}",
         "BAD_GUARANTEE"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dr_codec_err_t err;
        reject_at(__FILE__, __LINE__, cases[i].in, strlen(cases[i].in), cases[i].code, &err);
        int ok = CHECK_EQ_INT(err.has_cert, 1);
        ok &= CHECK_EQ_INT(err.tmp_id, 7);
        ok &= CHECK_EQ_STR(err.producer_id, "prod-1");
        if (!ok)
            show_input(cases[i].in, strlen(cases[i].in));
    }
    /* tmpId 0 is a readable certificate too. */
    dr_codec_err_t err;
    REJECT_ERR("{\"data\":1,\"messageBirthCertificate\":{\"tmpId\":0,\"producerDeviseId\":\"0\"}}", "BAD_DATA", &err);
    CHECK_EQ_INT(err.has_cert, 1);
    CHECK_EQ_INT(err.tmp_id, 0);
    CHECK_EQ_STR(err.producer_id, "0");

    /* A certificate that cannot be used to reply leaves has_cert at 0. */
    static const struct {
        const char *in;
        const char *code;
    } unreadable[] = {
        {"{\"data\":1}", "BAD_DATA"},
        {"{\"data\":1,\"messageBirthCertificate\":null}", "BAD_DATA"},
        {"{\"data\":1,\"messageBirthCertificate\":{\"tmpId\":7}}", "BAD_DATA"},
        {"{\"data\":1,\"messageBirthCertificate\":{\"producerDeviseId\":\"p\"}}", "BAD_DATA"},
        {"{\"messageBirthCertificate\":{\"tmpId\":\"7\",\"producerDeviseId\":\"p\"}}", "BAD_TYPE"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"a/b\"}}", "BAD_FIELD"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"\"}}", "BAD_FIELD"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"+\"},\"data\":1}", "BAD_DATA"},
        {"{\"messageBirthCertificate\":\"p\"}", "BAD_TYPE"},
        {"[{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"p\"}}]", "BAD_JSON"},
        {"{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"p\"}} x", "BAD_JSON"},
    };
    for (size_t i = 0; i < sizeof(unreadable) / sizeof(unreadable[0]); i++) {
        reject_at(__FILE__, __LINE__, unreadable[i].in, strlen(unreadable[i].in), unreadable[i].code, &err);
        if (!CHECK_EQ_INT(err.has_cert, 0))
            show_input(unreadable[i].in, strlen(unreadable[i].in));
    }
}

/* ---- ack -------------------------------------------------------------------------------------- */

static void test_ack(void)
{
    ACK_OK("{\"id\":2}", 2, DR_ST_DELIVERED);
    ACK_OK("{\"id\":2,\"deliveryStatus\":null}", 2, DR_ST_DELIVERED);
    ACK_OK("{\"id\":2,\"deliveryStatus\":\"DELIVERED\"}", 2, DR_ST_DELIVERED);
    ACK_OK("{\"id\":2,\"deliveryStatus\":\"COMPLETED\"}", 2, DR_ST_COMPLETED);
    ACK_OK("{\"deliveryStatus\":\"COMPLETED_WITH_ERROR\",\"id\":77}", 77, DR_ST_COMPLETED_WITH_ERROR);
    ACK_OK("{\"id\":1,\"extra\":{\"a\":[1]},\"currentTimestamp\":5}", 1, DR_ST_DELIVERED);
    ACK_OK(" {\"id\":2147483647} \n", 2147483647, DR_ST_DELIVERED);
    ACK_OK("{\"id\":9007199254740993}", INT64_C(9007199254740993), DR_ST_DELIVERED);

    ACK_BAD("{}", "BAD_ID");
    ACK_BAD("{\"deliveryStatus\":\"COMPLETED\"}", "BAD_ID");
    ACK_BAD("{\"id\":0}", "BAD_ID");
    ACK_BAD("{\"id\":-1}", "BAD_ID");
    ACK_BAD("{\"id\":\"2\"}", "BAD_ID");
    ACK_BAD("{\"id\":2.0}", "BAD_ID");
    ACK_BAD("{\"id\":null}", "BAD_ID");
    ACK_BAD("{\"id\":true}", "BAD_ID");
    ACK_BAD("{\"id\":[2]}", "BAD_ID");

    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"NOT_DELIVERED\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"CANCELLED\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"UNKNOWN\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"EXPIRED\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"FAILED\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"PURGED\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"delivered\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"Completed\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"?\"}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":2}", "BAD_STATUS");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":[\"DELIVERED\"]}", "BAD_STATUS");

    ACK_BAD("", "BAD_JSON");
    ACK_BAD("2", "BAD_JSON");
    ACK_BAD("[]", "BAD_JSON");
    ACK_BAD("[{\"id\":2}]", "BAD_JSON");
    ACK_BAD("\"{\\\"id\\\":2}\"", "BAD_JSON");
    ACK_BAD("{\"id\":2,\"id\":3}", "BAD_JSON");
    ACK_BAD("{\"id\":2} x", "BAD_JSON");
    ACK_BAD("{\"id\":2,\"deliveryStatus\":\"\xff\"}", "BAD_JSON");
    ACK_BAD("{\"id\":99999999999999999999}", "BAD_JSON");
}

/* ---- topic ids -------------------------------------------------------------------------------- */

static void test_check_id(void)
{
    CHECK_EQ_INT(dr_codec_check_id("", 0, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("a", 1, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id("dev-1_A.b:c@d", 13, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id("with space", 10, 128), 0);

    char *s = repeat('d', 129);
    CHECK_EQ_INT(dr_codec_check_id(s, 128, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id(s, 129, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id(s, 1, 1), 0);
    CHECK_EQ_INT(dr_codec_check_id(s, 2, 1), DR_EINVAL);
    free(s);

    CHECK_EQ_INT(dr_codec_check_id("/", 1, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("a/b", 3, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("+", 1, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("a+", 2, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("#", 1, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("dev#1", 5, 128), DR_EINVAL);
    /* Only len bytes are looked at. */
    CHECK_EQ_INT(dr_codec_check_id("a/b", 1, 128), 0);

    for (int c = 1; c < 0x20; c++) {
        char b[3] = {'x', (char)c, 'y'};
        if (!CHECK_EQ_INT(dr_codec_check_id(b, 3, 128), DR_EINVAL))
            fprintf(stderr, "    control character 0x%02x\n", c);
    }
    CHECK_EQ_INT(dr_codec_check_id("a\x7f", 2, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("a\0b", 3, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("\0", 1, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_codec_check_id("ab\0", 3, 128), DR_EINVAL);

    /* UTF-8 multibyte ids are accepted; max counts bytes. */
    CHECK_EQ_INT(dr_codec_check_id("caf\xc3\xa9", 5, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id("\xe3\x83\x87\xe3\x83\x90\xe3\x82\xa4\xe3\x82\xb9", 12, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id("\xf0\x9f\x92\xa1", 4, 128), 0);
    CHECK_EQ_INT(dr_codec_check_id("\xf0\x9f\x92\xa1", 4, 3), DR_EINVAL);
}

/* ---- encoders --------------------------------------------------------------------------------- */

/* Parses s strictly with jansson; NULL when it is not valid JSON. */
static json_t *reparse(const char *s)
{
    json_error_t jerr;
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        fprintf(stderr, "    not valid JSON (%s): %s\n", jerr.text, s);
    return j;
}

static void test_encode_consumer(void)
{
    char *s = dr_codec_encode_consumer(2, DR_G_RECEIPT_CONFIRMATION, "digitalWrite", INT64_C(1772021717684),
                                       "{\"pinNumber\":13}");
    CHECK_EQ_STR(s, "{\"id\":2,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
                    "\"currentTimestamp\":1772021717684,\"data\":{\"pinNumber\":13}}");
    free(s);

    s = dr_codec_encode_consumer(2, DR_G_RECEIPT_CONFIRMATION, "digitalWrite", INT64_C(1772021717684), NULL);
    CHECK_EQ_STR(s, "{\"id\":2,\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"digitalWrite\","
                    "\"currentTimestamp\":1772021717684,\"data\":null}");
    free(s);

    s = dr_codec_encode_consumer(INT64_C(2147483647), DR_G_NO, "", 0, "{}");
    CHECK_EQ_STR(s, "{\"id\":2147483647,\"believerGuarantee\":\"NO\",\"command\":\"\",\"currentTimestamp\":0,"
                    "\"data\":{}}");
    free(s);

    s = dr_codec_encode_consumer(INT64_C(9223372036854775807), DR_G_ONLY_LAST, NULL, INT64_C(253402300799999), NULL);
    CHECK_EQ_STR(s, "{\"id\":9223372036854775807,\"believerGuarantee\":\"ONLY_LAST\",\"command\":\"\","
                    "\"currentTimestamp\":253402300799999,\"data\":null}");
    free(s);

    /* Commands are escaped as valid JSON; quotes, backslashes and newlines use the short escapes. */
    s = dr_codec_encode_consumer(5, DR_G_NO, "say \"hi\"\\n\nnext", 1, NULL);
    CHECK_EQ_STR(s, "{\"id\":5,\"believerGuarantee\":\"NO\",\"command\":\"say \\\"hi\\\"\\\\n\\nnext\","
                    "\"currentTimestamp\":1,\"data\":null}");
    free(s);

    static const char *const cmds[] = {
        "a\"b", "back\\slash", "line1\nline2\r\n", "tab\there", "ctl\x01\x1f\x7f", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x92\xa1",
        "</script>", "{\"looks\":\"like json\"}", "",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        s = dr_codec_encode_consumer(9, DR_G_RECEIPT_CONFIRMATION, cmds[i], 123, "{\"k\":[1,\"v\"]}");
        json_t *j = reparse(s);
        if (CHECK(j != NULL)) {
            CHECK_EQ_INT(json_object_size(j), 5);
            CHECK_EQ_INT(json_integer_value(json_object_get(j, "id")), 9);
            CHECK_EQ_STR(json_string_value(json_object_get(j, "believerGuarantee")), "RECEIPT_CONFIRMATION");
            CHECK_EQ_STR(json_string_value(json_object_get(j, "command")), cmds[i]);
            CHECK_EQ_INT(json_integer_value(json_object_get(j, "currentTimestamp")), 123);
            json_t *want = json_loads("{\"k\":[1,\"v\"]}", 0, NULL);
            CHECK(json_equal(json_object_get(j, "data"), want));
            json_decref(want);
            CHECK(strchr(s, '\n') == NULL); /* one line on the wire */
        }
        json_decref(j);
        free(s);
    }
}

static void test_encode_producer(void)
{
    char *s = dr_codec_encode_producer(2, 1, 3, DR_ST_NOT_DELIVERED);
    CHECK_EQ_STR(s, "{\"id\":2,\"tmpId\":3,\"deliveryStatus\":\"NOT_DELIVERED\"}");
    free(s);
    s = dr_codec_encode_producer(2, 0, 3, DR_ST_DELIVERED);
    CHECK_EQ_STR(s, "{\"id\":2,\"tmpId\":null,\"deliveryStatus\":\"DELIVERED\"}");
    free(s);
    s = dr_codec_encode_producer(10, 1, 0, DR_ST_UNKNOWN);
    CHECK_EQ_STR(s, "{\"id\":10,\"tmpId\":0,\"deliveryStatus\":\"UNKNOWN\"}");
    free(s);
    s = dr_codec_encode_producer(10, 1, -4, DR_ST_EXPIRED);
    CHECK_EQ_STR(s, "{\"id\":10,\"tmpId\":-4,\"deliveryStatus\":\"EXPIRED\"}");
    free(s);
    /* The longest numbers with the longest status name fit. */
    s = dr_codec_encode_producer(INT64_C(9223372036854775807), 1, INT64_MIN, DR_ST_COMPLETED_WITH_ERROR);
    CHECK_EQ_STR(s, "{\"id\":9223372036854775807,\"tmpId\":-9223372036854775808,"
                    "\"deliveryStatus\":\"COMPLETED_WITH_ERROR\"}");
    free(s);
    for (int st = 0; st < DR_ST_COUNT; st++) {
        s = dr_codec_encode_producer(1, 1, 1, st);
        json_t *j = reparse(s);
        if (CHECK(j != NULL))
            CHECK_EQ_STR(json_string_value(json_object_get(j, "deliveryStatus")), dr_status_name(st));
        json_decref(j);
        free(s);
    }
}

static void test_encode_error(void)
{
    char *s = dr_codec_encode_error(3, "BAD_JSON", "invalid JSON");
    CHECK_EQ_STR(s, "{\"tmpId\":3,\"error\":{\"code\":\"BAD_JSON\",\"message\":\"invalid JSON\"}}");
    free(s);
    s = dr_codec_encode_error(0, "BAD_FIELD", "key \"k\"\\ is\nbad");
    CHECK_EQ_STR(s, "{\"tmpId\":0,\"error\":{\"code\":\"BAD_FIELD\",\"message\":\"key \\\"k\\\"\\\\ is\\nbad\"}}");
    json_t *j = reparse(s);
    if (CHECK(j != NULL)) {
        json_t *e = json_object_get(j, "error");
        CHECK_EQ_STR(json_string_value(json_object_get(e, "code")), "BAD_FIELD");
        CHECK_EQ_STR(json_string_value(json_object_get(e, "message")), "key \"k\"\\ is\nbad");
    }
    json_decref(j);
    free(s);

    /* A real parser error message (which quotes input) round-trips. */
    dr_producer_msg_t m;
    dr_codec_err_t err;
    const char *in = "{\"messageBirthCertificate\":{\"tmpId\":7,\"producerDeviseId\":\"p\"},\"data\":\"x\"}";
    CHECK_EQ_INT(dr_codec_parse_producer(in, strlen(in), &m, &err), DR_EINVAL);
    s = dr_codec_encode_error(err.tmp_id, err.code, err.message);
    j = reparse(s);
    if (CHECK(j != NULL)) {
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "tmpId")), 7);
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "message")), err.message);
    }
    json_decref(j);
    free(s);

    s = dr_codec_json_string("a\"b\\c\n");
    CHECK_EQ_STR(s, "\"a\\\"b\\\\c\\n\"");
    free(s);
    s = dr_codec_json_string("");
    CHECK_EQ_STR(s, "\"\"");
    free(s);
}

static void test_json_depth(void)
{
    CHECK_EQ_INT(dr_codec_json_depth("", 0), 0);
    CHECK_EQ_INT(dr_codec_json_depth("42", 2), 0);
    CHECK_EQ_INT(dr_codec_json_depth("{}", 2), 1);
    CHECK_EQ_INT(dr_codec_json_depth("{\"a\":[{}],\"b\":{}}", 17), 3);
    CHECK_EQ_INT(dr_codec_json_depth("{\"a\":\"[[[{{{\"}", 14), 1);
    CHECK_EQ_INT(dr_codec_json_depth("{\"a\":\"\\\"[[[\"}", 13), 1);
    CHECK_EQ_INT(dr_codec_json_depth("[[[[]]]][]", 10), 4);
}

/* ---- fingerprint ------------------------------------------------------------------------------ */

#define BASE_MSG                                                                                                     \
    "\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"                         \
    "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3"

/* Fingerprint of a parsed literal for device dev; 0 (after a failed check) when it does not parse. */
static uint64_t fp_at(const char *file, int line, const char *json, const char *dev)
{
    dr_producer_msg_t m;
    if (!accept_at(file, line, json, strlen(json), &m))
        return 0;
    uint64_t h = dr_producer_msg_fingerprint(&m, dev);
    dr_producer_msg_dispose(&m);
    return h;
}
#define FP(json, dev) fp_at(__FILE__, __LINE__, (json), (dev))

static void test_fingerprint(void)
{
    uint64_t base = FP("{" BASE_MSG "}", "dev1");
    /* Equal messages, however they are spelled, have equal fingerprints. */
    CHECK_EQ_U64(FP("{" BASE_MSG "}", "dev1"), base);
    CHECK_EQ_U64(FP(" { \"maxAttempts\" : 3 , \"ttlMs\":1000,\"data\":{ \"a\" : 1 },\"command\":\"on\","
                    "\"messageBirthCertificate\":{\"producerDeviseId\":\"p\",\"tmpId\":1},"
                    "\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"unknown\":true} ",
                    "dev1"),
                 base);
    /* The default guarantee is the explicit one. */
    CHECK_EQ_U64(FP("{\"command\":\"on\"}", "d"), FP("{\"command\":\"on\",\"believerGuarantee\":\"RECEIPT_CONFIRMATION\"}", "d"));
    CHECK_EQ_U64(FP("{}", "d"), FP("{\"command\":\"\",\"data\":null}", "d"));

    /* Any difference in what a retry must repeat changes it. */
    static const struct {
        const char *json;
        const char *what;
    } variants[] = {
        {"{\"believerGuarantee\":\"NO\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "guarantee NO"},
        {"{\"believerGuarantee\":\"ONLY_LAST\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "guarantee ONLY_LAST"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"off\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "command"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "empty command"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":2},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "data value"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "data empty object"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":null,"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "data null"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":2,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "tmpId"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"q\"},\"ttlMs\":1000,\"maxAttempts\":3}",
         "producerDeviseId"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"ttlMs\":1000,\"maxAttempts\":3}",
         "no certificate"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1001,\"maxAttempts\":3}",
         "ttlMs"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"maxAttempts\":3}",
         "no ttlMs"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":4}",
         "maxAttempts"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3,"
         "\"deliverBy\":5}",
         "deliverBy"},
        {"{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"on\",\"data\":{\"a\":1},"
         "\"messageBirthCertificate\":{\"tmpId\":1,\"producerDeviseId\":\"p\"},\"ttlMs\":1000,\"maxAttempts\":3,"
         "\"notBefore\":5}",
         "notBefore"},
    };
    CHECK(FP("{" BASE_MSG "}", "dev2") != base);
    CHECK(FP("{" BASE_MSG "}", "dev") != base);
    CHECK(FP("{" BASE_MSG "}", "dev10") != base);
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        if (!CHECK(FP(variants[i].json, "dev1") != base))
            fprintf(stderr, "    fingerprint unchanged when %s differs\n", variants[i].what);
    }
    /* Fields are delimited: moving bytes between device and command changes it. */
    CHECK(FP("{\"command\":\"c\"}", "ab") != FP("{\"command\":\"bc\"}", "a"));
    /* A certificate with tmpId 0 differs from no certificate. */
    CHECK(FP("{\"messageBirthCertificate\":{\"tmpId\":0,\"producerDeviseId\":\"p\"}}", "d") != FP("{}", "d"));
    /* An empty command differs from an empty data object. */
    CHECK(FP("{\"data\":{}}", "d") != FP("{}", "d"));
}

/* data is forwarded as the producer spelled it (only whitespace outside strings is removed):
 * devices parse the numbers themselves and must get exactly what the producer sent. */
static void test_data_spelling(void)
{
    static const struct {
        const char *in, *data;
    } cases[] = {
        {"{\"data\":{\"v\":0.1}}", "{\"v\":0.1}"},
        {"{\"data\":{\"v\":1.10,\"w\":3.14159}}", "{\"v\":1.10,\"w\":3.14159}"},
        {"{\"data\":{\"v\":1e2}}", "{\"v\":1e2}"},
        {"{\"data\":{\"v\":-0}}", "{\"v\":-0}"},
        {" { \"command\" : \"x\" , \"data\" : { \"s\" : \"a b \\\" } \" , \"n\" : [ 1 , 2 ] } } ",
         "{\"s\":\"a b \\\" } \",\"n\":[1,2]}"},
        {"{\"x\":\"data\",\"data\":{}}", "{}"},
    };
    /* A raw NUL is not JSON: refused, never forwarded cut short (found by tests/fuzz). */
    static const char nul_in_data[] = "{\"data\":{\"n\":[1\0,[]]}}";
    dr_producer_msg_t bad;
    dr_codec_err_t berr;
    CHECK_EQ_INT(dr_codec_parse_producer(nul_in_data, sizeof(nul_in_data) - 1, &bad, &berr), DR_EINVAL);
    CHECK_EQ_STR(berr.code, "BAD_JSON");
    dr_ack_t ack;
    CHECK_EQ_INT(dr_codec_parse_ack("{\"id\":1\0}", 9, &ack, &berr), DR_EINVAL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dr_producer_msg_t m;
        dr_codec_err_t err;
        if (!CHECK_EQ_INT(dr_codec_parse_producer(cases[i].in, strlen(cases[i].in), &m, &err), 0))
            continue;
        CHECK_EQ_STR(m.data, cases[i].data);
        dr_producer_msg_dispose(&m);
    }
}

int main(void)
{
    test_data_spelling();
    test_producer_defaults();
    test_producer_full_duster();
    test_producer_certificate();
    test_producer_unknown_keys();
    test_producer_data();
    test_producer_ext();
    test_producer_bad_json();
    test_producer_bad_type();
    test_producer_bad_guarantee();
    test_producer_bad_data();
    test_producer_bad_field();
    test_producer_err_cert();
    test_ack();
    test_check_id();
    test_encode_consumer();
    test_encode_producer();
    test_encode_error();
    test_json_depth();
    test_fingerprint();
    return t_report("test_codec");
}
