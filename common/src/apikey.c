/* API key generation and verification (see dr/apikey.h). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/random.h>

#include "dr/apikey.h"
#include "dr/err.h"

static const char *scope_names[DR_SCOPE_COUNT] = {"producer", "device", "admin"};

const char *dr_scope_name(int scope)
{
    return (scope >= 0 && scope < DR_SCOPE_COUNT) ? scope_names[scope] : "?";
}

int dr_scope_parse(const char *s)
{
    for (int i = 0; i < DR_SCOPE_COUNT; i++)
        if (strcmp(s, scope_names[i]) == 0)
            return i;
    return -1;
}

int dr_random_bytes(void *out, size_t n)
{
    unsigned char *buf = out;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r <= 0)
            return DR_EIO;
        got += (size_t)r;
    }
    return 0;
}

int dr_apikey_generate(char *key, char *id)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static const char hex[] = "0123456789abcdef";
    unsigned char rid[6], sec[32];
    if (dr_random_bytes(rid, sizeof(rid)) != 0 || dr_random_bytes(sec, sizeof(sec)) != 0)
        return DR_EIO;
    for (int i = 0; i < 6; i++) {
        id[2 * i] = hex[rid[i] >> 4];
        id[2 * i + 1] = hex[rid[i] & 15];
    }
    id[DR_APIKEY_ID_LEN] = '\0';
    memcpy(key, "drk_", 4);
    memcpy(key + 4, id, DR_APIKEY_ID_LEN);
    key[4 + DR_APIKEY_ID_LEN] = '_';
    /* base64url of the 256 secret bits: 43 symbols, the last one padded with zero bits */
    char *out = key + 5 + DR_APIKEY_ID_LEN;
    for (int i = 0, bit = 0; i < 43; i++) {
        unsigned v = 0;
        for (int b = 0; b < 6; b++, bit++) {
            v <<= 1;
            if (bit < 256)
                v |= (unsigned)(sec[bit / 8] >> (7 - bit % 8)) & 1u;
        }
        out[i] = b64url[v];
    }
    out[43] = '\0';
    return 0;
}

int dr_apikey_parse(const char *key, size_t len, char *id)
{
    if (len != DR_APIKEY_LEN || memcmp(key, "drk_", 4) != 0 || key[4 + DR_APIKEY_ID_LEN] != '_')
        return DR_EINVAL;
    for (int i = 0; i < DR_APIKEY_ID_LEN; i++) {
        char c = key[4 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return DR_EINVAL;
    }
    memcpy(id, key + 4, DR_APIKEY_ID_LEN);
    id[DR_APIKEY_ID_LEN] = '\0';
    return 0;
}

void dr_apikey_hash(const char *key, size_t len, char *hash)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(key, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        hash[2 * i] = hex[md[i] >> 4];
        hash[2 * i + 1] = hex[md[i] & 15];
    }
    hash[DR_APIKEY_HASH_LEN] = '\0';
}

int dr_apikey_hash_equal(const char *a, const char *b)
{
    if (strlen(a) != DR_APIKEY_HASH_LEN || strlen(b) != DR_APIKEY_HASH_LEN)
        return 0;
    return CRYPTO_memcmp(a, b, DR_APIKEY_HASH_LEN) == 0;
}
