/* Drover device SDK: the device side of Drover's MQTT protocol, for ESP32-class firmware.
 *
 * The device's own MQTT client receives each payload published on `consumer/request/{deviceId}` and
 * hands it to dr_device_receive(). The SDK parses the command (id, guarantee, command name, the raw
 * `data` object, currentTimestamp) and decides: execute it, or it is a duplicate (already executed:
 * acknowledge again, do not execute again). Drover and Duster re-send a RECEIPT_CONFIRMATION or
 * ONLY_LAST message with the same id until it is acknowledged, so an ack that was lost means the same
 * command arrives again; this is where it is recognised (docs/protocol.md §3, §10.3).
 * The SDK also builds the ack payloads and the two topics into caller buffers.
 *
 * Properties: C99, freestanding (only <limits.h>, <stddef.h>, <stdint.h>), no dynamic allocation, no
 * MQTT or JSON library. Every function reads only the bytes it was given, never past `len`.
 * Spans returned by the SDK point into the caller's payload buffer: they are borrowed and valid only as
 * long as that buffer is. A dr_device_t is not thread-safe: use it from one task (the MQTT client's
 * event task), or lock around it.
 *
 * DESIGN
 * De-duplication keeps the ids of the last DR_DEVICE_RING_SIZE executed messages, oldest first, each
 * with the last status the device reported for it and a fingerprint of its command and data (a re-send
 * repeats both byte for byte; a new message that reuses a remembered id, after the server's counter
 * wrapped or its database was restored from an older backup, almost always differs in them and is
 * executed as new). Lookup is by membership, never by comparing ids with
 * the newest one: ids are not monotonic from the device's point of view (a re-send arrives after newer
 * ids when the window is larger than 1, and Drover's id counter wraps, reusing only ids whose records
 * have expired). An id found again moves to the newest end, so a message that keeps being re-sent
 * stays remembered. Ids are recorded before the caller executes (at most once per id): a reset during
 * execution means the command is not run again. The ring is one plain struct; optional hooks save it
 * to flash (NVS) after each change and load it at init, so a reboot does not re-execute either.
 */
#ifndef DROVER_DEVICE_H
#define DROVER_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Limits (compile-time; override with -D) ------------------------------------------------------ */

#ifndef DR_DEVICE_RING_SIZE
#define DR_DEVICE_RING_SIZE 32 /* executed ids remembered; 8 bytes each */
#endif
#ifndef DR_DEVICE_MAX_PAYLOAD
#define DR_DEVICE_MAX_PAYLOAD 8192 /* longer payloads are rejected with DR_DEVICE_ETOOBIG */
#endif
#ifndef DR_DEVICE_MAX_DEPTH
#define DR_DEVICE_MAX_DEPTH 16 /* nesting of objects/arrays inside a member value, at most 32 */
#endif

#define DR_DEVICE_ID_MAX 9007199254740991ULL /* 2^53 - 1, the largest id Drover can be configured for */
#define DR_DEVICE_NAME_MAX 128               /* longest device id, in bytes (docs/protocol.md §1.1) */
#define DR_DEVICE_ACK_MAX 64                 /* buffer that holds any ack payload plus its NUL */
#define DR_DEVICE_TOPIC_MAX (18 + DR_DEVICE_NAME_MAX + 1) /* "consumer/response/" + id + NUL */

/* ---- Error codes ---------------------------------------------------------------------------------- */

enum {
    DR_DEVICE_OK = 0,
    DR_DEVICE_EINVAL = -1,    /* an argument is invalid (NULL pointer, id 0, bad device id, bad status) */
    DR_DEVICE_ETOOBIG = -2,   /* the payload is longer than DR_DEVICE_MAX_PAYLOAD */
    DR_DEVICE_EJSON = -3,     /* not exactly one well-formed JSON object: bad syntax, bad escape or UTF-8,
                                 `\u0000`, data after the object, nesting deeper than DR_DEVICE_MAX_DEPTH,
                                 or a known member given twice */
    DR_DEVICE_EID = -4,       /* `id` missing, not an integer, or outside 1..2^53-1 */
    DR_DEVICE_EFIELD = -5,    /* a member has the wrong type or value: `believerGuarantee` or `command`
                                 not a string, `currentTimestamp` not an integer in 0..2^53-1, `data`
                                 neither an object nor null; for the getters, a value of another type */
    DR_DEVICE_ENOSPACE = -6,  /* the caller's buffer is too small; nothing usable was written */
    DR_DEVICE_ENOTFOUND = -7, /* the id is not remembered, or the member is not there */
    DR_DEVICE_ESTORE = -8,    /* a persistence hook failed, or the saved ring was unreadable */
};

