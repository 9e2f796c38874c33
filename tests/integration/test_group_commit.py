"""Group commit: the ingress stores many producer messages with one Redis call and one fsync, and
acknowledges them to the broker only after that fsync.

Proven by counting Redis's fdatasync calls (strace), not by timing: Redis 7.0's INFO has no fsync
counter. With `appendfsync always` Redis fsyncs once per event-loop iteration that wrote something,
so one message stored per call costs one fsync per message; a batch costs one for all of it.
"""
import os
import re
import signal
import subprocess
import time

from harness import wait_until

N = 400


def count_fsyncs(log):
    with open(log) as f:
        return len([ln for ln in f if re.search(r"\b(fdatasync|fsync)\(", ln)])


def test_many_messages_share_one_fsync(stack_factory, tmp_path):
    stack = stack_factory()
    stack.dispatcher.stop()  # only the ingress writes: its batches are what is counted
    prod = stack.producer("gc")
    seq0 = stack.seq()
    # Hold Redis still while the producer publishes, so the messages are waiting at the ingress when it
    # resumes (the broker delivers up to max_inflight_messages unacknowledged): no timing involved.
    redis_pid = stack.redis.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        tmps = [prod.send("dev-gc-%d" % (i % 20), command="c", data={"i": i}) for i in range(N)]
        time.sleep(0.5)
        assert not any(prod.for_tmp(t) for t in tmps), "a receipt before Redis stored anything"
    finally:
        log = str(tmp_path / "strace.log")
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", log, "-p",
                                   str(redis_pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let strace attach before Redis runs again
        os.kill(redis_pid, signal.SIGCONT)
    try:
        wait_until(lambda: stack.seq() >= seq0 + N, 60, msg=lambda: "stored %d of %d" % (stack.seq() - seq0, N))
        ids = [prod.receipt_id(t, timeout=30) for t in tmps]
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    assert len(set(ids)) == N
    fsyncs = count_fsyncs(log)
    print("group commit: %d fsyncs for %d messages" % (fsyncs, N))
    # N messages, their receipts' confirmations and the broker's PUBACKs: a handful of batches
    assert 0 < fsyncs <= N // 8, "%d fsyncs for %d messages: they are not stored in batches" % (fsyncs, N)
    assert stack.seq() == seq0 + N, "a message was stored twice"


def test_redis_outage_longer_than_keepalive_stores_nothing_twice(stack_factory):
    """While Redis does not answer, the ingress holds the producer messages unacknowledged but keeps its
    broker session alive (keepalive runs on the loop, never behind a Redis call). A client that blocked on
    Redis would miss its PINGREQs: the broker would drop it after 1.5 x keepalive and redeliver every
    unacknowledged message after the reconnect, and what had already been stored would be stored again."""
    stack = stack_factory({"mqtt.keepalive_s": "5"})
    prod = stack.producer("ka")
    warm = prod.receipt_id(prod.send("dev-ka", command="warm"))
    assert warm
    seq0 = stack.seq()
    mark, broker_mark = stack.ingress.log_size(), stack.mqtt.log_size()
    os.kill(stack.redis.pid, signal.SIGSTOP)
    try:
        tmps = [prod.send("dev-ka-%d" % (i % 5), command="c", data={"i": i}) for i in range(50)]
        time.sleep(9.0)  # > 1.5 x 5 s: a silent client is dropped by now
    finally:
        os.kill(stack.redis.pid, signal.SIGCONT)
    for t in tmps:
        prod.receipt(t, timeout=30)
    time.sleep(1.0)  # a redelivered copy would be stored by now
    assert stack.seq() == seq0 + len(tmps), "stored %d for %d messages" % (stack.seq() - seq0, len(tmps))
    assert all(len({n["id"] for n in prod.for_tmp(t)}) == 1 for t in tmps)
    log = stack.ingress.log_text()[mark:]
    assert "event=mqtt_disconnected" not in log, log[-3000:]
    broker = [ln for ln in stack.mqtt.log_text()[broker_mark:].splitlines() if "drover-in-" in ln]
    assert not [ln for ln in broker if "timeout" in ln or "disconnect" in ln], broker
