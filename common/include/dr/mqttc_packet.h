/* MQTT 3.1.1 and MQTT 5 packet encoder and decoder, and the PUBACK ordering queue, for dr_mqttc.
 *
 * Everything here is pure: no I/O, no clock, no global state, and the only allocation is the ring of
 * dr_mqttc_ackq_t (documented there). That is what lets tests/unit/test_mqttc_packet.c and
 * tests/fuzz/fuzz_mqttc.c exercise every byte the network can send us.
 *
 * Decoding is incremental: the caller appends received bytes to one buffer and calls dr_mqttc_decode()
 * until it answers DR_MQTTC_NEED_MORE. A decoded packet points into that buffer (no copies), so it is
 * valid until the caller moves or overwrites the bytes it was decoded from. The decoder is direction
 * agnostic (it decodes CONNECT as well as CONNACK) so that round trips can be tested; refusing packets
 * a server must not send is the client's job.
 *
 * MQTT 5 (OASIS MQTT Version 5.0) is chosen per packet: dr_mqttc_encode() looks at p->version and
 * dr_mqttc_decode_v() takes the connection's version. Version 5 adds a property section to most packets
 * and reason codes to the acknowledgements; the decoder validates every property (identifier known and
 * allowed in that packet, given once unless the standard allows repeats, value in range, strings valid
 * UTF-8) and exposes the ones a client acts on as typed fields. The raw property bytes are kept too, so
 * a decoded packet encodes back to the same bytes.
 *
 * All functions may be called from any thread on distinct objects.
 */
#ifndef DR_MQTTC_PACKET_H
#define DR_MQTTC_PACKET_H

#include <stddef.h>
#include <stdint.h>

/* Control packet types (MQTT 3.1.1 §2.2.1): the high nibble of the first byte. */
enum {
    DR_MQTTC_CONNECT = 1,
    DR_MQTTC_CONNACK = 2,
    DR_MQTTC_PUBLISH = 3,
    DR_MQTTC_PUBACK = 4,
    DR_MQTTC_PUBREC = 5,
    DR_MQTTC_PUBREL = 6,
    DR_MQTTC_PUBCOMP = 7,
    DR_MQTTC_SUBSCRIBE = 8,
    DR_MQTTC_SUBACK = 9,
    DR_MQTTC_UNSUBSCRIBE = 10,
    DR_MQTTC_UNSUBACK = 11,
    DR_MQTTC_PINGREQ = 12,
    DR_MQTTC_PINGRESP = 13,
    DR_MQTTC_DISCONNECT = 14,
};

/* Results of dr_mqttc_decode() besides DR_EINVAL. */
enum {
    DR_MQTTC_NEED_MORE = 0, /* the buffer holds no whole packet yet */
    DR_MQTTC_PACKET = 1,    /* one packet was decoded */
};

#define DR_MQTTC_MAX_REMAINING 268435455u /* largest remaining length four varint bytes can carry */
#define DR_MQTTC_MAX_HEADER 5             /* first byte plus at most four length bytes */
#define DR_MQTTC_SUBACK_FAILURE 0x80      /* SUBACK return code of a refused filter (v5: any code >= it) */
#define DR_MQTTC_V311 4                   /* protocol level of MQTT 3.1.1 */
#define DR_MQTTC_V5 5                     /* protocol level of MQTT 5 */
#define DR_MQTTC_MAX_VARINT 268435455u    /* largest variable byte integer (MQTT 5 §1.5.5) */

/* A byte string inside a packet. ptr NULL means absent (optional CONNECT fields); a present empty
 * string has a non-NULL ptr and len 0. Decoded strings point into the caller's buffer. */
typedef struct {
    const char *ptr;
    size_t len;
} dr_mqttc_str_t;

/* One entry of a SUBSCRIBE (filter and requested QoS) or UNSUBSCRIBE (filter; qos unused). */
typedef struct {
    dr_mqttc_str_t filter;
    int qos;
    unsigned options; /* MQTT 5 subscription options besides the QoS (bits 2..5 of the byte); 0 for 3.1.1 */
} dr_mqttc_filter_t;

/* MQTT 5 properties of one packet (or of a CONNECT's will). Decoding fills `raw` and the typed fields
 * of the properties present; the others are 0 / absent. Encoding writes `raw` verbatim when its ptr is
 * not NULL, else the typed fields that are present, so a zeroed struct means "no properties". */
typedef struct {
    dr_mqttc_str_t raw;           /* the property bytes after the property length; ptr NULL: none decoded */
    int has_message_expiry;       /* PUBLISH: Message Expiry Interval present */
    uint32_t message_expiry;      /* seconds */
    int has_session_expiry;       /* CONNECT, CONNACK, DISCONNECT: Session Expiry Interval present */
    uint32_t session_expiry;      /* seconds; 0xFFFFFFFF: never */
    unsigned receive_maximum;     /* CONNECT, CONNACK: 1..65535; 0: absent (65535 then) */
    uint32_t maximum_packet_size; /* CONNECT, CONNACK: 0: absent (no limit but the protocol's) */
    int has_server_keepalive;     /* CONNACK: Server Keep Alive present */
    unsigned server_keepalive;    /* seconds the client must use instead of its own */
    int has_maximum_qos;          /* CONNACK: Maximum QoS present */
    unsigned maximum_qos;         /* 0 or 1 */
    unsigned topic_alias;         /* PUBLISH: 0 absent */
    dr_mqttc_str_t reason_string; /* acks, CONNACK, DISCONNECT; ptr NULL: absent */
} dr_mqttc_props_t;