/* Returns a static English description of code; never NULL, also for unknown codes. */
const char *dr_device_strerror(int code);

/* ---- Types ---------------------------------------------------------------------------------------- */

/* A run of bytes inside a buffer the caller owns; not NUL-terminated. */
typedef struct {
    const char *p; /* first byte; NULL only for an absent or null `data` */
    size_t len;    /* number of bytes */
} dr_device_span_t;

/* The message's `believerGuarantee`. */
typedef enum {
    DR_DEVICE_G_NO = 0,                   /* sent once, never re-sent; an ack is optional */
    DR_DEVICE_G_RECEIPT_CONFIRMATION = 1, /* re-sent with the same id until acknowledged */
    DR_DEVICE_G_ONLY_LAST = 2,            /* as RECEIPT_CONFIRMATION (supersession happens server-side) */
    DR_DEVICE_G_OTHER = 3,                /* an unknown name: handled as RECEIPT_CONFIRMATION */
} dr_device_guarantee_t;

/* A status a device reports in an ack (docs/protocol.md §2.3). */
typedef enum {
    DR_DEVICE_DELIVERED = 0,            /* received; the ack is `{"id":N}` */
    DR_DEVICE_COMPLETED = 1,            /* carried out */
    DR_DEVICE_COMPLETED_WITH_ERROR = 2, /* tried and failed */
} dr_device_status_t;

/* What the caller should do with a received command. */
typedef enum {
    DR_DEVICE_EXECUTE = 0,   /* new: acknowledge, execute, report the outcome */
    DR_DEVICE_DUPLICATE = 1, /* executed before: acknowledge again with `status`, do not execute */
} dr_device_action_t;

/* A parsed device message. Spans are borrowed from the payload buffer passed in. */
typedef struct {
    uint64_t id;                     /* 1..2^53-1 (Drover's default keeps ids below 2^31) */
    dr_device_guarantee_t guarantee; /* RECEIPT_CONFIRMATION when absent or null */
    dr_device_span_t command;        /* the string's contents without quotes, escapes as sent; compare
                                        with dr_device_str_eq(). Absent or null: a static "" */
    dr_device_span_t data;           /* the raw `data` object `{...}`; p is NULL when absent or null */
    uint64_t current_timestamp;      /* epoch ms of this send (changes on every re-send); 0 if absent */
    dr_device_action_t action;       /* set by dr_device_receive(); EXECUTE after dr_device_parse() */
    dr_device_status_t status;       /* DUPLICATE: the last status recorded for id, to acknowledge with */
} dr_device_cmd_t;

/* Persistence hook: stores `len` bytes of `image` (one blob, e.g. an NVS key), replacing the previous
 * one. Returns 0 on success, any other value on failure. `image` is borrowed for the call only. */
typedef int dr_device_save_cb(void *ctx, const void *image, size_t len);

/* Persistence hook: fills exactly `len` bytes of `image` with the stored blob. Returns 0 on success,
 * DR_DEVICE_ENOTFOUND when nothing is stored yet (first boot), any other value on failure (including a
 * stored blob of another length). */
typedef int dr_device_load_cb(void *ctx, void *image, size_t len);

#define DR_DEVICE_F_DEDUP_NO 0x1u /* also remember guarantee-NO ids (see dr_device_receive) */

/* Options for dr_device_init(). All members may be zero. */
typedef struct {
    dr_device_save_cb *save; /* called after every change of the ring; NULL: RAM only */
    dr_device_load_cb *load; /* called once by dr_device_init(); NULL: start empty */
    void *ctx;               /* passed to both hooks */
    unsigned flags;          /* DR_DEVICE_F_* */
} dr_device_opts_t;

/* The ring image, saved and loaded verbatim. It is meant for the device that wrote it (native byte
 * order); a different DR_DEVICE_RING_SIZE, an image of an older SDK ("DRD1", without fingerprints) or
 * a bad checksum makes a loaded image unreadable. */
