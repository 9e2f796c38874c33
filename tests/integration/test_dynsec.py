"""Broker provisioning: registry clients pushed live to Mosquitto's dynamic-security plugin
(registry.dynsec = 1). A provisioned device connects with its password, may read only its command topic and
write only its ack topic; disabling kicks it and keeps it out; a password change and a delete take effect
without a broker restart; a broker refusal reaches the REST caller as 502 and leaves nothing behind.
"""
import os
import secrets
import threading

import paho.mqtt.client as mqtt
import pytest

import harness
from dynsec import DynsecMosquitto, PLUGIN
from harness import wait_until, stays_true
from test_registry import Api, operator_password


class Dev:
    """A paho client that records its connection results, messages and subscription grants."""

    def __init__(self, port, user, password, client_id=None):
        self.connack = None
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.msgs = []
        self.granted = {}
        self.c = mqtt.Client(client_id=client_id or "t-%s" % secrets.token_hex(4), clean_session=True,
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, rc: self.dropped.set()
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, q: self.granted.__setitem__(mid, q)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _on_connect(self, c, u, flags, rc):
        self.connack = rc
        if rc == 0:
            self.connected.set()

    def wait_connack(self):
        wait_until(lambda: self.connack is not None, 10, msg="no CONNACK")
        return self.connack

    def subscribe(self, topic):
        _, mid = self.c.subscribe(topic, 1)
        wait_until(lambda: mid in self.granted, 10, msg="no SUBACK")
        return self.granted[mid][0]

    def close(self):
        self.c.loop_stop()
        try:
            self.c.disconnect()
        except Exception:
            pass


@pytest.fixture
def dyn(stack_factory):
    if not os.path.exists(PLUGIN):
        pytest.fail("the dynamic-security plugin %s is missing (package mosquitto)" % PLUGIN)
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "auth.bcrypt_cost": 4}, start=False)
    stack.mqtt = DynsecMosquitto(stack.dir)
    stack.overrides.update({"registry.dynsec": "1", "registry.dynsec_username": "dynsec",
                            "registry.dynsec_password": stack.mqtt.passwords["dynsec"]})
    stack.start()
    api = Api(stack, port)
    api.admin = api.token("admin", operator_password(stack))
    stack.ingress.wait_log(r"event=dynsec_connected", 20)
    devs = []

    def connect(user, password):
        d = Dev(stack.mqtt.port, user, password)
        devs.append(d)
        return d
    api.connect = connect
    yield api
    for d in devs:
        d.close()


def test_provisioned_device_topics(dyn):
    c = dyn.create(dyn.admin, "dyn-1", "pw-one")
    dyn.create(dyn.admin, "dyn-2", "pw-two")
    assert c["deviseId"] == "dyn-1"
    d = dyn.connect("dyn-1", "pw-one")
    assert d.wait_connack() == 0
    assert dyn.connect("dyn-1", "wrong").wait_connack() != 0
    assert dyn.connect("ghost", "pw-one").wait_connack() != 0
    # its own command topic: granted; another device's: refused (0x80)
    assert d.subscribe("consumer/request/dyn-1") == 1
    assert d.subscribe("consumer/request/dyn-2") == 128
    assert d.subscribe("consumer/request/#") == 128
    # a command to it arrives through Drover
    st, _, out = dyn.call("PUT", "/producer/request/dyn-1", dyn.admin, {"command": "blink"})
    assert st == 200
    wait_until(lambda: any(t == "consumer/request/dyn-1" for t, _ in d.msgs), 15, msg="command not delivered")
    # its ack on its own ack topic completes the message; an ack published for another device is dropped
    other = dyn.connect("dyn-2", "pw-two")
    assert other.wait_connack() == 0
    spy = dyn.connect("producer", dyn.stack.mqtt.passwords["producer"])  # the service role reads everything
    assert spy.wait_connack() == 0 and spy.subscribe("consumer/response/#") == 1
    forged = b'{"id":%d,"deliveryStatus":"COMPLETED_WITH_ERROR"}' % out["id"]
    real = b'{"id":%d,"deliveryStatus":"COMPLETED"}' % out["id"]
    other.c.publish("consumer/response/dyn-1", forged, qos=1).wait_for_publish(10)  # PUBACKed, then dropped
    other.c.publish("consumer/response/dyn-2", b"{}", qos=1).wait_for_publish(10)  # its own topic: passes
    d.c.publish("consumer/response/dyn-1", real, qos=1).wait_for_publish(10)
    wait_until(lambda: len(spy.msgs) >= 2, 15, msg="the allowed acks did not pass the broker")
    wait_until(lambda: dyn.stack.status(out["id"]) == "COMPLETED", 15)
    assert forged not in [p for _, p in spy.msgs] and real in [p for _, p in spy.msgs]
    # a MAN client may publish producer requests and read its own producer answers
    dyn.create(dyn.admin, "ops-1", "ops-pw", role="MAN")
    op = dyn.connect("ops-1", "ops-pw")
    assert op.wait_connack() == 0
    assert op.subscribe("producer/response/ops-1") == 1
    assert op.subscribe("consumer/request/dyn-1") == 128


