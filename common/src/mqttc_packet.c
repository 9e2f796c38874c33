/* MQTT 3.1.1 and MQTT 5 packet encoder and decoder, and the PUBACK ordering queue (see dr/mqttc_packet.h).
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
 *
 * MQTT 5 properties are described by one table (identifier, value kind, packets that may carry it), so
 * the decoder checks every property the same way and the encoder and decoder agree on the value kinds.
 * Variable byte integers inside a packet must be in their shortest form (§1.5.5): that is what lets a
 * decoded property section be re-encoded to the same bytes.
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
    if (return_code >= 0x80) {
        switch (return_code) {
        case 0x84:
            return "connection refused: unsupported protocol version";
        case 0x85:
            return "connection refused: client identifier not valid";
        case 0x86:
            return "connection refused: bad user name or password";
        case 0x87:
            return "connection refused: not authorized";
        case 0x88:
            return "connection refused: server unavailable";
        }
        return dr_mqttc_reason_name(return_code); /* the rest read well on their own */
    }
    return "connection refused: unknown return code";
}

const char *dr_mqttc_reason_name(int code)
{
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {0x00, "success"},
        {0x04, "disconnect with will message"},
        {0x10, "no matching subscribers"},
        {0x11, "no subscription existed"},
        {0x80, "unspecified error"},
        {0x81, "malformed packet"},
        {0x82, "protocol error"},
        {0x83, "implementation specific error"},
        {0x84, "unsupported protocol version"},
        {0x85, "client identifier not valid"},
        {0x86, "bad user name or password"},
        {0x87, "not authorized"},
        {0x88, "server unavailable"},
        {0x89, "server busy"},
        {0x8a, "banned"},
        {0x8b, "server shutting down"},
        {0x8c, "bad authentication method"},
        {0x8d, "keep alive timeout"},
        {0x8e, "session taken over"},
        {0x8f, "topic filter invalid"},
        {0x90, "topic name invalid"},
        {0x91, "packet identifier in use"},
        {0x92, "packet identifier not found"},
        {0x93, "receive maximum exceeded"},
        {0x94, "topic alias invalid"},
        {0x95, "packet too large"},
        {0x96, "message rate too high"},
        {0x97, "quota exceeded"},
        {0x98, "administrative action"},
        {0x99, "payload format invalid"},
        {0x9a, "retain not supported"},
        {0x9b, "QoS not supported"},
        {0x9c, "use another server"},
        {0x9d, "server moved"},
        {0x9e, "shared subscriptions not supported"},
        {0x9f, "connection rate exceeded"},
        {0xa0, "maximum connect time"},
        {0xa1, "subscription identifiers not supported"},
        {0xa2, "wildcard subscriptions not supported"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].code == code)
            return names[i].name;
    return "unknown reason code";
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

static int rd_u32(rd_t *r, uint32_t *v)
{
    if (r->end - r->pos < 4)
        return -1;
    const uint8_t *b = r->buf + r->pos;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    r->pos += 4;
    return 0;
}

/* A variable byte integer inside a packet: at most four bytes and in its shortest form. Returns -1 when
 * it runs past the frame, 1 when it is malformed. */
static int rd_varint(rd_t *r, uint32_t *v)
{
    uint32_t val = 0;
    for (int i = 0; i < 4; i++) {
        if (r->pos >= r->end)
            return -1;
        uint8_t b = r->buf[r->pos++];
        val |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return 1; /* a trailing zero byte: not the shortest form */
            *v = val;
            return 0;
        }
    }
    return 1;
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

/* The smallest MQTT 5 remaining lengths, where they differ from 3.1.1: a property length byte (and for
 * SUBACK/UNSUBACK at least one reason code). NULL: as 3.1.1, or checked by the body decoder. */
