"""Re-sends to an offline device with a persistent session (docs/protocol.md §10.3).

A device that subscribes with QoS 1 in a persistent session (clean_session False, MQTT 3.1.1 as Duster
firmware does) and goes offline has every copy the dispatcher publishes queued by the broker. With MQTT 5
the dispatcher gives each copy a Message Expiry Interval shorter than the time until its next re-send,
so when the device comes back it finds at most one copy waiting, and every later copy comes at least one
pacing interval after the previous one. Mosquitto drops an expired message for 3.1.1 subscribers too.

The policy here (no jitter, no back-off growth) makes the re-send wait exactly ACK_TIMEOUT, so the
dispatcher's expiry is 1 s (see drover.lua send_expiry) and a copy lives under 2 s at the broker.
The control test runs the same scenario with mqtt.protocol = 4 (the behaviour before MQTT 5): the
copies pile up and arrive back to back, which is what the first test must not see.
"""
import re
import time

import pytest

import harness
from harness import Device
from test_rest import Api, ctl

INTERVAL = 1000
ACK_TIMEOUT = 3500
POLICY = {
    "dispatch.interval_ms": INTERVAL,
    "dispatch.ack_timeout_ms": ACK_TIMEOUT,
    "dispatch.retry_max_ms": ACK_TIMEOUT,
    "dispatch.backoff": "1.0",
    "dispatch.jitter_pct": 0,
}
OFFLINE_SENDS = 4   # copies the dispatcher publishes while the device is offline
BURST_S = 0.5       # copies arriving within this time of each other came from the offline queue together
SLACK_MS = 50       # the device's receive clock against the dispatcher's pacing


def persistent_device(stack, device_id):
    """A 3.1.1 device with a persistent session and a QoS 1 subscription."""
    dev = Device(stack.mqtt, device_id, qos=1, connect=False)
    dev.clean_session = False
    stack.clients.append(dev)
    return dev


def go_offline_and_collect(stack, device_id, protocol):
    """Subscribes, disconnects, lets OFFLINE_SENDS copies of one command be sent, reconnects and records
    what arrives for three more re-send periods without acking. Returns (message id, arrivals, reconnect
    time)."""
    dev = persistent_device(stack, device_id)
    dev.connect()
    dev.disconnect()
    prod = stack.producer("0")
    mid = prod.receipt_id(prod.send(device_id, command="reboot"))
    since = stack.dispatcher.log_size()
    pattern = r"event=resent id=%d device=\"%s\" attempt=%d expiry_s=(\d+)" % (mid, device_id, OFFLINE_SENDS)
    m = stack.dispatcher.wait_log(pattern, OFFLINE_SENDS * ACK_TIMEOUT / 1000.0 + 15, since=since)
    want_expiry = "1" if protocol == 5 else "0"
    assert m.group(1) == want_expiry, "expiry_s=%s logged, expected %s" % (m.group(1), want_expiry)
    assert dev.count(mid) == 0
    t_reconnect = time.monotonic()
    dev.connect()
    time.sleep(3 * ACK_TIMEOUT / 1000.0)
    arrivals = dev.arrivals_of(mid)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 15)
    return mid, arrivals, t_reconnect


@pytest.mark.drover_config(dict(POLICY, **{"mqtt.protocol": 5}))
def test_offline_device_gets_at_most_one_copy_and_paced_resends(stack):
    mid, arrivals, t0 = go_offline_and_collect(stack, "dev-offline-v5", 5)
    # The dispatcher connected with MQTT 5 (no fallback).
    assert "event=mqttc_protocol_fallback" not in stack.dispatcher.log_text()
    # What the session held at the reconnect: at most one copy (the latest, if it had not expired).
    early = [a for a in arrivals if a.mono - t0 < BURST_S + 1.0]
    assert len(early) <= 1, "%d copies of id %s waited in the offline session: %s" % (len(early), mid, arrivals)
    # Re-sends went on while the device did not ack: it is still being served.
    assert len(arrivals) >= 2, "only %d copies in %.1f s after the reconnect" % (len(arrivals),
                                                                                  3 * ACK_TIMEOUT / 1000.0)
    # Never two copies closer than the pacing interval, counting the one found in the session.
    for a, b in zip(arrivals, arrivals[1:]):
        gap = (b.mono - a.mono) * 1000
        assert gap >= INTERVAL - SLACK_MS, "copies %.0f ms apart (interval %d ms): %s" % (gap, INTERVAL, arrivals)
    # One copy per re-send period at most (plus the one from the session).
    assert len(arrivals) <= 1 + 3 + 1, arrivals


