/* Unit tests for the MQTT 3.1.1 and MQTT 5 codec and the PUBACK ordering queue (common/src/mqttc_packet.c):
 * byte-exact encodings, round trips of every packet type, every malformation the decoder must refuse,
 * incremental (byte by byte) decoding, and PUBACK release order. No sockets. */
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/mqttc_packet.h"
#include "t.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

#define S(lit) ((dr_mqttc_str_t){(lit), sizeof(lit) - 1})
#define BYTES(lit) ((const uint8_t *)(lit)), (sizeof(lit) - 1)

static int str_eq(dr_mqttc_str_t a, dr_mqttc_str_t b)
{
    if (a.ptr == NULL || b.ptr == NULL)
        return a.ptr == b.ptr;
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Encodes p into a fresh buffer (*len set); the caller frees it. */
static uint8_t *encode(const dr_mqttc_packet_t *p, size_t *len)
{
    size_t n = dr_mqttc_encode(p, NULL, 0);
    uint8_t *buf = malloc(n ? n : 1);
    *len = n;
    if (n > 0 && dr_mqttc_encode(p, buf, n) != n)
        *len = 0;
    return buf;
}

/* Encodes p, decodes the bytes and checks that the whole buffer was one packet; returns the decode into
 * *q, which points into the returned buffer (freed by the caller). */
static uint8_t *round_trip_at(const char *file, int line, const dr_mqttc_packet_t *p, dr_mqttc_packet_t *q)
{
    size_t len, used = 0;
    const char *why = NULL;
    uint8_t *buf = encode(p, &len);
    CHECK_AT(file, line, len > 0);
    int rc = dr_mqttc_decode(buf, len, 0, q, &used, &why);
    if (!CHECK_EQ_INT_AT(file, line, rc, DR_MQTTC_PACKET))
        fprintf(stderr, "    reason: %s\n", why ? why : "(none)");
    CHECK_EQ_INT_AT(file, line, used, len);
    CHECK_EQ_INT_AT(file, line, q->type, p->type);
    /* Every prefix is "need more", never an error or a packet. */
    for (size_t k = 0; k < len; k++) {
        dr_mqttc_packet_t r;
        if (dr_mqttc_decode(buf, k, 0, &r, &used, &why) != DR_MQTTC_NEED_MORE) {
            CHECK_AT(file, line, !"a prefix did not answer NEED_MORE");
            break;
        }
    }
    return buf;
}
#define ROUND_TRIP(p, q) round_trip_at(__FILE__, __LINE__, (p), (q))

static void expect_bytes_at(const char *file, int line, const dr_mqttc_packet_t *p, const uint8_t *want,
                            size_t n)
{
    size_t len;
    uint8_t *buf = encode(p, &len);
    int ok = CHECK_EQ_INT_AT(file, line, len, n) && CHECK_AT(file, line, memcmp(buf, want, n) == 0);
    if (!ok) {
        fprintf(stderr, "    got:");
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", buf[i]);
        fprintf(stderr, "\n");
    }
    free(buf);
}
#define EXPECT_BYTES(p, lit) expect_bytes_at(__FILE__, __LINE__, (p), BYTES(lit))

/* Expects the bytes to be refused with a reason containing `part`. */
static void reject_at(const char *file, int line, const uint8_t *buf, size_t len, size_t max,
                      const char *part)
{
    dr_mqttc_packet_t p;
    size_t used;
    const char *why = NULL;
    int rc = dr_mqttc_decode(buf, len, max, &p, &used, &why);
    if (!CHECK_EQ_INT_AT(file, line, rc, DR_EINVAL))
        return;
    if (!CHECK_AT(file, line, why != NULL && strstr(why, part) != NULL))
        fprintf(stderr, "    reason: \"%s\", expected to contain \"%s\"\n", why ? why : "(null)", part);
}
#define REJECT(lit, part) reject_at(__FILE__, __LINE__, BYTES(lit), 0, (part))
#define REJECT_MAX(lit, max, part) reject_at(__FILE__, __LINE__, BYTES(lit), (max), (part))

/* ---- encodings -------------------------------------------------------------------------------- */

static void test_known_bytes(void)
{
    dr_mqttc_packet_t p = {
        .type = DR_MQTTC_CONNECT, .clean_session = 1, .keepalive = 60, .client_id = S("c1")};
    EXPECT_BYTES(&p, "\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02"
                     "c1");

    p = (dr_mqttc_packet_t){.type = DR_MQTTC_CONNECT,
                            .keepalive = 10,
                            .client_id = S("id"),
                            .username = S("u"),
                            .password = S("pw")};
    EXPECT_BYTES(&p, "\x10\x15\x00\x04MQTT\x04\xc0\x00\x0a\x00\x02id\x00\x01u\x00\x02pw");

    p = (dr_mqttc_packet_t){
        .type = DR_MQTTC_PUBLISH, .qos = 1, .id = 0x1234, .topic = S("a/b"), .payload = S("hi")};
    EXPECT_BYTES(&p, "\x32\x09\x00\x03"
                     "a/b\x12\x34hi");

    p = (dr_mqttc_packet_t){
        .type = DR_MQTTC_PUBLISH, .qos = 1, .dup = 1, .retain = 1, .id = 1, .topic = S("t")};
    EXPECT_BYTES(&p, "\x3b\x05\x00\x01t\x00\x01");

    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBACK, .id = 7};
    EXPECT_BYTES(&p, "\x40\x02\x00\x07");
    p.type = DR_MQTTC_PUBREL;
    EXPECT_BYTES(&p, "\x62\x02\x00\x07");

    dr_mqttc_filter_t f[] = {{S("a/+"), 1, 0}, {S("#"), 0, 0}};
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_SUBSCRIBE, .id = 2, .filters = f, .nfilters = 2};
    EXPECT_BYTES(&p, "\x82\x0c\x00\x02\x00\x03"
                     "a/+\x01\x00\x01#\x00");
    p.type = DR_MQTTC_UNSUBSCRIBE;
    EXPECT_BYTES(&p, "\xa2\x0a\x00\x02\x00\x03"
                     "a/+\x00\x01#");

    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PINGREQ};
    EXPECT_BYTES(&p, "\xc0\x00");
    p.type = DR_MQTTC_DISCONNECT;
    EXPECT_BYTES(&p, "\xe0\x00");
}

