"""What the dispatcher publishes once a dispatch pass returns (services/dispatcher/dispatch.c on_pass,
send_one, take_back; common/lua/drover.lua unsend).

A pass records its sends in Redis (attempt, send time, re-send time) before the dispatcher publishes them.
Two things can come between the record and the publish:
 - the broker connection is gone: the publish fails, and the send is taken back (unsend), so it counts as
   no attempt and the message is due again at once instead of at its re-send time;
 - the dispatcher stalled past its lease: a successor may hold the shard and send already, so it publishes
   nothing (event=sends_withheld); the send stays recorded and goes out at its re-send time.

Both tests hold a pass in flight the same way: the command is scheduled (notBefore) and Redis is stopped
(SIGSTOP) just before it falls due, so the pass the dispatcher issues at the due time waits in Redis's
socket buffer. While it waits the test takes the broker away (first test) or stops the dispatcher (second
test); then Redis runs the pass. Each try checks afterwards, in Redis, that this is what happened (a
failed publish, a send recorded while the dispatcher was stopped); a try that missed it is repeated with
a fresh device, a bounded number of times.
"""
import re
import time

import pytest

from harness import Device, now_ms, shard_of, stays_true, wait_until

TRIES = 3               # tries at holding a pass in flight before the test gives up
LEAD_MS = 2500          # from sending the command to its notBefore: time to accept it
PAUSE_BEFORE_MS = 500   # Redis stops this long before the command falls due
HOLD_AFTER_MS = 400     # and stays stopped at least this long after it (the dispatcher issues the pass)


# ---- helpers -------------------------------------------------------------------------------------


def sleep_until(t_ms):
    time.sleep(max(0.0, (t_ms - now_ms()) / 1000.0))


def node_counter(stack, node, name):
    """One node's own counter (the stack's metric() sums every node)."""
    return stack.redis_call(lambda r: int(r.hget("%smetrics:%s" % (stack.prefix, node.node_id), name) or 0))


def lease_holders(stack):
    """The node holding each shard's lease ('' for none)."""
    def read(r):
        return [(r.get("%s{%d}lease" % (stack.prefix, sh)) or "").split(" ")[0] for sh in range(stack.shards)]
    return stack.redis_call(read)


def wait_all_shards_held(stack, node, timeout):
    wait_until(lambda: set(lease_holders(stack)) == {node.node_id}, timeout,
               msg=lambda: "%s does not hold every shard: %s" % (node.name, lease_holders(stack)))


def send_events(history):
    """(event, attempt) of every send, re-send and taken-back send, in order."""
    return [(e["event"], e["attempt"]) for e in history if e["event"] in ("sent", "resent", "unsent")]


def restart_broker(stack, clients):
    """Starts the stopped broker and waits until every node is connected again (subscribed: the ingress
    takes acks and producer messages) and every client in `clients` has subscribed again."""
    marks = {n: n.log_size() for n in stack.nodes}
    subscribed = {c: len(c.subscribed_at) for c in clients}
    stack.mqtt.start()
    for n in stack.nodes:
        n.wait_log(r"event=mqttc_connected", 20, since=marks[n])
    for c in clients:
        wait_until(lambda: len(c.subscribed_at) > subscribed[c], 20, msg="%s did not subscribe again" % c.client_id)


def persistent_device(stack, device_id):
    """A 3.1.1 device with a persistent session and a QoS 1 subscription: the broker keeps what is
    published to it while it is offline, and keeps the session over a clean broker restart."""
    dev = Device(stack.mqtt, device_id, qos=1, connect=False)
    dev.clean_session = False
    stack.clients.append(dev)
    return dev


def hold_pass_in_flight(stack, due, while_held):
    """Stops Redis PAUSE_BEFORE_MS before `due`, waits HOLD_AFTER_MS past it (the dispatcher has issued
    the pass of the due command by then: it scans its schedule every dispatch.tick_ms), runs
    while_held() and lets Redis go on, whatever while_held did. Returns the wall-clock ms just before
    Redis went on: whatever Redis records from then on carries no earlier time."""
    sleep_until(due - PAUSE_BEFORE_MS)
    stack.redis.pause()
    try:
        sleep_until(due + HOLD_AFTER_MS)
        while_held()
    finally:
        went_on = now_ms()
        stack.redis.resume()
    return went_on


