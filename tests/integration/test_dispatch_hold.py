"""The dispatcher records sends only as fast as the broker takes them.

A send is recorded in Redis (attempt, time: the device's pacing clock) before it is published. When
the broker falls behind, sends recorded meanwhile used to wait in the dispatcher's queue, some for
seconds, and reached their devices that much later than recorded: the next command of the same
device, recorded one interval after, then came close behind (docs/protocol.md §10.1). The dispatcher
now starts no pass while dispatch.send_hold publishes wait for the broker (services/dispatcher/dispatch.c);
the test sets it and dispatch.batch low, so that the bound it checks is far below the 3,000 due.

Here the broker stops (SIGSTOP) just before 3,000 scheduled commands fall due: the dispatcher may
record what it had under way when its queue filled, not all of them; once the broker is back every
command is sent, none lost.
"""
import time

from harness import now_ms, wait_until

MESSAGES = 3000
SHARDS = 16          # TEST_DEFAULTS cluster.shards
BATCH = 8            # dispatch.batch: sends per shard and dispatch call at most
HOLD = 32            # dispatch.send_hold
LEAD_MS = 15000      # time to accept everything before the commands fall due


def test_no_pass_runs_while_the_broker_is_behind(stack_factory):
    s = stack_factory({"dispatch.send_hold": HOLD, "dispatch.batch": BATCH})
    prod = s.producer("hold")
    due = now_ms() + LEAD_MS
    # Devices nobody connects: the broker takes each send and drops it (no subscriber).
    tmps = [prod.send("dev-hold-%d" % i, command="c", notBefore=due) for i in range(MESSAGES)]
    ids = [prod.receipt_id(t, timeout=60) for t in tmps]
    assert len(set(ids)) == MESSAGES
    assert now_ms() < due - 2000, "accepting took longer than the lead time: the test proves nothing"

    # The stop must read as a slow broker, not a dead one: the dispatcher gives a broker up after
    # 7.5 s without a packet from it (keepalive 5 s). One send right before the stop makes its last
    # packet (the PUBACK) fresh.
    time.sleep(max(0, due - 1500 - now_ms()) / 1000.0)
    base = s.metric("sent")  # the stack's readiness probe
    prod.send("dev-hold-kick", command="kick")
    wait_until(lambda: s.metric("sent") > base, 5, msg="the kick was not sent")
    base += 1
    s.mqtt.pause()
    try:
        time.sleep(5.0)  # the commands fell due 3.5 s ago: time enough to record them all
        recorded = s.metric("sent") - base
    finally:
        s.mqtt.resume()
    # What was under way when the queue filled: calls already answered, at most one per shard.
    bound = HOLD + SHARDS * BATCH
    assert 0 < recorded <= bound, "%d sends recorded while the broker was stopped (at most %d)" % (recorded, bound)

    wait_until(lambda: s.metric("sent") - base >= MESSAGES, 90,
               msg=lambda: "%d of %d sent after the broker came back" % (s.metric("sent") - base, MESSAGES))
    time.sleep(0.5)
    assert s.metric("sent") - base == MESSAGES
    # nothing failed and was taken back: the broker was slow, never gone
    assert s.metric("publish_failed") == 0
