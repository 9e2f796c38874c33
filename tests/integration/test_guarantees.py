"""Delivery guarantees on the Duster wire: RECEIPT_CONFIRMATION, ONLY_LAST, NO; certificates and tmpId.

Config (stack defaults): interval 300 ms, ack timeout 1500 ms, retry max 3000 ms, tick 20 ms.
"""
import json
import time

import pytest

from harness import json_keys_in_order, now_ms, stays_true, wait_until

DEVICE_KEYS = ["id", "believerGuarantee", "command", "currentTimestamp", "data"]
PRODUCER_KEYS = ["id", "tmpId", "deliveryStatus"]


def settle(seconds=1.0):
    """Gives the service time to publish anything it still would (used before negative checks)."""
    time.sleep(seconds)


def test_receipt_confirmation_duster_format_and_status_cycle(stack):
    dev = stack.device("dev-rc")
    prod = stack.producer("0")
    t_send = now_ms()
    tmp = prod.send("dev-rc", guarantee="RECEIPT_CONFIRMATION", command="digitalWrite",
                    data={"pinNumber": 13, "pinValue": True}, tmp_id=7)
    receipt = prod.receipt(tmp, timeout=10)
    assert receipt["deliveryStatus"] == "NOT_DELIVERED"
    assert receipt["tmpId"] == 7
    mid = receipt["id"]
    assert isinstance(mid, int) and 0 < mid < 2 ** 31

    arr = dev.wait_for(mid, 10)[0]
    # exact Duster format, key order checked on the raw bytes
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS, arr.raw
    assert arr.raw.startswith(b'{"id":%d,' % mid), arr.raw
    m = arr.msg
    assert m["believerGuarantee"] == "RECEIPT_CONFIRMATION"
    assert m["command"] == "digitalWrite"
    assert m["data"] == {"pinNumber": 13, "pinValue": True}
    assert isinstance(m["currentTimestamp"], int)
    assert t_send - 1000 <= m["currentTimestamp"] <= arr.t_ms + 1000, (t_send, m["currentTimestamp"], arr.t_ms)
    assert arr.topic == "consumer/request/dev-rc"

    # receipt on the raw bytes too
    raw_receipt = next(r for r in prod.notes() if r.msg["id"] == mid)
    assert json_keys_in_order(raw_receipt.raw) == PRODUCER_KEYS, raw_receipt.raw

    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    dev.ack(mid, "COMPLETED")
    prod.wait_status(mid, "COMPLETED", 10)
    settle()
    notes = prod.for_id(mid)
    assert [n["deliveryStatus"] for n in notes] == ["NOT_DELIVERED", "DELIVERED", "COMPLETED"], notes
    assert all(n["tmpId"] == 7 for n in notes), notes
    for r in prod.notes():
        assert json_keys_in_order(r.raw) == PRODUCER_KEYS, r.raw
    assert stack.status(mid) == "COMPLETED"
    # acked before the ack timeout: sent exactly once
    assert dev.count(mid) == 1, dev.arrivals()


def test_defaults_data_null_and_empty_command(stack):
    """Only a certificate: guarantee defaults to RECEIPT_CONFIRMATION, command to "", data to null."""
    dev = stack.device("dev-defaults")
    prod = stack.producer("0")
    prod.send_raw("producer/request/dev-defaults",
                  json.dumps({"messageBirthCertificate": {"tmpId": 99, "producerDeviseId": "0"}}))
    receipt = prod.receipt(99, timeout=10)
    assert receipt["deliveryStatus"] == "NOT_DELIVERED"
    arr = dev.wait_for(receipt["id"], 10)[0]
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS, arr.raw
    assert b'"data":null' in arr.raw, arr.raw
    assert arr.msg["data"] is None
    assert arr.msg["command"] == ""
    assert arr.msg["believerGuarantee"] == "RECEIPT_CONFIRMATION"

    # explicit data null and a command
    tmp = prod.send("dev-defaults", command="reboot", data=None)
    mid2 = prod.receipt_id(tmp)
    dev.ack(receipt["id"])
    arr2 = dev.wait_for(mid2, 10)[0]
    assert json_keys_in_order(arr2.raw) == DEVICE_KEYS, arr2.raw
    assert arr2.raw.endswith(b'"data":null}'), arr2.raw