static void test_encode_refuses(void)
{
    char big[65536];
    memset(big, 'a', sizeof(big));
    dr_mqttc_packet_t p = {.type = DR_MQTTC_PUBLISH, .topic = {big, sizeof(big)}};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* topic longer than 65535 */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBLISH, .qos = 1, .topic = S("t")};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* QoS 1 without packet id */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBLISH, .qos = 3, .id = 1, .topic = S("t")};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBLISH, .dup = 1, .topic = S("t")};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* DUP on QoS 0 */
    p = (dr_mqttc_packet_t){
        .type = DR_MQTTC_PUBLISH, .topic = S("t"), .payload = {big, DR_MQTTC_MAX_REMAINING}};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* beyond the remaining-length limit (never read) */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_SUBSCRIBE, .id = 1};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* no filters */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBACK};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* id 0 */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_CONNECT, .client_id = S("c"), .password = S("p")};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0); /* password without user name */
    p = (dr_mqttc_packet_t){.type = 15};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);

    /* Too small a buffer: the size is returned, nothing is written. */
    uint8_t out[4] = {0xee, 0xee, 0xee, 0xee};
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBACK, .id = 9};
    CHECK_EQ_INT(dr_mqttc_encode(&p, out, 3), 4);
    CHECK_EQ_INT(out[0], 0xee);
}

/* ---- round trips ------------------------------------------------------------------------------ */

static void test_round_trip_connect(void)
{
    dr_mqttc_packet_t p = {.type = DR_MQTTC_CONNECT,
                           .clean_session = 0,
                           .keepalive = 65535,
                           .client_id = S("drover-\xc3\xa9"),
                           .will_topic = S("w/t"),
                           .will_payload = S("\x00gone"),
                           .will_qos = 1,
                           .will_retain = 1,
                           .username = S("user"),
                           .password = S("\x00\xffpw")};
    dr_mqttc_packet_t q;
    uint8_t *buf = ROUND_TRIP(&p, &q);
    CHECK_EQ_INT(q.clean_session, 0);
    CHECK_EQ_INT(q.keepalive, 65535);
    CHECK(str_eq(q.client_id, p.client_id));
    CHECK(str_eq(q.will_topic, p.will_topic));
    CHECK(str_eq(q.will_payload, p.will_payload));
    CHECK_EQ_INT(q.will_qos, 1);
    CHECK_EQ_INT(q.will_retain, 1);
    CHECK(str_eq(q.username, p.username));
    CHECK(str_eq(q.password, p.password));
    free(buf);

    p = (dr_mqttc_packet_t){.type = DR_MQTTC_CONNECT, .clean_session = 1, .client_id = S("")};
    buf = ROUND_TRIP(&p, &q);
    CHECK_EQ_INT(q.clean_session, 1);
    CHECK(q.client_id.ptr != NULL && q.client_id.len == 0);
    CHECK(q.will_topic.ptr == NULL && q.username.ptr == NULL && q.password.ptr == NULL);
    free(buf);
}

static void test_round_trip_simple(void)
{
    dr_mqttc_packet_t q;
    for (int rc = 0; rc <= 5; rc++) {
        dr_mqttc_packet_t p = {.type = DR_MQTTC_CONNACK, .session_present = rc == 0, .return_code = rc};
        uint8_t *buf = ROUND_TRIP(&p, &q);
        CHECK_EQ_INT(q.return_code, rc);
        CHECK_EQ_INT(q.session_present, rc == 0);
        free(buf);
    }
    int with_id[] = {DR_MQTTC_PUBACK, DR_MQTTC_PUBREC, DR_MQTTC_PUBREL, DR_MQTTC_PUBCOMP, DR_MQTTC_UNSUBACK};
    for (size_t i = 0; i < sizeof(with_id) / sizeof(with_id[0]); i++) {
        dr_mqttc_packet_t p = {.type = with_id[i], .id = 65535};
        uint8_t *buf = ROUND_TRIP(&p, &q);
        CHECK_EQ_INT(q.id, 65535);
        free(buf);
    }
    int bare[] = {DR_MQTTC_PINGREQ, DR_MQTTC_PINGRESP, DR_MQTTC_DISCONNECT};
    for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
        dr_mqttc_packet_t p = {.type = bare[i]};
        free(ROUND_TRIP(&p, &q));
    }
    dr_mqttc_packet_t p = {.type = DR_MQTTC_SUBACK, .id = 3, .list = S("\x00\x01\x02\x80")};
    uint8_t *buf = ROUND_TRIP(&p, &q);
    CHECK_EQ_INT(q.id, 3);
    CHECK(str_eq(q.list, p.list));
    free(buf);
}

