/* libFuzzer target for the wire codec: producer messages, acks, ids and the JSON depth pre-check.
 * The first input byte selects the parser so one corpus covers all of them. Every accepted message
 * must encode back to JSON that jansson can read, and every parse must leave nothing allocated. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dr/codec.h"
#include "dr/status.h"

static void check_json(const char *txt)
{
    json_error_t e;
    json_t *j = json_loads(txt, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (j == NULL)
        abort(); /* an encoder produced invalid JSON */
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    dr_codec_err_t err;
    switch (data[0] % 4) {
    case 0: {
        dr_producer_msg_t m;
        if (dr_codec_parse_producer(buf, len, &m, &err) == 0) {
            char *out = dr_codec_encode_consumer(1, m.guarantee, m.command, 1, m.data);
            check_json(out);
            free(out);
            (void)dr_producer_msg_fingerprint(&m, "dev");
            dr_producer_msg_dispose(&m);
        }
        break;
    }
    case 1: {
        dr_ack_t a;
        if (dr_codec_parse_ack(buf, len, &a, &err) == 0 && !dr_status_is_ack(a.status))
            abort();
        break;
    }
    case 2:
        (void)dr_codec_check_id(buf, len, 128);
        break;
    default:
        (void)dr_codec_json_depth(buf, len);
        if (len < 4096) {
            char *s = malloc(len + 1);
            memcpy(s, buf, len);
            s[len] = '\0';
            char *q = dr_codec_json_string(s);
            json_t *as_json = memchr(s, '\0', len) == NULL ? json_loads(s, 0, NULL) : NULL;
            if (as_json == NULL)
                check_json(q); /* quoting any text gives a JSON string (invalid UTF-8 becomes "") */
            json_decref(as_json);
            free(q);
            free(s);
        }
    }
    return 0;
}
