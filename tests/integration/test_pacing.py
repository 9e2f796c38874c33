"""Per-device order, pacing, window, ack release, re-sends with back-off, offline devices.

Stack defaults: interval 300 ms, ack timeout 1500 ms, retry max 3000 ms, jitter 10 %, tick 20 ms.
Lower bounds come from the service's own currentTimestamp (set when it serializes a send) minus 30 ms;
upper bounds are generous for a loaded 2-core machine.
"""
import time

import pytest

from harness import stays_true, wait_until

INTERVAL = 300
SLACK = 30


def cts(arrival):
    return arrival.msg["currentTimestamp"]


def test_burst_in_order_and_paced(stack):
    dev = stack.device("dev-burst", auto_ack=True)
    prod = stack.producer("0")
    tmps = [prod.send("dev-burst", command="c%d" % i, data={"n": i}) for i in range(5)]
    ids = [prod.receipt_id(t) for t in tmps]
    assert ids == sorted(ids), "ids not increasing in acceptance order: %s" % ids
    dev.wait_distinct(5, 20)
    firsts = [dev.arrivals_of(i)[0] for i in ids]
    assert dev.first_ids() == ids, "arrival order %s, acceptance order %s" % (dev.first_ids(), ids)
    assert [a.msg["data"]["n"] for a in firsts] == list(range(5))
    for a, b in zip(firsts, firsts[1:]):
        gap = cts(b) - cts(a)
        assert gap >= INTERVAL - SLACK, "currentTimestamp gap %d ms < interval (%s -> %s)" % (gap, a.raw, b.raw)
        arrival_gap = (b.mono - a.mono) * 1000
        assert arrival_gap >= 100, "arrival gap %.0f ms: messages bunched (%s -> %s)" % (arrival_gap, a.raw, b.raw)
    # 5 messages, acked at once: about 4 intervals; generous bound
    total = (firsts[-1].mono - firsts[0].mono)
    assert total < 8, "burst of 5 took %.1fs" % total
    for i in ids:
        prod.wait_status(i, "DELIVERED", 10)
    # immediate acks: nothing re-sent
    assert len(dev.arrivals()) == 5, dev.arrivals()


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_window_one_and_ack_releases_next_promptly(stack):
    dev = stack.device("dev-window")
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-window", command="a"))
    m2 = prod.receipt_id(prod.send("dev-window", command="b"))
    a1 = dev.wait_for(m1, 10)[0]
    # window 1: m2 must not go out while m1 is unacked (observe 2.5 s, far beyond the 300 ms interval)
    stays_true(lambda: dev.count(m2) == 0, 2.5, msg=lambda: "second message sent before the first was acked: %s"
               % dev.arrivals())
    assert dev.count(m1) == 1, "re-sent before the 10 s ack timeout: %s" % dev.arrivals()
    dev.ack(m1)
    t_ack = time.monotonic()
    a2 = dev.wait_for(m2, 8)[0]
    release = a2.mono - t_ack
    assert release < 3.0, "ack released the next message only after %.2fs (ack timeout is 10 s)" % release
    assert cts(a2) - cts(a1) >= INTERVAL - SLACK
    prod.wait_status(m1, "DELIVERED", 5)


@pytest.mark.drover_config({"dispatch.jitter_pct": 10})
def test_resend_same_id_after_ack_timeout(stack):
    dev = stack.device("dev-resend")
    prod = stack.producer("0")
    mid = prod.receipt_id(prod.send("dev-resend", command="r", data={"x": 1}))
    arr = dev.wait_for(mid, 15, n=2)
    a, b = arr[0], arr[1]
    assert a.msg["id"] == b.msg["id"] == mid
    assert a.msg["data"] == b.msg["data"] and a.msg["command"] == b.msg["command"]
    gap = cts(b) - cts(a)
    # ack timeout 1500 ms +/- 10 % jitter
    assert gap >= 1500 * 0.9 - SLACK, "re-sent after %d ms, ack timeout is 1500 ms" % gap
    assert gap <= 1500 * 1.1 + 1500, "re-sent only after %d ms" % gap
    assert cts(b) > cts(a), "currentTimestamp not fresh on re-send"
    assert prod.statuses(mid) == ["NOT_DELIVERED"]
    stack.wait_metric("resent", 1, 5)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 5)
    n = dev.count(mid)
    # acked: no more re-sends (observe past retry_max 3 s)
    stays_true(lambda: dev.count(mid) == n, 3.5, msg=lambda: "re-sent after the ack: %s" % dev.arrivals())


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 800, "dispatch.retry_max_ms": 2000,
                            "dispatch.backoff": 2.0, "dispatch.jitter_pct": 10})
