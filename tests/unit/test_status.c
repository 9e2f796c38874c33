/* Unit tests for statuses, guarantees and the forward-only state machine (common/src/status.c).
 * The expected transition matrix below is written out in full so any change to the rules (which must
 * also be made in common/lua/lib.lua) shows up here. */
#include <string.h>

#include "dr/status.h"
#include "t.h"

static void test_names(void)
{
    /* Duster's ordinals (duster-compat.md §1.3) are the enum values. */
    CHECK_EQ_INT(DR_ST_COMPLETED_WITH_ERROR, 0);
    CHECK_EQ_INT(DR_ST_COMPLETED, 1);
    CHECK_EQ_INT(DR_ST_DELIVERED, 2);
    CHECK_EQ_INT(DR_ST_NOT_DELIVERED, 3);
    CHECK_EQ_INT(DR_ST_CANCELLED, 4);
    CHECK_EQ_INT(DR_ST_UNKNOWN, 5);
    CHECK_EQ_INT(DR_ST_EXPIRED, 6);
    CHECK_EQ_INT(DR_ST_FAILED, 7);
    CHECK_EQ_INT(DR_ST_PURGED, 8);
    CHECK_EQ_INT(DR_ST_COUNT, 9);

    CHECK_EQ_STR(dr_status_name(0), "COMPLETED_WITH_ERROR");
    CHECK_EQ_STR(dr_status_name(1), "COMPLETED");
    CHECK_EQ_STR(dr_status_name(2), "DELIVERED");
    CHECK_EQ_STR(dr_status_name(3), "NOT_DELIVERED");
    CHECK_EQ_STR(dr_status_name(4), "CANCELLED");
    CHECK_EQ_STR(dr_status_name(5), "UNKNOWN");
    CHECK_EQ_STR(dr_status_name(DR_ST_EXPIRED), "EXPIRED");
    CHECK_EQ_STR(dr_status_name(DR_ST_FAILED), "FAILED");
    CHECK_EQ_STR(dr_status_name(DR_ST_PURGED), "PURGED");
    CHECK_EQ_STR(dr_status_name(-1), "?");
    CHECK_EQ_STR(dr_status_name(DR_ST_COUNT), "?");
    CHECK_EQ_STR(dr_status_name(1000), "?");

    /* Guarantees: the early Duster ordinals (0 NO, 1 RECEIPT_CONFIRMATION, 2 ONLY_LAST). */
    CHECK_EQ_INT(DR_G_NO, 0);
    CHECK_EQ_INT(DR_G_RECEIPT_CONFIRMATION, 1);
    CHECK_EQ_INT(DR_G_ONLY_LAST, 2);
    CHECK_EQ_STR(dr_guarantee_name(DR_G_NO), "NO");
    CHECK_EQ_STR(dr_guarantee_name(DR_G_RECEIPT_CONFIRMATION), "RECEIPT_CONFIRMATION");
    CHECK_EQ_STR(dr_guarantee_name(DR_G_ONLY_LAST), "ONLY_LAST");
    CHECK_EQ_STR(dr_guarantee_name(-1), "?");
    CHECK_EQ_STR(dr_guarantee_name(DR_G_COUNT), "?");
}

static int parse_st(const char *s)
{
    return dr_status_parse(s, strlen(s));
}

static int parse_g(const char *s)
{
    return dr_guarantee_parse(s, strlen(s));
}

static void test_parse(void)
{
    for (int st = 0; st < DR_ST_COUNT; st++)
        CHECK_EQ_INT(parse_st(dr_status_name(st)), st);
    for (int g = 0; g < DR_G_COUNT; g++)
        CHECK_EQ_INT(parse_g(dr_guarantee_name(g)), g);

    static const char *const bad_st[] = {
        "", "?", "delivered", "Delivered", "DELIVERED ", " DELIVERED", "DELIVERE", "DELIVEREDX", "COMPLETED_WITH",
        "NOT DELIVERED", "not_delivered", "2", "NO", "RECEIPT_CONFIRMATION",
    };
    for (size_t i = 0; i < sizeof(bad_st) / sizeof(bad_st[0]); i++)
        if (!CHECK_EQ_INT(parse_st(bad_st[i]), -1))
            fprintf(stderr, "    input: \"%s\"\n", bad_st[i]);

    static const char *const bad_g[] = {
        "", "no", "No", "receipt_confirmation", "ONLY_LAST ", "ONLY", "RECEIPT", "1", "DELIVERED",
    };
    for (size_t i = 0; i < sizeof(bad_g) / sizeof(bad_g[0]); i++)
        if (!CHECK_EQ_INT(parse_g(bad_g[i]), -1))
            fprintf(stderr, "    input: \"%s\"\n", bad_g[i]);

    /* len is honoured: a prefix or a longer buffer is not the name. */
    CHECK_EQ_INT(dr_status_parse("DELIVERED", 8), -1);
    CHECK_EQ_INT(dr_status_parse("COMPLETEDXYZ", 9), DR_ST_COMPLETED);
    CHECK_EQ_INT(dr_status_parse("COMPLETED_WITH_ERROR", 9), DR_ST_COMPLETED);
    CHECK_EQ_INT(dr_status_parse("DELIVERED\0", 10), -1);
    CHECK_EQ_INT(dr_guarantee_parse("NOPE", 2), DR_G_NO);
    CHECK_EQ_INT(dr_guarantee_parse("NO", 0), -1);
}

/* The full matrix: allowed[from][to]. Forward only, nothing out of a final status, nothing back to an
 * initial status, no move to the same status. */