# ---- a publish that fails is taken back ----------------------------------------------------------

# A send left waiting for its re-send would reach the device only ACK_TIMEOUT_MS after it was recorded;
# the device here is given DELIVERY_BOUND_S, far less. The lease outlives every stop in the test, so
# what the dispatcher does with the send is decided by the broker connection alone.
ACK_TIMEOUT_MS = 60000
DELIVERY_BOUND_S = 20
UNSEND_CONFIG = {
    "dispatch.ack_timeout_ms": ACK_TIMEOUT_MS,
    "dispatch.retry_max_ms": ACK_TIMEOUT_MS,
    "lease.ttl_ms": 30000,
    "lease.renew_ms": 1000,
    "redis.timeout_ms": 10000,
}


def test_send_whose_publish_fails_is_taken_back(stack_factory):
    """A pass is in flight in Redis when the broker goes away (SIGTERM: Mosquitto saves the device's
    persistent session); the dispatcher notices at once (event=mqttc_disconnected) and only then Redis
    runs the pass, which records the send (attempt 1) and returns it. The publish fails (no connection),
    so the dispatcher counts publish_failed and takes the send back: the record shows the event 'unsent'
    and attempt 0, due again at once.

    Redis goes on well within the 2 s after which a dispatcher without a broker gives its shards up
    (BROKER_GRACE_MS, which also ends its lease validity): the reply finds the lease still valid.

    When the broker is back the dispatcher (holding its shards again, if it had given them up) sends the
    message at once, as attempt 1; the device, offline until then, finds it in its session within
    DELIVERY_BOUND_S. A send that was not taken back would stay recorded as attempt 1 with its re-send
    60 s (ack_timeout_ms) after the failed publish, so the device could not have it within 20 s, whatever
    the machine's speed: the bound is structural, not a timing measurement."""
    s = stack_factory(UNSEND_CONFIG)
    disp = s.dispatcher
    prod = s.producer("unsend")
    misses = []
    for n in range(TRIES):
        dev_id = "dev-unsend-%d" % n
        dev = persistent_device(s, dev_id)
        dev.connect()
        dev.disconnect()  # subscribed in a session the broker keeps; offline from here
        failed_before = node_counter(s, disp, "publish_failed")
        due = now_ms() + LEAD_MS
        mid = prod.receipt_id(prod.send(dev_id, command="scheduled", notBefore=due))
        sleep_until(due - PAUSE_BEFORE_MS - 100)
        assert s.msg(mid)["att"] == "0", "sent before its notBefore: %s" % s.msg(mid)
        mark = disp.log_size()

        def broker_goes():
            s.mqtt.stop()
            disp.wait_log(r"event=mqttc_disconnected", 5, since=mark)

        went_on = hold_pass_in_flight(s, due, broker_goes)
        # The precondition: the held pass returned the send and its publish failed. Counted by the
        # dispatcher itself, whether or not it then takes the send back.
        try:
            wait_until(lambda: node_counter(s, disp, "publish_failed") > failed_before, 5)
            break
        except AssertionError:
            misses.append("try %d: no failed publish; record %s; dispatcher log: %s" % (
                n, s.msg(mid), re.findall(r"event=(?:sent|sends_withheld|fenced|dispatch_failed)[^\n]*",
                                          disp.log_text()[mark:])))
            restart_broker(s, [prod])
            wait_all_shards_held(s, disp, 20)
    else:
        pytest.fail("no try held a pass in flight across the broker's loss:\n" + "\n".join(misses))

    # Taken back while the broker is still away: no attempt counted, due again.
    wait_until(lambda: send_events(s.history(mid))[-1:] == [("unsent", 0)], 5,
               msg=lambda: "the failed send was not taken back: %s" % s.history(mid))
    m = s.msg(mid)
    assert send_events(m["history"]) == [("sent", 1), ("unsent", 0)], m["history"]
    assert m["history"][-2]["ts"] >= went_on, "the send was not recorded by the held pass: %s" % m
    assert (m["att"], m["st"]) == ("0", "NOT_DELIVERED"), m
    assert "event=send_taken_back" in disp.log_text()[mark:]
    assert not re.search(r"event=sent id=%d " % mid, disp.log_text()[mark:]), "a failed publish was logged as sent"

    # The broker comes back: the message goes out at once, not at its re-send time.
    mark = disp.log_size()
    back = time.monotonic()
    restart_broker(s, [prod])
    dev.connect()
    dev.wait_for(mid, DELIVERY_BOUND_S - (time.monotonic() - back))
    dev.ack(mid)
    s.wait_status(mid, "DELIVERED", 15)
    assert disp.wait_log(r"event=sent id=%d device=\"%s\" attempt=1 " % (mid, dev_id), 1, since=mark)
    m = s.msg(mid)
    assert send_events(m["history"]) == [("sent", 1), ("unsent", 0), ("sent", 1)], m["history"]
    assert m["att"] == "1", "delivered at attempt %s, expected 1 (the failed publish is no attempt)" % m["att"]
    assert [e["attempt"] for e in m["history"] if e["event"] == "ack"] == [1], m["history"]
    assert dev.count(mid) == 1, dev.arrivals()


