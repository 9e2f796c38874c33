/* The client registry: Duster's clients (login accounts of devices, role DEVISE, and of operators,
 * role MAN), their bcrypt password hashes and the login tokens issued to them.
 *
 * Typed wrappers of the reg_* functions at the end of common/lua/drover.lua, which own the key names
 * (all under the one hash tag <prefix>{reg}, so the registry is Redis-Cluster ready; the key list is
 * at the top of that file's registry section). Same contract as dr/store.h: each callback is called
 * exactly once for a call that returned 0; strings in results point into the Redis reply and are valid
 * during the callback only; loop thread of the dr_redis_t.
 */
#ifndef DR_REGISTRY_H
#define DR_REGISTRY_H

#include <stdint.h>

#include "dr/passwd.h"
#include "dr/store.h"

#define DR_REG_MAX_DESC 1024 /* longest description (bytes) */

typedef enum { DR_REG_DEVISE = 0, DR_REG_MAN = 1 } dr_reg_role_t;

/* "DEVISE" / "MAN" and back (-1 when unknown; the spelling is Duster's and case-sensitive). */
const char *dr_reg_role_name(int role);
int dr_reg_role_parse(const char *s);

typedef struct {
    int64_t id;            /* Duster's numeric client id */
    const char *devise_id; /* login name = device id for DEVISE clients */
    const char *description;
    int role;         /* dr_reg_role_t */
    const char *hash; /* bcrypt hash of the password */
    int enabled;
    int64_t created_ms, updated_ms;
    const char *gen; /* token generation: a token is valid only with the client's current one */
} dr_reg_client_t;

enum { DR_REG_OK = 0, DR_REG_NOT_FOUND, DR_REG_EXISTS, DR_REG_LIMITED };

/* result: DR_REG_OK with c set, DR_REG_NOT_FOUND (c NULL) or DR_REG_EXISTS (create; c NULL).
 * aux: reg_update 1 when the change revoked the client's tokens; reg_token_check the token's
 * remaining lifetime in ms; reg_login the wait in ms when result is DR_REG_LIMITED; else 0. */
typedef void dr_reg_client_cb(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                              int64_t aux);

/* A page of clients in name order; more is 1 when clients follow the last one. */
typedef void dr_reg_list_cb(void *data, int err, const char *errstr, const dr_reg_client_t *c, size_t n,
                            int more);

/* Looks a client up by numeric id (name NULL) or by name. */
int dr_reg_get(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *name, dr_reg_client_cb *cb,
               void *data);

/* Clients whose name starts with prefix ("" for all), after name after ("" from the start), at most
 * limit (1..1000). */
int dr_reg_list(dr_redis_t *r, const dr_store_t *st, const char *prefix, const char *after, int64_t limit,
                dr_reg_list_cb *cb, void *data);

/* Creates a client; the strings are copied. result DR_REG_EXISTS when the name is taken. */
int dr_reg_create(dr_redis_t *r, const dr_store_t *st, const char *name, const char *desc, int role,
                  const char *hash, int enabled, dr_reg_client_cb *cb, void *data);

/* What an update changes: NULL strings and negative numbers leave a field as it is. */
typedef struct {
    const char *description;
    int role;
    const char *hash;
    int enabled;
} dr_reg_change_t;

/* Updates client id. A new password, a new role or disabling revokes its tokens (aux 1). */
int dr_reg_update(dr_redis_t *r, const dr_store_t *st, int64_t id, const dr_reg_change_t *ch,
                  dr_reg_client_cb *cb, void *data);

/* Deletes a client by numeric id (name NULL) or by name; c is the deleted client. */
int dr_reg_delete(dr_redis_t *r, const dr_store_t *st, int64_t id, const char *name, dr_reg_client_cb *cb,
                  void *data);

/* Creates operator name with hash when the registry has no MAN client. result 1 created, 0 an
 * operator exists, -1 the name is taken by another client. */
int dr_reg_bootstrap(dr_redis_t *r, const dr_store_t *st, const char *name, const char *hash,
                     dr_store_int_cb *cb, void *data);

/* First step of a login: DR_REG_LIMITED (aux: wait ms) when name or addr had max_failures failed logins in
 * the current window, else DR_REG_OK with the client or DR_REG_NOT_FOUND. */
int dr_reg_login(dr_redis_t *r, const dr_store_t *st, const char *name, const char *addr,
                 int64_t max_failures, dr_reg_client_cb *cb, void *data);

/* Counts a failed login for name and addr; the counters expire window_ms after their first failure. */
int dr_reg_failed(dr_redis_t *r, const dr_store_t *st, const char *name, const char *addr, int64_t window_ms,
                  dr_store_int_cb *cb, void *data);

/* Stores token hash tok_hash for client name, valid for ttl_ms, if the client is still enabled and at
 * generation gen (else DR_REG_NOT_FOUND); clears the client's failure counter. */
int dr_reg_token_issue(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, const char *name,
                       const char *gen, int64_t ttl_ms, dr_reg_client_cb *cb, void *data);

/* The client a token hash belongs to (DR_REG_NOT_FOUND: unknown, expired or revoked). */
int dr_reg_token_check(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, dr_reg_client_cb *cb,
                       void *data);

/* Deletes one token (logout); result 1 when it existed. */
int dr_reg_token_revoke(dr_redis_t *r, const dr_store_t *st, const char *tok_hash, dr_store_int_cb *cb,
                        void *data);

#endif
