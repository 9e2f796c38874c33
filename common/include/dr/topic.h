/* MQTT topic and identifier validation.
 *
 * Anything Drover puts into a topic (device ids, producer ids, whole topic names) must be accepted by
 * every broker it talks to. MQTT 3.1.1 §1.5.3 requires well-formed UTF-8 without U+0000 and lets a
 * receiver drop the connection on a string with control characters or noncharacters; Mosquitto does
 * exactly that (its UTF-8 check refuses C0 and C1 controls, U+FDD0..U+FDEF and U+xFFFE/U+xFFFF, and it
 * closes the connection as "malformed packet"). One publish to such a topic would therefore cost the
 * publisher its broker session. These checks mirror the strictest of those rules so that input is
 * refused where it enters, and so that publishers can refuse a topic before it reaches the wire.
 *
 * All functions are pure and thread-safe.
 */
#ifndef DR_TOPIC_H
#define DR_TOPIC_H

#include <stddef.h>

/* Longest topic name MQTT can carry (a 16-bit length prefix). */
#define DR_TOPIC_MAX 65535

/* Checks that s[0..len) is UTF-8 a broker accepts in a topic or client identifier: well-formed
 * (shortest form, no surrogates, at most U+10FFFF) and free of U+0000..U+001F, U+007F..U+009F,
 * U+FDD0..U+FDEF and U+xFFFE/U+xFFFF. Returns 0 or DR_EINVAL. */
int dr_topic_check_utf8(const char *s, size_t len);

/* Checks a topic name for PUBLISH: 1..DR_TOPIC_MAX bytes, valid per dr_topic_check_utf8, and no
 * wildcard ('+' or '#'). Returns 0 or DR_EINVAL. */
int dr_topic_check_name(const char *s, size_t len);

/* Checks one topic level used as an identifier (a device or producer id): 1..max bytes, valid per
 * dr_topic_check_utf8, and none of '/', '+', '#'. Returns 0 or DR_EINVAL. */
int dr_topic_check_level(const char *s, size_t len, size_t max);

#endif
