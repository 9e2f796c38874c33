/* libFuzzer target for the MQTT codec and the PUBACK ordering queue (common/src/mqttc_packet.c).
 *
 * The first input byte picks the mode, the protocol version (bit 0x40: MQTT 5) and a max_packet; the rest
 * is a byte stream from a "broker".
 * Decoder mode checks three oracles: (1) decoding the stream at once and in random-sized chunks (the way
 * the client receives it) gives the same packets and the same final verdict; (2) every decoded packet
 * encodes back to exactly its original bytes (modulo a non-minimal length encoding, and for MQTT 5 the
 * one form the encoder shortens: a reason code 0 without properties); (3) the re-encoded packet decodes
 * to the same fields, properties included. Queue mode drives push/ack/pop from the bytes and checks that
 * PUBACKs leave in arrival order, each once, and only when everything before was acked. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dr/err.h"
#include "dr/mqttc_packet.h"

static int same_str(dr_mqttc_str_t a, dr_mqttc_str_t b)
{
    if ((a.ptr == NULL) != (b.ptr == NULL))
        return 0;
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void check(int ok)
{
    if (!ok)
        abort();
}

static int same_props(const dr_mqttc_props_t *a, const dr_mqttc_props_t *b)
{
    return same_str(a->raw, b->raw) && a->has_message_expiry == b->has_message_expiry &&
           a->message_expiry == b->message_expiry && a->has_session_expiry == b->has_session_expiry &&
           a->session_expiry == b->session_expiry && a->receive_maximum == b->receive_maximum &&
           a->maximum_packet_size == b->maximum_packet_size &&
           a->has_server_keepalive == b->has_server_keepalive && a->server_keepalive == b->server_keepalive &&
           a->has_maximum_qos == b->has_maximum_qos && a->maximum_qos == b->maximum_qos &&
           a->topic_alias == b->topic_alias && same_str(a->reason_string, b->reason_string);
}

/* The v5 forms the encoder writes shorter than a peer may: PUBACK..PUBCOMP with a reason code byte 0 and
 * no properties (3 bytes of body instead of 2), DISCONNECT with a reason code byte 0 (1 instead of 0). */
static int shortened(const dr_mqttc_packet_t *p, size_t body)
{
    if (p->version != DR_MQTTC_V5 || p->return_code != 0 || p->props.raw.ptr != NULL)
        return 0;
    if (p->type == DR_MQTTC_DISCONNECT)
        return body == 1;
    return p->type >= DR_MQTTC_PUBACK && p->type <= DR_MQTTC_PUBCOMP && body == 3;
}

/* Oracles (2) and (3) for one decoded packet whose frame is buf[0..used). */
static void round_trip(const dr_mqttc_packet_t *p, const uint8_t *buf, size_t used, int version)
{
    dr_mqttc_filter_t *filters = NULL;
    dr_mqttc_packet_t e = *p;
    if (p->type == DR_MQTTC_SUBSCRIBE || p->type == DR_MQTTC_UNSUBSCRIBE) {
        filters = malloc(p->nfilters * sizeof(*filters));
        size_t pos = 0, n = 0;
        while (n < p->nfilters && dr_mqttc_filter_next(p, &pos, &filters[n]))
            n++;
        check(n == p->nfilters && pos == p->list.len);
        e.filters = filters;
    }
    size_t n = dr_mqttc_encode(&e, NULL, 0);
    check(n > 0);
    uint8_t *out = malloc(n);
    check(dr_mqttc_encode(&e, out, n) == n);
    /* Same body; the header may differ only by a longer (non-minimal) length encoding in the input. */
    size_t hin = 2, hout = 2;
    while (buf[hin - 1] & 0x80)
        hin++;
    while (out[hout - 1] & 0x80)
        hout++;
    check(out[0] == buf[0] && hout <= hin);
    if (shortened(p, used - hin)) {
        check(n - hout == (p->type == DR_MQTTC_DISCONNECT ? 0u : 2u));
        check(memcmp(out + hout, buf + hin, n - hout) == 0);
    } else {
        check(n - hout == used - hin);
        check(memcmp(out + hout, buf + hin, n - hout) == 0);
    }

    dr_mqttc_packet_t q;
    size_t used2;
    const char *why;
    check(dr_mqttc_decode_v(out, n, 0, version, &q, &used2, &why) == DR_MQTTC_PACKET && used2 == n);
    check(q.version == p->version && same_props(&q.props, &p->props) &&
          same_str(q.will_props, p->will_props));
    check(q.type == p->type && q.id == p->id && q.qos == p->qos && q.dup == p->dup && q.retain == p->retain);
    check(same_str(q.topic, p->topic));
    check(q.payload.len == p->payload.len);
    check(q.session_present == p->session_present && q.return_code == p->return_code);
    check(q.keepalive == p->keepalive && q.clean_session == p->clean_session && q.nfilters == p->nfilters);
    check(q.list.len == p->list.len);
    check((q.username.ptr == NULL) == (p->username.ptr == NULL) && q.username.len == p->username.len);
    check((q.password.ptr == NULL) == (p->password.ptr == NULL) && q.password.len == p->password.len);
    check((q.will_topic.ptr == NULL) == (p->will_topic.ptr == NULL) && q.will_qos == p->will_qos);
    free(out);
    free(filters);
}

