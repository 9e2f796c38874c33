/* The Redis Lua scripts (common/lua/<name>.lua, each prefixed with lib.lua), embedded at build time.
 * docs/architecture.md describes each script's arguments, keys and effects. */
#ifndef DR_SCRIPTS_H
#define DR_SCRIPTS_H

extern const char dr_script_accept[];   /* ingress: store a producer message */
extern const char dr_script_ack[];      /* ingress: apply a device ack */
extern const char dr_script_dispatch[]; /* dispatcher: expire, pick and mark sends for one shard */
extern const char dr_script_lease[];    /* dispatcher: membership and shard leases */
extern const char dr_script_outbox[];   /* dispatcher: remove published notifications */
extern const char dr_script_pull[];     /* REST: a device takes its next message */
extern const char dr_script_peek[];     /* REST (Duster): the oldest undelivered message, no side effect */
extern const char dr_script_cancel[];   /* REST: cancel a message not delivered yet */
extern const char dr_script_purge[];    /* REST: purge a device's pending messages */
extern const char dr_script_devinfo[];  /* REST: a device's queue and pacing */

#endif
