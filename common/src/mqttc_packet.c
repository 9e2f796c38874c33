/* MQTT 3.1.1 packet encoder and decoder, and the PUBACK ordering queue (see dr/mqttc_packet.h).
 *
 * DESIGN
 * Every read from a frame goes through `rd_t`, which knows where the frame ends and fails instead of
 * reading past it, so a length field can never make us read outside the caller's buffer. Checks happen
 * in the order the bytes arrive: the first byte (reserved types and flag bits) and the remaining length
 * (at most four bytes, within max_packet, within the bounds of the packet type) are judged before the
 * body is complete, so a hostile peer cannot make us buffer a huge frame only to refuse it later.
 *
 * The encoder runs one body writer twice: once without an output buffer to size the packet, and once to
 * write it. That keeps the size computation and the bytes written from ever disagreeing.
 */
#include <string.h>

#include "dr/err.h"
#include "dr/mem.h"
#include "dr/mqttc_packet.h"
#include "dr/topic.h"

/* ---- names ------------------------------------------------------------------------------------ */

const char *dr_mqttc_type_name(int type)
{
    static const char *const names[] = {
        "reserved",  "CONNECT", "CONNACK",     "PUBLISH",  "PUBACK",  "PUBREC",   "PUBREL",     "PUBCOMP",
        "SUBSCRIBE", "SUBACK",  "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "reserved"};
    return type >= 0 && type <= 15 ? names[type] : "reserved";
}

const char *dr_mqttc_connack_reason(int return_code)
{
    switch (return_code) {
    case 0:
        return "connection accepted";
    case 1:
        return "connection refused: unacceptable protocol version";
    case 2:
        return "connection refused: identifier rejected";
    case 3:
        return "connection refused: server unavailable";
    case 4:
        return "connection refused: bad user name or password";
    case 5:
        return "connection refused: not authorised";
    }
    return "connection refused: unknown return code";
}

/* ---- bounded reader --------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *buf;
    size_t pos, end; /* next byte to read and the end of the frame */
} rd_t;

static int rd_u8(rd_t *r, unsigned *v)
{
    if (r->end - r->pos < 1)
        return -1;
    *v = r->buf[r->pos++];
    return 0;
}

static int rd_u16(rd_t *r, unsigned *v)
{
    if (r->end - r->pos < 2)
        return -1;
    *v = (unsigned)r->buf[r->pos] << 8 | r->buf[r->pos + 1];
    r->pos += 2;
    return 0;
}

/* A 16-bit length followed by that many bytes, all inside the frame. */
static int rd_str(rd_t *r, dr_mqttc_str_t *s)
{
    unsigned n;
    if (rd_u16(r, &n) != 0 || r->end - r->pos < n)
        return -1;
    s->ptr = (const char *)r->buf + r->pos;
    s->len = n;
    r->pos += n;
    return 0;
}

/* ---- validation ------------------------------------------------------------------------------- */

/* A topic filter (§4.7): valid UTF-8, not empty, '#' only as the whole last level, '+' only as a
 * whole level. */
static int check_filter(const char *s, size_t len)
{
    if (len == 0 || dr_topic_check_utf8(s, len) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '+' && s[i] != '#')
            continue;
        if (i > 0 && s[i - 1] != '/')
            return -1;
        if (s[i] == '#' && i != len - 1)
            return -1;
        if (s[i] == '+' && i != len - 1 && s[i + 1] != '/')
            return -1;
    }
    return 0;
}

/* The flags a packet type must carry, or -1 when any value is allowed (PUBLISH, checked apart). */
static int required_flags(int type)
{
    switch (type) {
    case DR_MQTTC_PUBLISH:
        return -1;
    case DR_MQTTC_PUBREL:
    case DR_MQTTC_SUBSCRIBE:
    case DR_MQTTC_UNSUBSCRIBE:
        return 2;
    default:
        return 0;
    }
}