static void test_round_trip_publish(void)
{
    dr_mqttc_packet_t q;
    for (int qos = 0; qos <= 2; qos++) {
        for (int flags = 0; flags < 4; flags++) {
            int dup = qos > 0 && (flags & 1), retain = (flags >> 1) & 1;
            dr_mqttc_packet_t p = {.type = DR_MQTTC_PUBLISH,
                                   .qos = qos,
                                   .dup = dup,
                                   .retain = retain,
                                   .id = qos ? 42 : 0,
                                   .topic = S("producer/request/\xe2\x82\xac"),
                                   .payload = S("{\"a\":1}\x00\xff")};
            uint8_t *buf = ROUND_TRIP(&p, &q);
            CHECK_EQ_INT(q.qos, qos);
            CHECK_EQ_INT(q.dup, dup);
            CHECK_EQ_INT(q.retain, retain);
            CHECK_EQ_INT(q.id, qos ? 42 : 0);
            CHECK(str_eq(q.topic, p.topic));
            CHECK(str_eq(q.payload, p.payload));
            free(buf);
        }
    }
    /* Empty payload. */
    dr_mqttc_packet_t p = {.type = DR_MQTTC_PUBLISH, .topic = S("t")};
    uint8_t *buf = ROUND_TRIP(&p, &q);
    CHECK_EQ_INT(q.payload.len, 0);
    free(buf);
}

/* Remaining lengths at every varint boundary: 1, 2, 3 and 4 length bytes. */
static void test_varint_boundaries(void)
{
    static const size_t rems[] = {5, 127, 128, 16383, 16384, 2097151, 2097152};
    static const size_t hdrs[] = {2, 2, 3, 3, 4, 4, 5};
    for (size_t i = 0; i < sizeof(rems) / sizeof(rems[0]); i++) {
        size_t plen = rems[i] - 5; /* topic "t" (3 bytes) + id (2 bytes) + payload */
        char *payload = malloc(plen ? plen : 1);
        memset(payload, 'x', plen);
        dr_mqttc_packet_t p = {
            .type = DR_MQTTC_PUBLISH, .qos = 1, .id = 1, .topic = S("t"), .payload = {payload, plen}};
        size_t len;
        uint8_t *buf = encode(&p, &len);
        CHECK_EQ_INT(len, hdrs[i] + rems[i]);
        dr_mqttc_packet_t q;
        size_t used;
        const char *why;
        CHECK_EQ_INT(dr_mqttc_decode(buf, len, 0, &q, &used, &why), DR_MQTTC_PACKET);
        CHECK_EQ_INT(used, len);
        CHECK_EQ_INT(q.payload.len, plen);
        /* max_packet is a limit on the whole frame: exactly len passes, len - 1 does not. */
        CHECK_EQ_INT(dr_mqttc_decode(buf, len, len, &q, &used, &why), DR_MQTTC_PACKET);
        CHECK_EQ_INT(dr_mqttc_decode(buf, len, len - 1, &q, &used, &why), DR_EINVAL);
        free(buf);
        free(payload);
    }
}

static void test_round_trip_subscribe(void)
{
    dr_mqttc_filter_t f[] = {{S("$share/g/producer/request/#"), 1, 0}, {S("+/+/x"), 0, 0}, {S("a"), 2, 0}};
    dr_mqttc_packet_t p = {.type = DR_MQTTC_SUBSCRIBE, .id = 10, .filters = f, .nfilters = 3};
    dr_mqttc_packet_t q;
    uint8_t *buf = ROUND_TRIP(&p, &q);
    CHECK_EQ_INT(q.id, 10);
    CHECK_EQ_INT(q.nfilters, 3);
    size_t pos = 0, n = 0;
    dr_mqttc_filter_t g;
    while (dr_mqttc_filter_next(&q, &pos, &g)) {
        if (n < 3) {
            CHECK(str_eq(g.filter, f[n].filter));
            CHECK_EQ_INT(g.qos, f[n].qos);
        }
        n++;
    }
    CHECK_EQ_INT(n, 3);
    free(buf);

    p.type = DR_MQTTC_UNSUBSCRIBE;
    buf = ROUND_TRIP(&p, &q);
    pos = n = 0;
    while (dr_mqttc_filter_next(&q, &pos, &g)) {
        if (n < 3)
            CHECK(str_eq(g.filter, f[n].filter));
        n++;
    }
    CHECK_EQ_INT(n, 3);
    free(buf);
}

/* ---- malformations ---------------------------------------------------------------------------- */

static void test_reject_framing(void)
{
    REJECT("\x30\xff\xff\xff\xff\x01", "four bytes"); /* 5-byte remaining length */
    REJECT("\x30\x80\x80\x80\x80", "four bytes");     /* refused as soon as the 5th byte shows */
    REJECT("\x00\x00", "reserved packet type");
    REJECT("\xf0\x00", "reserved packet type");
    REJECT("\x41\x02\x00\x01", "reserved flag"); /* PUBACK with a flag bit */
    REJECT("\x60\x02\x00\x01", "reserved flag"); /* PUBREL must carry 0010 */
    REJECT("\x80\x06\x00\x01\x00\x01"
           "a\x00",
           "reserved flag"); /* SUBSCRIBE must carry 0010 */
    REJECT("\xc1\x00", "reserved flag");
    REJECT("\x36\x05\x00\x01t\x00\x01", "QoS 3");
    REJECT("\x38\x03\x00\x01t", "DUP"); /* DUP with QoS 0 */
    REJECT("\x40\x03\x00\x01\x00", "must be 2");
    REJECT("\xd0\x01\x00", "must be 0");
    REJECT("\x20\x03\x00\x00\x00", "must be 2");
    /* Oversized: refused from the fixed header alone, the body never arrives. */
    REJECT_MAX("\x30\x80\x80\x80\x01", 1024 * 1024, "maximum packet size");
    REJECT_MAX("\x30\x0f", 16, "maximum packet size"); /* 2 + 15 = 17 bytes > 16 */
    REJECT_MAX("\x30\x0f", 1, "maximum packet size");  /* a limit smaller than the header itself */
}

