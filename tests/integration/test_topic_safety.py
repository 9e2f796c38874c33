"""Ids that end up in MQTT topics must be valid for every broker, and no single refused publish may
stall a shard or cost a node its broker connection.

Mosquitto closes a client's connection ("malformed packet") when it publishes to a topic with C0/C1
control characters, U+FDD0..U+FDEF, U+xFFFE/U+xFFFF or invalid UTF-8. Such an id used to be accepted
as a producerDeviseId or a REST device id; its status notification then knocked the dispatcher off
the broker over and over, for every shard it owned.
"""
import json

import pytest

import harness
from harness import shard_of, stays_true, wait_until
from test_rest import Api, ctl, error_code

PD = "topic-pd"

# Code points a broker refuses in a topic; each one alone, and inside an otherwise normal id.
BAD_CODE_POINTS = ["\u0085", "\u009f", "\u007f", "\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe",
                   "\U0010ffff"]


def j(obj):
    return json.dumps(obj, separators=(",", ":"))


def mqtt_reconnects(stack):
    return len([ln for ln in stack.dispatcher.log_text().splitlines() if ("event=mqttc_disconnected" in ln or "event=mqtt_connection_lost" in ln)])


@pytest.mark.parametrize("cp", BAD_CODE_POINTS, ids=["U+%04X" % ord(c) for c in BAD_CODE_POINTS])
def test_producer_id_a_broker_refuses_is_rejected(stack, cp):
    dev = stack.device("dev-topic-ok", auto_ack=True)
    prod = stack.producer(PD)
    seq0, keys0 = stack.seq(), stack.message_keys()
    rej0 = stack.metric("producer_rejected")
    for pd in (cp, "a" + cp + "b"):
        prod.send_raw("producer/request/dev-topic-ok",
                      j({"command": "x", "messageBirthCertificate": {"tmpId": 7, "producerDeviseId": pd}}))
    stack.wait_metric("producer_rejected", rej0 + 2, 10)
    assert stack.seq() == seq0, "a command with an unpublishable producer id consumed an id"
    assert stack.message_keys() == keys0, "a command with an unpublishable producer id was stored"
    # the node keeps its session and keeps working
    mid = prod.receipt_id(prod.send("dev-topic-ok", command="after"), timeout=10)
    dev.wait_for(mid, 10)
    prod.wait_status(mid, "DELIVERED", 10)
    assert mqtt_reconnects(stack) == 0, stack.dispatcher.tail()


def test_rest_device_ids_a_broker_refuses_are_rejected(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port})
    api = Api(stack, port)
    key = ctl(stack, "key", "create", "producer", "fleet")
    seq0 = stack.seq()
    for enc in ("%C2%85", "%7F", "%EF%B7%90", "%EF%BF%BF", "%F4%8F%BF%BF", "a%C2%9Fb", "%ED%A0%80", "%C0%AF"):
        st, _, b = api.call("POST", "/v1/devices/%s/messages" % enc, key, {"command": "x"})
        assert st == 400 and error_code(b) == "BAD_DEVICE_ID", (enc, st, b)
        st, _, b = api.call("PUT", "/producer/request/%s" % enc, key, {"command": "x"})
        assert st == 400, (enc, st, b)
    st, _, b = api.call("POST", "/v1/messages/bulk", key,
                        {"devices": ["ok-dev", "bad\u0085dev"], "command": "x"})
    assert st == 400, (st, b)
    st, _, b = api.call("PUT", "/producer/request/ok-dev", key,
                        {"command": "x", "messageBirthCertificate": {"tmpId": 1, "producerDeviseId": "p\ufffe"}})
    assert st == 400, (st, b)
    assert stack.seq() == seq0, "a rejected request consumed an id"
    # non-ASCII that brokers accept is fine
    st, _, b = api.call("POST", "/v1/devices/%s/messages" % "%D0%B4%D0%B0%D1%82%D1%87%D0%B8%D0%BA", key,
                        {"command": "x"})
    assert st == 201, (st, b)


def test_a_refused_notification_is_skipped_not_retried_forever(stack):
    """A notification addressed to a producer id stored before input was checked this strictly, left
    unconfirmed by a node that died: the shard owner reclaims it, counts it as refused, acknowledges it
    in the status log and keeps its broker session; the notifications around it still go out."""
    device = "dev-outbox-poison"
    sh = shard_of(device, stack.shards)
    dev = stack.device(device, auto_ack=True)
    prod = stack.producer(PD)
    refused0 = stack.metric("notify_refused")
    log = "%s{%d}log" % (stack.prefix, sh)

    def inject(r):
        # the entry as a status change logs it, claimed by a node that then died
        if not r.exists(log):
            r.xgroup_create(log, "pub", id="$", mkstream=True)
        r.xadd(log, {"i": "999999", "d": device, "s": "NOT_DELIVERED", "t": "1", "p": "bad\u0085pd", "x": "0",
                     "k": ""})
        r.xreadgroup("pub", "dead-node", {log: ">"})
    stack.redis_call(inject)
    mid = prod.receipt_id(prod.send(device, command="behind-the-poison"), timeout=15)
    dev.wait_for(mid, 10)
    prod.wait_status(mid, "DELIVERED", 10)
    stack.wait_metric("notify_refused", refused0 + 1, 30)
    wait_until(lambda: stack.redis_call(lambda r: r.xpending(log, "pub")["pending"]) == 0, 10,
               msg="the refused notification is still unconfirmed")
    stays_true(lambda: mqtt_reconnects(stack) == 0, 1.0, msg=lambda: stack.dispatcher.tail())
    assert stack.metric("notify_refused") == refused0 + 1


def test_a_refused_send_fails_its_message(stack):
    """A queued message for a device id stored before input was checked this strictly ends FAILED
    (history event "refused") instead of being re-sent forever, and other devices are not disturbed."""
    bad = "bad\u0085dev"
    sh = shard_of(bad, stack.shards)
    p = stack.prefix
    # stored as the accept function stores it: the functions do not check ids, the ingress does
    reply = stack.redis_call(lambda r: r.fcall(
        "accept_batch", 1, "%s{%d}" % (p, sh), p, stack.shards, 3600, "test", 2147483647, "", 60, 0, 0, 1,
        bad, sh, "RECEIPT_CONFIRMATION", "x", "", "", "", 0, 0, 0, 0, "", "fp", 0, "", 120))
    assert reply[0][0] == "OK", reply
    mid = int(reply[0][1])
    stack.redis_call(lambda r: r.xack("%s{%d}log" % (p, sh), "pub", *[reply[1][i + 1]
                                                                     for i in range(0, len(reply[1]), 9)]))
    wait_until(lambda: stack.status(mid) == "FAILED", 15, msg=lambda: "status %s" % stack.msg(mid))
    assert [h["event"] for h in stack.history(mid)][-1] == "refused", stack.history(mid)
    stack.wait_metric("send_refused", 1, 10)
    # the dispatcher kept its connection and keeps delivering
    dev = stack.device("dev-after-refused", auto_ack=True)
    prod = stack.producer(PD)
    m2 = prod.receipt_id(prod.send("dev-after-refused", command="y"), timeout=10)
    dev.wait_for(m2, 10)
    prod.wait_status(m2, "DELIVERED", 10)
    assert mqtt_reconnects(stack) == 0, stack.dispatcher.tail()
