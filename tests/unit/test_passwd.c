/* Unit tests for dr/passwd.h: bcrypt hashes made by other implementations verify, wrong passwords and
 * damaged or non-bcrypt hashes never do, our own hashes round-trip, and the thread-pool variants
 * answer on the loop.
 *
 * The fixed vectors were made with other bcrypt implementations, not with this code:
 *   $2y$: htpasswd -bnBC 10 u 'correct horse'                       (apache2-utils 2.4)
 *   $2b$: python3 -c "bcrypt.hashpw(pw, bcrypt.gensalt(rounds=10))"  (python3-bcrypt)
 *   $2a$: the same with gensalt(rounds=10, prefix=b'2a'), the prefix Duster's Spring encoder writes
 */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "dr/err.h"
#include "dr/passwd.h"
#include "t.h"

static const char *h2y = "$2y$10$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK"; /* correct horse */
static const char *h2b =
    "$2b$10$SFG9xbSCGk3gOGfDfyTDQ.cY2Gc8.2AmC3/PNWDP.3CzafUrrvbIy"; /* p\xc3\xa4ssw0rd! */
static const char *h2a = "$2a$10$hS72jd34/XAVCycsgjwVHO7uIaDVrLRAZvs3XlulJRzVa500NLf6K"; /* duster-admin */
static const char *h2b_empty = "$2b$04$KtAPlJ8WiKZ.UnQr/CMRh..SkbgNXeEssLPCqSOCL6bVEYmlYrsc2"; /* "" */

static void test_foreign_hashes(void)
{
    CHECK(dr_passwd_verify("correct horse", h2y));
    CHECK(dr_passwd_verify("p\xc3\xa4ssw0rd!", h2b));
    CHECK(dr_passwd_verify("duster-admin", h2a));
    CHECK(dr_passwd_verify("", h2b_empty));
    /* wrong passwords */
    CHECK(!dr_passwd_verify("correct horse ", h2y));
    CHECK(!dr_passwd_verify("Correct horse", h2y));
    CHECK(!dr_passwd_verify("passw0rd!", h2b));
    CHECK(!dr_passwd_verify("", h2a));
    CHECK(!dr_passwd_verify("x", h2b_empty));
}

static void test_bad_hashes(void)
{
    char buf[128];
    /* truncated: every prefix of a valid hash is refused */
    for (size_t n = 0; n < strlen(h2y); n++) {
        snprintf(buf, sizeof(buf), "%.*s", (int)n, h2y);
        CHECK(!dr_passwd_is_hash(buf));
        CHECK(!dr_passwd_verify("correct horse", buf));
    }
    /* one symbol changed: a valid shape, but the digest no longer matches */
    snprintf(buf, sizeof(buf), "%s", h2y);
    buf[59] = buf[59] == 'K' ? 'L' : 'K';
    CHECK(dr_passwd_is_hash(buf));
    CHECK(!dr_passwd_verify("correct horse", buf));
    /* an extra character, a bad variant, a bad cost, a bad symbol */
    snprintf(buf, sizeof(buf), "%sx", h2y);
    CHECK(!dr_passwd_verify("correct horse", buf));
    const char *bad[] = {"$2x$10$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK",
                         "$2y$03$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK",
                         "$2y$1a$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK",
                         "$2y$10$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svse!",
                         "$2y$10 vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!dr_passwd_is_hash(bad[i]));
        CHECK(!dr_passwd_verify("correct horse", bad[i]));
    }
    /* no plaintext fallback, and no other crypt(3) scheme */
    CHECK(!dr_passwd_verify("admin", "admin"));
    CHECK(!dr_passwd_verify("", ""));
    CHECK(!dr_passwd_verify("secret", "$1$abcdefgh$1uZ6Hw1q6wM4J5Zq2jGZC/"));
    CHECK(!dr_passwd_verify("x", NULL));
}