static void test_reject_publish(void)
{
    REJECT("\x32\x05\x00\x01t\x00\x00", "packet identifier 0");
    REJECT("\x32\x03\x00\x01t", "too short"); /* too short for a topic and an id */
    REJECT("\x32\x04\x00\x01t\x00", "identifier runs past");
    REJECT("\x30\x03\x00\x05t", "runs past");        /* topic length beyond the frame */
    REJECT("\x30\x02\x00\x00", "topic");             /* empty topic */
    REJECT("\x30\x04\x00\x02\xc3\x28", "UTF-8");     /* invalid UTF-8 */
    REJECT("\x30\x04\x00\x02\xc2\x85", "UTF-8");     /* U+0085 (C1 control) */
    REJECT("\x30\x05\x00\x03\xef\xbf\xbe", "UTF-8"); /* U+FFFE (noncharacter) */
    REJECT("\x30\x03\x00\x01\x00", "UTF-8");         /* U+0000 */
    REJECT("\x30\x05\x00\x03"
           "a/+",
           "wildcard");                              /* wildcard in a topic name */
    REJECT("\x30\x05\x00\x03\xed\xa0\x80", "UTF-8"); /* a surrogate */
}

static void test_reject_others(void)
{
    REJECT("\x20\x02\x02\x00", "CONNACK reserved flag");
    REJECT("\x20\x02\x00\x06", "return code reserved");
    REJECT("\x20\x02\x01\x05", "session present on a refused");
    REJECT("\x40\x02\x00\x00", "packet identifier 0");
    REJECT("\x90\x03\x00\x01\x03", "SUBACK return code reserved");
    REJECT("\x90\x02\x00\x01", "SUBACK without");
    REJECT("\x82\x06\x00\x01\x00\x01"
           "a\x03",
           "QoS invalid");
    REJECT("\x82\x06\x00\x01\x00\x01"
           "a\x41",
           "QoS invalid");
    REJECT("\x82\x07\x00\x01\x00\x02"
           "a#\x00",
           "invalid topic filter"); /* '#' not a whole level */
    REJECT("\x82\x08\x00\x01\x00\x03"
           "#/a\x00",
           "invalid topic filter");
    REJECT("\x82\x08\x00\x01\x00\x03"
           "a+b\x00",
           "invalid topic filter");
    REJECT("\x82\x06\x00\x01\x00\x05"
           "a\x00",
           "runs past");
    REJECT("\x82\x05\x00\x01\x00\x01"
           "a",
           "requested QoS missing");
    REJECT("\xa2\x05\x00\x01\x00\x02"
           "a",
           "runs past");
    REJECT("\x10\x0c\x00\x04MQTT\x04\x01\x00\x00\x00\x00", "reserved flag");
    REJECT("\x10\x0c\x00\x04MQTT\x03\x02\x00\x00\x00\x00", "level");
    REJECT("\x10\x0c\x00\x04MQTX\x04\x02\x00\x00\x00\x00", "protocol name");
    REJECT("\x10\x0c\x00\x04MQTT\x04\x42\x00\x00\x00\x00", "password without");
    REJECT("\x10\x0c\x00\x04MQTT\x04\x18\x00\x00\x00\x00", "will QoS 3");
    REJECT("\x10\x0c\x00\x04MQTT\x04\x08\x00\x00\x00\x00", "without a will");
    REJECT("\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x00\x00", "left over");
    REJECT("\x10\x0c\x00\x04MQTT\x04\x82\x00\x00\x00\x00", "user name runs past");
}

/* ---- incremental decoding --------------------------------------------------------------------- */

