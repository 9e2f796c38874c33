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


def test_a_call_larger_than_the_socket_takes_is_written_when_redis_reads_again(stack_factory):
    """The Redis client writes a loop turn's commands itself before the loop polls again and watches
    the socket for room only when it did not take everything (common/src/redis.c, event adapter). With
    Redis stopped, a batch of large messages (up to 16 MB) fills the socket's buffers (the client then
    watches for room: the ingress's log showed it); once Redis reads again the rest must follow by
    itself: a client that lost track of what is left to write would leave the batch half written and
    nothing would be stored."""
    n, size = 32, 512 * 1024
    stack = stack_factory({"ingress.max_payload": 1048576, "device.max_message": 0})
    prod = stack.producer("big")
    seq0 = stack.seq()
    stack.redis.pause()
    try:
        tmps = [prod.send("dev-big-%d" % (i % 4), command="c", data={"i": i, "pad": "x" * size})
                for i in range(n)]
        time.sleep(2)  # the ingress reads them and writes its call into a socket nobody reads
        assert not any(prod.for_tmp(t) for t in tmps), "a receipt before Redis stored anything"
    finally:
        stack.redis.resume()
    ids = [prod.receipt_id(t, timeout=60) for t in tmps]
    assert len(set(ids)) == n
    assert stack.seq() == seq0 + n
