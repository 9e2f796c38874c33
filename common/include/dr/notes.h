/* Publishing status changes: the node that made a change publishes it right after Redis committed it.
 *
 * Every Redis function that changes a status appends the change to the shard's status log and
 * claims the entry for the calling node (dr_note_t). dr_notes_publish sends each change as a NATS
 * status event (at most once, a shortcut for other nodes and tools) and, when the producer gave a
 * birth certificate, as {"id","tmpId","deliveryStatus"} on producer/response/{producerDeviseId}
 * (Drover-only outcomes only to producers that used Drover-only fields). Entries whose MQTT publish
 * the broker confirmed are acknowledged in the log (XACK); the others stay claimed and the shard's
 * owner publishes them again after notify reclaim time (dr_store_reclaim), so a crash or a broker
 * outage delays a notification but never loses it. A note whose message's previous change another
 * node is still publishing (dr_note_t.after) is held until that one is confirmed, or taken over once it
 * went stale, so a producer never sees an older status after a newer one.
 *
 * Back-pressure: at most a fixed window of MQTT publishes awaits the broker's PUBACK; the rest wait in
 * order inside the publisher with no deadline, so a slow broker delays notifications instead of
 * timing them out. While a note waits (for the window, its PUBACK or an earlier change), the node
 * claims its log entry again every second, which keeps it from looking abandoned: other nodes do not
 * take it over and the shard's owner does not reclaim it, so a live node's slow publish is never
 * published a second time by someone else. A note whose publish failed is no longer kept fresh and
 * goes to the owner's reclaim as before.
 *
 * A notification to a producer id that no broker accepts in a topic (data stored before input was
 * checked this strictly) is counted (notify_refused), acknowledged and skipped, so it can never stall
 * anything.
 *
 * Loop thread only.
 */
#ifndef DR_NOTES_H
#define DR_NOTES_H

#include <stddef.h>
#include <uv.h>

#include "dr/bus.h"
#include "dr/store.h"

/* Publishes one MQTT message; returns 0 (done is then called exactly once with 0 when the broker
 * confirmed it, or an error), DR_EINVAL for a topic the broker would refuse, or another error when
 * it cannot be sent now (done not called). payload is copied. */
typedef int dr_notes_publish_fn(void *ctx, const char *topic, const void *payload, size_t len,
                                void (*done)(void *data, int err), void *data);

typedef struct dr_notes dr_notes_t;

/* Creates a publisher on loop. st, bus and r are borrowed and must outlive it; subject is copied. */
dr_notes_t *dr_notes_new(uv_loop_t *loop, dr_redis_t *r, const dr_store_t *st, dr_bus_t *bus,
                         const char *status_subject, dr_notes_publish_fn *pub, void *pub_ctx);

/* Publishes n notes (copied) as described above. count: this node's call made these changes, so each
 * is counted in the status metrics (dr_metrics_status), except a previous change that the call returned
 * again and this node has published or is publishing already (a repeat, not a change; reclaimed notes
 * pass 0: the node that made them counted them). */
void dr_notes_publish(dr_notes_t *p, const dr_note_t *notes, size_t n, int count);

/* Notes whose publication has not settled yet (waiting for the window included). */
size_t dr_notes_in_flight(const dr_notes_t *p);

/* Frees p once every publish it started has completed (their callbacks still arrive); nothing
 * more is published. NULL is fine. */
void dr_notes_free(dr_notes_t *p);

#endif
