/* Status names and the forward-only state machine (mirrored in common/lua/lib.lua). */
#include <string.h>

#include "dr/status.h"

static const char *status_names[DR_ST_COUNT] = {
    "COMPLETED_WITH_ERROR", "COMPLETED", "DELIVERED", "NOT_DELIVERED", "CANCELLED", "UNKNOWN", "EXPIRED", "FAILED",
    "PURGED",
};
static const char *guarantee_names[DR_G_COUNT] = {"NO", "RECEIPT_CONFIRMATION", "ONLY_LAST"};

/* Progress rank: a move is allowed only to a strictly higher rank, and never out of a final status. */
static const int rank[DR_ST_COUNT] = {
    [DR_ST_NOT_DELIVERED] = 0, [DR_ST_UNKNOWN] = 0,   [DR_ST_DELIVERED] = 1, [DR_ST_COMPLETED] = 2,
    [DR_ST_COMPLETED_WITH_ERROR] = 2, [DR_ST_CANCELLED] = 3, [DR_ST_EXPIRED] = 3, [DR_ST_FAILED] = 3,
    [DR_ST_PURGED] = 3,
};

const char *dr_status_name(int st)
{
    return (st >= 0 && st < DR_ST_COUNT) ? status_names[st] : "?";
}

const char *dr_guarantee_name(int g)
{
    return (g >= 0 && g < DR_G_COUNT) ? guarantee_names[g] : "?";
}

static int parse(const char *const *names, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -1;
}

int dr_status_parse(const char *s, size_t len)
{
    return parse(status_names, DR_ST_COUNT, s, len);
}

int dr_guarantee_parse(const char *s, size_t len)
{
    return parse(guarantee_names, DR_G_COUNT, s, len);
}

int dr_status_is_final(int st)
{
    return st == DR_ST_COMPLETED || st == DR_ST_COMPLETED_WITH_ERROR || st == DR_ST_CANCELLED ||
           st == DR_ST_EXPIRED || st == DR_ST_FAILED || st == DR_ST_PURGED;
}

int dr_status_can_move(int from, int to)
{
    if (from < 0 || from >= DR_ST_COUNT || to < 0 || to >= DR_ST_COUNT)
        return 0;
    if (dr_status_is_final(from))
        return 0;
    if (to == DR_ST_UNKNOWN || to == DR_ST_NOT_DELIVERED)
        return 0; /* initial statuses are set at acceptance only */
    if (to == DR_ST_CANCELLED || to == DR_ST_EXPIRED || to == DR_ST_FAILED || to == DR_ST_PURGED)
        return from == DR_ST_NOT_DELIVERED || from == DR_ST_UNKNOWN; /* withdrawn before any ack */
    return rank[to] > rank[from];
}

int dr_status_is_extended(int st)
{
    return st == DR_ST_EXPIRED || st == DR_ST_FAILED || st == DR_ST_PURGED;
}

int dr_status_for_duster(int st)
{
    return st == DR_ST_PURGED ? DR_ST_CANCELLED : st;
}

int dr_status_is_ack(int st)
{
    return st == DR_ST_DELIVERED || st == DR_ST_COMPLETED || st == DR_ST_COMPLETED_WITH_ERROR;
}