/* One control packet. Only the fields of its type are meaningful; the decoder sets the others to 0. */
typedef struct {
    int type;    /* DR_MQTTC_* */
    int version; /* DR_MQTTC_V311 (0: the same) or DR_MQTTC_V5; set by the decoder, read by the encoder */
    unsigned flags; /* decoded: the low nibble of the first byte; the encoder derives it */
    uint16_t id;    /* packet identifier: PUBLISH (QoS > 0), PUB*, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK */

    /* PUBLISH */
    int qos, dup, retain;
    dr_mqttc_str_t topic;
    dr_mqttc_str_t payload;

    /* CONNECT (protocol "MQTT" level 4 only) */
    int clean_session;
    int keepalive;             /* seconds, 0..65535 */
    dr_mqttc_str_t client_id;  /* required (may be empty) */
    dr_mqttc_str_t will_topic; /* ptr NULL: no will; then will_payload/qos/retain are ignored */
    dr_mqttc_str_t will_payload;
    int will_qos, will_retain;
    dr_mqttc_str_t username; /* ptr NULL: none */
    dr_mqttc_str_t password; /* ptr NULL: none; requires a username */

    /* CONNACK */
    int session_present;
    /* CONNACK: 0 accepted, 1..5 refusals (3.1.1) or a reason code >= 0x80 (v5; dr_mqttc_connack_reason).
     * v5 only: the reason code of PUBACK, PUBREC, PUBREL, PUBCOMP and DISCONNECT (0: success). */
    int return_code;

    /* MQTT 5 only: the packet's properties, and a CONNECT's will properties (raw; validated) */
    dr_mqttc_props_t props;
    dr_mqttc_str_t will_props;

    /* SUBSCRIBE, UNSUBSCRIBE: to encode, filters[0..nfilters). Decoding sets nfilters and `list` (the raw
     * entries, already validated); walk them with dr_mqttc_filter_next(). */
    const dr_mqttc_filter_t *filters;
    size_t nfilters;
    /* SUBSCRIBE/UNSUBSCRIBE (decoded): raw entries. SUBACK and (v5) UNSUBACK, both ways: one return or
     * reason code per byte. */
    dr_mqttc_str_t list;
} dr_mqttc_packet_t;

/* Decodes the first packet in buf[0..len).
 * max_packet: the largest whole packet (fixed header included) accepted; 0 means the protocol limit.
 * Returns DR_MQTTC_PACKET with *p filled and *used set to the packet's size in bytes;
 * DR_MQTTC_NEED_MORE when buf holds only a prefix of a valid packet (nothing is filled);
 * DR_EINVAL with *reason set to a static English sentence when the bytes can never become a valid
 * packet (a 5-byte remaining length, a reserved type or flag bit, QoS 3, packet id 0 with QoS > 0, a
 * length running past the frame, bytes left over, invalid UTF-8 in a topic or filter, a packet larger
 * than max_packet, ...). Oversized packets and bad lengths are reported as soon as the fixed header is
 * complete, without waiting for the body. Reads nothing outside buf[0..len). p, used and reason must
 * not be NULL. */
int dr_mqttc_decode(const uint8_t *buf, size_t len, size_t max_packet, dr_mqttc_packet_t *p, size_t *used,
                    const char **reason);

/* dr_mqttc_decode() for a connection of protocol version (DR_MQTTC_V311 or DR_MQTTC_V5; any other value
 * is taken as 3.1.1). dr_mqttc_decode() is this with DR_MQTTC_V311. With DR_MQTTC_V5 the decoder also
 * refuses malformed properties (a property length or variable byte integer longer than four bytes or not
 * in its shortest form, an unknown identifier, a property not allowed in the packet or given twice, a
 * value out of range, a string that is not valid UTF-8) and reserved reason codes. Two exceptions let a
 * v5 client understand a broker that does not speak v5: a 2-byte CONNACK is decoded as a 3.1.1 CONNACK
 * (p->version is then DR_MQTTC_V311), and a CONNECT is decoded by the protocol level it carries. */
int dr_mqttc_decode_v(const uint8_t *buf, size_t len, size_t max_packet, int version, dr_mqttc_packet_t *p,
                      size_t *used, const char **reason);

/* Steps through the filters of a decoded SUBSCRIBE or UNSUBSCRIBE. Start with *pos = 0. Returns 1 and
 * fills *f while entries remain, then 0. Only valid for packets dr_mqttc_decode() accepted. */
