"""Nothing lost when a node dies: kill -9 of the dispatcher and of the ingress, SIGTERM shutdown, Redis
kill -9 and restart with the same data directory.

Stack defaults: lease.ttl_ms 4000 / renew 1000, so a restarted dispatcher owns its shards again within
a few seconds even when its old leases have to expire first.
"""
import time

from harness import stays_true, wait_until


def devices_with_queue(stack, prod, n_dev, per_dev, prefix, **dev_kw):
    devs = [stack.device("%s-%d" % (prefix, i), **dev_kw) for i in range(n_dev)]
    tmps = {d.device_id: [] for d in devs}
    for k in range(per_dev):
        for d in devs:
            tmps[d.device_id].append(prod.send(d.device_id, command="c%d" % k, data={"k": k}))
    return devs, tmps


def test_dispatcher_kill9_mid_stream(stack):
    prod = stack.producer("0")
    devs, tmps = devices_with_queue(stack, prod, 4, 5, "dev-dk", auto_ack=True)
    ids = {dev: [prod.receipt_id(t, timeout=15) for t in ts] for dev, ts in tmps.items()}
    all_ids = [i for v in ids.values() for i in v]
    assert len(set(all_ids)) == 20
    # let a few go out, then kill the dispatcher mid-stream
    wait_until(lambda: sum(len(d.first_ids()) for d in devs) >= 4, 15, msg="nothing delivered before the kill")
    stack.dispatcher.kill()
    delivered_at_kill = sum(len(d.first_ids()) for d in devs)
    assert delivered_at_kill < 20, "everything delivered before the kill; the test did not test anything"
    time.sleep(0.5)
    stack.dispatcher.start()
    for d in devs:
        d.wait_distinct(5, 40)
    for d in devs:
        assert d.first_ids() == ids[d.device_id], "device %s: order %s, expected %s" % (
            d.device_id, d.first_ids(), ids[d.device_id])
        assert set(d.ids()) == set(ids[d.device_id]), "unknown ids delivered to %s: %s" % (d.device_id, d.ids())
    for i in all_ids:
        stack.wait_status(i, "DELIVERED", 15)
        prod.wait_status(i, "DELIVERED", 15)
    # pacing holds across the restart: consecutive sends to one device (re-sends included) >= interval
    for d in devs:
        t = [a.msg["currentTimestamp"] for a in d.arrivals()]
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert min(gaps) >= 300 - 30, "device %s: sends %d ms apart across the restart (%s)" % (
            d.device_id, min(gaps), gaps)


def test_ingress_kill9_while_producer_publishes(stack):
    prod = stack.producer("0")
    devs = [stack.device("dev-ik-%d" % i, auto_ack=True) for i in range(4)]
    sent = []  # (tmp, device, keyed)
    for i in range(40):
        if i == 12:
            stack.ingress.kill()
        if i == 26:
            stack.ingress.start()
        d = devs[i % 4].device_id
        keyed = i % 2 == 0
        extra = {"idempotencyKey": "ik-%d" % i} if keyed else {}
        tmp = prod.send(d, command="c%d" % i, data={"i": i}, **extra)  # QoS 1: the broker acknowledged it
        sent.append((tmp, d, keyed))
        time.sleep(0.03)
    # every message the broker took gets a receipt (no loss), every receipt is delivered
    for tmp, d, keyed in sent:
        prod.receipt(tmp, timeout=30)
    by_dev = {d.device_id: d for d in devs}
    for tmp, d, keyed in sent:
        rids = {n["id"] for n in prod.for_tmp(tmp)}
        if keyed:
            assert len(rids) == 1, "idempotencyKey message tmpId %s stored as %s" % (tmp, rids)
        for rid in rids:
            by_dev[d].wait_for(rid, 30)
            stack.wait_status(rid, "DELIVERED", 15)
    # nothing delivered that nobody sent
    known = {n.msg["id"] for n in prod.notes()}
    for d in devs:
        assert set(d.ids()) <= known, "device %s got ids without a receipt: %s" % (d.device_id,
                                                                                  set(d.ids()) - known)


