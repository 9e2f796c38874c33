"""Ingress lanes (ingress.mqtt_lanes): the ingress starts MQTT consumer processes of its own. With more than
one lane, lane 0 takes device acks (receipt acks without waiting for Redis) and the other lanes take producer
messages. These tests check the split, that a lane which dies is restarted and loses nothing, and that no lane
outlives its ingress (SIGTERM, kill -9).
"""
import os
import re
import time

import pytest

from harness import wait_until


def lane_pids(node):
    """Newest pid of every lane the ingress reported starting, from its log: {lane: pid}."""
    pids = {}
    for lane, pid in re.findall(r"event=lane_started lane=(\d+) pid=(\d+)", node.log_text()):
        pids[int(lane)] = int(pid)
    return pids


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running (it is a child of the ingress, which reaps it)
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def roundtrip(stack, name):
    """One command end to end: receipt, delivery, DELIVERED at the producer."""
    prod = stack.producer("rt-" + name)
    dev = stack.device("dev-rt-" + name, auto_ack=True)
    rid = prod.receipt_id(prod.send(dev.device_id, command="rt"), timeout=30)
    dev.wait_for(rid, 30)
    prod.wait_status(rid, "DELIVERED", 20)


def node_metrics(stack, node_id):
    raw = stack.redis_call(lambda r: r.hgetall("%smetrics:%s" % (stack.prefix, node_id)))
    return {k: int(v) for k, v in raw.items()}


@pytest.mark.drover_config({"ingress.mqtt_lanes": 3})
def test_lanes_split_producers_and_acks(stack):
    ing = stack.ingress
    wait_until(lambda: set(lane_pids(ing)) == {1, 2}, 15, msg=lambda: "lanes started: %s" % lane_pids(ing))
    prod = stack.producer("0")
    devs = [stack.device("dev-ln-%d" % i, auto_ack=True) for i in range(6)]
    tmps = [(d, prod.send(d.device_id, command="c%d" % k, data={"k": k})) for k in range(4) for d in devs]
    ids = [(d, prod.receipt_id(t, timeout=20)) for d, t in tmps]
    assert len({i for _, i in ids}) == len(tmps), "duplicate ids: %s" % ids
    for d, i in ids:
        d.wait_for(i, 30)
        prod.wait_status(i, "DELIVERED", 20)
    # producer messages were stored by the lanes, acks by lane 0 (counters are flushed every 200 ms)
    lane_ids = ["%s.l1" % ing.node_id, "%s.l2" % ing.node_id]

    def split_ok():
        m0 = node_metrics(stack, ing.node_id)
        accepted = sum(node_metrics(stack, n).get("producer_accepted", 0) for n in lane_ids)
        acks = sum(node_metrics(stack, n).get("ack_applied", 0) for n in lane_ids)
        return accepted >= len(tmps) and acks == 0 and m0.get("producer_accepted", 0) == 0 and \
            m0.get("ack_applied", 0) >= len(tmps)
    wait_until(split_ok, 10, msg=lambda: "counters: lane0 %s lanes %s" % (
        node_metrics(stack, ing.node_id), [node_metrics(stack, n) for n in lane_ids]))


@pytest.mark.drover_config({"ingress.mqtt_lanes": 2, "dispatch.interval_ms": 0})
def test_lane_killed_is_restarted_and_nothing_lost(stack):
    ing = stack.ingress
    wait_until(lambda: 1 in lane_pids(ing), 15, msg="lane 1 did not start")
    old = lane_pids(ing)[1]
    prod = stack.producer("0")
    devs = [stack.device("dev-lk-%d" % i, auto_ack=True) for i in range(4)]
    sent = []
    for i in range(40):
        if i == 15:
            os.kill(old, 9)
        d = devs[i % 4]
        # QoS 1 publish: the broker has it; it must be stored even though its lane died
        sent.append((d, prod.send(d.device_id, command="c%d" % i, data={"i": i},
                                  idempotencyKey="lk-%d" % i)))
        time.sleep(0.02)
    ing.wait_log(r"event=lane_exited lane=1", 10)
    wait_until(lambda: lane_pids(ing).get(1) not in (None, old), 15, msg="lane 1 was not restarted")
    for d, t in sent:
        rid = prod.receipt_id(t, timeout=40)
        d.wait_for(rid, 30)
        stack.wait_status(rid, "DELIVERED", 20)
    assert ing.alive(), "lane 0 died with its lane"


@pytest.mark.drover_config({"ingress.mqtt_lanes": 3})
def test_sigterm_stops_every_lane(stack):
    ing = stack.ingress
    wait_until(lambda: set(lane_pids(ing)) == {1, 2}, 15, msg="lanes did not start")
    pids = lane_pids(ing)
    assert all(running(p) for p in pids.values())
    rc = ing.stop(timeout=20)
    assert rc == 0, "ingress exited with %s after SIGTERM" % rc
    # lane 0 waits for its lanes before it exits
    assert not any(running(p) for p in pids.values()), "lanes outlived the ingress: %s" % pids
    ing.start()
    roundtrip(stack, "term")


@pytest.mark.drover_config({"ingress.mqtt_lanes": 3})
def test_kill9_of_ingress_ends_its_lanes(stack):
    ing = stack.ingress
    wait_until(lambda: set(lane_pids(ing)) == {1, 2}, 15, msg="lanes did not start")
    pids = lane_pids(ing)
    ing.kill()
    wait_until(lambda: not any(running(p) for p in pids.values()), 20,
               msg=lambda: "orphaned lanes still running: %s" % {k: p for k, p in pids.items() if running(p)})
    # a restarted ingress brings its lanes back under the same names and the stack works again
    ing.start()
    roundtrip(stack, "kill")
    wait_until(lambda: all(lane_pids(ing).get(k) not in (None, pids[k]) for k in (1, 2)), 15,
               msg="lanes were not started again")


def test_early_receipt_ack_does_not_hide_the_real_one(stack):
    """Lane 0 answers repeated receipt acks from a cache. An ack that arrives before its message was sent
    is ignored by Redis and must not be cached: the device's real ack after the send has to count."""
    dev = stack.device("dev-early", auto_ack=True)
    stack.dispatcher.stop()
    prod = stack.producer("0")
    prod.send("dev-early", command="early")
    wait_until(lambda: stack.seq() > 0 and stack.status(stack.seq()) == "NOT_DELIVERED", 15,
               msg="message not stored")
    mid = stack.seq()
    before = stack.metric("ack_ignored")
    dev.ack(mid)  # guessed before any send: ignored
    stack.wait_metric("ack_ignored", before + 1, 10)
    assert stack.status(mid) == "NOT_DELIVERED"
    stack.dispatcher.start()
    dev.wait_for(mid, 30)
    stack.wait_status(mid, "DELIVERED", 15)