static void test_incremental(void)
{
    /* A stream of several packets, fed one byte at a time into a growing buffer. */
    uint8_t stream[512];
    size_t slen = 0;
    dr_mqttc_packet_t pk[] = {
        {.type = DR_MQTTC_CONNACK, .session_present = 1},
        {.type = DR_MQTTC_SUBACK, .id = 1, .list = S("\x01")},
        {.type = DR_MQTTC_PUBLISH, .qos = 1, .id = 5, .topic = S("a/b"), .payload = S("one")},
        {.type = DR_MQTTC_PUBLISH, .topic = S("c"), .payload = S("")},
        {.type = DR_MQTTC_PINGRESP},
        {.type = DR_MQTTC_PUBACK, .id = 77},
    };
    size_t npk = sizeof(pk) / sizeof(pk[0]);
    for (size_t i = 0; i < npk; i++)
        slen += dr_mqttc_encode(&pk[i], stream + slen, sizeof(stream) - slen);
    CHECK(slen < sizeof(stream));

    uint8_t buf[512];
    size_t blen = 0, got = 0;
    for (size_t i = 0; i < slen; i++) {
        buf[blen++] = stream[i];
        for (;;) {
            dr_mqttc_packet_t q;
            size_t used;
            const char *why;
            int rc = dr_mqttc_decode(buf, blen, 64, &q, &used, &why);
            if (rc == DR_MQTTC_NEED_MORE)
                break;
            if (!CHECK_EQ_INT(rc, DR_MQTTC_PACKET))
                return;
            if (got < npk) {
                CHECK_EQ_INT(q.type, pk[got].type);
                CHECK_EQ_INT(q.id, pk[got].id);
                if (q.type == DR_MQTTC_PUBLISH) {
                    CHECK(str_eq(q.topic, pk[got].topic));
                    CHECK(str_eq(q.payload, pk[got].payload));
                }
            }
            got++;
            memmove(buf, buf + used, blen - used);
            blen -= used;
        }
    }
    CHECK_EQ_INT(got, npk);
    CHECK_EQ_INT(blen, 0);

    /* An error shows as soon as the offending byte arrives, not only when the frame is complete. */
    dr_mqttc_packet_t q;
    size_t used;
    const char *why;
    CHECK_EQ_INT(dr_mqttc_decode(BYTES("\x36"), 0, &q, &used, &why), DR_EINVAL);
    CHECK_EQ_INT(dr_mqttc_decode(BYTES("\x30\x80\x80\x80"), 0, &q, &used, &why), DR_MQTTC_NEED_MORE);
    CHECK_EQ_INT(dr_mqttc_decode(BYTES("\x40\x03"), 0, &q, &used, &why), DR_EINVAL);
    CHECK_EQ_INT(dr_mqttc_decode(NULL, 0, 0, &q, &used, &why), DR_MQTTC_NEED_MORE);
}

/* ---- PUBACK ordering -------------------------------------------------------------------------- */

/* Pops every released id into out; returns how many. */
static size_t pop_all(dr_mqttc_ackq_t *q, uint16_t *out, size_t max)
{
    size_t n = 0;
    uint16_t id;
    while (n < max && dr_mqttc_ackq_pop(q, &id))
        out[n++] = id;
    return n;
}

static void test_ackq_order(void)
{
    dr_mqttc_ackq_t q;
    dr_mqttc_ackq_init(&q);
    uint64_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = dr_mqttc_ackq_push(&q, (uint16_t)(100 + i));
    CHECK(t[0] != 0);
    for (int i = 1; i < 5; i++)
        CHECK(t[i] > t[i - 1]);
    CHECK_EQ_INT(dr_mqttc_ackq_unacked(&q), 5);

    uint16_t out[8];
    /* Acks for later messages release nothing while the first is unacked. */
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[2]), 1);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[4]), 1);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[4]), 0); /* repeated */
    CHECK_EQ_INT(pop_all(&q, out, 8), 0);
    CHECK_EQ_INT(dr_mqttc_ackq_unacked(&q), 3);
    CHECK_EQ_INT(dr_mqttc_ackq_held(&q), 5);

    /* Filling the first gap releases the first three in order. */
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[0]), 1);
    CHECK_EQ_INT(pop_all(&q, out, 8), 1);
    CHECK_EQ_INT(out[0], 100);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[1]), 1);
    if (CHECK_EQ_INT(pop_all(&q, out, 8), 2)) {
        CHECK_EQ_INT(out[0], 101);
        CHECK_EQ_INT(out[1], 102);
    }
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[0]), 0); /* already released */
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[3]), 1);
    if (CHECK_EQ_INT(pop_all(&q, out, 8), 2)) {
        CHECK_EQ_INT(out[0], 103);
        CHECK_EQ_INT(out[1], 104);
    }
    CHECK_EQ_INT(dr_mqttc_ackq_held(&q), 0);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, 0), 0);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, t[4] + 1), 0); /* never handed out */
    dr_mqttc_ackq_dispose(&q);
}

static void test_ackq_reset_and_growth(void)
{
    dr_mqttc_ackq_t q;
    dr_mqttc_ackq_init(&q);
    uint64_t old = dr_mqttc_ackq_push(&q, 1);
    dr_mqttc_ackq_push(&q, 2);
    dr_mqttc_ackq_reset(&q); /* a new connection */
    CHECK_EQ_INT(dr_mqttc_ackq_held(&q), 0);
    uint64_t fresh = dr_mqttc_ackq_push(&q, 1); /* the broker may reuse the packet id */
    CHECK(fresh > old + 1);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, old), 0); /* a token of the old connection is ignored */
    uint16_t id;
    CHECK_EQ_INT(dr_mqttc_ackq_pop(&q, &id), 0);
    CHECK_EQ_INT(dr_mqttc_ackq_ack(&q, fresh), 1);
    CHECK_EQ_INT(dr_mqttc_ackq_pop(&q, &id), 1);
    CHECK_EQ_INT(id, 1);

    /* Wrap-around and growth: keep 1000 entries, ack in reverse, everything comes out in order. */
    uint64_t tok[1000];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++)
            tok[i] = dr_mqttc_ackq_push(&q, (uint16_t)(i + 1));
        for (int i = 999; i >= 1; i--)
            dr_mqttc_ackq_ack(&q, tok[i]);
        CHECK_EQ_INT(dr_mqttc_ackq_pop(&q, &id), 0);
        dr_mqttc_ackq_ack(&q, tok[0]);
        int ok = 1;
        for (int i = 0; i < 1000; i++)
            ok &= dr_mqttc_ackq_pop(&q, &id) == 1 && id == i + 1;
        CHECK(ok);
    }
    /* The queue refuses more entries than a broker can have in flight. */
    for (int i = 0; i < DR_MQTTC_ACKQ_MAX; i++)
        dr_mqttc_ackq_push(&q, 1);
    CHECK_EQ_INT(dr_mqttc_ackq_push(&q, 1), 0);
    dr_mqttc_ackq_dispose(&q);
}

