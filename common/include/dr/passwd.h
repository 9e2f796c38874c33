/* Password hashing (bcrypt through libxcrypt) and login tokens for the client registry.
 *
 * New hashes are "$2b$" with the configured cost. Hashes made by other bcrypt implementations
 * ("$2a$", "$2b$", "$2y$", e.g. Duster's Spring BCryptPasswordEncoder or htpasswd -B) verify as they
 * are. A stored value that is not a well-formed bcrypt hash never matches: there is no plaintext
 * fallback. bcrypt reads at most 72 bytes of a password, so longer ones are refused when set.
 *
 * bcrypt is slow on purpose (about 0.25 s at cost 12), so a service calls the _async variants, which
 * run on libuv's thread pool and call back on the loop thread; the synchronous ones suit tools and tests.
 */
#ifndef DR_PASSWD_H
#define DR_PASSWD_H

#include <stddef.h>
#include <uv.h>

#define DR_PASSWD_HASH_LEN 60 /* length of a bcrypt hash */
#define DR_PASSWD_MAX 72      /* longest password bcrypt reads */
#define DR_PASSWD_MIN_COST 4
#define DR_PASSWD_MAX_COST 31
#define DR_TOKEN_LEN (4 + 43) /* "drt_" + 256 random bits in base64url */
#define DR_TOKEN_HASH_LEN 64  /* hex SHA-256 */

/* 1 when s is a well-formed bcrypt hash ($2a$, $2b$ or $2y$, cost 04..31, 53 salt and digest symbols). */
int dr_passwd_is_hash(const char *s);

/* Hashes pw (NUL-terminated, at most DR_PASSWD_MAX bytes) with a fresh salt at cost into
 * out[DR_PASSWD_HASH_LEN + 1]. Returns 0, DR_EINVAL (password too long, cost out of range) or DR_EIO
 * (the random source or libxcrypt failed). Any thread. */
int dr_passwd_hash(const char *pw, int cost, char *out);

/* 1 when pw matches hash, else 0 (also for a malformed or non-bcrypt hash). The final comparison runs
 * in constant time. Any thread. */
int dr_passwd_verify(const char *pw, const char *hash);

/* Completion of an asynchronous call, on the loop thread, exactly once. err is 0 or a DR_E* code;
 * match is the verification's answer (0 for a hash call); hash is the new hash of a hash call ("" for a
 * verification), valid during the call only. */
typedef void dr_passwd_cb(void *data, int err, int match, const char *hash);

/* dr_passwd_hash on the thread pool of loop. pw is copied (and wiped after use). Returns 0 (cb will be
 * called once) or DR_EINVAL (cb not called). Loop thread. */
int dr_passwd_hash_async(uv_loop_t *loop, const char *pw, int cost, dr_passwd_cb *cb, void *data);

/* dr_passwd_verify on the thread pool of loop. With hash NULL (an unknown account) it hashes pw at
 * cost instead and answers no match, so the answer takes as long as for an existing account. pw and
 * hash are copied. Returns 0 (cb will be called once). Loop thread. */
int dr_passwd_verify_async(uv_loop_t *loop, const char *pw, const char *hash, int cost, dr_passwd_cb *cb,
                           void *data);

/* Writes n random base64url characters and a NUL into out (n + 1 bytes). Returns 0 or DR_EIO. */
int dr_passwd_random(char *out, size_t n);

/* A new login token into tok[DR_TOKEN_LEN + 1] and its hex SHA-256 into hash[DR_TOKEN_HASH_LEN + 1].
 * Only the hash is stored. Returns 0 or DR_EIO. */
int dr_token_new(char *tok, char *hash);

/* 1 when the text (len bytes) is shaped like a login token. */
int dr_token_is(const char *tok, size_t len);

/* Hex SHA-256 of a presented token into hash[DR_TOKEN_HASH_LEN + 1]. */
void dr_token_hash(const char *tok, size_t len, char *hash);

#endif