def test_only_last_delivered_and_acked(stack):
    dev = stack.device("dev-ol")
    prod = stack.producer("0")
    tmp = prod.send("dev-ol", guarantee="ONLY_LAST", command="setTemp", data={"t": 21})
    mid = prod.receipt_id(tmp)
    assert prod.for_tmp(tmp)[0]["deliveryStatus"] == "NOT_DELIVERED"
    arr = dev.wait_for(mid, 10)[0]
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS
    assert arr.msg["believerGuarantee"] == "ONLY_LAST"
    assert arr.msg["command"] == "setTemp" and arr.msg["data"] == {"t": 21}
    dev.ack(mid, "COMPLETED_WITH_ERROR")
    prod.wait_status(mid, "COMPLETED_WITH_ERROR", 10)
    settle()
    assert prod.statuses(mid) == ["NOT_DELIVERED", "COMPLETED_WITH_ERROR"]
    assert stack.status(mid) == "COMPLETED_WITH_ERROR"


def test_guarantee_no_sent_once_never_resent(stack):
    dev = stack.device("dev-no")
    prod = stack.producer("0")
    tmp = prod.send("dev-no", guarantee="NO", command="blink")
    receipt = prod.receipt(tmp)
    assert receipt["deliveryStatus"] == "UNKNOWN", receipt
    mid = receipt["id"]
    arr = dev.wait_for(mid, 10)[0]
    assert arr.msg["believerGuarantee"] == "NO"
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS
    # never re-sent: wait well past ack timeout (1.5 s) and the first back-off (3 s)
    stays_true(lambda: dev.count(mid) == 1, 5.0, msg=lambda: "NO message re-sent: %s" % dev.arrivals())
    assert stack.status(mid) != "NOT_DELIVERED"


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_guarantee_no_goes_out_while_device_busy(stack):
    """Device has an unacked RC message (window 1 full); a NO message must still go out once pacing allows,
    without waiting for the ack or the re-send (ack timeout 10 s), and only once."""
    dev = stack.device("dev-busy")
    prod = stack.producer("0")
    t1 = prod.send("dev-busy", command="first")
    m1 = prod.receipt_id(t1)
    a1 = dev.wait_for(m1, 10)[0]
    t2 = prod.send("dev-busy", guarantee="NO", command="second")
    m2 = prod.receipt_id(t2)
    assert prod.for_tmp(t2)[0]["deliveryStatus"] == "UNKNOWN"
    a2 = dev.wait_for(m2, 4)[0]  # far less than the 10 s ack timeout of m1
    assert a2.mono - a1.mono < 6, "NO message waited for the window"
    # pacing kept (service clock)
    assert a2.msg["currentTimestamp"] - a1.msg["currentTimestamp"] >= 300 - 30, (a1.msg, a2.msg)
    assert dev.first_ids()[:2] == [m1, m2]
    stays_true(lambda: dev.count(m2) == 1, 3.0, msg=lambda: "NO message sent twice: %s" % dev.arrivals())
    # m1 still waits for its ack (not re-sent before the 10 s ack timeout)
    assert dev.count(m1) == 1
    assert prod.statuses(m1) == ["NOT_DELIVERED"]


def test_no_birth_certificate_no_notifications(stack):
    dev = stack.device("dev-nocert")
    prod = stack.producer("0")
    spy = stack.listener([("producer/response/#", 1), ("producer/error/#", 1)])
    before = stack.seq()
    prod.send("dev-nocert", command="anon", certificate=False)
    wait_until(lambda: stack.seq() > before, 10, msg="message without certificate never stored")
    arr = dev.wait_count(1, 10)[0]
    mid = arr.msg["id"]
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS
    dev.ack(mid)
    stack.wait_status(mid, "DELIVERED", 10)
    dev.ack(mid, "COMPLETED")
    stack.wait_status(mid, "COMPLETED", 10)
    settle()
    assert [r.raw for r in spy.responses + spy.errors if r.msg and r.msg.get("id") == mid] == []
    assert spy.errors == [], [r.raw for r in spy.errors]
    assert [r.raw for r in spy.responses] == [], "notifications without a certificate: %s" % spy.responses