# ---- a pass that returns after the lease ran out publishes nothing --------------------------------

# lease_valid_until is the send time of the last answered lease call plus 3/4 of the TTL (lease.c): a
# dispatcher stopped for STALL_S > 2.25 s (plus the time since its last lease call) finds it past when
# it processes the held reply. The Redis-side lease (renewed at the latest when Redis goes on, 0.1 s
# after the dispatcher stops) runs out 3 s later, also before the dispatcher resumes: the stall really
# outlasts the lease. Redis is stopped for about 1 s only, so it runs the pass while the lease still holds
# there: a pass run after the lease key expired would be fenced in Redis and record nothing.
# redis.timeout_ms outlasts the stall (the dispatcher's Redis client would otherwise time the held calls
# out on resuming). The dispatcher's last packet to the broker is its send of the kick, KICK_BEFORE_MS
# before the due time; KICK_BEFORE_MS + HOLD_AFTER_MS + STALL_S stays below 1.5 MQTT keepalives (7.5 s),
# so the broker keeps the dispatcher's connection and a stale send could be published if it tried.
RESEND_MS = 8000
STALL_S = 4.5
LEASE_CONFIG = {
    "lease.ttl_ms": 3000,
    "lease.renew_ms": 500,
    "dispatch.ack_timeout_ms": RESEND_MS,
    "dispatch.retry_max_ms": RESEND_MS,
    "dispatch.backoff": "1.0",
    "dispatch.jitter_pct": 0,
    "redis.timeout_ms": 10000,
}
KICK_BEFORE_MS = 1000   # a command to another shard's device, sent this long before the due time


def acquired_epochs(log, shard):
    """The epochs under which the dispatcher took `shard`, in order."""
    return re.findall(r"event=shard_acquired shard=%d epoch=(\d+)" % shard, log)


