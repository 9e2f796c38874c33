"""What stock firmware cannot take is refused at submit, and nothing blocks a device's queue forever.

Duster firmware reads commands into buffers of under 1 KB: a bigger command is never acknowledged,
and with no deadline it would hold its device's queue forever. device.max_message (default 1024
bytes, the message as the device receives it) is checked when the command is submitted, per device
overridable; dispatch.default_ttl_ms gives every message without a deadline of its own one.
"""
import json

import harness
from test_rest import Api, ctl, error_code


def command_of_size(n):
    """data padded so that the device message (id and timestamp at their widest) is n bytes."""
    base = {"pad": ""}
    msg = '{"id":2147483647,"believerGuarantee":"RECEIPT_CONFIRMATION","command":"x","currentTimestamp":' \
          '9999999999999,"data":%s}'
    fixed = len(msg % json.dumps(base, separators=(",", ":")))
    base["pad"] = "p" * (n - fixed)
    return {"command": "x", "data": base}


def test_a_command_larger_than_its_device_takes_is_refused(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port})
    api = Api(stack, port)
    key = ctl(stack, "key", "create", "producer", "fleet")
    prod = stack.producer("lim")
    dev = stack.device("dev-small", auto_ack=True)
    seq0 = stack.seq()
    # MQTT: refused with TOO_LARGE on producer/error, nothing stored
    body = dict(command_of_size(1025), messageBirthCertificate={"tmpId": 5, "producerDeviseId": "lim"})
    prod.send_raw("producer/request/dev-small", json.dumps(body))
    err = prod.wait_error(5, 10)
    assert err["error"]["code"] == "TOO_LARGE", err
    # REST: 413
    st, _, b = api.call("POST", "/v1/devices/dev-small/messages", key, command_of_size(1025))
    assert st == 413 and error_code(b) == "TOO_LARGE", (st, b)
    assert stack.seq() == seq0, "a refused command consumed an id"
    # exactly the limit is fine
    # (data goes to the device as the producer spelled it: compact here)
    st, _, b = api.call("POST", "/v1/devices/dev-small/messages", key,
                        raw=json.dumps(command_of_size(1024), separators=(",", ":")))
    assert st == 201, (st, b)
    arrived = dev.wait_for(b["id"], 10)
    assert arrived
    assert max(len(a.raw) for a in dev.arrivals_of(b["id"])) <= 1024
    # a device that takes more gets more
    ctl(stack, "device", "set", "dev-big", "max_message=8192")
    st, _, b = api.call("POST", "/v1/devices/dev-big/messages", key, command_of_size(5000))
    assert st == 201, (st, b)
    out = json.loads(ctl(stack, "device", "show", "dev-big"))
    assert out["maxMessage"] == 8192, out


def test_messages_without_a_deadline_get_the_default_one(stack_factory):
    stack = stack_factory({"dispatch.default_ttl_ms": 1500})
    prod = stack.producer("ttl")
    # nobody listens on this device: without the default deadline it would wait forever
    mid = prod.receipt_id(prod.send("dev-away", command="x"), timeout=10)
    stack.wait_status(mid, "EXPIRED", 15)
    assert [h["event"] for h in stack.history(mid)][-1] == "deadline"
