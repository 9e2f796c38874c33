"""Fault scenarios of the hardening issue (R22-R27; README.md lists them): real network partitions, packet
loss and latency, clock skew of one node, a full disk under Redis and a broker restart with 10,000 devices.

Partitions and degraded links use network namespaces and veth pairs the test creates (netns.py): the node
under test runs inside a namespace, the servers stay in the root namespace and also listen on the root end
of a private /30, and the fault is applied to that link only. Every namespace, link, mount and process is
removed afterwards, also when the scenario fails. Each scenario asserts the history checker's properties
(checker.assert_clean: lost 0, order violations 0, regressions 0, duplicates only with the same id, counted)
plus its own, and prints one summary line (appended to $DROVER_FAULT_REPORT). Figures are printed; time
bounds are generous liveness bounds only.
"""
import http.client
import json
import os
import subprocess
import threading
import time

import pytest

import harness
from harness import wait_until
from test_rest import ctl  # noqa: E402  (drover-ctl against the stack's Redis)

from checker import Workload, assert_clean, lease_owners, shard_of, summary
from netns import NetLab, sh
from test_fault import FAULT_CONFIG, SHARDS

pytestmark = pytest.mark.fault

BROKER_GRACE_MS = 2000  # services/dispatcher/dispatcher.h


# ---- fixtures and shared helpers ------------------------------------------------------------------------

@pytest.fixture
def net(stack_factory):
    """A NetLab; its teardown (before the stacks close) removes every fault, stops the nodes it started in
    namespaces, then removes relays, links and namespaces."""
    lab = NetLab()
    yield lab
    problems = lab.close()
    if problems:
        pytest.fail("network clean-up: %s" % problems, pytrace=False)


def owners_now(s):
    return lease_owners(s, SHARDS)


def p_ms(values, q):
    """q-quantile of a list of seconds, in ms (-1 when empty)."""
    v = sorted(values)
    return int(1000 * v[int(q * (len(v) - 1))]) if v else -1


def arrivals_between(devices, t0, t1):
    return [r for d in devices for r in d.arrivals() if t0 <= r.t < t1]


def stored_between(s, w, t0, t1):
    """Commands of the workload whose record says they were accepted (Redis time) in [t0, t1)."""
    n = 0
    for mid, m in s.msgs([c.rid for c in w.accepted()]).items():
        for e in m.get("history", []):
            if e.get("event") == "accepted" and t0 <= e["ts"] / 1000.0 < t1:
                n += 1
    return n


def net_stack(stack_factory, net, overrides=None):
    """A stack whose servers are also reachable from a fresh namespace: link `a` carries MQTT, link `b`
    Redis and NATS. Returns (stack, namespace, exposed); nodes are added by the caller."""
    cfg = dict(FAULT_CONFIG)
    cfg.update(overrides or {})
    s = stack_factory(cfg, start=False)
    ns = net.namespace()
    ns.link("a")
    ns.link("b")
    exposed = net.expose(s, redis_link=ns.links["b"], mqtt_link=ns.links["a"])
    s.start_servers()
    return s, ns, exposed


# ---- R22: dispatcher cut from the broker -------------------------------------------------------------------