def test_sigterm_shutdown_exits_zero(stack):
    prod = stack.producer("0")
    dev = stack.device("dev-term")
    mid = prod.receipt_id(prod.send("dev-term", command="pending"))
    dev.wait_for(mid, 10)
    # pending work (unacked) while both stop
    rc_d = stack.dispatcher.stop(timeout=10)
    rc_i = stack.ingress.stop(timeout=10)
    assert rc_d == 0, "dispatcher exit code %s after SIGTERM" % rc_d
    assert rc_i == 0, "ingress exit code %s after SIGTERM" % rc_i
    assert "event=stopped" in stack.ingress.log_text()
    # both come back and carry on with the same message
    stack.ingress.start()
    stack.dispatcher.start()
    dev.wait_for(mid, 20, n=2)  # re-sent with the same id
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 15)
    m2 = prod.receipt_id(prod.send("dev-term", command="after"), timeout=15)
    dev.wait_for(m2, 15)


def test_redis_kill9_restart_loses_nothing(stack):
    prod = stack.producer("0")
    tmps = [prod.send("dev-redis", command="c%d" % i) for i in range(10)]
    ids = [prod.receipt_id(t) for t in tmps]
    stack.redis.kill()
    # while Redis is down nothing is acknowledged
    during = [prod.send("dev-redis", command="down%d" % i) for i in range(5)]
    stays_true(lambda: all(not prod.for_tmp(t) for t in during), 1.5,
               msg=lambda: "receipt while Redis was down: %s" % [prod.for_tmp(t) for t in during])
    stack.redis.start()
    ids_during = [prod.receipt_id(t, timeout=30) for t in during]
    assert stack.ingress.alive() and stack.dispatcher.alive()
    for i in ids:
        assert stack.status(i) == "NOT_DELIVERED", "message %s lost or changed after Redis restart: %s" % (
            i, stack.msg(i))
    dev = stack.device("dev-redis", auto_ack=True)
    dev.wait_distinct(15, 45)
    assert [i for i in dev.first_ids() if i in ids] == ids, "order of the first 10 changed: %s" % dev.first_ids()
    assert set(dev.first_ids()) == set(ids + ids_during)
    for i in ids + ids_during:
        prod.wait_status(i, "DELIVERED", 15)
        assert stack.status(i) == "DELIVERED"


def test_ingress_sigterm_while_producer_publishes(stack):
    """SIGTERM: the ingress finishes what it is storing and disconnects; messages published meanwhile wait
    in its persistent session. Nothing lost, nothing stored twice."""
    prod = stack.producer("0")
    dev = stack.device("dev-is", auto_ack=True)
    tmps = []
    for i in range(30):
        if i == 10:
            rc = stack.ingress.stop(timeout=10)
            assert rc == 0, "ingress exit code %s after SIGTERM" % rc
        if i == 20:
            stack.ingress.start()
        tmps.append(prod.send("dev-is", command="c%d" % i))
        time.sleep(0.02)
    ids = []
    for t in tmps:
        prod.receipt(t, timeout=30)
        rids = {n["id"] for n in prod.for_tmp(t)}
        assert len(rids) == 1, "tmpId %s stored %d times after a clean shutdown: %s" % (t, len(rids), rids)
        ids.append(rids.pop())
    dev.wait_distinct(30, 60)
    assert sorted(dev.first_ids()) == sorted(ids)
    for i in ids:
        stack.wait_status(i, "DELIVERED", 15)