typedef struct {
    int types[64];
    size_t n;
    int verdict; /* DR_MQTTC_NEED_MORE at the end, or DR_EINVAL */
} trace_t;

static void decode_whole(const uint8_t *s, size_t len, size_t max, int version, trace_t *t)
{
    size_t pos = 0;
    t->n = 0;
    for (;;) {
        dr_mqttc_packet_t p;
        size_t used = 0;
        const char *why = NULL;
        int rc = dr_mqttc_decode_v(s + pos, len - pos, max, version, &p, &used, &why);
        if (rc != DR_MQTTC_PACKET) {
            check(rc == DR_MQTTC_NEED_MORE || (rc == DR_EINVAL && why != NULL));
            t->verdict = rc;
            return;
        }
        check(used >= 2 && used <= len - pos && (max == 0 || used <= max));
        round_trip(&p, s + pos, used, version);
        if (t->n < 64)
            t->types[t->n] = p.type;
        t->n++;
        pos += used;
    }
}

/* Oracle (1): the same stream in chunks, appended to a buffer that is compacted after each packet. */
static void decode_chunked(const uint8_t *s, size_t len, size_t max, int version, uint32_t seed,
                           const trace_t *want)
{
    uint8_t *buf = malloc(len ? len : 1);
    size_t blen = 0, fed = 0, n = 0;
    int verdict = DR_MQTTC_NEED_MORE;
    while (fed < len && verdict != DR_EINVAL) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % 17;
        if (chunk > len - fed)
            chunk = len - fed;
        memcpy(buf + blen, s + fed, chunk);
        blen += chunk;
        fed += chunk;
        for (;;) {
            dr_mqttc_packet_t p;
            size_t used;
            const char *why;
            int rc = dr_mqttc_decode_v(buf, blen, max, version, &p, &used, &why);
            if (rc != DR_MQTTC_PACKET) {
                verdict = rc;
                break;
            }
            check(n >= 64 || want->types[n] == p.type);
            n++;
            memmove(buf, buf + used, blen - used);
            blen -= used;
        }
    }
    check(n == want->n && verdict == want->verdict);
    free(buf);
}

/* Queue mode: each byte is an operation against a model of what must come out. */
static void fuzz_ackq(const uint8_t *s, size_t len)
{
    dr_mqttc_ackq_t q;
    dr_mqttc_ackq_init(&q);
    uint64_t tokens[256];
    uint16_t ids[256];
    int acked[256];
    size_t pushed = 0, released = 0, base = 0; /* model: entries [released, pushed) are held */
    for (size_t i = 0; i < len && pushed < 256; i++) {
        uint8_t op = s[i];
        if (op < 0x60) { /* push */
            ids[pushed] = (uint16_t)(op * 251 + i);
            tokens[pushed] = dr_mqttc_ackq_push(&q, ids[pushed]);
            check(tokens[pushed] != 0 && (pushed == 0 || tokens[pushed] > tokens[pushed - 1]));
            acked[pushed++] = 0;
        } else if (op < 0xe0) { /* ack some held or released token */
            if (pushed == 0)
                continue;
            size_t k = (size_t)(op - 0x60) % pushed;
            int fresh = k >= released && !acked[k] && k >= base;
            check(dr_mqttc_ackq_ack(&q, tokens[k]) == fresh);
            if (fresh)
                acked[k] = 1;
        } else if (op < 0xf8) { /* pop everything ready */
            uint16_t id;
            while (dr_mqttc_ackq_pop(&q, &id)) {
                check(released < pushed && acked[released] && ids[released] == id);
                released++;
            }
            check(released == pushed || !acked[released]);
        } else { /* a new connection: everything held is forgotten */
            dr_mqttc_ackq_reset(&q);
            released = base = pushed;
        }
        size_t unacked = 0;
        for (size_t k = released; k < pushed; k++)
            unacked += !acked[k];
        check(dr_mqttc_ackq_unacked(&q) == unacked && dr_mqttc_ackq_held(&q) == pushed - released);
    }
    dr_mqttc_ackq_dispose(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 0x80) {
        fuzz_ackq(data + 1, size - 1);
        return 0;
    }
    static const size_t limits[] = {0, 16, 64, 256, 1024, 1024 * 1024};
    size_t max = limits[data[0] % 6];
    int version = (data[0] & 0x40) ? DR_MQTTC_V5 : DR_MQTTC_V311;
    trace_t whole;
    decode_whole(data + 1, size - 1, max, version, &whole);
    decode_chunked(data + 1, size - 1, max, version, data[0], &whole);
    return 0;
}
