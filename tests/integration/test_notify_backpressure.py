"""Notifications under a broker that is slow to confirm them.

The ingress publishes every status change it made itself (docs/architecture.md §4.4). When the broker
stops answering for longer than a publish used to be allowed to take, the notifications it holds must
wait, not time out: a timed-out one used to stay claimed, was reclaimed by the shard's owner and then
reached the producer twice (once from the original publish, once from the owner). Here the broker is
stopped (SIGSTOP) for longer than that old deadline while notifications are on their way, and every
message must end with exactly one notification per status, in order, none of them published by the
shard's owner.

The ingress also must not burn CPU while its store calls are in flight and more items wait: it used to
spin through empty loop turns until a reply came, which on a busy machine took CPU from Redis itself.
"""
import os
import time

from harness import wait_until

DEVICES = 20
MESSAGES = 1000       # notifications in a burst: two per message
PAUSE_S = 12          # longer than the 10 s publish deadline the ingress used to have


def unconfirmed(stack):
    def read(r):
        total = 0
        for sh in range(stack.shards):
            log = "%s{%d}log" % (stack.prefix, sh)
            if r.exists(log):
                total += r.xpending(log, "pub")["pending"]
        return total
    return stack.redis_call(read)


def test_slow_broker_neither_drops_nor_repeats_notifications(stack_factory):
    s = stack_factory()
    devs = [s.device("dev-bp-%d" % i, qos=1, auto_ack=True) for i in range(DEVICES)]
    prod = s.producer("bp")

    # Stop the broker while the ingress still has notifications to publish: what it stored last is
    # not confirmed yet. Redis keeps running, so the claims are visible. When a burst was all published
    # before the stop took hold (a fast machine), the broker is let go at once and another burst tried.
    tmps = []
    in_flight = still = 0
    for _ in range(5):
        n0 = len(tmps)
        tmps += [prod.send(devs[i % DEVICES].device_id, command="c%d" % i, data={"i": i})
                 for i in range(n0, n0 + MESSAGES)]
        s.mqtt.pause()
        try:
            time.sleep(0.5)
            in_flight = unconfirmed(s)
            if in_flight > 0:
                time.sleep(PAUSE_S - 0.5)
                still = unconfirmed(s)
        finally:
            s.mqtt.resume()
        if in_flight > 0:
            break
    assert in_flight > 0, "nothing was on its way when the broker stopped: the test proves nothing"
    total = len(tmps)

    ids = {}
    for t in tmps:
        ids[t] = prod.receipt_id(t, timeout=60)
    assert len(set(ids.values())) == total

    def delivered():
        return sum(1 for m in ids.values() if "DELIVERED" in prod.statuses(m))
    wait_until(lambda: delivered() == total, 120, msg=lambda: "%d of %d DELIVERED" % (delivered(), total))
    wait_until(lambda: unconfirmed(s) == 0, 30, msg=lambda: "%d notifications unconfirmed" % unconfirmed(s))
    # a last look for late copies: anything published twice would arrive within this
    time.sleep(2)

    problems = []
    for t, m in ids.items():
        got = prod.statuses(m)
        if got != ["NOT_DELIVERED", "DELIVERED"]:
            problems.append((m, got))
    assert not problems, "%d messages with missing, repeated or reordered notifications (of %d, %d unconfirmed " \
        "while the broker was stopped, %d at its end), e.g. %s" % (len(problems), total, in_flight, still,
                                                                   problems[:5])
    def counter(node, name):
        return s.redis_call(lambda r: int(r.hget("%smetrics:%s" % (s.prefix, node.node_id), name) or 0))
    # The dispatcher owns every shard: anything it notified was reclaimed from the ingress.
    reclaimed = counter(s.dispatcher, "notified")
    assert reclaimed == 0, "the shard owner reclaimed and republished %d notifications" % reclaimed
    # (The dispatcher's own sends fail while the broker is stopped; the ingress's notifications must not.)
    failed = counter(s.ingress, "publish_failed")
    assert failed == 0, "%d notification publishes of the ingress failed" % failed
    for d in devs:
        d.disconnect()
    prod.disconnect()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_ingress_sleeps_while_its_calls_are_in_flight(stack_factory):
    """Producer messages queued behind calls that Redis has not answered (Redis stopped) must not make
    the ingress spin through empty loop turns: it waits for a reply, or for its retry timer."""
    s = stack_factory()
    prod = s.producer("spin")
    s.redis.pause()
    try:
        tmps = [prod.send("dev-spin-%d" % (i % 5), command="c%d" % i) for i in range(200)]
        time.sleep(1)  # let the ingress read them: its calls are in flight, the rest queued
        pid = s.ingress.pid
        before = cpu_seconds(pid)
        time.sleep(3)
        used = cpu_seconds(pid) - before
    finally:
        s.redis.resume()
    for t in tmps:
        prod.receipt_id(t, timeout=60)
    assert used < 1.5, "the ingress used %.2f s of CPU in 3 s while waiting for Redis" % used