/* Checks the remaining length against what the type allows, before the body arrives. */
static const char *check_remaining(int type, unsigned flags, size_t rem)
{
    switch (type) {
    case DR_MQTTC_CONNACK:
    case DR_MQTTC_PUBACK:
    case DR_MQTTC_PUBREC:
    case DR_MQTTC_PUBREL:
    case DR_MQTTC_PUBCOMP:
    case DR_MQTTC_UNSUBACK:
        return rem == 2 ? NULL : "remaining length must be 2 for this packet type";
    case DR_MQTTC_PINGREQ:
    case DR_MQTTC_PINGRESP:
    case DR_MQTTC_DISCONNECT:
        return rem == 0 ? NULL : "remaining length must be 0 for this packet type";
    case DR_MQTTC_SUBACK:
        return rem >= 3 ? NULL : "SUBACK without return codes";
    case DR_MQTTC_SUBSCRIBE:
        return rem >= 5 ? NULL : "SUBSCRIBE without filters";
    case DR_MQTTC_UNSUBSCRIBE:
        return rem >= 4 ? NULL : "UNSUBSCRIBE without filters";
    case DR_MQTTC_CONNECT:
        return rem >= 12 ? NULL : "CONNECT too short";
    case DR_MQTTC_PUBLISH:
        return rem >= ((flags & 6) ? 4u : 2u) ? NULL : "PUBLISH too short";
    }
    return "reserved packet type";
}

/* ---- decoder: bodies -------------------------------------------------------------------------- */

static const char *decode_publish(rd_t *r, dr_mqttc_packet_t *p)
{
    unsigned id = 0;
    p->qos = (int)(p->flags >> 1) & 3;
    p->dup = (int)(p->flags >> 3) & 1;
    p->retain = (int)p->flags & 1;
    if (rd_str(r, &p->topic) != 0)
        return "PUBLISH topic length runs past the packet";
    if (dr_topic_check_name(p->topic.ptr, p->topic.len) != 0)
        return "PUBLISH topic is empty, has a wildcard or is not valid UTF-8";
    if (p->qos > 0) {
        if (rd_u16(r, &id) != 0)
            return "PUBLISH packet identifier runs past the packet";
        if (id == 0)
            return "packet identifier 0";
    }
    p->id = (uint16_t)id;
    p->payload.ptr = (const char *)r->buf + r->pos;
    p->payload.len = r->end - r->pos;
    r->pos = r->end;
    return NULL;
}

static const char *decode_connect(rd_t *r, dr_mqttc_packet_t *p)
{
    dr_mqttc_str_t proto;
    unsigned level, fl, ka;
    if (rd_str(r, &proto) != 0 || rd_u8(r, &level) != 0 || rd_u8(r, &fl) != 0 || rd_u16(r, &ka) != 0)
        return "CONNECT variable header runs past the packet";
    if (proto.len != 4 || memcmp(proto.ptr, "MQTT", 4) != 0)
        return "CONNECT protocol name is not MQTT";
    if (level != 4)
        return "CONNECT protocol level is not 4 (MQTT 3.1.1)";
    if (fl & 1)
        return "CONNECT reserved flag set";
    int will = (fl >> 2) & 1;
    p->clean_session = (fl >> 1) & 1;
    p->will_qos = (int)(fl >> 3) & 3;
    p->will_retain = (fl >> 5) & 1;
    p->keepalive = (int)ka;
    if (p->will_qos == 3)
        return "CONNECT will QoS 3";
    if (!will && (p->will_qos != 0 || p->will_retain))
        return "CONNECT will QoS or retain set without a will";
    if ((fl & 0x40) && !(fl & 0x80))
        return "CONNECT password without a user name";
    if (rd_str(r, &p->client_id) != 0)
        return "CONNECT client identifier runs past the packet";
    if (dr_topic_check_utf8(p->client_id.ptr, p->client_id.len) != 0)
        return "CONNECT client identifier is not valid UTF-8";
    if (will) {
        if (rd_str(r, &p->will_topic) != 0 || rd_str(r, &p->will_payload) != 0)
            return "CONNECT will runs past the packet";
        if (dr_topic_check_name(p->will_topic.ptr, p->will_topic.len) != 0)
            return "CONNECT will topic is invalid";
    }
    if (fl & 0x80) {
        if (rd_str(r, &p->username) != 0)
            return "CONNECT user name runs past the packet";
        if (dr_topic_check_utf8(p->username.ptr, p->username.len) != 0)
            return "CONNECT user name is not valid UTF-8";
    }
    if ((fl & 0x40) && rd_str(r, &p->password) != 0)
        return "CONNECT password runs past the packet";
    return NULL;
}