def _r22(stack_factory, net, keepalive_s, cut_s):
    overrides = {"mqtt.keepalive_s": keepalive_s} if keepalive_s else {}
    s, ns, ex = net_stack(stack_factory, net, overrides)
    s.add_ingress()
    s.add_dispatcher(node_id="disp-root")  # the survivor, in the root namespace
    victim = net.add_node(s, ns, ex, "dispatcher", "disp-ns")
    s.wait_ready()
    wait_until(lambda: {o for o in owners_now(s).values()} == {"disp-root", "disp-ns"}, 30,
               msg=lambda: "shards not spread over both dispatchers: %s" % owners_now(s))
    w = Workload(s, "r22", rate=10)
    marks = {"released": None}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            holds = "disp-ns" in owners_now(s).values()
            if "t_heal" in marks:
                if holds:
                    marks.setdefault("reacquired", time.time())
            elif "t_cut" in marks and marks["released"] is None and not holds:
                marks["released"] = time.time()
            time.sleep(0.05)

    def cut():
        owners = owners_now(s)
        marks["devs"] = [d for d in w.devices if owners[shard_of(d.device_id, SHARDS)] == "disp-ns"]
        marks["log"] = victim.log_size()
        marks["t_cut"] = time.time()
        ns.links["a"].down()

    def heal():
        marks["t_heal"] = time.time()
        ns.links["a"].up()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        w.run_for(6 + cut_s + 8, events=[(6, cut), (6 + cut_s, heal)])
        # back on the broker, the node takes a share again (at once if it never gave its shards up)
        wait_until(lambda: "reacquired" in marks, 30, interval=0.1, msg=lambda: "%s" % owners_now(s))
    except AssertionError:
        pass  # reported below
    finally:
        ns.links["a"].heal()
        stop.set()
        watcher.join(5)
    reacquire_ms = int(1000 * (marks["reacquired"] - marks["t_heal"])) if "reacquired" in marks else -1
    w.finish()
    res, report = w.check()
    t_cut, t_heal = marks["t_cut"], marks["t_heal"]
    released_ms = int(1000 * (marks["released"] - t_cut)) if marks["released"] else -1
    during = arrivals_between(marks["devs"], t_cut + 0.5, t_heal)
    failover_ms = int(1000 * (min(r.t for r in during) - t_cut)) if during else -1
    log = victim.log_text()[marks["log"]:]
    detected = "event=shards_given_up" in log
    summary("R22 dispatcher cut from the broker (ip link down, %d s, mqtt.keepalive_s %s)" % (
        cut_s, keepalive_s or "60"), res, leases_released_ms=released_ms, failover_ms=failover_ms,
        victim_devices=len(marks["devs"]), deliveries_to_victim_devices_during_cut=len(during),
        reacquire_after_heal_ms=reacquire_ms, gave_up_logged=int(detected))
    assert_clean(res, report, 20)
    assert marks["devs"], "the cut dispatcher owned none of the workload's devices"
    # "Within seconds": BROKER_GRACE_MS after the node notices the dead connection (1.5 keepalives without a
    # packet), plus a renewal and a wide margin for a loaded machine; and in any case before the heal.
    ka_ms = 1000 * (keepalive_s or 60)
    limit = min(1000 * cut_s, ka_ms * 3 // 2 + BROKER_GRACE_MS + FAULT_CONFIG["lease.renew_ms"] + 5000)
    assert 0 <= released_ms <= limit, (
        "the dispatcher cut from the broker still held shards %d ms after the cut (released_ms=%d); "
        "its log after the cut:\n%s" % (int(1000 * (t_heal - t_cut)), released_ms, log[-3000:]))
    assert during, "no delivery to the cut dispatcher's devices while it was cut off"
    assert reacquire_ms >= 0, "the healed dispatcher never took shards again: %s" % owners_now(s)


@pytest.mark.R22
def test_r22_dispatcher_cut_from_broker_keepalive5(stack_factory, net):
    """ip link down between a dispatcher (in its namespace) and Mosquitto, Redis still reachable, for 16 s,
    with mqtt.keepalive_s 5: the dispatcher notices the silent connection after 1.5 keepalives (7.5 s),
    gives its shards up BROKER_GRACE_MS later, the other dispatcher delivers them; after the heal it
    takes a share again."""
    _r22(stack_factory, net, keepalive_s=5, cut_s=16)


@pytest.mark.R22
def test_r22_dispatcher_cut_from_broker_default_keepalive(stack_factory, net):
    """The same cut with the default mqtt.keepalive_s (60 s): a dispatcher caps its own keepalive at
    DISPATCHER_KEEPALIVE_S (5 s), so it still gives its shards up within seconds (tests/fault/FINDINGS.md F2)."""
    _r22(stack_factory, net, keepalive_s=None, cut_s=16)


# ---- R23: node cut from Redis --------------------------------------------------------------------------

@pytest.mark.R23
def test_r23_node_cut_from_redis(stack_factory, net):
    """The only ingress and the only dispatcher run in one namespace (one host) whose link to Redis and
    NATS becomes a black hole for 10 s (every packet dropped in both directions, nothing refused); the
    broker stays reachable. Meanwhile nothing is stored, nothing is receipted, nothing is sent to a device.
    After the heal everything resumes and the history is clean."""
    s, ns, ex = net_stack(stack_factory, net)
    net.add_node(s, ns, ex, "ingress", "ingress-ns")
    net.add_node(s, ns, ex, "dispatcher", "disp-ns")
    s.wait_ready()
    w = Workload(s, "r23", rate=10)
    marks = {}
    link = ns.links["b"]

    def cut():
        marks["t_cut"] = time.time()
        link.blackhole()

    def heal():
        marks["t_heal"] = time.time()
        link.heal()

    cut_s = 10
    try:
        w.run_for(6 + cut_s + 8, events=[(6, cut), (6 + cut_s, heal)])
    finally:
        link.heal()
    w.finish(receipt_timeout=45, drain_s=45)
    res, report = w.check()
    t0, t1 = marks["t_cut"], marks["t_heal"]
    margin = 1.0  # a call already answered, or a send already recorded, just before the cut
    stored = stored_between(s, w, t0 + margin, t1)
    receipts = [c for c in w.accepted() if t0 + margin <= c.t_receipt < t1]
    sends = arrivals_between(w.devices, t0 + margin, t1)
    after = [c.t_receipt for c in w.accepted() if c.t_receipt >= t1]
    arrivals_after = [r.t for r in arrivals_between(w.devices, t1, t1 + 120)]
    recovery_ms = int(1000 * (min(after) - t1)) if after else -1
    send_recovery_ms = int(1000 * (min(arrivals_after) - t1)) if arrivals_after else -1
    # commands waiting for a receipt during the cut (producers re-send them every retry_s)
    sent_during = [c for c in w.cmds if (c.first_sent or t1) < t1 and (c.t_receipt is None or c.t_receipt >= t1)]
    summary("R23 node cut from Redis (black hole, %d s)" % cut_s, res, stored_during=stored,
            receipts_during=len(receipts), device_sends_during=len(sends), cmds_waiting_during=len(sent_during),
            first_receipt_after_heal_ms=recovery_ms, first_send_after_heal_ms=send_recovery_ms)
    assert_clean(res, report, 20)
    assert sent_during, "no command was sent while the node was cut off: the check tested nothing"
    assert stored == 0, "%d commands stored while the only ingress was cut from Redis" % stored
    assert not receipts, "receipts while the ingress was cut from Redis: %s" % [c.key for c in receipts]
    assert not sends, "sends to devices while the dispatcher was cut from Redis: %s" % sends[:5]
    assert recovery_ms >= 0 and send_recovery_ms >= 0, "nothing receipted or sent after the heal"


# ---- R24: packet loss and latency ------------------------------------------------------------------------

@pytest.mark.R24
def test_r24_loss_and_latency(stack_factory, net):
    """The only ingress and dispatcher run in a namespace whose links (broker; Redis and NATS) delay every
    outgoing packet by 200 ms and drop 5 % of the packets in each direction, for the whole load. Everything
    is still receipted, delivered once per id in order, nothing lost."""
    delay_ms, loss_pct = 200, 5.0
    s, ns, ex = net_stack(stack_factory, net)
    net.add_node(s, ns, ex, "ingress", "ingress-ns")
    net.add_node(s, ns, ex, "dispatcher", "disp-ns")
    s.wait_ready()
    base_ms = ns.connect_ms(ns.links["b"].host, s.redis.port)
    for q, key in enumerate(("a", "b")):
        ns.links[key].degrade(delay_ms, loss_pct, queue=q)
    packets = {}
    try:
        # the fault is in effect: a TCP handshake from the namespace now takes at least the delay
        degraded_ms = min(ns.connect_ms(ns.links["b"].host, s.redis.port) for _ in range(3))
        assert degraded_ms >= delay_ms, "connect took %d ms with %d ms delay configured" % (degraded_ms, delay_ms)
        w = Workload(s, "r24", rate=8, retry_s=5.0)
        w.run_for(30)
        w.finish(receipt_timeout=60, drain_s=60)
    finally:
        for key in ("a", "b"):
            packets[key] = ns.links[key].restore()
    res, report = w.check()
    acc = w.accepted()
    rec = [c.t_receipt - c.first_sent for c in acc]
    first = {}
    for d in w.devices:
        for r in d.arrivals():
            if isinstance(r.msg, dict) and "id" in r.msg:
                first.setdefault(r.msg["id"], r.t)
    deliver = [first[c.rid] - c.t_receipt for c in acc if c.rid in first]
    summary("R24 %d ms delay + %.0f%% loss on the node's links" % (delay_ms, loss_pct), res,
            connect_ms_before=base_ms, connect_ms_degraded=degraded_ms,
            receipt_p50_ms=p_ms(rec, 0.5), receipt_p99_ms=p_ms(rec, 0.99),
            receipt_to_device_p50_ms=p_ms(deliver, 0.5), receipt_to_device_p99_ms=p_ms(deliver, 0.99),
            delayed_packets=sum(v or 0 for v in packets.values()))
    assert_clean(res, report, 20)
    assert all(v for v in packets.values()), "the delayer saw no packets on a link: %s" % packets


# ---- R25: clock skew -------------------------------------------------------------------------------------

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


class SkewedNode(harness.Node):
    """A node whose wall clock is off by `skew` (libfaketime, e.g. "+30s"): LD_PRELOAD of libfaketimeMT with
    FAKETIME; the monotonic clock stays true (FAKETIME_DONT_FAKE_MONOTONIC), as with a skewed NTP clock.
    A sanitizer runtime the binary links dynamically must come first in LD_PRELOAD, so it is named too."""

    def __init__(self, workdir, service, config, skew):
        self.skew = skew
        super().__init__(workdir, service, config)

    def faketime_env(self):
        env = harness.clean_env()
        env["LD_PRELOAD"] = LIBFAKETIME
        env["FAKETIME"] = self.skew
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        env["FAKETIME_DONT_RESET"] = "1"  # a child process would keep the same offset
        return env

    def env(self):
        env = self.faketime_env()
        pre = []
        for line in subprocess.run(["ldd", self.binary], capture_output=True, text=True).stdout.splitlines():
            parts = line.split()
            if parts and parts[0].startswith(("libasan", "libubsan", "libtsan")) and len(parts) >= 3:
                pre.append(parts[2])
        env["LD_PRELOAD"] = " ".join(pre + [LIBFAKETIME])
        return env


def add_skewed(s, service, node_id, skew, overrides=None):
    cfg = s.base_config(node_id)
    cfg.update({k: str(v) for k, v in (overrides or {}).items()})
    n = SkewedNode(s.dir, service, cfg, skew)
    s.nodes.append(n)
    n.start()
    return n


def rest_call(port, method, path, key, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body) if body is not None else None
    headers = {"Authorization": "Bearer " + key}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), (json.loads(raw) if raw else None)