static const char *check_remaining_v5(int type, unsigned flags, size_t rem)
{
    switch (type) {
    case DR_MQTTC_CONNACK: /* 2: a 3.1.1 CONNACK, accepted so that a refusal of v5 can be read */
    case DR_MQTTC_PUBACK:
    case DR_MQTTC_PUBREC:
    case DR_MQTTC_PUBREL:
    case DR_MQTTC_PUBCOMP:
        return rem >= 2 ? NULL : "remaining length below 2 for this packet type";
    case DR_MQTTC_UNSUBACK:
        return rem >= 4 ? NULL : "UNSUBACK without reason codes";
    case DR_MQTTC_DISCONNECT:
        return NULL;
    case DR_MQTTC_SUBACK:
        return rem >= 4 ? NULL : "SUBACK without return codes";
    case DR_MQTTC_SUBSCRIBE:
        return rem >= 6 ? NULL : "SUBSCRIBE without filters";
    case DR_MQTTC_UNSUBSCRIBE:
        return rem >= 5 ? NULL : "UNSUBSCRIBE without filters";
    case DR_MQTTC_PUBLISH:
        return rem >= ((flags & 6) ? 5u : 3u) ? NULL : "PUBLISH too short";
    }
    return "";
}

/* Checks the remaining length against what the type allows, before the body arrives. */
static const char *check_remaining(int type, unsigned flags, size_t rem, int version)
{
    if (version == DR_MQTTC_V5) {
        const char *why = check_remaining_v5(type, flags, rem);
        if (why == NULL || why[0] != '\0')
            return why;
    }
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

/* ---- MQTT 5 properties ------------------------------------------------------------------------ */

enum { K_BYTE, K_U16, K_U32, K_VARINT, K_STR, K_BIN, K_PAIR };

#define PK(t) (1u << DR_MQTTC_##t)
#define PK_WILL 1u         /* bit 0 (no packet type 0): a CONNECT's will properties */
#define PK_AUTH (1u << 15) /* AUTH, which this codec does not decode: listed for completeness */
#define PK_ACKS (PK(PUBACK) | PK(PUBREC) | PK(PUBREL) | PK(PUBCOMP) | PK(SUBACK) | PK(UNSUBACK))
#define PK_ALL 0xfffeu

typedef struct {
    uint8_t id, kind, multi; /* multi: may appear more than once */
    unsigned packets;        /* PK_* bits of the packets that may carry it */
} prop_def_t;

/* MQTT 5 §2.2.2.2, Table 2-4. */
static const prop_def_t prop_defs[] = {
    {0x01, K_BYTE, 0, PK(PUBLISH) | PK_WILL},         /* payload format indicator */
    {0x02, K_U32, 0, PK(PUBLISH) | PK_WILL},          /* message expiry interval */
    {0x03, K_STR, 0, PK(PUBLISH) | PK_WILL},          /* content type */
    {0x08, K_STR, 0, PK(PUBLISH) | PK_WILL},          /* response topic */
    {0x09, K_BIN, 0, PK(PUBLISH) | PK_WILL},          /* correlation data */
    {0x0b, K_VARINT, 1, PK(PUBLISH) | PK(SUBSCRIBE)}, /* subscription identifier (once in SUBSCRIBE) */
    {0x11, K_U32, 0, PK(CONNECT) | PK(CONNACK) | PK(DISCONNECT)},       /* session expiry interval */
    {0x12, K_STR, 0, PK(CONNACK)},                                      /* assigned client identifier */
    {0x13, K_U16, 0, PK(CONNACK)},                                      /* server keep alive */
    {0x15, K_STR, 0, PK(CONNECT) | PK(CONNACK) | PK_AUTH},              /* authentication method */
    {0x16, K_BIN, 0, PK(CONNECT) | PK(CONNACK) | PK_AUTH},              /* authentication data */
    {0x17, K_BYTE, 0, PK(CONNECT)},                                     /* request problem information */
    {0x18, K_U32, 0, PK_WILL},                                          /* will delay interval */
    {0x19, K_BYTE, 0, PK(CONNECT)},                                     /* request response information */
    {0x1a, K_STR, 0, PK(CONNACK)},                                      /* response information */
    {0x1c, K_STR, 0, PK(CONNACK) | PK(DISCONNECT)},                     /* server reference */
    {0x1f, K_STR, 0, PK(CONNACK) | PK_ACKS | PK(DISCONNECT) | PK_AUTH}, /* reason string */
    {0x21, K_U16, 0, PK(CONNECT) | PK(CONNACK)},                        /* receive maximum */
    {0x22, K_U16, 0, PK(CONNECT) | PK(CONNACK)},                        /* topic alias maximum */
    {0x23, K_U16, 0, PK(PUBLISH)},                                      /* topic alias */
    {0x24, K_BYTE, 0, PK(CONNACK)},                                     /* maximum QoS */
    {0x25, K_BYTE, 0, PK(CONNACK)},                                     /* retain available */
    {0x26, K_PAIR, 1, PK_ALL | PK_WILL},                                /* user property */
    {0x27, K_U32, 0, PK(CONNECT) | PK(CONNACK)},                        /* maximum packet size */
    {0x28, K_BYTE, 0, PK(CONNACK)},                                     /* wildcard subscription available */
    {0x29, K_BYTE, 0, PK(CONNACK)}, /* subscription identifier available */
    {0x2a, K_BYTE, 0, PK(CONNACK)}, /* shared subscription available */
};

static const prop_def_t *prop_def(uint32_t id)
{
    for (size_t i = 0; i < sizeof(prop_defs) / sizeof(prop_defs[0]); i++)
        if (prop_defs[i].id == id)
            return &prop_defs[i];
    return NULL;
}

/* Reads one property value of kind d->kind into *num or *str, and checks its range. */
static const char *rd_prop_value(rd_t *s, const prop_def_t *d, uint32_t *num, dr_mqttc_str_t *str)
{
    unsigned v = 0;
    dr_mqttc_str_t second;
    switch (d->kind) {
    case K_BYTE:
        if (rd_u8(s, &v) != 0)
            return "property value runs past the properties";
        if (v > 1)
            return "property value out of range"; /* every byte property is 0 or 1 (maximum QoS too) */
        *num = v;
        return NULL;
    case K_U16:
        if (rd_u16(s, &v) != 0)
            return "property value runs past the properties";
        if (v == 0 && (d->id == 0x21 || d->id == 0x23))
            return "receive maximum or topic alias 0";
        *num = v;
        return NULL;
    case K_U32:
        if (rd_u32(s, num) != 0)
            return "property value runs past the properties";
        if (*num == 0 && d->id == 0x27)
            return "maximum packet size 0";
        return NULL;
    case K_VARINT: {
        int rc = rd_varint(s, num);
        if (rc != 0)
            return rc < 0 ? "property value runs past the properties" : "malformed variable byte integer";
        return *num == 0 ? "subscription identifier 0" : NULL;
    }
    case K_BIN:
        return rd_str(s, str) != 0 ? "property value runs past the properties" : NULL;
    case K_STR:
    case K_PAIR:
        if (rd_str(s, str) != 0 || (d->kind == K_PAIR && rd_str(s, &second) != 0))
            return "property value runs past the properties";
        if (dr_topic_check_utf8(str->ptr, str->len) != 0 ||
            (d->kind == K_PAIR && dr_topic_check_utf8(second.ptr, second.len) != 0))
            return "property string is not valid UTF-8";
        return NULL;
    }
    return "unknown property kind";
}

/* Keeps the value of a property a client acts on in the typed fields. */
static void keep_prop(dr_mqttc_props_t *pr, uint32_t id, uint32_t num, dr_mqttc_str_t str)
{
    switch (id) {
    case 0x02:
        pr->has_message_expiry = 1;
        pr->message_expiry = num;
        break;
    case 0x11:
        pr->has_session_expiry = 1;
        pr->session_expiry = num;
        break;
    case 0x13:
        pr->has_server_keepalive = 1;
        pr->server_keepalive = num;
        break;
    case 0x1f:
        pr->reason_string = str;
        break;
    case 0x21:
        pr->receive_maximum = num;
        break;
    case 0x23:
        pr->topic_alias = num;
        break;
    case 0x24:
        pr->has_maximum_qos = 1;
        pr->maximum_qos = num;
        break;
    case 0x27:
        pr->maximum_packet_size = num;
        break;
    }
}

/* Reads a property length and the properties after it; mask: PK_* of the packet (or PK_WILL). */
static const char *rd_props(rd_t *r, unsigned mask, dr_mqttc_props_t *pr)
{
    uint32_t n;
    int rc = rd_varint(r, &n);
    if (rc != 0)
        return rc < 0 ? "property length runs past the packet" : "malformed property length";
    if (r->end - r->pos < n)
        return "properties run past the packet";
    rd_t s = {r->buf, r->pos, r->pos + n};
    memset(pr, 0, sizeof(*pr));
    pr->raw = (dr_mqttc_str_t){(const char *)r->buf + r->pos, n};
    r->pos += n;
    uint64_t seen = 0;
    while (s.pos < s.end) {
        uint32_t id, num = 0;
        dr_mqttc_str_t str = {NULL, 0};
        if (rd_varint(&s, &id) != 0)
            return "malformed property identifier";
        const prop_def_t *d = prop_def(id);
        if (d == NULL)
            return "unknown property identifier";
        if (!(d->packets & mask))
            return "property not allowed in this packet";
        if ((seen >> id & 1) && !(d->multi && mask == PK(PUBLISH)) && d->id != 0x26)
            return "property given more than once";
        seen |= (uint64_t)1 << id;
        const char *why = rd_prop_value(&s, d, &num, &str);
        if (why != NULL)
            return why;
        keep_prop(pr, id, num, str);
    }
    return NULL;
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
    if (p->version == DR_MQTTC_V5) {
        const char *why = rd_props(r, PK(PUBLISH), &p->props);
        if (why != NULL)
            return why;
    }
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
    if (level != DR_MQTTC_V311 && level != DR_MQTTC_V5)
        return "CONNECT protocol level is neither 4 (MQTT 3.1.1) nor 5 (MQTT 5)";
    p->version = (int)level;
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
    if ((fl & 0x40) && !(fl & 0x80) && level == DR_MQTTC_V311)
        return "CONNECT password without a user name"; /* MQTT 5 allows it */
    if (level == DR_MQTTC_V5) {
        const char *why = rd_props(r, PK(CONNECT), &p->props);
        if (why != NULL)
            return why;
    }
    if (rd_str(r, &p->client_id) != 0)
        return "CONNECT client identifier runs past the packet";
    if (dr_topic_check_utf8(p->client_id.ptr, p->client_id.len) != 0)
        return "CONNECT client identifier is not valid UTF-8";
    if (will) {
        if (level == DR_MQTTC_V5) {
            dr_mqttc_props_t wp;
            const char *why = rd_props(r, PK_WILL, &wp);
            if (why != NULL)
                return why;
            p->will_props = wp.raw;
        }
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
    int sub = p->type == DR_MQTTC_SUBSCRIBE, v5 = p->version == DR_MQTTC_V5;
    if (v5) {
        const char *why = rd_props(r, (unsigned)1 << p->type, &p->props);
        if (why != NULL)
            return why;
    }
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
            /* v5: bits 2..5 are options (retain handling 3 is reserved), 6..7 reserved. */
            if ((qos & 3) == 3 || (v5 ? (qos & 0xc0) != 0 || (qos >> 4 & 3) == 3 : qos > 2))
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

/* MQTT 5 reason codes a SUBACK or UNSUBACK may carry (§3.9.3, §3.11.3). */
static int ack_code_ok(int type, uint8_t c)
{
    static const uint8_t suback[] = {0, 1, 2, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2};
    static const uint8_t unsuback[] = {0, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91};
    const uint8_t *set = type == DR_MQTTC_SUBACK ? suback : unsuback;
    size_t n = type == DR_MQTTC_SUBACK ? sizeof(suback) : sizeof(unsuback);
    return memchr(set, c, n) != NULL;
}

/* SUBACK (both versions) and the v5 UNSUBACK: properties, then one code per filter. */
static const char *decode_suback(rd_t *r, dr_mqttc_packet_t *p)
{
    int v5 = p->version == DR_MQTTC_V5;
    if (v5) {
        const char *why = rd_props(r, (unsigned)1 << p->type, &p->props);
        if (why != NULL)
            return why;
        if (r->pos >= r->end)
            return "acknowledgement without reason codes";
    }
    size_t start = r->pos;
    for (; r->pos < r->end; r->pos++) {
        uint8_t c = r->buf[r->pos];
        if (v5 ? !ack_code_ok(p->type, c) : c > 2 && c != DR_MQTTC_SUBACK_FAILURE)
            return "SUBACK or UNSUBACK return code reserved";
    }
    p->list.ptr = (const char *)r->buf + start;
    p->list.len = r->end - start;
    return NULL;
}

static const char *decode_connack(rd_t *r, dr_mqttc_packet_t *p)
{
    unsigned v = 0, rc = 0;
    if (r->end - r->pos == 2)
        p->version = DR_MQTTC_V311; /* also on a v5 connection: a broker that does not speak v5 */
    (void)rd_u8(r, &v);             /* the length was checked: both bytes are there */
    (void)rd_u8(r, &rc);
    if (v & 0xfe)
        return "CONNACK reserved flag set";
    if (p->version == DR_MQTTC_V5 ? rc != 0 && rc < 0x80 : rc > 5)
        return "CONNACK return code reserved";
    if (rc != 0 && (v & 1))
        return "CONNACK session present on a refused connection";
    p->session_present = (int)(v & 1);
    p->return_code = (int)rc;
    return p->version == DR_MQTTC_V5 ? rd_props(r, PK(CONNACK), &p->props) : NULL;
}

/* The optional tail of a v5 PUBACK..PUBCOMP (after the id) or DISCONNECT: a reason code, then
 * properties, each omitted when the packet ends before it. */
static const char *decode_reason_tail(rd_t *r, dr_mqttc_packet_t *p)
{
    unsigned rc = 0;
    if (rd_u8(r, &rc) != 0)
        return NULL;
    p->return_code = (int)rc;
    int known = strcmp(dr_mqttc_reason_name((int)rc), "unknown reason code") != 0;
    int ok = p->type == DR_MQTTC_DISCONNECT ? known && (rc == 0 || rc == 4 || rc >= 0x80)
                                            : rc == 0 || rc == 0x10 || rc == 0x92 || (known && rc >= 0x80);
    if (!ok)
        return "reason code reserved";
    if (r->pos == r->end)
        return NULL;
    return rd_props(r, (unsigned)1 << p->type, &p->props);
}

static const char *decode_body(rd_t *r, dr_mqttc_packet_t *p)
{
    unsigned v = 0;
    switch (p->type) {
    case DR_MQTTC_PUBLISH:
        return decode_publish(r, p);
    case DR_MQTTC_CONNECT:
        return decode_connect(r, p);
    case DR_MQTTC_CONNACK:
        return decode_connack(r, p);
    case DR_MQTTC_PINGREQ:
    case DR_MQTTC_PINGRESP:
        return NULL;
    case DR_MQTTC_DISCONNECT:
        return p->version == DR_MQTTC_V5 ? decode_reason_tail(r, p) : NULL;
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
    case DR_MQTTC_UNSUBACK:
        return p->version == DR_MQTTC_V5 ? decode_suback(r, p) : NULL;
    }
    /* PUBACK, PUBREC, PUBREL, PUBCOMP: the identifier is all in 3.1.1 */
    return p->version == DR_MQTTC_V5 ? decode_reason_tail(r, p) : NULL;
}

/* ---- decoder: framing ------------------------------------------------------------------------- */

int dr_mqttc_decode(const uint8_t *buf, size_t len, size_t max_packet, dr_mqttc_packet_t *p, size_t *used,
                    const char **reason)
{
    return dr_mqttc_decode_v(buf, len, max_packet, DR_MQTTC_V311, p, used, reason);
}

int dr_mqttc_decode_v(const uint8_t *buf, size_t len, size_t max_packet, int version, dr_mqttc_packet_t *p,
                      size_t *used, const char **reason)
{
    version = version == DR_MQTTC_V5 ? DR_MQTTC_V5 : DR_MQTTC_V311;
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
    if ((*reason = check_remaining(type, flags, rem, version)) != NULL)
        return DR_EINVAL;
    if (len - hdr < rem)
        return DR_MQTTC_NEED_MORE;

    memset(p, 0, sizeof(*p));
    p->type = type;
    p->flags = flags;
    p->version = version;
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
    f->qos = (int)(qos & 3);
    f->options = qos & 0x3c;
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

static void wr_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wr_bytes(w, b, 4);
}

static void wr_varint(wr_t *w, size_t v)
{
    if (v > DR_MQTTC_MAX_VARINT) {
        w->bad = 1;
        return;
    }
    do {
        wr_u8(w, (unsigned)((v & 0x7f) | (v >= 128 ? 0x80 : 0)));
        v >>= 7;
    } while (v > 0);
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

/* The typed properties that are present, without the length. */
static void wr_props_body(wr_t *w, const dr_mqttc_props_t *pr)
{
    if (pr->has_message_expiry) {
        wr_u8(w, 0x02);
        wr_u32(w, pr->message_expiry);
    }
    if (pr->has_session_expiry) {
        wr_u8(w, 0x11);
        wr_u32(w, pr->session_expiry);
    }
    if (pr->has_server_keepalive) {
        wr_u8(w, 0x13);
        wr_u16(w, pr->server_keepalive & 0xffff);
    }
    if (pr->reason_string.ptr) {
        wr_u8(w, 0x1f);
        wr_str(w, pr->reason_string);
    }
    if (pr->receive_maximum) {
        wr_u8(w, 0x21);
        wr_u16(w, pr->receive_maximum & 0xffff);
        w->bad |= pr->receive_maximum > 65535;
    }
    if (pr->topic_alias) {
        wr_u8(w, 0x23);
        wr_u16(w, pr->topic_alias & 0xffff);
        w->bad |= pr->topic_alias > 65535;
    }
    if (pr->has_maximum_qos) {
        wr_u8(w, 0x24);
        wr_u8(w, pr->maximum_qos);
        w->bad |= pr->maximum_qos > 1;
    }
    if (pr->maximum_packet_size) {
        wr_u8(w, 0x27);
        wr_u32(w, pr->maximum_packet_size);
    }
}

/* A property length and the properties: the raw bytes when given, else the typed fields. */
static void wr_props(wr_t *w, const dr_mqttc_props_t *pr)
{
    if (pr->raw.ptr != NULL) {
        wr_varint(w, pr->raw.len);
        wr_bytes(w, pr->raw.ptr, pr->raw.len);
        return;
    }
    wr_t size = {NULL, 0, 0};
    wr_props_body(&size, pr);
    wr_varint(w, size.pos);
    wr_props_body(w, pr);
    w->bad |= size.bad;
}

static int props_empty(const dr_mqttc_props_t *pr)
{
    wr_t size = {NULL, 0, 0};
    wr_props(&size, pr);
    return pr->raw.ptr == NULL && size.pos == 1; /* decoded properties, even empty, are kept */
}

/* v5 PUBACK..PUBCOMP (after the id) and DISCONNECT: the reason code and the properties, each left out
 * when it and everything after it has its default. */
static void wr_reason_tail(wr_t *w, const dr_mqttc_packet_t *p)
{
    int props = !props_empty(&p->props);
    if (p->return_code == 0 && !props)
        return;
    wr_u8(w, (unsigned)p->return_code);
    w->bad |= p->return_code < 0 || p->return_code > 255;
    if (props)
        wr_props(w, &p->props);
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
    int v5 = p->version == DR_MQTTC_V5;
    if ((will && (p->will_qos < 0 || p->will_qos > 2)) || (p->password.ptr && !p->username.ptr && !v5) ||
        p->keepalive < 0 || p->keepalive > 65535) {
        w->bad = 1;
        return;
    }
    wr_str(w, (dr_mqttc_str_t){"MQTT", 4});
    wr_u8(w, v5 ? DR_MQTTC_V5 : DR_MQTTC_V311);
    wr_u8(w, fl);
    wr_u16(w, (unsigned)p->keepalive);
    if (v5)
        wr_props(w, &p->props);
    wr_str(w, p->client_id.ptr ? p->client_id : (dr_mqttc_str_t){"", 0});
    if (will) {
        if (v5) {
            wr_varint(w, p->will_props.len);
            wr_bytes(w, p->will_props.ptr, p->will_props.len);
        }
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
    int v5 = p->version == DR_MQTTC_V5;
    w->bad |= p->version != 0 && p->version != DR_MQTTC_V311 && !v5;
    switch (p->type) {
    case DR_MQTTC_CONNECT:
        encode_connect(w, p);
        return;
    case DR_MQTTC_CONNACK:
        wr_u8(w, p->session_present ? 1 : 0);
        wr_u8(w, (unsigned)p->return_code);
        w->bad |= p->return_code < 0 || p->return_code > 255;
        if (v5)
            wr_props(w, &p->props);
        return;
    case DR_MQTTC_PUBLISH:
        wr_str(w, p->topic);
        if (p->qos > 0)
            wr_u16(w, p->id);
        if (v5)
            wr_props(w, &p->props);
        w->bad |= p->qos < 0 || p->qos > 2 || (p->qos > 0 && p->id == 0) || (p->dup && p->qos == 0);
        wr_bytes(w, p->payload.ptr, p->payload.len);
        return;
    case DR_MQTTC_PUBACK:
    case DR_MQTTC_PUBREC:
    case DR_MQTTC_PUBREL:
    case DR_MQTTC_PUBCOMP:
        wr_u16(w, p->id);
        w->bad |= p->id == 0;
        if (v5)
            wr_reason_tail(w, p);
        return;
    case DR_MQTTC_SUBSCRIBE:
    case DR_MQTTC_UNSUBSCRIBE:
        wr_u16(w, p->id);
        w->bad |= p->id == 0 || p->nfilters == 0;
        if (v5)
            wr_props(w, &p->props);
        for (size_t i = 0; i < p->nfilters; i++) {
            wr_str(w, p->filters[i].filter);
            if (p->type == DR_MQTTC_SUBSCRIBE) {
                unsigned opt = v5 ? p->filters[i].options : 0;
                w->bad |= p->filters[i].qos < 0 || p->filters[i].qos > 2 || (opt & ~0x3cu) != 0 ||
                          (opt >> 4 & 3) == 3;
                wr_u8(w, (unsigned)p->filters[i].qos | opt);
            }
        }
        return;
    case DR_MQTTC_UNSUBACK:
        wr_u16(w, p->id);
        w->bad |= p->id == 0 || (v5 && p->list.len == 0);
        if (v5) {
            wr_props(w, &p->props);
            wr_bytes(w, p->list.ptr, p->list.len);
        }
        return;
    case DR_MQTTC_SUBACK:
        wr_u16(w, p->id);
        w->bad |= p->id == 0 || p->list.len == 0;
        if (v5)
            wr_props(w, &p->props);
        wr_bytes(w, p->list.ptr, p->list.len);
        return;
    case DR_MQTTC_DISCONNECT:
        if (v5)
            wr_reason_tail(w, p);
        return;
    case DR_MQTTC_PINGREQ:
    case DR_MQTTC_PINGRESP:
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
