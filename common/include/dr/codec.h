/* Wire codec: Duster-compatible JSON DTOs (duster-compat.md §1.2) plus Drover's optional fields.
 *
 * Parsing is strict (duplicate keys, invalid UTF-8 and trailing garbage are errors) and never trusts
 * the input: every failure is reported as a stable error code and a human sentence. Encoders write
 * exact key orders because naive firmware parsers may depend on them. All functions are pure and
 * thread-safe.
 */
#ifndef DR_CODEC_H
#define DR_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* A producer's command (ProducerMessageInDto plus Drover's optional fields). */
typedef struct {
    int guarantee;        /* dr_guarantee_t; default RECEIPT_CONFIRMATION */
    char *command;        /* owned; "" when absent */
    char *data;           /* owned compact JSON object text, or NULL for null/absent */
    int has_cert;         /* messageBirthCertificate with both tmpId and producerDeviseId */
    int64_t tmp_id;
    char *producer_id;    /* owned; NULL without certificate */
    /* Drover-only fields; 0/NULL when absent. */
    int64_t ttl_ms;       /* relative deliver-by */
    int64_t deliver_by;   /* absolute deliver-by, epoch ms */
    int64_t max_attempts;
    int64_t not_before;   /* epoch ms */
    char *idem_key;       /* owned */
    int ext;              /* 1 if any Drover-only field was given */
} dr_producer_msg_t;

/* Why an input was rejected. code is a static string such as "BAD_JSON". */
typedef struct {
    const char *code;
    char message[160];
    int has_cert;         /* the certificate could be read, so the producer can be told */
    int64_t tmp_id;
    char producer_id[130];
} dr_codec_err_t;

/* An acknowledgement from a device (ConsumerMessageInDto). */
typedef struct {
    int64_t id;
    int status;           /* dr_status_t: DELIVERED when absent */
} dr_ack_t;

#define DR_MAX_IDEM_KEY 128
#define DR_MAX_PRODUCER_ID 128

/* Parses a producer message of len bytes. On success returns 0 and fills out (free with
 * dr_producer_msg_dispose). On failure returns DR_EINVAL, fills err and leaves out empty. */
int dr_codec_parse_producer(const char *buf, size_t len, dr_producer_msg_t *out, dr_codec_err_t *err);

/* Frees what a successful parse allocated; safe on a zeroed struct. */
void dr_producer_msg_dispose(dr_producer_msg_t *m);

/* Stable 64-bit fingerprint of everything a retry must repeat (device, guarantee, command, data,
 * certificate and Drover fields), used to detect an idempotency key reused for a different command. */
uint64_t dr_producer_msg_fingerprint(const dr_producer_msg_t *m, const char *dev);

/* Parses an ack. Returns 0, or DR_EINVAL with err filled (code BAD_JSON, BAD_ID or BAD_STATUS). */
int dr_codec_parse_ack(const char *buf, size_t len, dr_ack_t *out, dr_codec_err_t *err);

/* Checks a device id (or producer id) that becomes a topic level: 1..max bytes of UTF-8 a broker
 * accepts, without '/', '+' or '#' (dr_topic_check_level). Returns 0 or DR_EINVAL. */
int dr_codec_check_id(const char *s, size_t len, size_t max);

/* Encoders return a heap string (caller frees) of the exact wire form:
 * consumer:  {"id":N,"believerGuarantee":"G","command":"C","currentTimestamp":T,"data":D}
 * producer:  {"id":N,"tmpId":T,"deliveryStatus":"S"}   (tmpId null when has_tmp is 0)
 * error:     {"tmpId":T,"error":{"code":"X","message":"M"}}
 * data_json is inserted verbatim and must be a JSON object text or NULL (written as null). */
char *dr_codec_encode_consumer(int64_t id, int guarantee, const char *command, int64_t now_ms, const char *data_json);
char *dr_codec_encode_producer(int64_t id, int has_tmp, int64_t tmp_id, int status);
/* Deepest nesting of arrays/objects in the JSON text (strings are skipped). Cheap pre-check so deep
 * input is refused before a parser recurses into it. */
int dr_codec_json_depth(const char *buf, size_t len);

/* Returns s as a quoted, escaped JSON string (heap; caller frees). */
char *dr_codec_json_string(const char *s);

char *dr_codec_encode_error(int64_t tmp_id, const char *code, const char *message);

#endif
