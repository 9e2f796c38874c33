"""Group commit: the ingress stores many producer messages with one Redis call and one fsync, and
acknowledges them to the broker only after that fsync.

Proven by counting Redis's fdatasync calls (strace), not by timing: Redis 7.0's INFO has no fsync
counter. With `appendfsync always` Redis fsyncs once per event-loop iteration that wrote something,
so one message stored per call costs one fsync per message; a batch costs one for all of it.

That the broker's PUBACK waits for Redis is read from the broker's own log (Mosquitto with
`log_type debug` logs every PUBLISH it sends and every PUBACK it receives, by client id): a receipt
could not show it, since receipts come from the status log, which only Redis's reply hands out.
"""
import json
import os
import re
import signal
import subprocess
import time

from harness import stays_true, wait_until

N = 400


def debug_stack(stack_factory):
    """A stack whose broker logs every packet (log_type debug), started; the dispatcher stopped, so only
    the ingress talks to the broker about producer messages."""
    stack = stack_factory(start=False)
    with open(stack.mqtt.conf, "a") as f:
        f.write("log_type debug\n")
    stack.start()
    stack.dispatcher.stop()
    return stack


def broker_packets(stack, since):
    """(PUBLISHes the broker sent to the ingress, PUBACKs it received from the ingress) in its log from
    byte offset since: "Sending PUBLISH to <client id> (d0, q1, ...)", "Received PUBACK from <client id>"."""
    client = "drover-in-%s" % stack.ingress.node_id
    log = stack.mqtt.log_text()[since:]
    return (len(re.findall(r"Sending PUBLISH to %s \(d\d, q1" % re.escape(client), log)),
            len(re.findall(r"Received PUBACK from %s " % re.escape(client), log)))


def count_fsyncs(log):
    with open(log) as f:
        return len([ln for ln in f if re.search(r"\b(fdatasync|fsync)\(", ln)])


def test_many_messages_share_one_fsync(stack_factory, tmp_path):
    stack = debug_stack(stack_factory)  # only the ingress writes: its batches are what is counted
    prod = stack.producer("gc")
    seq0 = stack.seq()
    mark = stack.mqtt.log_size()
    # Hold Redis still while the producer publishes, so the messages are waiting at the ingress when it
    # resumes (the broker delivers up to max_inflight_messages unacknowledged): no timing involved.
    redis_pid = stack.redis.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        tmps = [prod.send("dev-gc-%d" % (i % 20), command="c", data={"i": i}) for i in range(N)]
        # every message went to the ingress, which acknowledged none: Redis has stored nothing
        wait_until(lambda: broker_packets(stack, mark)[0] >= N, 10,
                   msg=lambda: "the broker sent %d of %d to the ingress" % (broker_packets(stack, mark)[0], N))
        # a PUBACK sent on arrival would show up in the broker's log meanwhile
        stays_true(lambda: broker_packets(stack, mark)[1] == 0, 0.3,
                   msg="the ingress acknowledged a message Redis had not stored")
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
    wait_until(lambda: broker_packets(stack, mark)[1] >= N, 10,
               msg=lambda: "%d of %d acknowledged after the store" % (broker_packets(stack, mark)[1], N))


def test_an_ingress_killed_while_redis_is_stopped_leaves_every_message_to_the_next(stack_factory):
    """The ingress acknowledges a producer message to the broker only once Redis holds it. With Redis
    stopped, the broker sends the ingress as many messages as it lets one client hold unacknowledged
    (max_inflight_messages, 1,000 in the harness) and queues the rest; the ingress writes its first
    batches into Redis's socket (at most 4 calls in flight) and keeps the others in its memory. Then it
    is killed (kill -9) and Redis resumes, and runs the calls it had received. Nothing was acknowledged, so the broker delivers every
    message again to the ingress that comes back under the same node id (its persistent session): those
    the killed ingress's calls stored come back as repeats of their idempotency key, the others are
    stored now. Every message is stored exactly once. An ingress that acknowledged on arrival would
    have lost the messages held in its memory: the broker would not deliver them again.
    Without idempotency keys the messages the killed ingress's calls stored would be stored twice
    (docs/architecture.md, "Ingress killed")."""
    n, inflight = 1100, 1000  # more than the broker lets the ingress hold: some are never in a call
    stack = debug_stack(stack_factory)
    prod = stack.producer("kill")
    seq0 = stack.seq()
    mark = stack.mqtt.log_size()
    stack.redis.pause()
    try:
        tmps = [prod.send("dev-kill-%d" % (i % 10), command="c", data={"i": i}, idempotencyKey="k-%d" % i)
                for i in range(n)]
        wait_until(lambda: broker_packets(stack, mark)[0] >= inflight, 20,
                   msg=lambda: "the broker sent %d of %d to the ingress" % (broker_packets(stack, mark)[0], inflight))
        # meanwhile the ingress reads them and writes its first calls into Redis's socket
        stays_true(lambda: broker_packets(stack, mark)[1] == 0, 0.3,
                   msg="the ingress acknowledged a message Redis had not stored")
        stack.ingress.kill_all()
    finally:
        stack.redis.resume()
    # Redis runs the calls the killed ingress had written, then finds its connections closed: the test's
    # own connection is the last one left
    wait_until(lambda: stack.r.info("clients")["connected_clients"] == 1, 10,
               msg=lambda: "Redis still has %d clients" % stack.r.info("clients")["connected_clients"])
    by_killed = stack.seq() - seq0
    print("stored by the killed ingress's calls: %d of %d" % (by_killed, n))
    assert by_killed < n, "every message reached Redis before the kill: nothing was left to deliver again"
    assert broker_packets(stack, mark)[1] == 0
    mark = stack.mqtt.log_size()
    stack.ingress.start()
    wait_until(lambda: broker_packets(stack, mark)[1] >= n, 60,
               msg=lambda: "the broker delivered and got acknowledged %d of %d again" % (
                   broker_packets(stack, mark)[1], n))
    ids = [prod.receipt_id(t, timeout=60) for t in tmps]
    time.sleep(0.5)  # a copy stored twice would have moved the counter by now
    assert stack.seq() == seq0 + n, "stored %d for %d messages" % (stack.seq() - seq0, n)
    assert len(set(ids)) == n, "%d distinct ids for %d messages" % (len(set(ids)), n)
    assert all(len({m["id"] for m in prod.for_tmp(t)}) == 1 for t in tmps), "a tmpId received two ids"
    msgs = stack.msgs(ids)
    assert sorted(json.loads(msgs[int(i)]["data"])["i"] for i in ids) == list(range(n))


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