def test_nats_kill9_delays_nothing_lost(stack):
    """NATS carries only shortcuts: with NATS dead, messages are still accepted, delivered and notified."""
    prod = stack.producer("0")
    dev = stack.device("dev-nats", auto_ack=True)
    m0 = prod.receipt_id(prod.send("dev-nats", command="before"))
    dev.wait_for(m0, 10)
    stack.nats.kill()
    ids = [prod.receipt_id(prod.send("dev-nats", command="down%d" % i), timeout=15) for i in range(3)]
    dev.wait_distinct(4, 20)
    assert dev.first_ids() == [m0] + ids
    for i in ids:
        prod.wait_status(i, "DELIVERED", 15)
    stack.nats.start()
    m5 = prod.receipt_id(prod.send("dev-nats", command="after"), timeout=15)
    dev.wait_for(m5, 20)
    prod.wait_status(m5, "DELIVERED", 15)
    assert stack.ingress.alive() and stack.dispatcher.alive()


def test_broker_kill9_restart_resumes(stack):
    """kill -9 of mosquitto (its in-memory sessions are lost): nodes reconnect and resubscribe by
    themselves; pending messages are re-sent, new messages flow."""
    prod = stack.producer("0")
    dev = stack.device("dev-broker")  # does not ack the first one
    m1 = prod.receipt_id(prod.send("dev-broker", command="pending"))
    dev.wait_for(m1, 10)
    stack.mqtt.kill()
    time.sleep(0.5)
    stack.mqtt.start()
    wait_until(lambda: prod.connected.is_set() and dev.connected.is_set(), 15, msg="test clients did not reconnect")
    wait_until(lambda: dev._suback.get("consumer/request/dev-broker"), 10, msg="device not resubscribed")
    wait_until(lambda: prod._suback.get("producer/response/0"), 10, msg="producer not resubscribed")
    # the unacked message comes again (same id) after the broker is back
    dev.wait_for(m1, 20, n=2)
    dev.ack(m1)
    prod.wait_status(m1, "DELIVERED", 20)
    # the ingress consumes again (its subscription had to be re-made: the broker lost its session)
    dev.auto_ack = True
    m2 = prod.receipt_id(prod.send("dev-broker", command="after"), timeout=20)
    dev.wait_for(m2, 15)
    prod.wait_status(m2, "DELIVERED", 15)


def test_changed_share_group_unsubscribes_the_old_one(stack):
    """An ingress's persistent session keeps every filter it ever subscribed. After a restart with another
    mqtt.share_group it must leave the old group: otherwise it stays a member there and takes its share of
    that group's messages (stored twice when another node still serves the old group and the broker's picks
    differ between groups). Observed directly: a client that joins the old group must get every message,
    not a share of them."""
    prod = stack.producer("0")
    dev = stack.device("dev-sg", auto_ack=True)
    first = prod.receipt_id(prod.send("dev-sg", command="before"))
    dev.wait_for(first, 10)
    node = stack.ingress
    assert node.stop(timeout=10) == 0
    node.set(**{"mqtt.share_group": "renamed"})
    mark = node.log_size()
    node.start()
    node.wait_log(r"event=mqtt_stale_filter filter=\"\$share/drover/producer/request/#\"", 15, since=mark)
    again = prod.receipt_id(prod.send("dev-sg", command="reconnected"))
    dev.wait_for(again, 15)
    old_group = stack.listener([("$share/drover/producer/request/#", 1)])
    tmps = [prod.send("dev-sg", command="after-%d" % i) for i in range(20)]
    for t in tmps:
        prod.receipt(t, timeout=20)
    wait_until(lambda: len(old_group.other) >= len(tmps), 10,
               msg=lambda: "the old group's new member got %d of %d messages: the ingress is still in it"
               % (len(old_group.other), len(tmps)))
    assert all(len({n["id"] for n in prod.for_tmp(t)}) == 1 for t in tmps)
    # the session's record now holds exactly the new filters: the next restart unsubscribes nothing
    assert node.stop(timeout=10) == 0
    mark = node.log_size()
    node.start()
    last = prod.receipt_id(prod.send("dev-sg", command="again"))
    dev.wait_for(last, 15)
    assert "mqtt_stale_filter" not in node.log_text()[mark:]