static void test_own_hashes(void)
{
    char h[DR_PASSWD_HASH_LEN + 1], h2[DR_PASSWD_HASH_LEN + 1];
    if (CHECK_EQ_INT(dr_passwd_hash("s3cret", 4, h), 0)) {
        CHECK(strncmp(h, "$2b$04$", 7) == 0);
        CHECK(dr_passwd_is_hash(h));
        CHECK(dr_passwd_verify("s3cret", h));
        CHECK(!dr_passwd_verify("s3cre", h));
    }
    CHECK_EQ_INT(dr_passwd_hash("s3cret", 4, h2), 0);
    CHECK(strcmp(h, h2) != 0); /* fresh salt each time */
    char longpw[DR_PASSWD_MAX + 2];
    memset(longpw, 'a', sizeof(longpw) - 1);
    longpw[sizeof(longpw) - 1] = '\0';
    CHECK_EQ_INT(dr_passwd_hash(longpw, 4, h), DR_EINVAL);
    longpw[DR_PASSWD_MAX] = '\0';
    CHECK_EQ_INT(dr_passwd_hash(longpw, 4, h), 0);
    CHECK_EQ_INT(dr_passwd_hash("x", 3, h), DR_EINVAL);
    CHECK_EQ_INT(dr_passwd_hash("x", 32, h), DR_EINVAL);
}

static void test_tokens(void)
{
    char t1[DR_TOKEN_LEN + 1], t2[DR_TOKEN_LEN + 1], h1[DR_TOKEN_HASH_LEN + 1], h2[DR_TOKEN_HASH_LEN + 1],
        h[65];
    CHECK_EQ_INT(dr_token_new(t1, h1), 0);
    CHECK_EQ_INT(dr_token_new(t2, h2), 0);
    CHECK(strcmp(t1, t2) != 0 && strcmp(h1, h2) != 0);
    CHECK(dr_token_is(t1, strlen(t1)));
    CHECK(!dr_token_is(t1, strlen(t1) - 1));
    dr_token_hash(t1, strlen(t1), h);
    CHECK(strcmp(h, h1) == 0);
    t1[10] = '*';
    CHECK(!dr_token_is(t1, strlen(t1)));
    CHECK(!dr_token_is("drk_0123456789ab_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 60));
    char pw[21];
    CHECK_EQ_INT(dr_passwd_random(pw, 20), 0);
    CHECK_EQ_INT((long long)strlen(pw), 20);
}

typedef struct {
    int calls, err, match;
    char hash[DR_PASSWD_HASH_LEN + 1];
} res_t;

static void on_res(void *data, int err, int match, const char *hash)
{
    res_t *r = data;
    r->calls++;
    r->err = err;
    r->match = match;
    snprintf(r->hash, sizeof(r->hash), "%s", hash);
}

static void test_async(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    res_t made = {0}, good = {0}, wrong = {0}, unknown = {0}, foreign = {0};
    CHECK_EQ_INT(dr_passwd_hash_async(&loop, "pool", 4, on_res, &made), 0);
    CHECK_EQ_INT(dr_passwd_verify_async(&loop, "correct horse", h2y, 4, on_res, &foreign), 0);
    CHECK_EQ_INT(dr_passwd_verify_async(&loop, "nobody", NULL, 4, on_res, &unknown), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(made.calls, 1);
    CHECK_EQ_INT(made.err, 0);
    CHECK(dr_passwd_verify("pool", made.hash));
    CHECK_EQ_INT(foreign.match, 1);
    CHECK_EQ_INT(unknown.calls, 1);
    CHECK_EQ_INT(unknown.match, 0);
    CHECK_EQ_INT(dr_passwd_verify_async(&loop, "pool", made.hash, 4, on_res, &good), 0);
    CHECK_EQ_INT(dr_passwd_verify_async(&loop, "pool!", made.hash, 4, on_res, &wrong), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(good.calls == 1 && good.err == 0 && good.match == 1);
    CHECK(wrong.calls == 1 && wrong.err == 0 && wrong.match == 0);
    CHECK_EQ_INT(dr_passwd_hash_async(&loop, "x", 99, on_res, &made), DR_EINVAL);
    uv_loop_close(&loop);
}

int main(void)
{
    test_foreign_hashes();
    test_bad_hashes();
    test_own_hashes();
    test_tokens();
    test_async();
    return t_report("test_passwd");
}
