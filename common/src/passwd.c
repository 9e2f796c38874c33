/* Password hashing and login tokens (see dr/passwd.h).
 *
 * DESIGN
 * libxcrypt's crypt_rn does the bcrypt work with a caller-owned struct crypt_data, so it is safe on
 * any thread; the struct is about 32 KB and lives on the heap. crypt_rn returns a hash of the same
 * shape as its setting, or a failure token starting with '*', so a verification accepts only a result
 * of the stored hash's full length that equals it byte for byte (CRYPTO_memcmp, constant time). A
 * stored value is handed to crypt_rn only once it looks like bcrypt: libxcrypt also knows DES, MD5
 * and SHA-crypt, and the registry must not silently accept those either.
 */
#define DR_MODULE "common/passwd"

#include <crypt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/apikey.h"
#include "dr/err.h"
#include "dr/mem.h"
#include "dr/passwd.h"

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* ---- bcrypt ------------------------------------------------------------------------------------- */

static int is_b64(char c)
{
    return c == '.' || c == '/' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int dr_passwd_is_hash(const char *s)
{
    if (s == NULL || strlen(s) != DR_PASSWD_HASH_LEN)
        return 0;
    if (s[0] != '$' || s[1] != '2' || (s[2] != 'a' && s[2] != 'b' && s[2] != 'y') || s[3] != '$')
        return 0;
    if (s[4] < '0' || s[4] > '9' || s[5] < '0' || s[5] > '9' || s[6] != '$')
        return 0;
    int cost = (s[4] - '0') * 10 + (s[5] - '0');
    if (cost < DR_PASSWD_MIN_COST || cost > DR_PASSWD_MAX_COST)
        return 0;
    for (int i = 7; i < DR_PASSWD_HASH_LEN; i++)
        if (!is_b64(s[i]))
            return 0;
    return 1;
}

int dr_passwd_hash(const char *pw, int cost, char *out)
{
    if (strlen(pw) > DR_PASSWD_MAX || cost < DR_PASSWD_MIN_COST || cost > DR_PASSWD_MAX_COST)
        return DR_EINVAL;
    unsigned char rnd[16];
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (dr_random_bytes(rnd, sizeof(rnd)) != 0)
        return DR_EIO;
    if (crypt_gensalt_rn("$2b$", (unsigned long)cost, (const char *)rnd, sizeof(rnd), setting,
                         sizeof(setting)) == NULL)
        return DR_EIO;
    struct crypt_data *cd = dr_calloc(1, sizeof(*cd));
    const char *h = crypt_rn(pw, setting, cd, sizeof(*cd));
    int rc = DR_EIO;
    if (h != NULL && dr_passwd_is_hash(h)) {
        memcpy(out, h, DR_PASSWD_HASH_LEN + 1);
        rc = 0;
    }
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    return rc;
}

int dr_passwd_verify(const char *pw, const char *hash)
{
    if (!dr_passwd_is_hash(hash))
        return 0;
    struct crypt_data *cd = dr_calloc(1, sizeof(*cd));
    const char *h = crypt_rn(pw, hash, cd, sizeof(*cd));
    int match =
        h != NULL && strlen(h) == DR_PASSWD_HASH_LEN && CRYPTO_memcmp(h, hash, DR_PASSWD_HASH_LEN) == 0;
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    return match;
}

/* ---- thread pool -------------------------------------------------------------------------------- */

typedef struct {
    uv_work_t work;
    char *pw;
    char hash[DR_PASSWD_HASH_LEN + 1]; /* verify: the stored hash ("" for an unknown account); hash: result */
    int verify;
    int cost;
    int err, match;
    dr_passwd_cb *cb;
    void *data;
} job_t;

static void on_work(uv_work_t *w)
{
    job_t *j = w->data;
    if (!j->verify) {
        j->err = dr_passwd_hash(j->pw, j->cost, j->hash);
    } else if (j->hash[0] != '\0') {
        j->match = dr_passwd_verify(j->pw, j->hash);
    } else {
        char dummy[DR_PASSWD_HASH_LEN + 1];
        (void)dr_passwd_hash(j->pw, j->cost, dummy); /* the same work as a real verification */
        j->match = 0;
    }
}

static void on_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    OPENSSL_cleanse(j->pw, strlen(j->pw));
    free(j->pw);
    if (status != 0)
        j->err = DR_ECLOSED;
    j->cb(j->data, j->err, j->err == 0 && j->match, j->err == 0 && !j->verify ? j->hash : "");
    free(j);
}

static int queue(uv_loop_t *loop, job_t *j)
{
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, on_work, on_done) != 0) {
        OPENSSL_cleanse(j->pw, strlen(j->pw));
        free(j->pw);
        free(j);
        return DR_EINVAL;
    }
    return 0;
}

int dr_passwd_hash_async(uv_loop_t *loop, const char *pw, int cost, dr_passwd_cb *cb, void *data)
{
    if (strlen(pw) > DR_PASSWD_MAX || cost < DR_PASSWD_MIN_COST || cost > DR_PASSWD_MAX_COST)
        return DR_EINVAL;
    job_t *j = dr_calloc(1, sizeof(*j));
    j->pw = dr_strdup(pw);
    j->cost = cost;
    j->cb = cb;
    j->data = data;
    return queue(loop, j);
}

int dr_passwd_verify_async(uv_loop_t *loop, const char *pw, const char *hash, int cost, dr_passwd_cb *cb,
                           void *data)
{
    job_t *j = dr_calloc(1, sizeof(*j));
    /* bcrypt reads 72 bytes; a longer presented password is cut there for the dummy hash alike */
    j->pw = dr_strndup(pw, strnlen(pw, DR_PASSWD_MAX));
    j->verify = 1;
    j->cost = cost < DR_PASSWD_MIN_COST || cost > DR_PASSWD_MAX_COST ? 12 : cost;
    if (hash != NULL && dr_passwd_is_hash(hash)) /* a malformed one gets the dummy work too */
        memcpy(j->hash, hash, DR_PASSWD_HASH_LEN + 1);
    j->cb = cb;
    j->data = data;
    return queue(loop, j);
}

/* ---- random text and tokens --------------------------------------------------------------------- */

int dr_passwd_random(char *out, size_t n)
{
    unsigned char *rnd = dr_malloc(n ? n : 1);
    int rc = dr_random_bytes(rnd, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        out[i] = b64url[rnd[i] & 63]; /* 256 is a multiple of 64: no bias */
    out[rc == 0 ? n : 0] = '\0';
    OPENSSL_cleanse(rnd, n);
    free(rnd);
    return rc;
}

int dr_token_new(char *tok, char *hash)
{
    memcpy(tok, "drt_", 4);
    if (dr_passwd_random(tok + 4, 43) != 0)
        return DR_EIO;
    dr_token_hash(tok, DR_TOKEN_LEN, hash);
    return 0;
}

int dr_token_is(const char *tok, size_t len)
{
    if (len != DR_TOKEN_LEN || memcmp(tok, "drt_", 4) != 0)
        return 0;
    for (size_t i = 4; i < len; i++)
        if (strchr(b64url, tok[i]) == NULL || tok[i] == '\0')
            return 0;
    return 1;
}

void dr_token_hash(const char *tok, size_t len, char *hash)
{
    dr_apikey_hash(tok, len, hash); /* the same SHA-256 hex digest as API keys */
}