/* ---- MQTT 5 ----------------------------------------------------------------------------------- */

/* Decodes buf as v5 and checks it is one whole packet. */
static int decode5_at(const char *file, int line, const uint8_t *buf, size_t len, dr_mqttc_packet_t *q)
{
    size_t used = 0;
    const char *why = NULL;
    int rc = dr_mqttc_decode_v(buf, len, 0, DR_MQTTC_V5, q, &used, &why);
    if (!CHECK_EQ_INT_AT(file, line, rc, DR_MQTTC_PACKET))
        fprintf(stderr, "    reason: %s\n", why ? why : "(none)");
    return CHECK_EQ_INT_AT(file, line, used, len);
}
#define DECODE5(lit, q) decode5_at(__FILE__, __LINE__, BYTES(lit), (q))

static void reject5_at(const char *file, int line, const uint8_t *buf, size_t len, const char *part)
{
    dr_mqttc_packet_t p;
    size_t used;
    const char *why = NULL;
    int rc = dr_mqttc_decode_v(buf, len, 0, DR_MQTTC_V5, &p, &used, &why);
    if (!CHECK_EQ_INT_AT(file, line, rc, DR_EINVAL))
        return;
    if (!CHECK_AT(file, line, why != NULL && strstr(why, part) != NULL))
        fprintf(stderr, "    reason: \"%s\", expected to contain \"%s\"\n", why ? why : "(null)", part);
}
#define REJECT5(lit, part) reject5_at(__FILE__, __LINE__, BYTES(lit), (part))

static void test_v5_known_bytes(void)
{
    /* CONNECT level 5, clean start 0, session expiry 0xffffffff, maximum packet size 1 MiB. */
    dr_mqttc_packet_t p = {
        .type = DR_MQTTC_CONNECT, .version = DR_MQTTC_V5, .keepalive = 5, .client_id = S("d")};
    p.props.has_session_expiry = 1;
    p.props.session_expiry = 0xffffffffu;
    p.props.maximum_packet_size = 1048576;
    EXPECT_BYTES(&p, "\x10\x18\x00\x04MQTT\x05\x00\x00\x05\x0a\x11\xff\xff\xff\xff\x27\x00\x10\x00\x00"
                     "\x00\x01"
                     "d");

    /* PUBLISH QoS 1 with a 10 s message expiry. */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBLISH,
                            .version = DR_MQTTC_V5,
                            .qos = 1,
                            .id = 3,
                            .topic = S("t"),
                            .payload = S("x")};
    p.props.has_message_expiry = 1;
    p.props.message_expiry = 10;
    EXPECT_BYTES(&p, "\x32\x0c\x00\x01t\x00\x03\x05\x02\x00\x00\x00\x0ax");
    p.props.has_message_expiry = 0; /* no properties: a zero property length */
    EXPECT_BYTES(&p, "\x32\x07\x00\x01t\x00\x03\x00x");

    /* PUBACK: success without properties is the 3.1.1 form; a reason code adds one byte. */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PUBACK, .version = DR_MQTTC_V5, .id = 7};
    EXPECT_BYTES(&p, "\x40\x02\x00\x07");
    p.return_code = 0x87;
    EXPECT_BYTES(&p, "\x40\x03\x00\x07\x87");
    p.props.reason_string = S("no");
    EXPECT_BYTES(&p, "\x40\x09\x00\x07\x87\x05\x1f\x00\x02no");

    p = (dr_mqttc_packet_t){.type = DR_MQTTC_DISCONNECT, .version = DR_MQTTC_V5};
    EXPECT_BYTES(&p, "\xe0\x00");
    p.return_code = 0x8b;
    EXPECT_BYTES(&p, "\xe0\x01\x8b");

    dr_mqttc_filter_t f[] = {{S("a"), 1, 0x04}}; /* no local */
    p = (dr_mqttc_packet_t){
        .type = DR_MQTTC_SUBSCRIBE, .version = DR_MQTTC_V5, .id = 2, .filters = f, .nfilters = 1};
    EXPECT_BYTES(&p, "\x82\x07\x00\x02\x00\x00\x01"
                     "a\x05");

    /* Encoder refusals: options beyond bits 2..5, unknown version, receive maximum > 65535. */
    f[0].options = 0x40;
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_PINGREQ, .version = 3};
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_CONNECT, .version = DR_MQTTC_V5, .client_id = S("c")};
    p.props.receive_maximum = 70000;
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);
}