static const char *decode_subscribe(rd_t *r, dr_mqttc_packet_t *p)
{
    int sub = p->type == DR_MQTTC_SUBSCRIBE;
    size_t start = r->pos;
    while (r->pos < r->end) {
        dr_mqttc_str_t f;
        unsigned qos;
        if (rd_str(r, &f) != 0)
            return "topic filter runs past the packet";
        if (check_filter(f.ptr, f.len) != 0)
            return "invalid topic filter";
        if (sub) {
            if (rd_u8(r, &qos) != 0)
                return "SUBSCRIBE requested QoS missing";
            if (qos > 2)
                return "SUBSCRIBE requested QoS invalid or reserved bits set";
        }
        p->nfilters++;
    }
    if (p->nfilters == 0)
        return "no topic filter";
    p->list.ptr = (const char *)r->buf + start;
    p->list.len = r->end - start;
    return NULL;
}

static const char *decode_suback(rd_t *r, dr_mqttc_packet_t *p)
{
    size_t start = r->pos;
    for (; r->pos < r->end; r->pos++) {
        uint8_t c = r->buf[r->pos];
        if (c > 2 && c != DR_MQTTC_SUBACK_FAILURE)
            return "SUBACK return code reserved";
    }
    p->list.ptr = (const char *)r->buf + start;
    p->list.len = r->end - start;
    return NULL;
}

static const char *decode_body(rd_t *r, dr_mqttc_packet_t *p)
{
    unsigned v = 0, rc = 0;
    switch (p->type) {
    case DR_MQTTC_PUBLISH:
        return decode_publish(r, p);
    case DR_MQTTC_CONNECT:
        return decode_connect(r, p);
    case DR_MQTTC_CONNACK:
        (void)rd_u8(r, &v); /* the length was checked: both bytes are there */
        (void)rd_u8(r, &rc);
        if (v & 0xfe)
            return "CONNACK reserved flag set";
        if (rc > 5)
            return "CONNACK return code reserved";
        if (rc != 0 && (v & 1))
            return "CONNACK session present on a refused connection";
        p->session_present = (int)(v & 1);
        p->return_code = (int)rc;
        return NULL;
    case DR_MQTTC_PINGREQ:
    case DR_MQTTC_PINGRESP:
    case DR_MQTTC_DISCONNECT:
        return NULL;
    }
    /* Every other type starts with a packet identifier. */
    if (rd_u16(r, &v) != 0)
        return "packet identifier runs past the packet";
    if (v == 0)
        return "packet identifier 0";
    p->id = (uint16_t)v;
    switch (p->type) {
    case DR_MQTTC_SUBSCRIBE:
    case DR_MQTTC_UNSUBSCRIBE:
        return decode_subscribe(r, p);
    case DR_MQTTC_SUBACK:
        return decode_suback(r, p);
    }
    return NULL; /* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: the identifier is all */
}

/* ---- decoder: framing ------------------------------------------------------------------------- */

int dr_mqttc_decode(const uint8_t *buf, size_t len, size_t max_packet, dr_mqttc_packet_t *p, size_t *used,
                    const char **reason)
{
    *reason = NULL;
    if (len < 1)
        return DR_MQTTC_NEED_MORE;
    int type = buf[0] >> 4;
    unsigned flags = buf[0] & 0x0f;
    if (type == 0 || type == 15) {
        *reason = "reserved packet type";
        return DR_EINVAL;
    }
    int want = required_flags(type);
    if (want >= 0 && flags != (unsigned)want) {
        *reason = "reserved flag bits set in the fixed header";
        return DR_EINVAL;
    }
    if (type == DR_MQTTC_PUBLISH && (flags & 6) == 6) {
        *reason = "PUBLISH with QoS 3";
        return DR_EINVAL;
    }
    if (type == DR_MQTTC_PUBLISH && (flags & 8) && (flags & 6) == 0) {
        *reason = "PUBLISH with DUP set and QoS 0";
        return DR_EINVAL;
    }

    size_t rem = 0, hdr = 1;
    for (int i = 0;; i++) {
        if (hdr >= len)
            return DR_MQTTC_NEED_MORE;
        uint8_t b = buf[hdr++];
        rem |= (size_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
        if (i == 3) {
            *reason = "remaining length longer than four bytes";
            return DR_EINVAL;
        }
    }
    if (max_packet != 0 && (max_packet < hdr || rem > max_packet - hdr)) {
        *reason = "packet larger than the maximum packet size";
        return DR_EINVAL;
    }
    if ((*reason = check_remaining(type, flags, rem)) != NULL)
        return DR_EINVAL;
    if (len - hdr < rem)
        return DR_MQTTC_NEED_MORE;

    memset(p, 0, sizeof(*p));
    p->type = type;
    p->flags = flags;
    rd_t r = {buf, hdr, hdr + rem};
    if ((*reason = decode_body(&r, p)) != NULL)
        return DR_EINVAL;
    if (r.pos != r.end) {
        *reason = "bytes left over after the packet's fields";
        return DR_EINVAL;
    }
    *used = hdr + rem;
    return DR_MQTTC_PACKET;
}

int dr_mqttc_filter_next(const dr_mqttc_packet_t *p, size_t *pos, dr_mqttc_filter_t *f)
{
    rd_t r = {(const uint8_t *)p->list.ptr, *pos, p->list.len};
    unsigned qos = 0;
    if (r.pos >= r.end || rd_str(&r, &f->filter) != 0)
        return 0;
    if (p->type == DR_MQTTC_SUBSCRIBE && rd_u8(&r, &qos) != 0)
        return 0;
    f->qos = (int)qos;
    *pos = r.pos;
    return 1;
}

/* ---- encoder ---------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *out; /* NULL: only count */
    size_t pos;
    int bad; /* a field cannot be encoded */
} wr_t;

