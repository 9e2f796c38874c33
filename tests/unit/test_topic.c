/* Unit tests for dr/topic.h: what a broker accepts in a topic. The reference is a plain decoder
 * written independently below, run over every code point and over every 1- and 2-byte string. */
#include <stdio.h>
#include <string.h>

#include "dr/err.h"
#include "dr/topic.h"
#include "t.h"

#define OK(s) CHECK_EQ_INT(dr_topic_check_utf8((s), sizeof(s) - 1), 0)
#define BAD(s) CHECK_EQ_INT(dr_topic_check_utf8((s), sizeof(s) - 1), DR_EINVAL)

/* Encodes cp as UTF-8 (cp <= 0x10FFFF; surrogates encoded naively, which must then be refused). */
static size_t encode(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Which scalar values Mosquitto accepts in a topic (the rule dr_topic_check_utf8 implements). */
static int allowed(unsigned cp)
{
    if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F))
        return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return 0;
    if (cp >= 0xFDD0 && cp <= 0xFDEF)
        return 0;
    if ((cp & 0xFFFF) == 0xFFFE || (cp & 0xFFFF) == 0xFFFF)
        return 0;
    return 1;
}

static void test_every_code_point(void)
{
    int wrong = 0;
    for (unsigned cp = 0; cp <= 0x10FFFF; cp++) {
        char buf[4];
        size_t n = encode(cp, buf);
        int got = dr_topic_check_utf8(buf, n) == 0;
        if (got != allowed(cp) && wrong++ < 10)
            fprintf(stderr, "    U+%04X: got %d, expected %d\n", cp, got, allowed(cp));
    }
    CHECK_EQ_INT(wrong, 0);
}

static void test_malformed(void)
{
    OK("device-1");
    OK("\xd0\xb4\xd0\xb0\xd1\x82\xd1\x87\xd0\xb8\xd0\xba"); /* Cyrillic */
    OK("\xf0\x9f\x98\x80");                                  /* U+1F600 */
    BAD("\xc2\x85");                                         /* NEL, a C1 control */
    BAD("a\x7f");
    BAD("\xc0\xaf");                 /* overlong '/' */
    BAD("\xe0\x80\xaf");             /* overlong '/' */
    BAD("\xf0\x80\x80\xaf");         /* overlong '/' */
    BAD("\xed\xa0\x80");             /* U+D800 */
    BAD("\xf4\x90\x80\x80");         /* U+110000 */
    BAD("\xf5\x80\x80\x80");
    BAD("\xff");
    BAD("\x80");                     /* lone continuation */
    BAD("\xe2\x82");                 /* truncated */
    BAD("\xe2\x28\xa1");             /* bad continuation */
    BAD("ab\xf0\x9f\x98");           /* truncated at the end */
    CHECK_EQ_INT(dr_topic_check_utf8("a\0b", 3), DR_EINVAL);
}

/* Every string of one and two bytes: accepted exactly when it decodes to allowed code points. */
static void test_short_strings_against_reference(void)
{
    int wrong = 0;
    for (unsigned a = 0; a < 256; a++) {
        char s1[1] = {(char)a};
        int exp1 = a < 0x80 && allowed(a);
        if ((dr_topic_check_utf8(s1, 1) == 0) != exp1)
            wrong++;
        for (unsigned b = 0; b < 256; b++) {
            char s2[2] = {(char)a, (char)b};
            int exp2;
            if (a < 0x80)
                exp2 = allowed(a) && b < 0x80 && allowed(b);
            else
                exp2 = a >= 0xC2 && a <= 0xDF && (b & 0xC0) == 0x80 && allowed(((a & 0x1F) << 6) | (b & 0x3F));
            if ((dr_topic_check_utf8(s2, 2) == 0) != exp2 && wrong++ < 10)
                fprintf(stderr, "    %02x %02x: expected %d\n", a, b, exp2);
        }
    }
    CHECK_EQ_INT(wrong, 0);
}

static void test_names_and_levels(void)
{
    CHECK_EQ_INT(dr_topic_check_name("consumer/request/d1", 19), 0);
    CHECK_EQ_INT(dr_topic_check_name("", 0), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_name("a/+/b", 5), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_name("a/#", 3), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_name("producer/response/\xc2\x85", 20), DR_EINVAL);
    static char big[DR_TOPIC_MAX + 1];
    memset(big, 'a', sizeof(big));
    CHECK_EQ_INT(dr_topic_check_name(big, DR_TOPIC_MAX), 0);
    CHECK_EQ_INT(dr_topic_check_name(big, DR_TOPIC_MAX + 1), DR_EINVAL);

    CHECK_EQ_INT(dr_topic_check_level("dev", 3, 128), 0);
    CHECK_EQ_INT(dr_topic_check_level("a/b", 3, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_level("a+", 2, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_level("#", 1, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_level("", 0, 128), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_level("abcd", 4, 4), 0);
    CHECK_EQ_INT(dr_topic_check_level("abcde", 5, 4), DR_EINVAL);
    CHECK_EQ_INT(dr_topic_check_level("x\xef\xbf\xbe", 4, 128), DR_EINVAL); /* U+FFFE */
    CHECK_EQ_INT(dr_topic_check_level("x\xef\xb7\x90", 4, 128), DR_EINVAL); /* U+FDD0 */
    CHECK_EQ_INT(dr_topic_check_level("$dev", 4, 128), 0);
}

int main(void)
{
    test_every_code_point();
    test_malformed();
    test_short_strings_against_reference();
    test_names_and_levels();
    return t_report("test_topic");
}
