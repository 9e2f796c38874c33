"""Status rules: ONLY_LAST supersession, forward-only transitions, ack ownership, unknown ids, history."""
import time

import pytest

from harness import now_ms, stays_true, wait_until


def settle(seconds=1.0):
    time.sleep(seconds)


def test_only_last_supersedes_pending_same_command(stack):
    prod = stack.producer("0")
    # device offline: everything stays NOT_DELIVERED
    t1 = prod.send("dev-sup", guarantee="RECEIPT_CONFIRMATION", command="setLevel", data={"v": 1})
    t2 = prod.send("dev-sup", guarantee="ONLY_LAST", command="setLevel", data={"v": 2})
    t_other = prod.send("dev-sup", guarantee="RECEIPT_CONFIRMATION", command="other", data={"v": 9})
    m1, m2, m_other = prod.receipt_id(t1), prod.receipt_id(t2), prod.receipt_id(t_other)
    # m2 (ONLY_LAST, same command) supersedes m1 already
    prod.wait_status(m1, "CANCELLED", 10)
    t3 = prod.send("dev-sup", guarantee="ONLY_LAST", command="setLevel", data={"v": 3})
    m3 = prod.receipt_id(t3)
    prod.wait_status(m2, "CANCELLED", 10)
    cancel1 = [n for n in prod.for_id(m1) if n["deliveryStatus"] == "CANCELLED"][0]
    assert cancel1["tmpId"] == t1
    cancel2 = [n for n in prod.for_id(m2) if n["deliveryStatus"] == "CANCELLED"][0]
    assert cancel2["tmpId"] == t2
    assert stack.status(m1) == "CANCELLED" and stack.status(m2) == "CANCELLED"

    dev = stack.device("dev-sup", auto_ack=True)
    dev.wait_for(m3, 15)
    dev.wait_for(m_other, 15)
    # the different command was not cancelled, acceptance order kept for the survivors
    assert dev.first_ids() == [m_other, m3], dev.ids()
    assert dev.arrivals_of(m3)[0].msg["data"] == {"v": 3}
    # superseded messages never reach the device (observe past a full retry cycle: retry max 3 s)
    stays_true(lambda: dev.count(m1) == 0 and dev.count(m2) == 0, 4.0,
               msg=lambda: "superseded message delivered: %s" % dev.arrivals())
    prod.wait_status(m3, "DELIVERED", 5)
    prod.wait_status(m_other, "DELIVERED", 5)
    assert "CANCELLED" not in prod.statuses(m_other)
    assert "CANCELLED" not in prod.statuses(m3)
    assert prod.statuses(m1) == ["NOT_DELIVERED", "CANCELLED"]
    assert stack.status(m1) == "CANCELLED" and stack.status(m2) == "CANCELLED"


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_statuses_never_regress_and_no_duplicate_notifications(stack):
    dev = stack.device("dev-reg")
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-reg", command="a"))
    dev.wait_for(m1, 10)
    dev.ack(m1, "COMPLETED")
    prod.wait_status(m1, "COMPLETED", 10)
    ignored0 = stack.metric("ack_ignored")
    dev.ack(m1)  # DELIVERED after COMPLETED: a regression
    dev.ack(m1, "COMPLETED")  # duplicate
    dev.ack(m1, "COMPLETED_WITH_ERROR")  # final already
    stack.wait_metric("ack_ignored", ignored0 + 3, 10)
    settle()
    assert prod.statuses(m1) == ["NOT_DELIVERED", "COMPLETED"], prod.for_id(m1)
    assert stack.status(m1) == "COMPLETED"

    # duplicate DELIVERED acks: one notification
    m2 = prod.receipt_id(prod.send("dev-reg", command="b"))
    dev.wait_for(m2, 10)
    dev.ack(m2)
    prod.wait_status(m2, "DELIVERED", 10)
    ignored1 = stack.metric("ack_ignored")
    dev.ack(m2)
    dev.ack(m2, "DELIVERED")
    stack.wait_metric("ack_ignored", ignored1 + 2, 10)
    dev.ack(m2, "COMPLETED_WITH_ERROR")
    prod.wait_status(m2, "COMPLETED_WITH_ERROR", 10)
    dev.ack(m2, "COMPLETED")  # final stays final
    stack.wait_metric("ack_ignored", ignored1 + 3, 10)
    settle()
    assert prod.statuses(m2) == ["NOT_DELIVERED", "DELIVERED", "COMPLETED_WITH_ERROR"], prod.for_id(m2)
    assert stack.status(m2) == "COMPLETED_WITH_ERROR"


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_ack_from_wrong_device_ignored(stack):
    dev = stack.device("dev-right")
    other = stack.device("dev-wrong")
    prod = stack.producer("0")
    mid = prod.receipt_id(prod.send("dev-right", command="x"))
    dev.wait_for(mid, 10)
    wrong0 = stack.metric("ack_wrong_device")
    other.ack(mid)  # published on consumer/response/dev-wrong
    other.ack(mid, "COMPLETED")
    stack.wait_metric("ack_wrong_device", wrong0 + 2, 10)
    settle()
    assert stack.status(mid) == "NOT_DELIVERED"
    assert prod.statuses(mid) == ["NOT_DELIVERED"]
    # the right device still can ack
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    assert stack.status(mid) == "DELIVERED"
    assert other.arrivals() == []


