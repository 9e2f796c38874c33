"""The status log as outbox: the node that made a change publishes it right after Redis committed it,
and what such a node claimed but never confirmed (it died, or its broker connection failed) is
published by the shard's owner, however much there is, in log order, and the log ends with nothing
unconfirmed.
"""
import time

import harness
from harness import stays_true, wait_until

N = 450  # more than two reclaim batches (200 each)


def unconfirmed(stack, shard):
    log = "%s{%d}log" % (stack.prefix, shard)
    return stack.redis_call(lambda r: r.xpending(log, "pub")["pending"] if r.exists(log) else 0)


def test_receipts_need_no_dispatcher(stack_factory):
    """Receipts come from the ingress that stored the message: they do not wait for a dispatcher."""
    s = stack_factory({"cluster.shards": 1}, start=False)
    s.start()
    s.dispatcher.stop()
    prod = s.producer("ob")
    tmps = [prod.send("dev-ob-%d" % (i % 5), command="c%d" % i, data={"i": i}) for i in range(20)]
    ids = [prod.receipt_id(t, timeout=30) for t in tmps]
    assert len(set(ids)) == 20
    for d in range(5):
        got = [i for k, i in enumerate(ids) if k % 5 == d]
        assert got == sorted(got), "device %d: receipts out of order %s" % (d, got)
    wait_until(lambda: unconfirmed(s, 0) == 0, 10, msg=lambda: "%d receipts unconfirmed" % unconfirmed(s, 0))
    # counters of a node do not outlive it forever
    ttl = s.redis_call(lambda r: r.ttl("%smetrics:%s" % (s.prefix, s.ingress.node_id)))
    assert 0 < ttl <= 604800, ttl


def test_changes_a_dead_node_claimed_are_published_by_the_owner(stack_factory):
    s = stack_factory({"cluster.shards": 1})
    prod = s.producer("ob2")
    log = "%s{0}log" % s.prefix

    def inject(r):
        if not r.exists(log):
            r.xgroup_create(log, "pub", id="$", mkstream=True)
        pipe = r.pipeline()
        for k in range(N):
            pipe.xadd(log, {"i": str(100000 + k), "d": "dev-dead", "s": "NOT_DELIVERED", "t": str(k),
                            "p": "ob2", "x": "0", "k": ""})
        pipe.execute()
        r.xreadgroup("pub", "node-that-died", {log: ">"}, count=N)
    s.redis_call(inject)
    assert unconfirmed(s, 0) == N
    wait_until(lambda: len({n.msg["tmpId"] for n in prod.responses}) >= N, 60,
               msg=lambda: "%d of %d published" % (len({n.msg["tmpId"] for n in prod.responses}), N))
    tmps = [n.msg["tmpId"] for n in prod.responses if n.msg.get("id", 0) >= 100000]
    firsts = []
    for t in tmps:
        if t not in firsts:
            firsts.append(t)
    assert firsts == list(range(N)), "not published in log order: %s" % firsts[:20]
    wait_until(lambda: unconfirmed(s, 0) == 0, 20, msg=lambda: "%d still unconfirmed" % unconfirmed(s, 0))


def test_a_lost_confirmation_never_repeats_an_older_status(stack_factory):
    """A node published NOT_DELIVERED, but its confirmation (XACK) never reached Redis, as when Redis dies
    between the publish and the confirmation. The message's next change, DELIVERED, is made and published by
    the same node: the old entry must be confirmed with it. Left unconfirmed, the shard owner's reclaim would
    publish NOT_DELIVERED again after DELIVERED, and the producer would see the status go backwards."""
    s = stack_factory({"cluster.shards": 1})
    prod = s.producer("lc")
    # The nodes (and this test) connect as Redis's default user: without XACK every confirmation fails.
    s.redis_call(lambda r: r.execute_command("ACL", "SETUSER", "default", "-xack"))
    try:
        mid = prod.receipt_id(prod.send("dev-lc", command="x"))
        wait_until(lambda: s.metric("notified") >= 1, 10)
        time.sleep(0.5)  # the ingress's confirmation has been refused by now
        assert unconfirmed(s, 0) >= 1
    finally:
        s.redis_call(lambda r: r.execute_command("ACL", "SETUSER", "default", "+xack"))
    dev = s.device("dev-lc", auto_ack=True)
    dev.wait_for(mid, 20)
    prod.wait_status(mid, "DELIVERED", 10)
    # past the owner's reclaim of entries idle for 5 s (checked every 5 s)
    stays_true(lambda: prod.statuses(mid) == ["NOT_DELIVERED", "DELIVERED"], 12,
               msg=lambda: "producer saw %s" % prod.statuses(mid))
    wait_until(lambda: unconfirmed(s, 0) == 0, 10, msg=lambda: "%d still unconfirmed" % unconfirmed(s, 0))
    # The ack's call returned NOT_DELIVERED again with DELIVERED (still unconfirmed in Redis): a repeat of a
    # change the node had published, so the status counters count it once.
    s.wait_metric("status_delivered", 1)
    m = s.metrics()  # the stack's readiness probe is a message too: one NOT_DELIVERED per accepted message
    assert m["status_not_delivered"] == m["producer_accepted"] == 2, m


def test_an_entry_that_holds_no_note_is_confirmed_and_the_rest_goes_on(stack_factory):
    """A status log entry the library cannot read (neither the one-field form nor the older pairs:
    nothing Drover writes, but a log is only a Redis key) claimed by a node that died is confirmed by
    the owner's reclaim instead of failing it, and the changes around it are published."""
    s = stack_factory({"cluster.shards": 1})
    prod = s.producer("ob3")
    log = "%s{0}log" % s.prefix
    first = prod.receipt_id(prod.send("dev-ob3", command="before"), timeout=15)

    def inject(r):
        if not r.exists(log):
            r.xgroup_create(log, "pub", id="$", mkstream=True)
        r.xadd(log, {"n": "9:77"})             # the length runs past the end
        r.xadd(log, {"x": "y"})                # neither form
        r.xadd(log, {"i": "100001", "d": "dev-ob3-old", "s": "NOT_DELIVERED", "t": "7", "p": "ob3", "x": "0",
                     "k": ""})                # the older form: published
        r.xreadgroup("pub", "node-that-died", {log: ">"})
    s.redis_call(inject)
    wait_until(lambda: any(n.msg.get("id") == 100001 for n in prod.responses), 60,
               msg="the older-form entry after the unreadable ones was not published")
    wait_until(lambda: unconfirmed(s, 0) == 0, 30, msg=lambda: "%d entries unconfirmed" % unconfirmed(s, 0))
    later = prod.receipt_id(prod.send("dev-ob3", command="after"), timeout=15)
    assert later > first
