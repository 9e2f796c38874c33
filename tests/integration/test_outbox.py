"""The notification outbox: status changes queued while no dispatcher runs are all published once one
starts, in order, however many there are, and the outbox ends empty.

With one shard every notification of the test lands in one outbox stream, so the owner has to work
through more than one batch (the dispatcher reads 100 entries at a time).
"""
from harness import wait_until

N = 250


def outbox_len(stack):
    return stack.redis_call(lambda r: r.xlen(stack.prefix + "nt:0"))


def test_outbox_backlog_larger_than_a_batch_is_published(stack_factory):
    s = stack_factory({"cluster.shards": 1}, start=False)
    s.start()
    s.dispatcher.stop()
    prod = s.producer("ob")
    tmps = [prod.send("dev-ob-%d" % (i % 5), command="c%d" % i, data={"i": i}) for i in range(N)]
    # stored while no dispatcher runs: every receipt waits in the outbox
    wait_until(lambda: outbox_len(s) >= N, 30, msg=lambda: "outbox has %d entries" % outbox_len(s))
    assert not any(prod.for_tmp(t) for t in tmps), "receipts published without a dispatcher"
    s.dispatcher.start()
    ids = [prod.receipt_id(t, timeout=60) for t in tmps]
    assert len(set(ids)) == N
    # in order per device: receipts follow acceptance, ids grow per device
    for d in range(5):
        got = [i for k, i in enumerate(ids) if k % 5 == d]
        assert got == sorted(got), "device %d: receipts out of order %s" % (d, got)
    wait_until(lambda: outbox_len(s) == 0, 30, msg=lambda: "outbox still has %d entries" % outbox_len(s))
    assert not s.redis_call(lambda r: r.sismember(s.prefix + "ntidx", "0")), "shard 0 still marked in ntidx"