def test_disable_password_change_delete_live(dyn):
    c = dyn.create(dyn.admin, "dyn-x", "first")
    d = dyn.connect("dyn-x", "first")
    assert d.wait_connack() == 0
    path = "/admin/api/clients/%d" % c["id"]
    # disabling cuts the session and keeps it out
    assert dyn.call("PUT", path, dyn.admin, {"enabled": False})[0] == 200
    assert d.dropped.wait(10), "the broker did not kick the disabled client"
    assert dyn.connect("dyn-x", "first").wait_connack() != 0
    assert dyn.call("PUT", path, dyn.admin, {"enabled": True})[0] == 200
    assert dyn.connect("dyn-x", "first").wait_connack() == 0
    # a new password works at once, the old one no more (no broker restart)
    assert dyn.call("PUT", path, dyn.admin, {"password": "second"})[0] == 200
    assert dyn.connect("dyn-x", "first").wait_connack() != 0
    assert dyn.connect("dyn-x", "second").wait_connack() == 0
    # deleted: cannot connect
    live = dyn.connect("dyn-x", "second")
    assert live.wait_connack() == 0
    assert dyn.call("DELETE", path, dyn.admin)[0] == 204
    assert live.dropped.wait(10), "the broker did not kick the deleted client"
    assert dyn.connect("dyn-x", "second").wait_connack() != 0
    # the name can be used again
    dyn.create(dyn.admin, "dyn-x", "third")
    assert dyn.connect("dyn-x", "third").wait_connack() == 0


def test_broker_refusal_is_reported_and_rolled_back(dyn):
    # "dynsec" exists on the broker but not in the registry: the broker refuses, the registry keeps nothing
    st, _, b = dyn.call("POST", "/admin/api/clients", dyn.admin, {"deviseId": "dynsec", "password": "x"})
    assert st == 502 and "exists" in b["message"].lower(), b
    assert dyn.stack.ingress.wait_log(r"event=dynsec_push_failed", 5)
    st, _, lst = dyn.call("GET", "/admin/api/clients?search=dynsec", dyn.admin)
    assert (st, lst) == (200, [])
    # the service's own broker user is untouched
    assert dyn.connect("dynsec", dyn.stack.mqtt.passwords["dynsec"]).wait_connack() == 0
    # a client imported with only a bcrypt hash exists on the broker without a password until one is set
    c = dyn.create(dyn.admin, "imp", None, passwordHash="$2y$10$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK")
    assert dyn.connect("imp", "correct horse").wait_connack() != 0
    assert dyn.call("PUT", "/admin/api/clients/%d" % c["id"], dyn.admin, {"password": "reset"})[0] == 200
    assert dyn.connect("imp", "reset").wait_connack() == 0
    # no broker connection: 502, and a create is rolled back
    dyn.stack.mqtt.stop()
    wait_until(lambda: dyn.call("POST", "/admin/api/clients", dyn.admin,
                                {"deviseId": "offline", "password": "x"})[0] == 502, 15)
    st, _, lst = dyn.call("GET", "/admin/api/clients?search=offline", dyn.admin)
    assert lst == []
    dyn.stack.mqtt.start()