static void test_v5_decode(void)
{
    dr_mqttc_packet_t q;
    /* CONNACK with receive maximum 20, server keep alive 5, maximum packet size 4096, reason string,
     * a user property and properties we do not act on (retain available, shared subscription). */
    if (DECODE5("\x20\x1e\x01\x00\x1b\x21\x00\x14\x13\x00\x05\x27\x00\x00\x10\x00\x1f\x00\x02ok"
                "\x26\x00\x01k\x00\x01v\x25\x01\x2a\x00",
                &q)) {
        CHECK_EQ_INT(q.version, DR_MQTTC_V5);
        CHECK_EQ_INT(q.session_present, 1);
        CHECK_EQ_INT(q.return_code, 0);
        CHECK_EQ_INT(q.props.receive_maximum, 20);
        CHECK(q.props.has_server_keepalive && q.props.server_keepalive == 5);
        CHECK_EQ_INT(q.props.maximum_packet_size, 4096);
        CHECK(str_eq(q.props.reason_string, S("ok")));
        CHECK_EQ_INT(q.props.raw.len, 0x1b);
    }
    /* A refusal with a reason code; and a 3.1.1 CONNACK on a v5 connection (an old broker). */
    if (DECODE5("\x20\x03\x00\x87\x00", &q))
        CHECK(q.return_code == 0x87 && q.version == DR_MQTTC_V5);
    if (DECODE5("\x20\x02\x00\x01", &q))
        CHECK(q.return_code == 1 && q.version == DR_MQTTC_V311);
    CHECK_EQ_STR(dr_mqttc_connack_reason(0x84), "connection refused: unsupported protocol version");
    CHECK_EQ_STR(dr_mqttc_reason_name(0x97), "quota exceeded");
    CHECK_EQ_STR(dr_mqttc_reason_name(0x7f), "unknown reason code");

    /* PUBLISH with an expiry, a subscription identifier given twice (allowed) and correlation data. */
    if (DECODE5("\x30\x15\x00\x01t\x0e\x02\x00\x00\x01\x00\x0b\x01\x0b\x7f\x09\x00\x02\x00\xffpay", &q)) {
        CHECK(q.props.has_message_expiry && q.props.message_expiry == 256);
        CHECK(str_eq(q.payload, S("pay")));
    }
    /* A subscription identifier at the largest variable byte integer (four bytes), and one byte more. */
    if (DECODE5("\x30\x0a\x00\x01t\x05\x0b\xff\xff\xff\x7fx", &q))
        CHECK(str_eq(q.payload, S("x")));
    REJECT5("\x30\x0b\x00\x01t\x06\x0b\xff\xff\xff\xff\x01x", "malformed variable byte integer");
    /* PUBACK forms: 2 bytes (success), 3 (reason), 4+ (properties). */
    if (DECODE5("\x40\x02\x00\x05", &q))
        CHECK(q.return_code == 0 && q.props.raw.ptr == NULL);
    if (DECODE5("\x40\x03\x00\x05\x10", &q))
        CHECK_EQ_INT(q.return_code, 0x10);
    if (DECODE5("\x40\x04\x00\x05\x97\x00", &q))
        CHECK(q.return_code == 0x97 && q.props.raw.ptr != NULL && q.props.raw.len == 0);
    if (DECODE5("\x90\x05\x00\x05\x00\x01\x80", &q))
        CHECK(q.list.len == 2 && (uint8_t)q.list.ptr[1] == 0x80);
    if (DECODE5("\xb0\x04\x00\x05\x00\x11", &q))
        CHECK(q.list.len == 1 && (uint8_t)q.list.ptr[0] == 0x11);
    if (DECODE5("\xe0\x00", &q))
        CHECK_EQ_INT(q.return_code, 0);
    if (DECODE5("\xe0\x07\x8b\x05\x1f\x00\x02up", &q))
        CHECK(q.return_code == 0x8b && str_eq(q.props.reason_string, S("up")));

    /* Property lengths at the variable byte integer limits: 127 (one byte) and 128 (two bytes). */
    uint8_t buf[400];
    size_t n = 0, used, len;
    const char *why;
    for (int big = 0; big <= 1; big++) {
        n = 3; /* fixed header: first byte and a two-byte remaining length, filled below */
        memcpy(buf + n, "\x00\x01t", 3);
        n += 3;
        if (big) {
            memcpy(buf + n, "\x80\x01", 2);
            n += 2;
        } else {
            buf[n++] = 0x7f;
        }
        for (int i = 0; i < 25; i++) { /* 25 empty user properties, 5 bytes each */
            memcpy(buf + n, "\x26\x00\x00\x00\x00", 5);
            n += 5;
        }
        memcpy(buf + n, big ? "\x03\x00\x00" : "\x01\x00", big ? 3 : 2); /* to 128 or 127 bytes */
        n += big ? 3 : 2;
        buf[n++] = 'z'; /* the payload */
        buf[0] = 0x30;
        buf[1] = (uint8_t)(0x80 | ((n - 3) & 0x7f));
        buf[2] = (uint8_t)((n - 3) >> 7);
        CHECK_EQ_INT(dr_mqttc_decode_v(buf, n, 0, DR_MQTTC_V5, &q, &used, &why), DR_MQTTC_PACKET);
        CHECK_EQ_INT(q.props.raw.len, big ? 128 : 127);
        CHECK(str_eq(q.payload, S("z")));
        /* Re-encoding keeps the raw properties byte for byte (the remaining length is minimal here:
         * 2 bytes for >= 128). */
        uint8_t *out = encode(&q, &len);
        CHECK(len == n && memcmp(out, buf, n) == 0);
        free(out);
    }
    /* A 3.1.1 decode of the same bytes reads the properties as payload. */
    CHECK_EQ_INT(dr_mqttc_decode(buf, n, 0, &q, &used, &why), DR_MQTTC_PACKET);
    CHECK_EQ_INT(q.payload.len, n - 3 - 3); /* the 3.1.1 view: properties are payload */
}