typedef struct {
    uint32_t magic;                        /* DR_DEVICE_RING_MAGIC */
    uint16_t size;                         /* DR_DEVICE_RING_SIZE when written */
    uint16_t count;                        /* entries in use */
    uint32_t check;                        /* FNV-1a over the image with this field zero */
    uint32_t reserved;                     /* zero */
    uint64_t entries[DR_DEVICE_RING_SIZE]; /* oldest first: id | status << 56; unused entries zero */
    uint32_t prints[DR_DEVICE_RING_SIZE];  /* fingerprint of each entry's command and data; unused zero */
} dr_device_ring_t;

#define DR_DEVICE_RING_MAGIC 0x44524432u /* "DRD2" */

/* De-duplication state. Caller-allocated (static or on a long-lived stack); holds no resources, so
 * there is nothing to dispose. */
typedef struct {
    /* private: use the functions below */
    dr_device_ring_t ring;
    dr_device_save_cb *save;
    dr_device_load_cb *load;
    void *ctx;
    unsigned flags;
} dr_device_t;

/* ---- State ---------------------------------------------------------------------------------------- */

/* Initialises dev with opts (NULL for no hooks) and loads the saved ring through opts->load.
 * Returns 0 (also when nothing was stored yet), DR_DEVICE_EINVAL if dev is NULL, or DR_DEVICE_ESTORE
 * when the load hook failed or the image was unreadable: dev is then initialised with an empty ring and
 * usable, so the caller only logs it. opts is copied; the hooks and ctx must stay valid. */
int dr_device_init(dr_device_t *dev, const dr_device_opts_t *opts);

/* Forgets every remembered id and saves the empty ring. Use it when the server's ids start again
 * (a new Drover cluster or a wiped Redis; a Duster database recreated on start): otherwise new messages
 * that reuse remembered ids would be taken for duplicates. Returns 0, DR_DEVICE_EINVAL or
 * DR_DEVICE_ESTORE (the ring is empty in RAM either way). */
int dr_device_reset(dr_device_t *dev);

/* Number of ids currently remembered (0..DR_DEVICE_RING_SIZE); 0 for a NULL dev. */
size_t dr_device_count(const dr_device_t *dev);

/* ---- Receiving ------------------------------------------------------------------------------------ */

/* Parses one payload from `consumer/request/{deviceId}` into cmd, without touching any state.
 * payload[0..len) is borrowed and need not be NUL-terminated; cmd's spans point into it.
 * Unknown members are skipped (and checked for syntax), member order and whitespace do not matter.
 * Returns 0 (cmd->action is EXECUTE) or DR_DEVICE_EINVAL (payload or cmd NULL), DR_DEVICE_ETOOBIG,
 * DR_DEVICE_EJSON, DR_DEVICE_EID, DR_DEVICE_EFIELD. A syntax error wins over an id error, which wins
 * over a field error. On error *cmd is cleared (id 0, no data): the message cannot be acknowledged,
 * and Drover re-sends it until its limits end. */
int dr_device_parse(const char *payload, size_t len, dr_device_cmd_t *cmd);

/* Parses like dr_device_parse() and decides what to do:
 * - id remembered with the same command and data: cmd->action = DR_DEVICE_DUPLICATE and cmd->status =
 *   the status last recorded for it (DR_DEVICE_DELIVERED until dr_device_set_status() changed it).
 *   Acknowledge with it; do not execute.
 * - otherwise (also an id remembered with another command or data: a new message reusing the id):
 *   cmd->action = DR_DEVICE_EXECUTE; the id is recorded (and saved) before this returns.
 * Guarantee NO messages are never re-sent by Drover or Duster, so by default they are executed without
 * taking a ring slot (a slot would push out the id of a message that may still be re-sent); set
 * DR_DEVICE_F_DEDUP_NO to remember them too (a broker may redeliver a QoS 1 message after a reconnect).
 * Returns 0, a dr_device_parse() error, or DR_DEVICE_ESTORE: the save hook failed, so nothing was
 * recorded; cmd is filled, but do not execute or acknowledge: the re-send will try again. */
int dr_device_receive(dr_device_t *dev, const char *payload, size_t len, dr_device_cmd_t *cmd);

/* Records the outcome of an executed id, to be repeated when a duplicate of it arrives. Call it before
 * publishing a COMPLETED or COMPLETED_WITH_ERROR ack: if that publish is lost, the re-send is then
 * answered with the outcome. Returns 0, DR_DEVICE_EINVAL (bad dev, id or status),
 * DR_DEVICE_ENOTFOUND (id not remembered, e.g. a guarantee-NO message) or DR_DEVICE_ESTORE (saving
 * failed; the status is kept in RAM). */