def node_clock_offset_ms(node):
    """What the node's clock says minus the true time (its faketime settings, read by date(1))."""
    env = node.faketime_env()
    out = subprocess.run(["/bin/date", "+%s%3N"], env=env, capture_output=True, text=True, timeout=10)
    return int(out.stdout.strip()) - int(time.time() * 1000)


@pytest.mark.R25
@pytest.mark.parametrize("skews", [("+30s", "-30s"), ("-30s", "+30s")], ids=["ingress+30_disp-30",
                                                                              "ingress-30_disp+30"])
def test_r25_clock_skew(stack_factory, skews):
    """The ingress and the dispatcher run with wall clocks 30 s off the host's (opposite directions). Time in
    Drover's functions comes from Redis (TIME), so: pacing at an MQTT device and for a device that pulls over
    REST through the skewed ingress keeps `intervalMs` apart; a `ttlMs` deadline (MQTT and REST producers)
    and a `deliverBy` deadline expire on time; histories carry the true time; the workload's history is
    clean."""
    ing_skew, disp_skew = skews
    interval_ms, ttl_ms = 1000, 3000
    port = harness.free_port()
    cfg = dict(FAULT_CONFIG)
    cfg.update({"dispatch.interval_ms": interval_ms, "http.port": port, "http.key_cache_ms": 300})
    s = stack_factory(cfg, start=False)
    s.start_servers()
    ing = add_skewed(s, "ingress", "ingress-skewed", ing_skew)
    disp = add_skewed(s, "dispatcher", "disp-skewed", disp_skew)
    s.wait_ready()
    wait_until(lambda: harness.tcp_ready(port), 15)
    offsets = {"ingress": node_clock_offset_ms(ing), "dispatcher": node_clock_offset_ms(disp)}
    assert all(abs(abs(v) - 30000) < 5000 for v in offsets.values()), "faketime not in effect: %s" % offsets
    admin = ctl(s, "key", "create", "admin", "ops")
    producer_key = ctl(s, "key", "create", "producer", "skew-fleet")
    pull_dev = "r25-pull"
    device_key = ctl(s, "key", "create", "device", pull_dev, "pull-key")

    # the background workload (MQTT and REST producers) runs through everything below
    w = Workload(s, "r25", transports=("mqtt", "rest", "mqtt"), rest_ports=[port], rest_key=producer_key, rate=6)
    w.start()

    # pacing at an MQTT device: a burst of 6 commands, window 1, auto-ack
    paced = s.device("r25-paced", auto_ack=True)
    prod = s.producer("r25-pp")
    burst = [prod.send(paced.device_id, command="paced", data={"k": k}, idempotencyKey="r25:paced:%d" % k)
             for k in range(6)]
    burst_ids = [prod.receipt_id(t, 20) for t in burst]

    # TTL: an offline device (never connected) gets a ttlMs command over MQTT and one over REST, and a
    # deliverBy command; each must expire at its deadline in true time
    t_sub = time.time()
    ttl_tmp = prod.send("r25-offline", command="ttl", ttlMs=ttl_ms, idempotencyKey="r25:ttl")
    st, _, b = rest_call(port, "POST", "/v1/devices/r25-offline-rest/messages", producer_key,
                         {"command": "ttl", "ttlMs": ttl_ms})
    assert st == 201, (st, b)
    rest_ttl_id = b["id"]
    deliver_by = int(time.time() * 1000) + ttl_ms
    by_tmp = prod.send("r25-offline-by", command="by", deliverBy=deliver_by, idempotencyKey="r25:by")
    ttl_id = prod.receipt_id(ttl_tmp, 20)
    by_id = prod.receipt_id(by_tmp, 20)

    # REST pull through the skewed ingress: 4 commands, pull mode, interval 1 s; poll every 50 ms, ack each
    st, _, _ = rest_call(port, "PUT", "/v1/devices/%s/pacing" % pull_dev, admin,
                         {"mode": "pull", "intervalMs": interval_ms})
    assert st == 200, st
    pull_ids = []
    for k in range(4):
        st, _, b = rest_call(port, "POST", "/v1/devices/%s/messages" % pull_dev, producer_key,
                             {"command": "pull", "data": {"k": k}})
        assert st == 201, (st, b)
        pull_ids.append(b["id"])
    got, retry_after = [], []
    deadline = time.time() + 30
    while len(got) < len(pull_ids) and time.time() < deadline:
        st, h, b = rest_call(port, "POST", "/v1/devices/%s/next" % pull_dev, device_key)
        if st == 200:
            got.append((time.time(), b["id"]))
            st2, _, _ = rest_call(port, "POST", "/v1/devices/%s/messages/%d/ack" % (pull_dev, b["id"]), device_key,
                                  {"deliveryStatus": "DELIVERED"})
            assert st2 in (200, 204), st2
        else:
            assert st == 204, (st, b)
            if "retry-after" in h:
                retry_after.append(float(h["retry-after"]))
        time.sleep(0.05)

    # expiry times (true time, measured at the producer / through REST)
    prod.wait_status(ttl_id, "EXPIRED", 30)
    prod.wait_status(by_id, "EXPIRED", 30)
    s.wait_status(rest_ttl_id, "EXPIRED", 30)
    ttl_note = next(r for r in prod.notes() if r.msg.get("id") == ttl_id and r.msg.get("deliveryStatus") == "EXPIRED")
    by_note = next(r for r in prod.notes() if r.msg.get("id") == by_id and r.msg.get("deliveryStatus") == "EXPIRED")
    receipt_t = next(r.t for r in prod.notes() if r.msg.get("id") == ttl_id)
    rest_hist = s.history(rest_ttl_id)
    rest_exp_ts = next(e["ts"] for e in rest_hist if e["status"] == "EXPIRED") / 1000.0
    rest_acc_ts = next(e["ts"] for e in rest_hist if e.get("event") == "accepted") / 1000.0
    ttl_mqtt_ms = int(1000 * (ttl_note.t - receipt_t))
    ttl_rest_ms = int(1000 * (rest_exp_ts - rest_acc_ts))
    by_late_ms = int(by_note.t * 1000 - deliver_by)

    paced.wait_distinct(6, 30)
    w.run_for(max(0.0, 10 - (time.time() - w.t_start)))
    w.finish()
    res, report = w.check()

    first = {}
    for r in paced.arrivals():
        first.setdefault(r.msg["id"], r)
    gaps = [first[b].t - first[a].t for a, b in zip(burst_ids, burst_ids[1:])]
    pull_gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    # currentTimestamp is stamped by the sending process: how far it is from the arrival (true) time
    stamp_skew = sorted(int(r.msg["currentTimestamp"] - r.t * 1000) for r in paced.arrivals())
    hist_skew = max(abs(e["ts"] / 1000.0 - t_sub) for mid in burst_ids for e in s.history(mid)[:1])
    summary("R25 clock skew ingress %s dispatcher %s" % (ing_skew, disp_skew), res,
            node_offsets_ms="%d/%d" % (offsets["ingress"], offsets["dispatcher"]),
            pacing_gap_min_ms=int(1000 * min(gaps)), pacing_gap_max_ms=int(1000 * max(gaps)),
            pull_gap_min_ms=int(1000 * min(pull_gaps)) if pull_gaps else -1,
            pull_gap_max_ms=int(1000 * max(pull_gaps)) if pull_gaps else -1,
            retry_after_max_s=max(retry_after) if retry_after else -1,
            ttl_mqtt_ms=ttl_mqtt_ms, ttl_rest_ms=ttl_rest_ms, deliver_by_late_ms=by_late_ms,
            current_ts_minus_arrival_ms=stamp_skew[len(stamp_skew) // 2])
    assert_clean(res, report, 10)
    tol = 0.2 * interval_ms / 1000.0
    assert min(gaps) >= interval_ms / 1000.0 - tol and max(gaps) <= interval_ms / 1000.0 + 4, gaps
    assert [i for _, i in got] == pull_ids, (got, pull_ids)
    assert min(pull_gaps) >= interval_ms / 1000.0 - tol and max(pull_gaps) <= interval_ms / 1000.0 + 4, pull_gaps
    assert not retry_after or max(retry_after) <= 5, retry_after
    # deadlines in true time: not 30 s late, not early (minus the poll/notification granularity)
    assert ttl_ms - 300 <= ttl_mqtt_ms <= ttl_ms + 6000, ttl_mqtt_ms
    assert ttl_ms - 300 <= ttl_rest_ms <= ttl_ms + 6000, ttl_rest_ms
    assert -300 <= by_late_ms <= 6000, by_late_ms
    assert hist_skew < 10, "history timestamps %.1f s from the true time" % hist_skew


@pytest.mark.R25
def test_r25_current_timestamp_from_skewed_node(stack_factory):
    """A send's currentTimestamp is the true time of the send (within 5 s), also from nodes whose clocks are
    30 s ahead: over MQTT (dispatcher) and over REST pull (ingress). It comes from Redis's clock, when the
    send was recorded (tests/fault/FINDINGS.md F3)."""
    port = harness.free_port()
    cfg = dict(FAULT_CONFIG)
    cfg.update({"http.port": port, "http.key_cache_ms": 300})
    s = stack_factory(cfg, start=False)
    s.start_servers()
    add_skewed(s, "ingress", "ingress-skewed", "+30s")
    add_skewed(s, "dispatcher", "disp-skewed", "+30s")
    s.wait_ready()
    wait_until(lambda: harness.tcp_ready(port), 15)
    dev = s.device("r25-ts", auto_ack=True)
    prod = s.producer("r25-ts-p")
    mid = prod.receipt_id(prod.send(dev.device_id, command="ts"), 20)
    r = dev.wait_for(mid, 20)[0]
    mqtt_off = int(r.msg["currentTimestamp"] - r.t * 1000)
    admin = ctl(s, "key", "create", "admin", "ops")
    producer_key = ctl(s, "key", "create", "producer", "ts-fleet")
    device_key = ctl(s, "key", "create", "device", "r25-ts-pull", "ts-pull-key")
    assert rest_call(port, "PUT", "/v1/devices/r25-ts-pull/pacing", admin, {"mode": "pull"})[0] == 200
    assert rest_call(port, "POST", "/v1/devices/r25-ts-pull/messages", producer_key, {"command": "ts"})[0] == 201
    body = wait_until(lambda: (lambda a: a[2] if a[0] == 200 else None)(
        rest_call(port, "POST", "/v1/devices/r25-ts-pull/next", device_key)), 15)
    rest_off = int(body["currentTimestamp"] - time.time() * 1000)
    summary("R25 currentTimestamp from nodes 30 s ahead", {"accepted": 2}, mqtt_current_ts_off_ms=mqtt_off,
            rest_current_ts_off_ms=rest_off)
    assert abs(mqtt_off) < 5000 and abs(rest_off) < 5000, (
        "currentTimestamp off the true time by %d ms (MQTT send) and %d ms (REST pull)" % (mqtt_off, rest_off))


# ---- R26: disk full under Redis ---------------------------------------------------------------------------

@pytest.fixture
def tmpfs():
    """mount(path, size): a tmpfs over `path`. Request it BEFORE stack_factory, so that it is unmounted after
    the stacks closed (their Redis runs on it); a busy mount is detached lazily rather than left behind."""
    mounts = []

    def mount(path, size):
        os.makedirs(path, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path)
        mounts.append(path)
        return path

    yield mount
    problems = []
    for path in reversed(mounts):
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
            problems.append("tmpfs %s was busy at teardown (detached lazily)" % path)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


class Supervisor(threading.Thread):
    """Restarts Redis whenever it exits, after `delay` s, like systemd's Restart=always (RestartSec) or a
    Kubernetes container restart. Records every exit."""

    def __init__(self, redis, delay=0.5):
        super().__init__(daemon=True)
        self.redis = redis
        self.delay = delay
        self.exits = []  # (time, return code)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            p = self.redis.proc
            if p is not None and p.poll() is not None and not self.redis.expected_dead:
                self.exits.append((time.time(), p.returncode))
                self.redis.expected_dead = True
                if self.halt.wait(self.delay):
                    return
                self.redis.start(wait=False)
            self.halt.wait(0.05)

    def stop(self):
        self.halt.set()
        self.join(10)


def fill(path):
    """Fills the file system of `path` to the last byte (fallocate most of it, then write to ENOSPC)."""
    name = os.path.join(path, "filler")
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free > 1 << 20:
        sh("fallocate", "-l", str(free - (512 << 10)), name)
    with open(name, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return name


@pytest.mark.R26
def test_r26_disk_full_under_redis(tmpfs, stack_factory):
    """Redis's directory is a 64 MB tmpfs that the test fills under REST and MQTT load for 10 s, then frees.
    Redis 7.0 with `appendfsync always` cannot keep a write it failed to put in the AOF (the reply is already
    queued), so it logs "Can't recover from AOF write error" and exits; a supervisor restarts it every
    0.5 s, and while the disk is full each restart dies at its first write. Asserted: no REST 2xx and no
    MQTT receipt for anything first sent while the disk was full, nothing acknowledged is lost, and after
    the space is freed Redis (restarted on the same AOF) serves and delivery resumes."""
    port = harness.free_port()
    cfg = dict(FAULT_CONFIG)
    cfg.update({"http.port": port})
    s = stack_factory(cfg, start=False)
    # only Redis's data directory (the AOF) is on the small file system; its config and log stay outside
    data = tmpfs(os.path.join(s.redis.dir, "data"), "64m")
    conf = open(s.redis.conf).read()
    assert 'dir "%s"' % s.redis.dir in conf
    with open(s.redis.conf, "w") as f:
        f.write(conf.replace('dir "%s"' % s.redis.dir, 'dir "%s"' % data))
    s.start_servers()
    s.add_ingress()
    s.add_dispatcher()
    s.wait_ready()
    wait_until(lambda: harness.tcp_ready(port), 15)
    s.rest_key = ctl(s, "key", "create", "producer", "disk-fleet")
    w = Workload(s, "r26", transports=("rest", "mqtt", "rest", "mqtt"), rest_ports=[port], rest_key=s.rest_key,
                 rate=10)
    sup = Supervisor(s.redis)
    sup.start()
    marks = {}

    def full():
        marks["filler"] = fill(data)
        marks["t_full"] = time.time()

    def free():
        marks["t_free"] = time.time()
        os.unlink(marks["filler"])

    try:
        w.run_for(30, events=[(6, full), (16, free)])
        # recovered: Redis up again on the same AOF
        wait_until(lambda: s.redis.alive() and s.redis.ready(), 30, msg="redis did not come back")
        marks["t_up"] = time.time()
        w.finish(receipt_timeout=45, drain_s=45)
    finally:
        sup.stop()
        if "filler" in marks and os.path.exists(marks["filler"]):
            os.unlink(marks["filler"])
    res, report = w.check()
    t0, t1 = marks["t_full"] + 1.0, marks["t_free"]  # 1 s: the AOF's last page may still take a few writes
    rest_2xx = [st for st in w.rest_answers(t0, t1) if isinstance(st, int) and 200 <= st < 300]
    # commands waiting for their receipt while the disk was full (producers re-send them every retry_s)
    waiting = [c for c in w.cmds if (c.first_sent or t1) < t1 and (c.t_receipt is None or c.t_receipt >= t0)]
    mqtt_waiting = [c for c in waiting if c.prod.pd in ("r26-p1", "r26-p3")]
    receipts = [c for c in w.accepted() if t0 <= c.t_receipt < t1]
    rest_sent = sum(1 for e in w.rest_log if t0 <= e[0] < t1)
    exits = [e for e in sup.exits if e[0] >= marks["t_full"]]
    after = sorted(c.t_receipt for c in w.accepted() if c.t_receipt >= t1)
    recovery_ms = int(1000 * (after[0] - t1)) if after else -1
    log = s.redis.log_text()
    summary("R26 disk full under redis (tmpfs, 10 s)", res, redis_exits=len(exits),
            rest_sent_full=rest_sent, rest_2xx_full=len(rest_2xx), mqtt_waiting_full=len(mqtt_waiting),
            receipts_full=len(receipts), first_receipt_after_free_ms=recovery_ms,
            aof_write_error_logged=int("Can't recover from AOF write error" in log))
    assert_clean(res, report, 20)
    assert rest_sent and mqtt_waiting, "nothing was sent while the disk was full: the check tested nothing"
    assert not rest_2xx, "REST answered 2xx while Redis could not write its AOF: %s" % rest_2xx
    assert not receipts, "receipts while Redis could not write its AOF: %s" % [c.key for c in receipts]
    assert exits, "Redis never failed a write: the disk was not full for it"
    assert recovery_ms >= 0, "nothing receipted after the space was freed"