def test_ack_for_unknown_id_ignored(stack):
    dev = stack.device("dev-unk")
    prod = stack.producer("0")
    spy = stack.listener([("producer/response/#", 1)])
    seq0 = stack.seq()
    keys0 = stack.message_keys()
    unk0 = stack.metric("ack_unknown_id")
    dev.ack(987654321)
    dev.ack(seq0 + 1000, "COMPLETED")
    stack.wait_metric("ack_unknown_id", unk0 + 2, 10)
    settle(0.5)
    assert stack.seq() == seq0
    assert stack.message_keys() == keys0
    assert spy.responses == []
    # nothing disturbed: a new message still flows
    mid = prod.receipt_id(prod.send("dev-unk", command="after"))
    dev.wait_for(mid, 10)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    assert stack.ingress.alive() and stack.dispatcher.alive()


def test_late_ack_for_cancelled_ignored(stack):
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-late", guarantee="RECEIPT_CONFIRMATION", command="mode"))
    m2 = prod.receipt_id(prod.send("dev-late", guarantee="ONLY_LAST", command="mode"))
    prod.wait_status(m1, "CANCELLED", 10)
    dev = stack.device("dev-late")
    dev.wait_for(m2, 15)
    ignored0 = stack.metric("ack_ignored")
    dev.ack(m1)
    dev.ack(m1, "COMPLETED")
    stack.wait_metric("ack_ignored", ignored0 + 2, 10)
    settle()
    assert stack.status(m1) == "CANCELLED"
    assert prod.statuses(m1) == ["NOT_DELIVERED", "CANCELLED"]
    dev.ack(m2)
    prod.wait_status(m2, "DELIVERED", 10)


def test_history_records_transitions_in_order(stack):
    dev = stack.device("dev-hist")
    prod = stack.producer("0")
    t0 = now_ms()
    mid = prod.receipt_id(prod.send("dev-hist", command="h"))
    # let it be re-sent once (ack timeout 1.5 s) so attempts show up
    arr = dev.wait_for(mid, 15, n=2)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    t_ack = now_ms()
    dev.ack(mid, "COMPLETED")
    prod.wait_status(mid, "COMPLETED", 10)
    t1 = now_ms()
    h = stack.history(mid)
    for e in h:
        assert set(["ts", "status", "attempt", "event"]) <= set(e), e
        assert t0 - 1000 <= e["ts"] <= t1 + 1000, (t0, e, t1)
    ts = [e["ts"] for e in h]
    assert ts == sorted(ts), "history timestamps out of order: %s" % h
    # distinct status changes, in order
    changes = [e["status"] for i, e in enumerate(h) if i == 0 or e["status"] != h[i - 1]["status"]]
    assert changes == ["NOT_DELIVERED", "DELIVERED", "COMPLETED"], h
    delivered = next(e for e in h if e["status"] == "DELIVERED")
    assert delivered["attempt"] >= 2, "two sends before the ack, history says %s" % h
    assert arr[1].msg["currentTimestamp"] - 50 <= delivered["ts"] <= t_ack + 1000
    attempts = [e["attempt"] for e in h]
    assert attempts == sorted(attempts), "attempt counter went backwards: %s" % h
    assert stack.msg(mid).get("st") == "COMPLETED"


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_only_last_cancels_in_flight_and_frees_the_window(stack):
    """A sent-but-unacked message superseded by ONLY_LAST is CANCELLED; the new one goes out without waiting
    for the cancelled one's ack timeout (10 s), and the cancelled one is never re-sent."""
    dev = stack.device("dev-olif")
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-olif", guarantee="RECEIPT_CONFIRMATION", command="pos", data={"p": 1}))
    dev.wait_for(m1, 10)
    m2 = prod.receipt_id(prod.send("dev-olif", guarantee="ONLY_LAST", command="pos", data={"p": 2}))
    t_sup = time.monotonic()
    prod.wait_status(m1, "CANCELLED", 10)
    a2 = dev.wait_for(m2, 12)[0]
    assert a2.mono - t_sup < 5.0, ("ONLY_LAST replacement waited %.1fs: the cancelled in-flight message kept "
                                   "the window slot until its ack timeout" % (a2.mono - t_sup))
    dev.ack(m2)
    prod.wait_status(m2, "DELIVERED", 10)
    assert dev.count(m1) == 1
    assert stack.status(m1) == "CANCELLED"


def test_ack_variants_accepted(stack):
    """Duster acks: deliveryStatus null = DELIVERED; unknown extra keys ignored."""
    dev = stack.device("dev-ackvar")
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-ackvar", command="a"))
    dev.wait_for(m1, 10)
    dev.send_raw('{"id":%d,"deliveryStatus":null}' % m1)
    prod.wait_status(m1, "DELIVERED", 10)
    dev.send_raw('{"id":%d,"deliveryStatus":"COMPLETED","result":{"ok":true},"fw":"1.2"}' % m1)
    prod.wait_status(m1, "COMPLETED", 10)
    assert stack.status(m1) == "COMPLETED"
