/* API keys for the REST API.
 *
 * A key reads "drk_<id>_<secret>": <id> is 12 hex characters naming the key (safe to log), <secret> is
 * 43 base64url characters (256 random bits). Redis stores only the SHA-256 of the whole key, under
 * <prefix>ak:<id> with its scope, bound device and name, so a leaked database does not leak keys.
 * Verification compares digests in constant time.
 */
#ifndef DR_APIKEY_H
#define DR_APIKEY_H

#include <stddef.h>

#define DR_APIKEY_ID_LEN 12
#define DR_APIKEY_LEN (4 + DR_APIKEY_ID_LEN + 1 + 43) /* drk_ + id + _ + secret */
#define DR_APIKEY_HASH_LEN 64                         /* hex SHA-256 */

typedef enum { DR_SCOPE_PRODUCER = 0, DR_SCOPE_DEVICE, DR_SCOPE_ADMIN, DR_SCOPE_COUNT } dr_scope_t;

/* Name of a scope ("producer", "device", "admin") and back (-1 when unknown). */
const char *dr_scope_name(int scope);
int dr_scope_parse(const char *s);

/* Fills buf with n bytes from the kernel's random source (getrandom). Returns 0, or DR_EIO when the
 * source fails. Every secret Drover makes (keys, salts, session tokens) comes from here. */
int dr_random_bytes(void *buf, size_t n);

/* Generates a new key into key[DR_APIKEY_LEN + 1] and its id into id[DR_APIKEY_ID_LEN + 1].
 * Returns 0 or DR_EIO when the kernel's random source fails. */
int dr_apikey_generate(char *key, char *id);

/* Extracts the id of a presented key (len bytes). Returns 0 and fills id[DR_APIKEY_ID_LEN + 1], or
 * DR_EINVAL when the text is not shaped like a key. */
int dr_apikey_parse(const char *key, size_t len, char *id);

/* Hex SHA-256 of the key into hash[DR_APIKEY_HASH_LEN + 1]. */
void dr_apikey_hash(const char *key, size_t len, char *hash);

/* Constant-time comparison of two hex digests; 1 when equal. */
int dr_apikey_hash_equal(const char *a, const char *b);

#endif