int dr_mqttc_filter_next(const dr_mqttc_packet_t *p, size_t *pos, dr_mqttc_filter_t *f);

/* Encodes p into out[0..cap). Returns the packet's full size; the bytes are written only when
 * cap >= that size (so a first call with cap 0 sizes the buffer). Returns 0 when p cannot be encoded:
 * an unknown type, a string longer than 65535 bytes, QoS outside 0..2, packet id 0 where one is
 * required, no filter in a (UN)SUBSCRIBE, or a total beyond DR_MQTTC_MAX_REMAINING. The encoder does not
 * validate UTF-8; callers check topics with dr/topic.h first.
 * With p->version DR_MQTTC_V5 the packet gets its v5 layout: the properties of p->props (see
 * dr_mqttc_props_t), and for PUBACK..PUBCOMP and DISCONNECT the shortest form the reason code and
 * properties allow (no reason code byte for success without properties). */
size_t dr_mqttc_encode(const dr_mqttc_packet_t *p, uint8_t *out, size_t cap);

/* Returns a static description of a CONNACK return code, e.g. "bad user name or password". Codes of
 * 0x80 and above are MQTT 5 reason codes (dr_mqttc_reason_name). */
const char *dr_mqttc_connack_reason(int return_code);

/* Returns the static name of an MQTT 5 reason code ("not authorized", "quota exceeded"), or
 * "unknown reason code". */
const char *dr_mqttc_reason_name(int code);

/* Returns a static name of a packet type ("PUBLISH"), or "reserved". */
const char *dr_mqttc_type_name(int type);

/* ---- PUBACK ordering -------------------------------------------------------------------------- */

/* The received QoS 1 messages of one connection, in arrival order, waiting for the application's ack.
 *
 * MQTT 3.1.1 §4.6 requires PUBACKs in the order the PUBLISH packets arrived. Each message gets a token
 * (a number that is never reused for the life of the queue, also across connections); acking marks its
 * entry, and dr_mqttc_ackq_pop() then releases entries from the oldest end only while they are acked,
 * so an ack for a later message waits until every earlier one was acked.
 *
 * Tokens are consecutive: the queue holds tokens first..first+count-1. dr_mqttc_ackq_reset() starts a
 * new connection by dropping every entry and moving `first` past them, so tokens of an earlier
 * connection fall below `first` and are ignored from then on.
 *
 * Memory: the ring is allocated with dr_malloc/dr_realloc (aborting on OOM) and grows to the largest
 * number of entries held at once (at most DR_MQTTC_ACKQ_MAX); dr_mqttc_ackq_dispose() frees it. */

#define DR_MQTTC_ACKQ_MAX 65535 /* a broker cannot have more QoS 1 messages unacknowledged: ids are 16-bit   \
                                 */

typedef struct {
    uint16_t id;   /* packet identifier to PUBACK */
    uint8_t acked; /* the application called ack for it */
} dr_mqttc_ackq_entry_t;

typedef struct {
    /* private: use the functions below */
    dr_mqttc_ackq_entry_t *ring;
    size_t cap;     /* ring slots (0 or a power of two) */
    size_t head;    /* slot of the oldest entry */
    size_t count;   /* entries held */
    size_t acked;   /* entries held that are acked (popped entries are not counted) */
    uint64_t first; /* token of the oldest entry (or of the next one when empty) */
} dr_mqttc_ackq_t;

/* Initialises an empty queue whose first token will be 1. */
void dr_mqttc_ackq_init(dr_mqttc_ackq_t *q);

/* Frees the ring; q may be initialised again afterwards. */
void dr_mqttc_ackq_dispose(dr_mqttc_ackq_t *q);

/* Forgets every entry (a new connection: the broker redelivers what was not PUBACKed). Tokens handed out
 * so far become stale. */
void dr_mqttc_ackq_reset(dr_mqttc_ackq_t *q);

/* Appends a received QoS 1 message with packet identifier id. Returns its token (never 0), or 0 when the
 * queue already holds DR_MQTTC_ACKQ_MAX entries (a protocol violation by the sender). */
uint64_t dr_mqttc_ackq_push(dr_mqttc_ackq_t *q, uint16_t id);

/* Marks token as acked. Returns 1 when it named a held, not yet acked entry; 0 when it is stale, unknown
 * or already acked (nothing changes). */
int dr_mqttc_ackq_ack(dr_mqttc_ackq_t *q, uint64_t token);

/* Removes the oldest entry if it is acked and stores its packet id in *id. Returns 1 if it did, else 0.
 * Call until it returns 0 to collect every PUBACK that may be sent, in order. */
int dr_mqttc_ackq_pop(dr_mqttc_ackq_t *q, uint16_t *id);

/* Entries held whose token was not acked yet. */
size_t dr_mqttc_ackq_unacked(const dr_mqttc_ackq_t *q);

/* Entries held (acked or not): messages whose PUBACK has not been released by dr_mqttc_ackq_pop. */
size_t dr_mqttc_ackq_held(const dr_mqttc_ackq_t *q);

#endif