static void wr_bytes(wr_t *w, const void *src, size_t n)
{
    if (w->out != NULL && n > 0)
        memcpy(w->out + w->pos, src, n);
    w->pos += n;
}

static void wr_u8(wr_t *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    wr_bytes(w, &b, 1);
}

static void wr_u16(wr_t *w, unsigned v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    wr_bytes(w, b, 2);
}

static void wr_str(wr_t *w, dr_mqttc_str_t s)
{
    if (s.len > 65535) {
        w->bad = 1;
        return;
    }
    wr_u16(w, (unsigned)s.len);
    wr_bytes(w, s.ptr, s.len);
}

static void encode_connect(wr_t *w, const dr_mqttc_packet_t *p)
{
    int will = p->will_topic.ptr != NULL;
    unsigned fl = (p->clean_session ? 2u : 0u);
    if (will)
        fl |= 4u | (unsigned)p->will_qos << 3 | (p->will_retain ? 0x20u : 0u);
    if (p->username.ptr != NULL)
        fl |= 0x80;
    if (p->password.ptr != NULL)
        fl |= 0x40;
    if ((will && (p->will_qos < 0 || p->will_qos > 2)) || (p->password.ptr && !p->username.ptr) ||
        p->keepalive < 0 || p->keepalive > 65535) {
        w->bad = 1;
        return;
    }
    wr_str(w, (dr_mqttc_str_t){"MQTT", 4});
    wr_u8(w, 4);
    wr_u8(w, fl);
    wr_u16(w, (unsigned)p->keepalive);
    wr_str(w, p->client_id.ptr ? p->client_id : (dr_mqttc_str_t){"", 0});
    if (will) {
        wr_str(w, p->will_topic);
        wr_str(w, p->will_payload);
    }
    if (p->username.ptr)
        wr_str(w, p->username);
    if (p->password.ptr)
        wr_str(w, p->password);
}

/* Writes the variable header and payload; sets w->bad for what cannot be encoded. */
static void encode_body(wr_t *w, const dr_mqttc_packet_t *p)
{
    switch (p->type) {
    case DR_MQTTC_CONNECT:
        encode_connect(w, p);
        return;
    case DR_MQTTC_CONNACK:
        wr_u8(w, p->session_present ? 1 : 0);
        wr_u8(w, (unsigned)p->return_code);
        w->bad |= p->return_code < 0 || p->return_code > 255;
        return;
    case DR_MQTTC_PUBLISH:
        wr_str(w, p->topic);
        if (p->qos > 0)
            wr_u16(w, p->id);
        w->bad |= p->qos < 0 || p->qos > 2 || (p->qos > 0 && p->id == 0) || (p->dup && p->qos == 0);
        wr_bytes(w, p->payload.ptr, p->payload.len);
        return;
    case DR_MQTTC_PUBACK:
    case DR_MQTTC_PUBREC:
    case DR_MQTTC_PUBREL:
    case DR_MQTTC_PUBCOMP:
    case DR_MQTTC_UNSUBACK:
        wr_u16(w, p->id);
        w->bad |= p->id == 0;
        return;
    case DR_MQTTC_SUBSCRIBE:
    case DR_MQTTC_UNSUBSCRIBE:
        wr_u16(w, p->id);
        w->bad |= p->id == 0 || p->nfilters == 0;
        for (size_t i = 0; i < p->nfilters; i++) {
            wr_str(w, p->filters[i].filter);
            if (p->type == DR_MQTTC_SUBSCRIBE) {
                w->bad |= p->filters[i].qos < 0 || p->filters[i].qos > 2;
                wr_u8(w, (unsigned)p->filters[i].qos);
            }
        }
        return;
    case DR_MQTTC_SUBACK:
        wr_u16(w, p->id);
        w->bad |= p->id == 0 || p->list.len == 0;
        wr_bytes(w, p->list.ptr, p->list.len);
        return;
    case DR_MQTTC_PINGREQ:
    case DR_MQTTC_PINGRESP:
    case DR_MQTTC_DISCONNECT:
        return;
    }
    w->bad = 1;
}