static void test_v5_round_trips(void)
{
    dr_mqttc_packet_t p = {.type = DR_MQTTC_CONNECT,
                           .version = DR_MQTTC_V5,
                           .clean_session = 1,
                           .keepalive = 30,
                           .client_id = S("dev"),
                           .will_topic = S("w"),
                           .will_payload = S("bye"),
                           .will_qos = 1,
                           .will_props = S("\x02\x00\x00\x00\x05"),
                           .username = S("u"),
                           .password = S("p")};
    p.props.receive_maximum = 100;
    dr_mqttc_packet_t q;
    uint8_t *buf = ROUND_TRIP(&p, &q);
    /* ROUND_TRIP decodes as 3.1.1: a CONNECT is decoded by its own level. */
    CHECK_EQ_INT(q.version, DR_MQTTC_V5);
    CHECK_EQ_INT(q.props.receive_maximum, 100);
    CHECK(str_eq(q.will_props, S("\x02\x00\x00\x00\x05")) && str_eq(q.will_topic, S("w")));
    CHECK(str_eq(q.password, S("p")));
    free(buf);

    /* A password without a user name is valid in v5 only. */
    p = (dr_mqttc_packet_t){.type = DR_MQTTC_CONNECT,
                            .version = DR_MQTTC_V5,
                            .clean_session = 1,
                            .client_id = S(""),
                            .password = S("p")};
    buf = ROUND_TRIP(&p, &q);
    CHECK(q.username.ptr == NULL && str_eq(q.password, S("p")));
    free(buf);
    p.version = DR_MQTTC_V311;
    CHECK_EQ_INT(dr_mqttc_encode(&p, NULL, 0), 0);
}

static void test_v5_reject(void)
{
    REJECT5("\x20\x02\x00\x06", "return code reserved");     /* a 3.1.1 code 6 */
    REJECT5("\x20\x03\x00\x05\x00", "return code reserved"); /* v5 codes below 0x80 other than 0 */
    REJECT5("\x20\x04\x00\x00\x01\x30", "unknown property");
    REJECT5("\x20\x04\x00\x00\x05\x11", "run past");      /* property length beyond the packet */
    REJECT5("\x20\x05\x00\x00\x02\x11\x00", "runs past"); /* u32 value cut short */
    REJECT5("\x20\x03\x00\x00\x80", "property length");   /* varint not terminated */
    REJECT5("\x20\x08\x00\x00\x80\x80\x80\x80\x01\x00", "property length"); /* five bytes */
    REJECT5("\x20\x05\x00\x00\x81\x00\x00", "property length");             /* not the shortest form */
    REJECT5("\x20\x04\x00\x00\x01\x02", "not allowed");                     /* message expiry in CONNACK */
    REJECT5("\x20\x09\x00\x00\x06\x21\x00\x01\x21\x00\x01", "more than once");
    REJECT5("\x20\x06\x00\x00\x03\x21\x00\x00", "receive maximum or topic alias 0");
    REJECT5("\x20\x05\x00\x00\x02\x24\x02", "out of range"); /* maximum QoS 2 */
    REJECT5("\x20\x08\x00\x00\x05\x27\x00\x00\x00\x00", "maximum packet size 0");
    REJECT5("\x20\x07\x00\x00\x04\x1f\x00\x01\xff", "UTF-8");
    REJECT5("\x30\x07\x00\x01t\x02\x0b\x00x", "subscription identifier 0");
    REJECT5("\x30\x08\x00\x01t\x03\x0b\x80\x00x", "malformed variable byte integer");
    REJECT5("\x30\x04\x00\x01t\x01", "run past");     /* property length 1, nothing follows */
    REJECT5("\x30\x02\x00\x01", "PUBLISH too short"); /* no property length */
    REJECT5("\x40\x03\x00\x01\x05", "reason code reserved");
    REJECT5("\x40\x03\x00\x01\xff", "reason code reserved");
    REJECT5("\x90\x04\x00\x01\x00\x03", "return code reserved");
    REJECT5("\x90\x03\x00\x01\x00", "SUBACK without return codes");
    REJECT5("\xb0\x03\x00\x01\x00", "UNSUBACK without reason codes");
    REJECT5("\xb0\x04\x00\x01\x00\x01", "return code reserved");
    REJECT5("\xe0\x01\x01", "reason code reserved");
    REJECT5("\xe0\x03\x00\x01\x02", "not allowed"); /* PUBLISH-only property in DISCONNECT */
    REJECT5("\x82\x07\x00\x01\x00\x00\x01"
            "a\x30",
            "reserved bits"); /* retain handling 3 */
    REJECT5("\x82\x07\x00\x01\x00\x00\x01"
            "a\x41",
            "reserved bits");
    REJECT5("\xf0\x00", "reserved packet type"); /* AUTH: we never start enhanced authentication */
}

int main(void)
{
    test_known_bytes();
    test_encode_refuses();
    test_round_trip_connect();
    test_round_trip_simple();
    test_round_trip_publish();
    test_varint_boundaries();
    test_round_trip_subscribe();
    test_reject_framing();
    test_reject_publish();
    test_reject_others();
    test_incremental();
    test_ackq_order();
    test_ackq_reset_and_growth();
    test_v5_known_bytes();
    test_v5_decode();
    test_v5_round_trips();
    test_v5_reject();
    return t_report("test_mqttc_packet");
}