def test_retries_back_off_and_cap(stack):
    """Waits: 800, 1600, then capped at 2000 (each +/- 10 %)."""
    dev = stack.device("dev-backoff")
    prod = stack.producer("0")
    mid = prod.receipt_id(prod.send("dev-backoff", command="b"))
    arr = dev.wait_for(mid, 20, n=4)
    t = [cts(a) for a in arr[:4]]
    g1, g2, g3 = t[1] - t[0], t[2] - t[1], t[3] - t[2]
    msg = "gaps %d, %d, %d ms" % (g1, g2, g3)
    assert g1 >= 800 * 0.9 - SLACK, msg
    assert g2 > g1 * 1.3, "no back-off: " + msg
    assert g2 >= 1600 * 0.9 - SLACK, msg
    assert g3 >= 2000 * 0.9 - SLACK, msg
    assert g3 <= 2000 * 1.1 + 600, "retry_max_ms cap not applied: " + msg
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 5)


def test_offline_device_gets_queue_when_it_connects(stack):
    prod = stack.producer("0")
    tmps = [prod.send("dev-offline", command="q%d" % i) for i in range(3)]
    ids = [prod.receipt_id(t) for t in tmps]
    time.sleep(1.0)  # the device is away for a while (first sends go nowhere)
    dev = stack.device("dev-offline", auto_ack=True)
    # back within retry_max (3 s) plus pacing; generous bound
    dev.wait_distinct(3, 15)
    assert dev.first_ids() == ids
    for i in ids:
        prod.wait_status(i, "DELIVERED", 10)


@pytest.mark.drover_config({"dispatch.interval_ms": 2000})
def test_devices_not_paced_against_each_other(stack):
    devs = [stack.device("dev-par-%d" % i, auto_ack=True) for i in range(4)]
    prod = stack.producer("0")
    # prime each device so its pacing slot is taken, then a second message to every device
    first = [prod.receipt_id(prod.send(d.device_id, command="p1")) for d in devs]
    for d, m in zip(devs, first):
        d.wait_for(m, 10)
    second = [prod.receipt_id(prod.send(d.device_id, command="p2")) for d in devs]
    arrivals = [d.wait_for(m, 15)[0] for d, m in zip(devs, second)]
    # each device waits its own 2 s interval, not 4 x 2 s behind the others
    spread = max(a.mono for a in arrivals) - min(a.mono for a in arrivals)
    assert spread < 1.5, "second messages of 4 devices spread over %.2fs (paced against each other?)" % spread
    firsts = [d.arrivals_of(m)[0] for d, m in zip(devs, first)]
    spread1 = max(a.mono for a in firsts) - min(a.mono for a in firsts)
    assert spread1 < 1.5, "first messages of 4 devices spread over %.2fs" % spread1
    for d, m1, m2 in zip(devs, first, second):
        g = cts(d.arrivals_of(m2)[0]) - cts(d.arrivals_of(m1)[0])
        assert g >= 2000 - SLACK, "device %s: gap %d ms < 2000 ms interval" % (d.device_id, g)


@pytest.mark.drover_config({"dispatch.window": 2, "dispatch.ack_timeout_ms": 10000,
                            "dispatch.retry_max_ms": 20000})
def test_window_two(stack):
    dev = stack.device("dev-w2")
    prod = stack.producer("0")
    ids = [prod.receipt_id(prod.send("dev-w2", command="w%d" % i)) for i in range(3)]
    a = [dev.wait_for(ids[0], 10)[0], dev.wait_for(ids[1], 10)[0]]
    assert cts(a[1]) - cts(a[0]) >= INTERVAL - SLACK, "window 2 must still respect the interval"
    stays_true(lambda: dev.count(ids[2]) == 0, 2.0, msg=lambda: "third sent with two unacked: %s" % dev.ids())
    dev.ack(ids[1])  # acking either in-flight message frees a slot
    t_ack = time.monotonic()
    a3 = dev.wait_for(ids[2], 8)[0]
    assert a3.mono - t_ack < 3.0, "slot freed by the ack was used only after %.2fs" % (a3.mono - t_ack)
    assert dev.first_ids() == ids
    assert len(dev.arrivals()) == 3