static unsigned first_byte(const dr_mqttc_packet_t *p)
{
    unsigned fl = 0;
    if (p->type == DR_MQTTC_PUBLISH)
        fl = (p->dup ? 8u : 0u) | (unsigned)p->qos << 1 | (p->retain ? 1u : 0u);
    else if (required_flags(p->type) > 0)
        fl = (unsigned)required_flags(p->type);
    return (unsigned)p->type << 4 | fl;
}

size_t dr_mqttc_encode(const dr_mqttc_packet_t *p, uint8_t *out, size_t cap)
{
    wr_t w = {NULL, 0, 0};
    encode_body(&w, p);
    if (w.bad || w.pos > DR_MQTTC_MAX_REMAINING)
        return 0;
    size_t rem = w.pos, hdr = 2; /* the first byte and at least one length byte */
    for (size_t v = rem; v >= 128; v >>= 7)
        hdr++;
    if (hdr + rem > cap)
        return hdr + rem;
    out[0] = (uint8_t)first_byte(p);
    size_t v = rem;
    for (size_t i = 1; i < hdr; i++, v >>= 7)
        out[i] = (uint8_t)((v & 0x7f) | (i + 1 < hdr ? 0x80 : 0));
    w = (wr_t){out, hdr, 0};
    encode_body(&w, p);
    return hdr + rem;
}

/* ---- PUBACK ordering queue -------------------------------------------------------------------- */

void dr_mqttc_ackq_init(dr_mqttc_ackq_t *q)
{
    memset(q, 0, sizeof(*q));
    q->first = 1;
}

void dr_mqttc_ackq_dispose(dr_mqttc_ackq_t *q)
{
    free(q->ring);
    q->ring = NULL;
    q->cap = q->count = q->head = q->acked = 0;
}

void dr_mqttc_ackq_reset(dr_mqttc_ackq_t *q)
{
    q->first += q->count;
    q->count = q->head = q->acked = 0;
}

static void ackq_grow(dr_mqttc_ackq_t *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 16;
    dr_mqttc_ackq_entry_t *n = dr_malloc(ncap * sizeof(*n));
    for (size_t i = 0; i < q->count; i++)
        n[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = n;
    q->cap = ncap;
    q->head = 0;
}

uint64_t dr_mqttc_ackq_push(dr_mqttc_ackq_t *q, uint16_t id)
{
    if (q->count >= DR_MQTTC_ACKQ_MAX)
        return 0;
    if (q->count == q->cap)
        ackq_grow(q);
    q->ring[(q->head + q->count) & (q->cap - 1)] = (dr_mqttc_ackq_entry_t){id, 0};
    return q->first + q->count++;
}

int dr_mqttc_ackq_ack(dr_mqttc_ackq_t *q, uint64_t token)
{
    if (token < q->first || token - q->first >= q->count)
        return 0;
    dr_mqttc_ackq_entry_t *e = &q->ring[(q->head + (size_t)(token - q->first)) & (q->cap - 1)];
    if (e->acked)
        return 0;
    e->acked = 1;
    q->acked++;
    return 1;
}

int dr_mqttc_ackq_pop(dr_mqttc_ackq_t *q, uint16_t *id)
{
    if (q->count == 0 || !q->ring[q->head].acked)
        return 0;
    *id = q->ring[q->head].id;
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->acked--;
    q->first++;
    return 1;
}

size_t dr_mqttc_ackq_unacked(const dr_mqttc_ackq_t *q)
{
    return q->count - q->acked;
}

size_t dr_mqttc_ackq_held(const dr_mqttc_ackq_t *q)
{
    return q->count;
}