@pytest.mark.drover_config(dict(POLICY, **{"mqtt.protocol": 4}))
def test_without_mqtt5_copies_pile_up_in_the_offline_session(stack):
    """Control: the 3.1.1 dispatcher (no expiry) leaves every copy queued; the device gets them back to
    back. This is the defect the MQTT 5 expiry removes, and shows the test above can fail."""
    mid, arrivals, t0 = go_offline_and_collect(stack, "dev-offline-v4", 4)
    burst = [a for a in arrivals if a.mono - arrivals[0].mono < BURST_S]
    assert len(burst) >= OFFLINE_SENDS, "expected the %d queued copies back to back, got %s" % (OFFLINE_SENDS,
                                                                                                 arrivals)


@pytest.mark.drover_config(dict(POLICY, **{"mqtt.protocol": 5}))
def test_online_device_sees_no_change(stack):
    """A connected 3.1.1 device that acks gets each message once, as before."""
    dev = persistent_device(stack, "dev-online-v5")
    dev.auto_ack = True
    dev.connect()
    prod = stack.producer("0")
    ids = [prod.receipt_id(prod.send("dev-online-v5", command="c%d" % i)) for i in range(3)]
    for i in ids:
        prod.wait_status(i, "DELIVERED", 20)
    assert [dev.count(i) for i in ids] == [1, 1, 1], dev.arrivals()
    assert re.search(r"event=sent id=%d .* expiry_s=1\b" % ids[0], stack.dispatcher.log_text())


LONG = {"dispatch.interval_ms": 1000, "dispatch.ack_timeout_ms": 20000, "dispatch.retry_max_ms": 20000,
        "dispatch.backoff": "1.0", "dispatch.jitter_pct": 0, "mqtt.protocol": 5}


def logged_expiry(stack, mid, since):
    m = stack.dispatcher.wait_log(r"event=sent id=%d .* expiry_s=(\d+)" % mid, 15, since=since)
    return int(m.group(1))


def test_expiry_follows_the_device_interval_and_the_deadline(stack_factory):
    """The expiry is computed where the send is recorded, from the re-send time just drawn, the device's
    own pacing interval and the message's deadline (docs/protocol.md §10.3). Re-send wait 20 s, interval
    1 s: 17 s. A device whose interval was raised to 6 s: 12 s (computed from the configured 1 s, the
    copy could wait 17 s and reach the device less than 6 s before the next one). A message with an 8 s
    deadline: 5 s, so no waiting copy reaches the device after the message expired."""
    port = harness.free_port()
    s = stack_factory(dict(LONG, **{"http.port": port}))
    api = Api(s, port)
    admin = ctl(s, "key", "create", "admin", "ops")
    st, _, body = api.call("PUT", "/v1/devices/dev-slow/pacing", admin, {"intervalMs": 6000})
    assert st == 200, body
    prod = s.producer("0")
    since = s.dispatcher.log_size()
    plain = prod.receipt_id(prod.send("dev-plain", command="a"))
    assert logged_expiry(s, plain, since) == 17
    slow = prod.receipt_id(prod.send("dev-slow", command="b"))
    assert logged_expiry(s, slow, since) == 12
    short = prod.receipt_id(prod.send("dev-deadline", command="c", ttlMs=8000))
    assert logged_expiry(s, short, since) in (5, 6)
    no = prod.receipt_id(prod.send("dev-plain2", command="d", guarantee="NO"))
    assert logged_expiry(s, no, since) == 0