def test_many_devices(stack):
    """60 devices x 2 messages with auto-ack: all delivered, per-device order and pacing kept."""
    devs = [stack.device("dev-many-%02d" % i, auto_ack=True) for i in range(60)]
    prod = stack.producer("0")
    tmps = {d.device_id: [prod.send(d.device_id, command="m%d" % k) for k in range(2)] for d in devs}
    ids = {dev: [prod.receipt_id(t, timeout=20) for t in ts] for dev, ts in tmps.items()}
    for d in devs:
        d.wait_distinct(2, 30)
    for d in devs:
        assert d.first_ids() == ids[d.device_id]
        a, b = (d.arrivals_of(i)[0] for i in ids[d.device_id])
        assert cts(b) - cts(a) >= INTERVAL - SLACK


def test_per_device_interval_override_with_ctl(stack):
    """drover-ctl device set DEV interval_ms=N: that device is paced at N, the others keep the default."""
    import os
    import subprocess
    import harness
    ctl = os.path.join(harness.BIN_DIR, "drover-ctl")
    if not os.access(ctl, os.X_OK):
        pytest.skip("drover-ctl not built")
    r = subprocess.run([ctl, "-c", stack.ingress.conf_path, "device", "set", "dev-slow", "interval_ms=1500"],
                       capture_output=True, text=True, timeout=20, env=harness.clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    slow = stack.device("dev-slow", auto_ack=True)
    fast = stack.device("dev-fast", auto_ack=True)
    prod = stack.producer("0")
    s_ids = [prod.receipt_id(prod.send("dev-slow", command="s%d" % i)) for i in range(3)]
    f_ids = [prod.receipt_id(prod.send("dev-fast", command="f%d" % i)) for i in range(3)]
    slow.wait_distinct(3, 20)
    fast.wait_distinct(3, 20)
    s = [cts(slow.arrivals_of(i)[0]) for i in s_ids]
    f = [cts(fast.arrivals_of(i)[0]) for i in f_ids]
    assert min(b - a for a, b in zip(s, s[1:])) >= 1500 - SLACK, "override not applied: %s" % s
    assert max(b - a for a, b in zip(f, f[1:])) < 1500, "default device slowed down: %s" % f


@pytest.mark.drover_stack(ingress=2, dispatchers=2)
def test_two_ingress_two_dispatchers(stack):
    """Shared subscription over 2 ingress nodes, shards split over 2 dispatchers: every message stored once,
    delivered in id order per device, paced."""
    devs = [stack.device("dev-cl-%d" % i, auto_ack=True) for i in range(6)]
    prod = stack.producer("0")
    tmps = {d.device_id: [prod.send(d.device_id, command="c%d" % k) for k in range(4)] for d in devs}
    ids = {}
    for dev, ts in tmps.items():
        ids[dev] = []
        for t in ts:
            prod.receipt(t, timeout=20)
            rids = {n["id"] for n in prod.for_tmp(t)}
            assert len(rids) == 1, "tmpId %s stored %d times" % (t, len(rids))
            ids[dev].append(rids.pop())
    for d in devs:
        d.wait_distinct(4, 30)
    for d in devs:
        assert d.first_ids() == sorted(ids[d.device_id]), (d.device_id, d.first_ids(), ids[d.device_id])
        t = [a.msg["currentTimestamp"] for a in d.arrivals()]
        assert min(b - a for a, b in zip(t, t[1:])) >= INTERVAL - SLACK, (d.device_id, t)
    # both dispatchers own shards
    owned = [n.log_text().count("event=shard_acquired") for n in stack.nodes if n.service == "dispatcher"]
    assert all(o > 0 for o in owned), "shards not split over the dispatchers: %s" % owned
