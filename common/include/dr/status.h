/* Message statuses, guarantees and the forward-only state machine.
 *
 * The numeric values of the first six statuses are Duster's ordinals (duster-compat.md §1.3) so the
 * names and numbers match what Duster-era tools stored. EXPIRED and FAILED are Drover's new terminal
 * outcomes, reported only for messages whose producer used a Drover-only field.
 * The authoritative transition check runs atomically inside the Redis scripts (common/lua/lib.lua);
 * this table mirrors it for validation in C and is what the unit tests pin down.
 */
#ifndef DR_STATUS_H
#define DR_STATUS_H

#include <stddef.h>

typedef enum {
    DR_ST_COMPLETED_WITH_ERROR = 0,
    DR_ST_COMPLETED = 1,
    DR_ST_DELIVERED = 2,
    DR_ST_NOT_DELIVERED = 3,
    DR_ST_CANCELLED = 4,
    DR_ST_UNKNOWN = 5, /* guarantee NO: never acknowledged by design */
    DR_ST_EXPIRED = 6, /* deliver-by deadline passed before an ack (Drover only) */
    DR_ST_FAILED = 7,  /* max attempts reached without an ack (Drover only) */
    DR_ST_PURGED = 8,  /* removed by an operator's purge of the device queue (Drover only) */
    DR_ST_COUNT
} dr_status_t;

typedef enum { DR_G_NO = 0, DR_G_RECEIPT_CONFIRMATION = 1, DR_G_ONLY_LAST = 2, DR_G_COUNT } dr_guarantee_t;

/* Returns the wire name of a status or guarantee ("?" when out of range). */
const char *dr_status_name(int st);
const char *dr_guarantee_name(int g);

/* Parses an exact, case-sensitive wire name of len bytes; returns the value or -1. */
int dr_status_parse(const char *s, size_t len);
int dr_guarantee_parse(const char *s, size_t len);

/* 1 if st is final: nothing may change it any more. */
int dr_status_is_final(int st);

/* 1 if a message may move from `from` to `to` (forward only). */
int dr_status_can_move(int from, int to);

/* 1 if st is a status that only clients using Drover's new fields may be shown. */
int dr_status_is_extended(int st);

/* The status a Duster-era client is shown for st: PURGED appears as CANCELLED (both mean "withdrawn,
 * never delivered"); every other status as itself. */
int dr_status_for_duster(int st);

/* 1 if a device may report st in an ack (DELIVERED, COMPLETED, COMPLETED_WITH_ERROR). */
int dr_status_is_ack(int st);

#endif