def test_tmp_id_zero_still_notified(stack):
    dev = stack.device("dev-tmp0")
    prod = stack.producer("0")
    prod.send("dev-tmp0", command="zero", tmp_id=0)
    receipt = prod.receipt(0)
    assert receipt["deliveryStatus"] == "NOT_DELIVERED" and receipt["tmpId"] == 0
    mid = receipt["id"]
    dev.wait_for(mid, 10)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    dev.ack(mid, "COMPLETED")
    prod.wait_status(mid, "COMPLETED", 10)
    assert all(n["tmpId"] == 0 for n in prod.for_id(mid))


def test_qos1_device_full_cycle(stack):
    dev = stack.device("dev-q1", qos=1, auto_ack=True)
    prod = stack.producer("0")
    mid = prod.receipt_id(prod.send("dev-q1", command="q1", data={"k": "v"}))
    arr = dev.wait_for(mid, 10)[0]
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS
    prod.wait_status(mid, "DELIVERED", 10)


def test_duster_topic_and_field_quirks(stack):
    """Device id = last topic segment; unknown keys ignored; certificate null = no notifications."""
    dev_b = stack.device("dev-last")
    prod = stack.producer("0")
    spy = stack.listener([("producer/response/#", 1), ("producer/error/#", 1)])
    # producer/request/a/b addresses device b
    tmp = prod.send_raw("producer/request/some/prefix/dev-last",
                        json.dumps({"command": "seg", "messageBirthCertificate": {"tmpId": 11, "producerDeviseId": "0"},
                                    "someFutureField": {"x": 1}, "priority": 3}))
    mid = prod.receipt_id(11)
    arr = dev_b.wait_for(mid, 10)[0]
    assert arr.msg["command"] == "seg"
    assert json_keys_in_order(arr.raw) == DEVICE_KEYS, "unknown keys leaked to the device: %s" % arr.raw
    assert stack.msg(mid).get("dev") == "dev-last"
    dev_b.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    # messageBirthCertificate: null -> accepted, delivered, never notified
    n_before = len(spy.responses)
    seq0 = stack.seq()
    prod.send_raw("producer/request/dev-last", json.dumps({"command": "nullcert", "messageBirthCertificate": None}))
    wait_until(lambda: stack.seq() == seq0 + 1, 10, msg="null certificate message not stored")
    a2 = wait_until(lambda: [a for a in dev_b.arrivals() if a.msg.get("command") == "nullcert"], 10,
                    msg="null certificate message not delivered")[0]
    dev_b.ack(a2.msg["id"])
    stack.wait_status(a2.msg["id"], "DELIVERED", 10)
    settle()
    assert [r.raw for r in spy.responses[n_before:]] == [], "notifications without a certificate"
    assert spy.errors == []


@pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
def test_guarantee_no_keeps_queue_order(stack):
    """RC m1 in flight, RC m2 waiting for the window, NO m3 behind m2: m3 waits too (order kept); after the
    ack of m1, m2 goes, then m3 goes as soon as pacing allows although m2 holds the slot."""
    dev = stack.device("dev-noorder")
    prod = stack.producer("0")
    m1 = prod.receipt_id(prod.send("dev-noorder", command="one"))
    dev.wait_for(m1, 10)
    m2 = prod.receipt_id(prod.send("dev-noorder", command="two"))
    m3 = prod.receipt_id(prod.send("dev-noorder", guarantee="NO", command="three"))
    stays_true(lambda: dev.count(m2) == 0 and dev.count(m3) == 0, 2.0,
               msg=lambda: "sent out of order / past the window: %s" % dev.ids())
    dev.ack(m1)
    a2 = dev.wait_for(m2, 8)[0]
    a3 = dev.wait_for(m3, 8)[0]
    assert dev.first_ids() == [m1, m2, m3]
    assert a3.msg["currentTimestamp"] - a2.msg["currentTimestamp"] >= 300 - 30
    assert a3.mono - a2.mono < 4.0, "NO message behind an unacked one waited for the window"
    stays_true(lambda: dev.count(m3) == 1, 2.0, msg=lambda: "NO message re-sent: %s" % dev.ids())