int dr_device_set_status(dr_device_t *dev, uint64_t id, dr_device_status_t status);

/* Looks id up without changing anything. Returns 0 and sets *status (if not NULL), DR_DEVICE_ENOTFOUND
 * or DR_DEVICE_EINVAL. */
int dr_device_lookup(const dr_device_t *dev, uint64_t id, dr_device_status_t *status);

/* ---- Building acks and topics --------------------------------------------------------------------- */

/* Writes the ack for id into buf[0..cap) as a NUL-terminated string: `{"id":N}` for DR_DEVICE_DELIVERED,
 * `{"id":N,"deliveryStatus":"COMPLETED"}` or `..."COMPLETED_WITH_ERROR"}` otherwise. Publish it on
 * dr_device_topic_response(). A cap of DR_DEVICE_ACK_MAX always suffices. Returns the length without
 * the NUL, DR_DEVICE_EINVAL (buf NULL, id 0 or above 2^53-1, bad status) or DR_DEVICE_ENOSPACE. */
int dr_device_ack(char *buf, size_t cap, uint64_t id, dr_device_status_t status);

/* Writes `consumer/request/<device_id>` (the topic to subscribe to, QoS 1 recommended) into buf as a
 * NUL-terminated string. device_id is a NUL-terminated string of 1..DR_DEVICE_NAME_MAX bytes without
 * '/', '+', '#', control characters or DEL. A cap of DR_DEVICE_TOPIC_MAX always suffices. Returns the
 * length without the NUL, DR_DEVICE_EINVAL or DR_DEVICE_ENOSPACE. */
int dr_device_topic_request(char *buf, size_t cap, const char *device_id);

/* Writes `consumer/response/<device_id>` (where acks go); as dr_device_topic_request(). */
int dr_device_topic_response(char *buf, size_t cap, const char *device_id);

/* ---- Reading `data` and strings ------------------------------------------------------------------- */

/* Finds the member `key` (a NUL-terminated name, compared after unescaping) at the top level of the
 * JSON object obj (typically cmd->data) and sets *value to its raw JSON text (strings keep their
 * quotes). With duplicate names the first one counts. obj is checked whole: it must be exactly one
 * well-formed object (whitespace around it allowed). Returns 0, DR_DEVICE_ENOTFOUND (also when obj is
 * a null data span), DR_DEVICE_EJSON or DR_DEVICE_EINVAL. value borrows obj's buffer. */
int dr_device_get(dr_device_span_t obj, const char *key, dr_device_span_t *value);

/* dr_device_get() of a JSON integer (no fraction or exponent) in the int64_t range. Returns 0,
 * DR_DEVICE_EFIELD (another type, a fraction, or out of range) or a dr_device_get() error. */
int dr_device_get_int(dr_device_span_t obj, const char *key, int64_t *out);

/* dr_device_get() of `true` (1) or `false` (0). Returns 0, DR_DEVICE_EFIELD or a dr_device_get() error. */
int dr_device_get_bool(dr_device_span_t obj, const char *key, int *out);

/* dr_device_get() of a JSON string, unescaped (UTF-8) into buf[0..cap) and NUL-terminated. Returns the
 * length without the NUL, DR_DEVICE_EFIELD (not a string), DR_DEVICE_ENOSPACE or a dr_device_get()
 * error. */
int dr_device_get_str(dr_device_span_t obj, const char *key, char *buf, size_t cap);

/* 1 if the contents of a JSON string (without quotes, as in cmd->command) equal the NUL-terminated
 * cstr after unescaping, else 0 (also for malformed escapes or a NULL cstr). */
int dr_device_str_eq(dr_device_span_t s, const char *cstr);

/* Unescapes the contents of a JSON string (as in cmd->command) into buf[0..cap), NUL-terminated.
 * Returns the length without the NUL, DR_DEVICE_EINVAL, DR_DEVICE_EJSON (malformed escape) or
 * DR_DEVICE_ENOSPACE. */
int dr_device_str_copy(dr_device_span_t s, char *buf, size_t cap);

/* Wire names: "NO", "RECEIPT_CONFIRMATION", "ONLY_LAST" ("?" for others); "DELIVERED", "COMPLETED",
 * "COMPLETED_WITH_ERROR" ("?" for others). Static strings. */
const char *dr_device_guarantee_name(dr_device_guarantee_t g);
const char *dr_device_status_name(dr_device_status_t status);

#ifdef __cplusplus
}
#endif

#endif
