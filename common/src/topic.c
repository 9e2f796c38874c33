/* MQTT topic and identifier validation (see dr/topic.h). */
#include <stdint.h>

#include "dr/err.h"
#include "dr/topic.h"

/* Decodes one code point at s[*i] (advancing *i), or returns -1 for anything that is not the
 * shortest well-formed encoding of a scalar value. */
static int32_t next_code_point(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    int32_t cp;
    size_t n;
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        n = 2;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        n = 3;
    } else {
        return -1; /* continuation byte, overlong lead (C0, C1) or beyond U+10FFFF (F5..FF) */
    }
    if (len - *i <= n)
        return -1;
    for (size_t k = 1; k <= n; k++) {
        unsigned char cc = s[*i + k];
        if ((cc & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return -1; /* overlong or out of range */
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return -1; /* surrogates are not scalar values */
    *i += n + 1;
    return cp;
}

int dr_topic_check_utf8(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        int32_t cp = next_code_point(u, len, &i);
        if (cp < 0)
            return DR_EINVAL;
        if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F))
            return DR_EINVAL; /* C0 and C1 controls, DEL */
        if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
            return DR_EINVAL; /* noncharacters */
    }
    return 0;
}

int dr_topic_check_name(const char *s, size_t len)
{
    if (len == 0 || len > DR_TOPIC_MAX)
        return DR_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '+' || s[i] == '#')
            return DR_EINVAL;
    return dr_topic_check_utf8(s, len);
}

int dr_topic_check_level(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return DR_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '/' || s[i] == '+' || s[i] == '#')
            return DR_EINVAL;
    return dr_topic_check_utf8(s, len);
}
