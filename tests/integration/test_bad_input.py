"""Bad producer input and bad acks: clear error, nothing stored, nothing disturbed.

ingress.max_payload is 1024 for this module.
"""
import json
import time

import pytest

from harness import stays_true, wait_until

# device.max_message 0: these tests are about the ingress's own payload limit (test_device_limits.py
# covers the device's).
pytestmark = pytest.mark.drover_config({"ingress.max_payload": 1024, "device.max_message": 0,
                                        "dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})

PD = "bad-pd"
TMP = 4242
CERT = {"tmpId": TMP, "producerDeviseId": PD}


def j(obj):
    return json.dumps(obj, separators=(",", ":"))


# (case id, topic device suffix or None for default, payload, error codes accepted, certificate readable)
# "cert readable" True  -> the error notification on producer/error/<pd> is required;
#                 None  -> optional (certificate itself is bad or the payload is not parsed), checked if sent;
#                 False -> the certificate cannot be read, so no notification can be addressed.
CASES = [
    ("non_json", None, b'{"command": "x", "messageBirthCertificate": {"tmpId": 4242, "producerDeviseId": "bad-pd"',
     {"BAD_JSON"}, False),
    ("not_utf8", None, b'{"command":"\xff\xfe","messageBirthCertificate":{"tmpId":4242,"producerDeviseId":"bad-pd"}}',
     {"BAD_JSON"}, False),
    ("json_array", None, j([{"command": "x", "messageBirthCertificate": CERT}]), {"BAD_JSON"}, False),
    ("json_scalar", None, b"42", {"BAD_JSON"}, False),
    ("empty_payload", None, b"", {"BAD_JSON"}, False),
    ("nul_escape", None, b'{"command":"a\\u0000b","messageBirthCertificate":{"tmpId":4242,"producerDeviseId":"bad-pd"}}',
     {"BAD_JSON"}, False),
    ("command_number", None, j({"command": 5, "messageBirthCertificate": CERT}), {"BAD_TYPE", "BAD_FIELD"}, True),
    ("unknown_guarantee", None, j({"believerGuarantee": "MAYBE", "command": "x", "messageBirthCertificate": CERT}),
     {"BAD_GUARANTEE"}, True),
    ("guarantee_lowercase", None, j({"believerGuarantee": "only_last", "messageBirthCertificate": CERT}),
     {"BAD_GUARANTEE"}, True),
    ("data_array", None, j({"command": "x", "data": [1, 2], "messageBirthCertificate": CERT}), {"BAD_DATA"}, True),
    ("data_string", None, j({"command": "x", "data": "on", "messageBirthCertificate": CERT}), {"BAD_DATA"}, True),
    ("empty_device_id", "", j({"command": "x", "messageBirthCertificate": CERT}), {"BAD_DEVICE_ID"}, True),
    ("device_id_too_long", "d" * 129, j({"command": "x", "messageBirthCertificate": CERT}), {"BAD_DEVICE_ID"},
     True),
    ("no_device_segment", "/", j({"command": "x", "messageBirthCertificate": CERT}), {"BAD_DEVICE_ID"}, True),
    # docs/protocol.md 8.1: TOO_LARGE is notified when the payload (<= 1 MiB) has a readable certificate
    ("too_large", None, j({"command": "x", "data": {"blob": "z" * 2000}, "messageBirthCertificate": CERT}),
     {"TOO_LARGE"}, True),
    ("tmp_id_string", None, j({"command": "x", "messageBirthCertificate": {"tmpId": "abc", "producerDeviseId": PD}}),
     {"BAD_TYPE", "BAD_FIELD"}, False),
    ("tmp_id_float", None, j({"command": "x", "messageBirthCertificate": {"tmpId": 1.5, "producerDeviseId": PD}}),
     {"BAD_TYPE", "BAD_FIELD"}, False),
    ("producer_id_with_slash", None, j({"command": "x", "messageBirthCertificate": {"tmpId": TMP,
                                                                                    "producerDeviseId": "a/b"}}),
     {"BAD_FIELD"}, False),
    ("certificate_not_object", None, j({"command": "x", "messageBirthCertificate": [TMP, PD]}), {"BAD_TYPE"}, False),
    ("duplicate_keys", None, b'{"command":"x","command":"y","messageBirthCertificate":{"tmpId":4242,'
                             b'"producerDeviseId":"bad-pd"}}', {"BAD_JSON"}, False),
    ("trailing_data", None, j({"command": "x", "messageBirthCertificate": CERT}) + "{}", {"BAD_JSON"}, False),
    ("max_attempts_zero", None, j({"command": "x", "maxAttempts": 0, "messageBirthCertificate": CERT}),
     {"BAD_FIELD", "BAD_TYPE"}, True),
    ("ttl_negative", None, j({"command": "x", "ttlMs": -5, "messageBirthCertificate": CERT}),
     {"BAD_FIELD", "BAD_TYPE"}, True),
    ("idempotency_key_empty", None, j({"command": "x", "idempotencyKey": "", "messageBirthCertificate": CERT}),
     {"BAD_FIELD", "BAD_TYPE"}, True),
    ("idempotency_key_too_long", None, j({"command": "x", "idempotencyKey": "k" * 129,
                                          "messageBirthCertificate": CERT}), {"BAD_FIELD", "BAD_TYPE"}, True),
]


def topic_for(device, suffix):
    if suffix == "/":
        return "producer/request"  # no device segment at all
    return "producer/request/%s" % (device if suffix is None else suffix)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_producer_input_rejected(stack, case):
    name, dev_suffix, payload, codes, cert_readable = case
    device = "dev-bad"
    topic = topic_for(device, dev_suffix)
    dev = stack.device(device, auto_ack=True)
    prod = stack.producer(PD)
    spy = stack.listener([("producer/error/#", 1), ("producer/response/#", 1)])
    seq0 = stack.seq()
    keys0 = stack.message_keys()
    rej0 = stack.metric("producer_rejected")

    prod.send_raw(topic, payload)
    stack.wait_metric("producer_rejected", rej0 + 1, 10)
    if cert_readable:
        err = prod.wait_error(TMP, 10)
    else:
        time.sleep(1.0)  # give an (optional) notification time to arrive
        err = next((r.msg for r in prod.error_notes() if r.msg.get("tmpId") == TMP), None)
    if cert_readable is False:
        assert err is None, "notification without a readable certificate: %s" % err
        assert spy.errors == [], "error notification without a readable certificate: %s" % spy.errors
    if err is not None:
        assert set(err) >= {"tmpId", "error"}, err
        assert err["tmpId"] == TMP
        assert err["error"].get("code") in codes, "case %s: code %s, expected one of %s" % (name, err, codes)
        assert isinstance(err["error"].get("message"), str) and err["error"]["message"], err
    # nothing stored, no receipt
    assert stack.seq() == seq0, "a rejected message consumed an id"
    assert stack.message_keys() == keys0, "a rejected message was stored"
    assert [r.raw for r in spy.responses] == [], "receipt for a rejected message: %s" % spy.responses
    assert dev.arrivals() == []

    # the ingress keeps working: a valid message afterwards is accepted and delivered
    tmp = prod.send(device, command="valid", data={"ok": True})
    mid = prod.receipt_id(tmp, timeout=10)
    dev.wait_for(mid, 10)
    prod.wait_status(mid, "DELIVERED", 10)
    assert stack.seq() == seq0 + 1
    assert stack.ingress.alive(), "ingress died"
    assert stack.metric("producer_rejected") == rej0 + 1


def test_many_bad_inputs_in_a_row_do_not_disturb(stack):
    """All bad payloads back to back, interleaved with valid ones: every valid one gets through in order."""
    dev = stack.device("dev-mix", auto_ack=True)
    prod = stack.producer(PD)
    rej0 = stack.metric("producer_rejected")
    seq0 = stack.seq()
    valid = []
    for name, suffix, payload, _, _ in CASES:
        topic = topic_for("dev-mix", suffix)
        prod.send_raw(topic, payload)
        valid.append(prod.send("dev-mix", command="v-" + name))
    ids = [prod.receipt_id(t, timeout=15) for t in valid]
    stack.wait_metric("producer_rejected", rej0 + len(CASES), 15)
    dev.wait_distinct(len(ids), 30)
    assert sorted(dev.first_ids()) == sorted(ids)
    assert stack.seq() == seq0 + len(valid)
    assert stack.ingress.alive()


def test_limits_are_inclusive(stack):
    """A payload of exactly ingress.max_payload bytes and a device id of exactly ingress.max_device_id (128)
    characters are accepted; one more is rejected."""
    prod = stack.producer(PD)
    long_id = "L" * 128
    dev = stack.device(long_id, auto_ack=True)

    def body_of_size(n, tmp):
        b = {"command": "x", "data": {"pad": ""}, "messageBirthCertificate": {"tmpId": tmp, "producerDeviseId": PD}}
        b["data"]["pad"] = "p" * (n - len(j(b)))
        raw = j(b)
        assert len(raw) == n
        return raw

    rej0 = stack.metric("producer_rejected")
    prod.send_raw("producer/request/%s" % long_id, body_of_size(1024, 1))
    mid = prod.receipt_id(1, timeout=10)
    dev.wait_for(mid, 10)
    prod.send_raw("producer/request/%s" % long_id, body_of_size(1025, 2))
    err = prod.wait_error(2, 10)
    assert err["error"]["code"] == "TOO_LARGE", err
    prod.send_raw("producer/request/%s" % ("L" * 129), body_of_size(300, 3))
    err = prod.wait_error(3, 10)
    assert err["error"]["code"] == "BAD_DEVICE_ID", err
    stack.wait_metric("producer_rejected", rej0 + 2, 10)
    assert prod.for_tmp(2) == [] and prod.for_tmp(3) == []


BAD_ACKS = [
    ("non_json", b"{id: 1"),
    ("id_string", None),  # filled in with the real id as a string
    ("unknown_status", "BOGUS"),
    ("status_not_delivered", "NOT_DELIVERED"),
    ("status_cancelled", "CANCELLED"),
    ("status_unknown", "UNKNOWN"),
    ("status_lowercase", "delivered"),
    ("json_array", b"[1]"),
    ("id_float", 1.5),
    ("id_negative", -1),
    ("empty", b""),
]


def test_malformed_acks_change_nothing(stack):
    dev = stack.device("dev-badack")
    prod = stack.producer(PD)
    mid = prod.receipt_id(prod.send("dev-badack", command="x"))
    dev.wait_for(mid, 10)
    m0 = stack.metrics()
    base = sum(m0.get(k, 0) for k in ("ack_rejected", "ack_ignored", "ack_unknown_id"))
    applied0 = m0.get("ack_applied", 0)
    for name, v in BAD_ACKS:
        if name == "id_string":
            payload = j({"id": str(mid)})
        elif name in ("id_float",):
            payload = j({"id": mid + 0.5})
        elif name == "id_negative":
            payload = j({"id": -mid})
        elif isinstance(v, str):
            payload = j({"id": mid, "deliveryStatus": v})
        else:
            payload = v
        dev.send_raw(payload)
    # every bad ack is counted as rejected / ignored / unknown
    wait_until(lambda: sum(stack.metric(k) for k in ("ack_rejected", "ack_ignored", "ack_unknown_id")) >= base +
               len(BAD_ACKS), 10, msg=lambda: "bad acks not all counted: %s" % stack.metrics())
    stays_true(lambda: stack.status(mid) == "NOT_DELIVERED", 1.0,
               msg=lambda: "status changed by a bad ack: %s" % stack.status(mid))
    assert prod.statuses(mid) == ["NOT_DELIVERED"]
    assert stack.metric("ack_applied") == applied0
    assert stack.ingress.alive()
    # the session is not disturbed: a proper ack and a new message still work
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
    m2 = prod.receipt_id(prod.send("dev-badack", command="y"))
    dev.wait_for(m2, 10)
    dev.ack(m2, "COMPLETED")
    prod.wait_status(m2, "COMPLETED", 10)
    assert dev.count(mid) == 1, "message re-sent although the ack timeout is 10 s: %s" % dev.arrivals()


def test_acks_on_odd_topics(stack):
    """Acks on topics with extra segments or an empty device id are not applied to another device's message."""
    dev = stack.device("dev-topic")
    prod = stack.producer(PD)
    mid = prod.receipt_id(prod.send("dev-topic", command="x"))
    dev.wait_for(mid, 10)
    dev.send_raw(j({"id": mid}), topic="consumer/response/")
    dev.send_raw(j({"id": mid}), topic="consumer/response/other/dev-topic-not")
    time.sleep(1.5)
    assert stack.status(mid) == "NOT_DELIVERED"
    assert prod.statuses(mid) == ["NOT_DELIVERED"]
    assert stack.ingress.alive()
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 10)