def test_pass_returning_after_the_lease_ran_out_publishes_nothing(stack_factory):
    """A pass is in flight in Redis when the dispatcher stops (SIGSTOP); Redis then runs it while the
    lease still holds there, so the send is recorded (attempt 1, re-send RESEND_MS later). The
    dispatcher stays stopped STALL_S, past its lease, and finds the reply when it goes on: it must log
    event=sends_withheld and publish nothing. The device, connected throughout, sees nothing until the
    recorded re-send time; then the re-send (attempt 2) reaches it once, it acks, and the producer gets
    DELIVERED. A dispatcher that published the reply's sends regardless of its lease would reach the
    device right after the stall, as attempt 1, seconds before the re-send time. The dispatcher takes
    its shard again afterwards under a new epoch (the lease had expired in Redis)."""
    s = stack_factory(LEASE_CONFIG)
    disp = s.dispatcher
    prod = s.producer("stall")
    misses = []
    for n in range(TRIES):
        if n > 0:
            wait_all_shards_held(s, disp, 20)  # after a stall that missed: the leases are held again
        dev_id = "dev-stall-%d" % n
        sh = shard_of(dev_id, s.shards)
        kick_id = next(k for k in ("dev-stall-kick-%d-%d" % (n, i) for i in range(100))
                       if shard_of(k, s.shards) != sh)
        dev = s.device(dev_id, auto_ack=True)
        kick = s.device(kick_id, auto_ack=True, ack_status="COMPLETED")
        epochs_before = acquired_epochs(disp.log_text(), sh)
        due = now_ms() + LEAD_MS
        mid = prod.receipt_id(prod.send(dev_id, command="scheduled", notBefore=due))
        assert mid % s.shards == sh
        sleep_until(due - KICK_BEFORE_MS)
        kick.wait_for(prod.receipt_id(prod.send(kick_id, command="kick")), 5)
        before = s.msg(mid)
        if before["att"] != "0":
            misses.append("try %d: the pass ran before Redis stopped: %s" % (n, before))
            continue
        mark = disp.log_size()
        stopped = []

        def dispatcher_stops():
            disp.pause()
            stopped.append(time.monotonic())
            time.sleep(0.1)

        try:
            went_on = hold_pass_in_flight(s, due, dispatcher_stops)
            # The precondition: the send is recorded after Redis went on, while the dispatcher was
            # stopped, so by a pass the dispatcher had issued before and whose reply it has not seen.
            try:
                rec = wait_until(lambda: (lambda m: m["att"] == "1" and int(m["sent"]) >= went_on and m)(
                    s.msg(mid)), 3)
            except AssertionError:
                misses.append("try %d: no pass in flight when the dispatcher stopped: %s" % (n, s.msg(mid)))
                continue
            assert dev.count(mid) == 0, dev.arrivals()
            time.sleep(max(0.0, stopped[0] + STALL_S - time.monotonic()))
        finally:
            if stopped:
                disp.resume()
        break
    else:
        pytest.fail("no try held a pass in flight across the dispatcher's stop:\n" + "\n".join(misses))

    resend_at = int(rec["due"])
    assert resend_at == int(rec["sent"]) + RESEND_MS, rec
    assert send_events(rec["history"]) == [("sent", 1)], rec["history"]
    disp.wait_log(r"event=sends_withheld shard=%d count=1 " % sh, 5, since=mark)
    # Nothing reaches the device before the recorded re-send time.
    stays_true(lambda: dev.count(mid) == 0, max(0.0, (resend_at - 300 - now_ms()) / 1000.0),
               msg=lambda: "the withheld send reached the device %.0f ms before its re-send time: %s" % (
                   resend_at - dev.arrivals_of(mid)[0].t_ms, dev.arrivals()))
    first = dev.wait_for(mid, 10)[0]
    assert first.t_ms >= resend_at - 50, "arrived %.0f ms before the re-send time" % (resend_at - first.t_ms)
    prod.wait_status(mid, "DELIVERED", 10)
    s.wait_status(mid, "DELIVERED", 5)
    time.sleep(1.0)  # a copy published twice would arrive within this
    assert dev.count(mid) == 1, dev.arrivals()

    log = disp.log_text()[mark:]
    assert not re.search(r"event=sent id=%d " % mid, log), "the withheld send was published"
    assert re.search(r"event=resent id=%d device=\"%s\" attempt=2 " % (mid, dev_id), log)
    m = s.msg(mid)
    assert send_events(m["history"]) == [("sent", 1), ("resent", 2)], m["history"]
    assert [e["attempt"] for e in m["history"] if e["event"] == "ack"] == [2], m["history"]
    # The stall outlasted the lease in Redis too: the shard came back under a new epoch.
    after = acquired_epochs(log, sh)
    assert after and after[-1] not in epochs_before, "shard %d not taken again after the stall: before %s, after %s" % (
        sh, epochs_before, after)