static void test_can_move(void)
{
    enum { CWE = DR_ST_COMPLETED_WITH_ERROR, CO = DR_ST_COMPLETED, DE = DR_ST_DELIVERED, ND = DR_ST_NOT_DELIVERED,
           CA = DR_ST_CANCELLED, UN = DR_ST_UNKNOWN, EX = DR_ST_EXPIRED, FA = DR_ST_FAILED, PU = DR_ST_PURGED };
    static const char allowed[DR_ST_COUNT][DR_ST_COUNT] = {
        /*            to:  CWE CO DE ND CA UN EX FA PU */
        [CWE] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
        [CO] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
        [DE] = {1, 1, 0, 0, 0, 0, 0, 0, 0},
        [ND] = {1, 1, 1, 0, 1, 0, 1, 1, 1},
        [CA] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
        [UN] = {1, 1, 1, 0, 1, 0, 1, 1, 1},
        [EX] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
        [FA] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
        [PU] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
    };
    for (int from = 0; from < DR_ST_COUNT; from++) {
        for (int to = 0; to < DR_ST_COUNT; to++) {
            if (!CHECK_EQ_INT(dr_status_can_move(from, to), allowed[from][to]))
                fprintf(stderr, "    %s -> %s\n", dr_status_name(from), dr_status_name(to));
        }
    }

    /* The rules the matrix encodes, spelled out. */
    CHECK(dr_status_can_move(ND, DE));
    CHECK(dr_status_can_move(ND, CO));
    CHECK(dr_status_can_move(ND, CWE));
    CHECK(dr_status_can_move(ND, CA));
    CHECK(dr_status_can_move(ND, EX));
    CHECK(dr_status_can_move(ND, FA));
    CHECK(dr_status_can_move(UN, DE));
    CHECK(dr_status_can_move(DE, CO));
    CHECK(dr_status_can_move(DE, CWE));
    CHECK(!dr_status_can_move(DE, DE));
    CHECK(!dr_status_can_move(DE, ND));
    CHECK(!dr_status_can_move(ND, UN));
    CHECK(!dr_status_can_move(UN, ND));
    CHECK(!dr_status_can_move(CO, DE));
    CHECK(!dr_status_can_move(CO, CWE));
    CHECK(!dr_status_can_move(CWE, CO));
    CHECK(!dr_status_can_move(CA, DE));
    for (int st = 0; st < DR_ST_COUNT; st++) {
        CHECK(!dr_status_can_move(st, st));
        CHECK(!dr_status_can_move(st, ND));
        CHECK(!dr_status_can_move(st, UN));
        if (dr_status_is_final(st))
            for (int to = 0; to < DR_ST_COUNT; to++)
                CHECK(!dr_status_can_move(st, to));
    }

    /* Out-of-range values never move. */
    CHECK(!dr_status_can_move(-1, DE));
    CHECK(!dr_status_can_move(ND, -1));
    CHECK(!dr_status_can_move(DR_ST_COUNT, DE));
    CHECK(!dr_status_can_move(ND, DR_ST_COUNT));
    CHECK(!dr_status_can_move(ND, 1000));
}

static void test_predicates(void)
{
    static const struct {
        int st, final, extended, ack, duster;
    } rows[] = {
        {DR_ST_COMPLETED_WITH_ERROR, 1, 0, 1, DR_ST_COMPLETED_WITH_ERROR},
        {DR_ST_COMPLETED, 1, 0, 1, DR_ST_COMPLETED},
        {DR_ST_DELIVERED, 0, 0, 1, DR_ST_DELIVERED},
        {DR_ST_NOT_DELIVERED, 0, 0, 0, DR_ST_NOT_DELIVERED},
        {DR_ST_CANCELLED, 1, 0, 0, DR_ST_CANCELLED},
        {DR_ST_UNKNOWN, 0, 0, 0, DR_ST_UNKNOWN},
        {DR_ST_EXPIRED, 1, 1, 0, DR_ST_EXPIRED},
        {DR_ST_FAILED, 1, 1, 0, DR_ST_FAILED},
        {DR_ST_PURGED, 1, 1, 0, DR_ST_CANCELLED},
    };
    CHECK_EQ_INT(sizeof(rows) / sizeof(rows[0]), DR_ST_COUNT);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int st = rows[i].st, ok = 1;
        ok &= CHECK_EQ_INT(dr_status_is_final(st), rows[i].final);
        ok &= CHECK_EQ_INT(dr_status_is_extended(st), rows[i].extended);
        ok &= CHECK_EQ_INT(dr_status_is_ack(st), rows[i].ack);
        ok &= CHECK_EQ_INT(dr_status_for_duster(st), rows[i].duster);
        if (!ok)
            fprintf(stderr, "    status %s\n", dr_status_name(st));
    }
    /* What a Duster-era client is shown is always a Duster status. */
    for (int st = 0; st < DR_ST_COUNT; st++)
        if (st != DR_ST_EXPIRED && st != DR_ST_FAILED)
            CHECK(dr_status_for_duster(st) <= DR_ST_UNKNOWN);
    CHECK(!dr_status_is_final(-1));
    CHECK(!dr_status_is_final(DR_ST_COUNT));
    CHECK(!dr_status_is_ack(-1));
    CHECK(!dr_status_is_ack(DR_ST_COUNT));
    CHECK(!dr_status_is_extended(-1));
    CHECK(!dr_status_is_extended(DR_ST_COUNT));
}

int main(void)
{
    test_names();
    test_parse();
    test_can_move();
    test_predicates();
    return t_report("test_status");
}
