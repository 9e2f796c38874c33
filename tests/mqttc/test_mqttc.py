"""Live tests of dr_mqttc (common/src/mqttc.c) against a real Mosquitto.

Each test starts its own mosquitto on a random 127.0.0.1 port (password file, persistence; the
MosquittoServer of tests/integration/harness.py) and drives the `mqttc_live` program (tests/mqttc/mqttc_live.c)
over stdin, reading one line per callback from its stdout. A Python paho client plays the producer or the
consumer on the other side. Broken frames come from a small scripted TCP peer: it checks our parser, it is not a
stand-in for a broker.

Every wait is bounded and generous (a loaded 2-core machine must not flake); nothing sleeps and then asserts.
"""
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import free_port, stays_true, wait_until  # noqa: E402

LIVE = os.environ.get("DROVER_MQTTC_LIVE", os.path.join(harness.BIN_DIR, "mqttc_live"))

DR_EINVAL, DR_ETIMEDOUT, DR_ECLOSED = -1, -7, -9


# ---------------------------------------------------------------------------------------------------
# the driver


class Live(harness.LineProgram):
    """One mqttc_live process: send() commands, wait for the lines it prints."""

    def __init__(self, workdir, name, **opts):
        super().__init__(LIVE, "DROVER_MQTTC_LIVE", os.path.join(workdir, "%s.log" % name), name, **opts)
        self.wait_line(r"ready$", 20)

    def states(self):
        return [l for l in self.snapshot() if l.startswith("state ")]

    def connected(self):
        s = self.states()
        return bool(s) and s[-1].startswith("state 1")

    def wait_connected(self, timeout=20):
        wait_until(self.connected, timeout, msg=lambda: "%s not connected; states %s\n%s" % (
            self.name, self.states()[-5:], self.tail()))

    def msgs(self):
        """Received messages as dicts, in arrival order."""
        out = []
        for l in self.snapshot():
            if l.startswith("msg "):
                p = l.split(" ", 6)
                out.append({"token": int(p[1]), "qos": int(p[2]), "dup": int(p[3]), "retain": int(p[4]),
                            "topic": p[5], "payload": p[6] if len(p) > 6 else ""})
        return out

    def pub(self, tag, topic, qos, payload):
        """Publishes; returns dr_mqttc_publish's return code."""
        n = len(self.snapshot())
        self.send("pub %s %s %d %s" % (tag, topic, qos, payload))
        return int(self.wait_line(r"pubrc %s (-?\d+)$" % re.escape(tag), 20, since=n).group(1))

    def pubdone(self, tag, timeout=30):
        return int(self.wait_line(r"pubdone %s (-?\d+)$" % re.escape(tag), timeout).group(1))

    def sync(self):
        """A QoS 1 round trip: once its PUBACK is back, the broker has processed every packet we sent before."""
        tag = "sync-%s" % secrets.token_hex(3)
        assert self.pub(tag, "sync/" + tag, 1, "s") == 0
        assert self.pubdone(tag) == 0

    def stat(self):
        n = len(self.snapshot())
        self.send("stat")
        mt = self.wait_line(r"stat connected=(\d) pending=(\d+) unacked=(\d+)$", 20, since=n)
        return {"connected": int(mt.group(1)), "pending": int(mt.group(2)), "unacked": int(mt.group(3))}

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def exit(self, timeout=30):
        """Stops the client (DISCONNECT), frees it and expects a clean, leak-free exit."""
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("%s did not exit:\n%s" % (self.name, self.tail()))
        self.reader.join(5)
        log = self.log_text()
        for marker in harness.SANITIZER_MARKERS:
            assert marker not in log, "%s: sanitizer report:\n%s" % (self.name, log[-6000:])
        assert self.proc.returncode == 0, "%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.tail())


# ---------------------------------------------------------------------------------------------------
# fixtures and the other side


@pytest.fixture
def broker(tmp_path):
    b = harness.MosquittoServer(str(tmp_path))
    b.start()
    yield b
    b.resume() if b.alive() else None
    b.stop()


@pytest.fixture
def lives(tmp_path):
    """Factory of Live drivers; every one still running at the end is exited cleanly (and checked)."""
    made = []

    def make(name, **opts):
        lv = Live(str(tmp_path), name, **opts)
        made.append(lv)
        return lv
    yield make
    errors = []
    for lv in made:
        if lv.proc.poll() is None:
            try:
                lv.exit()
            except AssertionError as e:
                errors.append(str(e))
    assert not errors, "\n".join(errors)


def drover_opts(broker, **kw):
    o = {"url": broker.url, "user": "drover", "pass": broker.passwords["drover"], "rmin": 100, "rmax": 1000}
    o.update(kw)
    return o


class Peer:
    """A paho client on the producer account, for publishing to and receiving from the client under test."""

    def __init__(self, broker, subscribe=None):
        self.got = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(client_id="peer-%s" % secrets.token_hex(4), clean_session=True,
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set("producer", broker.passwords["producer"])
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect("127.0.0.1", broker.port, 30)
        self.c.loop_start()
        if subscribe:
            self.c.subscribe(subscribe, 1)
            assert self.subscribed.wait(20), "peer SUBACK missing"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload.decode("utf-8", "replace")))

    def received(self):
        with self.lock:
            return list(self.got)

    def publish(self, topic, payload, qos=1):
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(20)
        assert info.is_published(), "peer publish of %s not completed" % topic

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---------------------------------------------------------------------------------------------------
# connect, subscribe, publish


def test_connect_subscribe_receive_qos0_and_qos1(broker, lives):
    lv = lives("sub", **drover_opts(broker, id="sub-1", keepalive=10))
    lv.send("sub in/# 1", "sub in0/# 0", "start")
    lv.wait_connected()
    p = Peer(broker)
    p.publish("in/a", "q1-a", qos=1)
    p.publish("in0/b", "q0-b", qos=1)  # the subscription's QoS 0 caps it
    p.publish("in/c", "q0-c", qos=0)
    wait_until(lambda: len(lv.msgs()) == 3, 20, msg=lambda: lv.msgs())
    by = {m["payload"]: m for m in lv.msgs()}
    assert by["q1-a"]["qos"] == 1 and by["q1-a"]["token"] > 0 and by["q1-a"]["topic"] == "in/a"
    assert by["q0-b"]["qos"] == 0 and by["q0-b"]["token"] == 0
    assert by["q0-c"]["qos"] == 0 and by["q0-c"]["token"] == 0
    assert lv.stat()["unacked"] == 1
    lv.send("ack %d" % by["q1-a"]["token"])
    assert lv.stat()["unacked"] == 0
    p.close()


def test_publish_qos0_qos1_with_completion_and_window(broker, lives):
    p = Peer(broker, subscribe="out/#")
    lv = lives("pub", **drover_opts(broker, id="pub-1", max_inflight=2))
    assert lv.pub("early", "out/x", 1, "x") == -6  # DR_EUNAVAIL before the connection is up
    lv.send("start")
    lv.wait_connected()
    lv.send("pubn w out/w 1 50")
    lv.wait_line(r"pubn w 50$", 20)
    assert lv.pub("zero", "out/z", 0, "hello") == 0
    for i in range(50):
        assert lv.pubdone("w-%d" % i) == 0
    assert lv.pubdone("zero") == 0
    wait_until(lambda: len(p.received()) == 51, 20, msg=lambda: p.received())
    # With a window of 2, QoS 1 publishes still leave in call order.
    assert [pl for t, pl in p.received() if t == "out/w"] == ["w-%d" % i for i in range(50)]
    assert ("out/z", "hello") in p.received()
    assert lv.stat()["pending"] == 0
    p.close()


def test_invalid_publish_is_refused_and_the_connection_stays_up(broker, lives):
    lv = lives("inv", **drover_opts(broker, id="inv-1"))
    lv.send("start")
    lv.wait_connected()
    assert lv.pub("wild", "a/+/b", 1, "x") == DR_EINVAL
    assert lv.pub("hash", "a/#", 0, "x") == DR_EINVAL
    assert lv.pub("c1", "x:61c285", 1, "x") == DR_EINVAL      # U+0085
    assert lv.pub("nonchar", "x:61efbfbe", 1, "x") == DR_EINVAL  # U+FFFE
    assert lv.pub("badutf", "x:61c328", 1, "x") == DR_EINVAL  # not UTF-8
    assert lv.pub("qos2", "a/b", 2, "x") == DR_EINVAL
    assert lv.pub("ok", "a/b", 1, "x") == 0
    assert lv.pubdone("ok") == 0
    assert lv.states() == ["state 1 connected"]
    assert "inv-1" not in re.findall(r"Client (\S+) disconnected", broker.log_text())


# ---------------------------------------------------------------------------------------------------
# deferred acks, redelivery, keepalive


def test_deferred_out_of_order_acks_and_redelivery_after_sigkill(broker, lives, tmp_path):
    opts = drover_opts(broker, id="ingress-1", clean=0, keepalive=10)
    lv = lives("first", **opts)
    lv.send("sub cmd/# 1", "start")
    lv.wait_connected()
    p = Peer(broker)
    for i in range(10):
        p.publish("cmd/x", "m%d" % i)
    wait_until(lambda: len(lv.msgs()) == 10, 20, msg=lambda: lv.msgs())
    tok = {m["payload"]: m["token"] for m in lv.msgs()}
    assert [m["payload"] for m in lv.msgs()] == ["m%d" % i for i in range(10)]
    # Out of order: m5 and m3 first, then m1, m0, m2. PUBACKs may only leave for m0..m3; m5 waits for m4.
    for name in ("m5", "m3", "m1", "m0", "m2"):
        lv.send("ack %d" % tok[name])
    assert lv.stat()["unacked"] == 5
    lv.sync()  # the broker has processed every PUBACK we sent
    lv.kill()  # kill -9 mid-flight: no DISCONNECT, m4..m9 unacked

    lv2 = lives("second", **opts)
    lv2.send("sub cmd/# 1", "start")
    lv2.wait_connected()
    want = {"m%d" % i for i in range(4, 10)}
    wait_until(lambda: {m["payload"] for m in lv2.msgs()} >= want, 30, msg=lambda: lv2.msgs())
    # Nothing acked comes back, and nothing comes back twice (checked for a while after the last one).
    stays_true(lambda: len(lv2.msgs()) == 6, 1.5, msg=lambda: lv2.msgs())
    assert {m["payload"] for m in lv2.msgs()} == want
    assert all(m["dup"] == 1 for m in lv2.msgs()), lv2.msgs()
    assert all(m["token"] > 0 for m in lv2.msgs())
    # Tokens of the killed process mean nothing here; the new ones ack everything.
    lv2.send("ack %d" % tok["m4"], "ackall")
    lv2.sync()
    lv2.exit()

    lv3 = lives("third", **opts)
    lv3.send("sub cmd/# 1", "start")
    lv3.wait_connected()
    p.publish("cmd/x", "after")
    lv3.wait_line(r"msg \d+ 1 0 0 cmd/x after$", 20)
    assert [m["payload"] for m in lv3.msgs()] == ["after"]
    p.close()


def test_acks_held_beyond_twice_the_keepalive_keep_the_session(broker, lives):
    opts = drover_opts(broker, id="slow-redis", clean=0, keepalive=2)
    lv = lives("held", **opts)
    lv.send("sub hold/# 1", "start")
    lv.wait_connected()
    p = Peer(broker)
    for i in range(3):
        p.publish("hold/x", "h%d" % i)
    wait_until(lambda: len(lv.msgs()) == 3, 20)
    # Redis is "slow": no ack for 6 s (3 keepalive intervals). The connection must stay up all along.
    stays_true(lambda: lv.states() == ["state 1 connected"], 6.0, msg=lambda: lv.states())
    assert "slow-redis" not in re.findall(r"Client (\S+) (?:has exceeded|disconnected)", broker.log_text())
    assert lv.stat()["unacked"] == 3
    lv.send("ackall")
    lv.sync()
    lv.exit()
    lv2 = lives("held2", **opts)
    lv2.send("sub hold/# 1", "start")
    lv2.wait_connected()
    stays_true(lambda: lv2.msgs() == [], 1.5, msg=lambda: lv2.msgs())
    p.close()


def test_unsubscribe_stale_removes_an_old_filter_from_the_session(broker, lives):
    opts = drover_opts(broker, id="cfg-1", clean=0)
    p = Peer(broker)
    lv = lives("v1", **opts)
    lv.send("sub old/# 1", "start")
    lv.wait_connected()
    lv.exit()
    # Control: without unsubscribe_stale, the persistent session still routes old/# to us.
    lv = lives("v2-no-stale", **opts)
    lv.send("sub new/# 1", "autoack 1", "start")
    lv.wait_connected()
    p.publish("old/y", "still-routed")
    lv.wait_line(r"msg \d+ 1 \d 0 old/y still-routed$", 20)
    lv.exit()
    # With it, old/# is gone: old/x (published first) never arrives, new/x does.
    lv = lives("v2", **opts)
    lv.send("stale old/#", "sub new/# 1", "autoack 1", "start")
    lv.wait_connected()
    p.publish("old/x", "stale")
    p.publish("new/x", "fresh")
    lv.wait_line(r"msg \d+ 1 0 0 new/x fresh$", 20)
    stays_true(lambda: all(m["topic"] != "old/x" for m in lv.msgs()), 1.0, msg=lambda: lv.msgs())
    p.close()


def test_stopped_broker_is_detected_by_keepalive_and_the_client_reconnects(broker, lives):
    ka = 2
    lv = lives("ka", **drover_opts(broker, id="ka-1", keepalive=ka, connect_timeout=2000, rmax=1000,
                                   publish_timeout=60000))
    lv.send("start")
    lv.wait_connected()
    broker.pause()  # SIGSTOP: the TCP connection stays open, nothing answers
    try:
        t0 = time.monotonic()
        assert lv.pub("stalled", "ka/x", 1, "x") == 0
        lv.wait_line(r"state 0 keepalive timeout", 30)
        took = time.monotonic() - t0
        # The detection is bounded by 1.5 keepalive intervals plus the tick; allow a lot for a loaded machine.
        assert took < 4 * ka + 5, "keepalive detection took %.1fs" % took
        assert lv.pubdone("stalled") == DR_ECLOSED  # in flight when the connection died
        assert lv.stat()["connected"] == 0
        assert lv.pub("offline", "ka/x", 1, "x") == -6  # DR_EUNAVAIL
    finally:
        broker.resume()
    n = len(lv.states())
    wait_until(lambda: any(s == "state 1 connected" for s in lv.states()[n:]), 40,
               msg=lambda: lv.states()[-5:])
    assert lv.pub("again", "ka/x", 1, "x") == 0
    assert lv.pubdone("again") == 0


def test_bad_credentials_give_a_clear_reason_logged_once(broker, lives):
    lv = lives("cred", **drover_opts(broker, id="cred-1", rmin=50, rmax=100, **{"pass": "wrong"}))
    lv.send("start")
    wait_until(lambda: len(lv.states()) >= 4, 20, msg=lambda: lv.states())
    for s in lv.states():
        assert re.match(r"state 0 connection refused: (bad user name or password|not authorised)$", s), s
    # Every attempt reaches the state callback; the log has the reason once (rate-limited repeats).
    assert lv.log_text().count("event=mqttc_connection_failed") == 1, lv.tail()


def test_free_and_stop_complete_every_publish_once(broker, lives, tmp_path):
    lv = lives("free", **drover_opts(broker, id="free-1", keepalive=60, publish_timeout=60000))
    lv.send("start")
    lv.wait_connected()
    broker.pause()  # nothing will be acknowledged
    try:
        lv.send("pubn f stall/x 1 5")
        lv.wait_line(r"pubn f 5$", 20)
        assert lv.stat()["pending"] == 5
        lv.send("free")  # abrupt: no stop first
        for i in range(5):
            assert lv.pubdone("f-%d" % i) == DR_ECLOSED
        lv.proc.wait(20)
        lv.exit()  # already gone: checks exit status and sanitizer output
        assert len([l for l in lv.snapshot() if l.startswith("pubdone ")]) == 5
    finally:
        broker.resume()
    # Stop while the connection cannot even be made, then start again and stop cleanly.
    lv2 = lives("stop-connecting", url="tcp://127.0.0.1:%d" % free_port(), id="sc-1", rmin=50, rmax=100)
    lv2.send("start")
    lv2.wait_line(r"state 0 cannot connect to 127\.0\.0\.1:\d+: connection refused", 20)
    lv2.send("stop")
    lv2.wait_line(r"stopped$", 20)
    n = len(lv2.states())
    stays_true(lambda: len(lv2.states()) == n, 0.5, msg="reconnect attempts after stop")
    lv2.send("start")
    wait_until(lambda: len(lv2.states()) > n, 20)
    lv2.exit()


# ---------------------------------------------------------------------------------------------------
# TLS


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".crt",
            "-days", "2", "-subj", "/CN=%s" % name, cwd=d)


@pytest.fixture
def tls_broker(tmp_path):
    d = str(tmp_path / "pki")
    os.makedirs(d)
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=localhost", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.cnf", cwd=d)
    b = harness.MosquittoServer(str(tmp_path))
    b.tls_port, b.tls_port2 = free_port(), free_port()
    with open(b.conf, "a") as f:
        for host, port in (("127.0.0.1", b.tls_port), ("127.0.0.2", b.tls_port2)):
            f.write("listener %d %s\ncafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n"
                    % (port, host, d, d, d))
    b.pki = d
    b.start()
    yield b
    b.stop()


def test_tls_right_ca_connects_and_carries_messages(tls_broker, lives):
    b = tls_broker
    for name, url in (("tls-ip", "ssl://127.0.0.1:%d" % b.tls_port), ("tls-dns", "mqtts://localhost:%d" % b.tls_port)):
        lv = lives(name, **drover_opts(b, url=url, id=name, ca=os.path.join(b.pki, "ca.crt")))
        lv.send("sub tls/# 1", "autoack 1", "start")
        lv.wait_connected()
        assert lv.pub("t", "tls/" + name, 1, "over-tls") == 0
        assert lv.pubdone("t") == 0
        lv.wait_line(r"msg \d+ 1 0 0 tls/%s over-tls$" % name, 20)
        lv.exit()


def test_tls_wrong_ca_and_wrong_address_fail_with_clear_reasons(tls_broker, lives):
    b = tls_broker
    lv = lives("wrong-ca", **drover_opts(b, url="ssl://127.0.0.1:%d" % b.tls_port, id="wrong-ca",
                                         ca=os.path.join(b.pki, "other-ca.crt")))
    lv.send("start")
    mt = lv.wait_line(r"state 0 (.*)$", 20)
    assert mt.group(1).startswith("certificate verify failed: "), mt.group(1)
    assert "local issuer" in mt.group(1) or "self-signed" in mt.group(1) or "self signed" in mt.group(1)
    assert not lv.connected()
    # The certificate is valid, but not for 127.0.0.2: the host check must refuse it.
    lv2 = lives("wrong-ip", **drover_opts(b, url="ssl://127.0.0.2:%d" % b.tls_port2, id="wrong-ip",
                                          ca=os.path.join(b.pki, "ca.crt")))
    lv2.send("start")
    mt = lv2.wait_line(r"state 0 (.*)$", 20)
    assert mt.group(1).startswith("certificate verify failed: ") and "mismatch" in mt.group(1), mt.group(1)
    # tls_insecure skips both checks (tests only).
    lv3 = lives("insecure", **drover_opts(b, url="ssl://127.0.0.2:%d" % b.tls_port2, id="insecure",
                                          ca=os.path.join(b.pki, "other-ca.crt"), insecure=1))
    lv3.send("start")
    lv3.wait_connected()
    assert "event=mqttc_tls_insecure" in lv3.log_text()


# ---------------------------------------------------------------------------------------------------
# broken frames from a scripted peer


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


CONNACK_OK = b"\x20\x02\x00\x00"

# (what the peer sends after reading CONNECT, the reason the client must report)
BROKEN = [
    (CONNACK_OK + b"\x30\xff\xff\xff\xff\x7f", "protocol error: remaining length longer than four bytes"),
    (CONNACK_OK + b"\x41\x02\x00\x01", "protocol error: reserved flag bits set"),
    (CONNACK_OK + b"\x30\x03\x00\x10a", "protocol error: PUBLISH topic length runs past the packet"),
    (CONNACK_OK + b"\x30" + varint(2 * 1024 * 1024), "protocol error: packet larger than the maximum"),
    (CONNACK_OK + b"\x36\x05\x00\x01t\x00\x01", "protocol error: PUBLISH with QoS 3"),
    (CONNACK_OK + b"\x32\x05\x00\x01t\x00\x00", "protocol error: packet identifier 0"),
    (CONNACK_OK + b"\x30\x04\x00\x02\xc2\x85", "protocol error: PUBLISH topic is empty, has a wildcard or is not valid"),
    (CONNACK_OK + b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00", "protocol error: unexpected CONNECT"),
    (CONNACK_OK + b"\x34\x05\x00\x01t\x00\x01", "QoS 2 PUBLISH received"),
    (b"\x30\x03\x00\x01t", "protocol error: PUBLISH before CONNACK"),
    (b"\x20\x02\x00\x02", "connection refused: identifier rejected"),
    (b"\x20\x02\x00\x04", "connection refused: bad user name or password"),
    (b"", "connection closed by the broker"),
]


class ScriptedPeer(threading.Thread):
    """Accepts one connection per script, reads CONNECT, sends the script's bytes and waits for the client to
    close. A last connection gets a valid PUBLISH byte by byte and must be answered with its PUBACK."""

    def __init__(self):
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(30)
        self.port = self.srv.getsockname()[1]
        self.results = []  # "closed" per broken script
        self.final = {}
        self.error = None

    @staticmethod
    def read_connect(conn):
        data = b""
        while len(data) < 2 or len(data) < 2 + data[1]:
            chunk = conn.recv(1024)
            if not chunk:
                raise AssertionError("client closed before CONNECT")
            data += chunk
        assert data[0] == 0x10, data

    def run(self):
        try:
            for payload, _ in BROKEN:
                conn, _ = self.srv.accept()
                conn.settimeout(20)
                self.read_connect(conn)
                if payload:
                    conn.sendall(payload)
                else:
                    conn.shutdown(socket.SHUT_WR)
                try:
                    closed = conn.recv(1024) == b""
                except OSError:
                    closed = True
                self.results.append("closed" if closed else "open")
                conn.close()
            conn, _ = self.srv.accept()
            conn.settimeout(20)
            self.read_connect(conn)
            conn.sendall(CONNACK_OK)
            for b in b"\x32\x0c\x00\x04drip\x00\x07slow":  # a valid QoS 1 PUBLISH, one byte at a time
                conn.sendall(bytes([b]))
                time.sleep(0.02)
            got = b""
            while len(got) < 4:
                got += conn.recv(16)
            self.final["puback"] = got[:4]
            rest = got[4:]
            while len(rest) < 2:  # DISCONNECT on exit
                chunk = conn.recv(16)
                if not chunk:
                    break
                rest += chunk
            self.final["disconnect"] = rest[:2]
            conn.close()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.srv.close()


def test_broken_frames_drop_the_connection_with_a_reason_and_reconnect(lives):
    peer = ScriptedPeer()
    peer.start()
    lv = lives("broken", url="tcp://127.0.0.1:%d" % peer.port, id="broken-1", rmin=50, rmax=200, autoack=1,
               connect_timeout=10000)
    lv.send("start")
    wait_until(lambda: len([s for s in lv.states() if s.startswith("state 0")]) >= len(BROKEN), 60,
               msg=lambda: "\n".join(lv.states()))
    reasons = [s[len("state 0 "):] for s in lv.states() if s.startswith("state 0")]
    for (_, want), got in zip(BROKEN, reasons):
        assert got.startswith(want), "expected %r, got %r (all: %s)" % (want, got, reasons)
    lv.wait_line(r"msg \d+ 1 0 0 drip slow$", 30)
    wait_until(lambda: "puback" in peer.final, 20, msg=lambda: "no PUBACK; peer error %r" % peer.error)
    assert peer.final["puback"] == b"\x40\x02\x00\x07"
    lv.exit()
    peer.join(30)
    assert peer.error is None, peer.error
    assert peer.results == ["closed"] * len(BROKEN)
    assert peer.final["disconnect"] == b"\xe0\x00"


# ---------------------------------------------------------------------------------------------------
# MQTT 5


def expiry_of(lv, payload):
    """The "expiry N" line printed right after the message with `payload`, or None without one."""
    lines = lv.snapshot()
    for i, line in enumerate(lines):
        if line.startswith("msg ") and line.endswith(" " + payload):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            return int(nxt.split()[1]) if nxt.startswith("expiry ") else None
    raise AssertionError("no message %r in %s" % (payload, lines))


def test_v5_message_expiry_in_offline_sessions_of_v5_and_v311_subscribers(broker, lives):
    # Two persistent sessions, one MQTT 5 and one 3.1.1, subscribe and go offline.
    subs = {}
    for name, proto in (("sub5", 5), ("sub4", 4)):
        lv = lives(name, **drover_opts(broker, id="exp-" + name, clean=0, protocol=proto, autoack=1))
        lv.send("sub exp/# 1", "start")
        lv.wait_connected()
        lv.send("proto")
        lv.wait_line(r"proto %d$" % proto, 20)
        lv.exit()
        subs[name] = proto
    pub = lives("pub5", **drover_opts(broker, id="exp-pub", protocol=5))
    pub.send("start")
    pub.wait_connected()
    assert pub.pub("p0", "exp/t", 1, "plain") == 0  # no expiry: kept
    pub.send("pubx gone exp/t 1 1 gone", "pubx keep exp/t 1 3600 keep")
    for tag in ("p0", "gone", "keep"):
        assert pub.pubdone(tag) == 0
    # Mosquitto stamps a message with whole seconds and keeps it while now <= stamp + expiry: a 1 s
    # expiry is over after at most 2 s. This wait is the expiry itself, not a timing assertion.
    time.sleep(2.5)
    for name, proto in subs.items():
        lv = lives(name + "-back", **drover_opts(broker, id="exp-" + name, clean=0, protocol=proto, autoack=1))
        lv.send("sub exp/# 1", "start")
        # The queue keeps publish order: once "keep" arrived, "gone" (queued before it) was skipped.
        lv.wait_line(r"msg \d+ 1 \d 0 exp/t keep$", 20)
        assert [m["payload"] for m in lv.msgs()] == ["plain", "keep"], lv.msgs()
        if proto == 5:
            left = expiry_of(lv, "keep")
            assert left is not None and 3500 <= left <= 3600, left  # what is left of the hour
            assert expiry_of(lv, "plain") is None
        else:
            assert expiry_of(lv, "keep") is None  # 3.1.1 has no properties
        lv.exit()


def test_v5_publish_expiry_is_ignored_on_311_and_refused_options(broker, lives, tmp_path):
    lv = lives("v4pub", **drover_opts(broker, id="v4pub"))
    lv.send("sub own/# 1", "autoack 1", "start")
    lv.wait_connected()
    lv.send("pubx e own/x 1 1 on-311")  # expiry has no meaning in 3.1.1: published as usual
    assert lv.pubdone("e") == 0
    lv.wait_line(r"msg \d+ 1 0 0 own/x on-311$", 20)
    bad = subprocess.run([LIVE, "url=" + broker.url, "protocol=3"], input=b"", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=harness.clean_env(), timeout=30)
    assert bad.returncode != 0 and b"protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5), not 3" in bad.stderr + bad.stdout


class V5Peer(threading.Thread):
    """Plays a broker for the MQTT 5 paths Mosquitto cannot be made to take on demand: (1) a 3.1.1-only
    broker that refuses protocol level 5, then accepts the 3.1.1 retry; (2) a v5 broker that announces a
    Receive Maximum and then disconnects the client with a reason code and reason string."""

    def __init__(self):
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(30)
        self.port = self.srv.getsockname()[1]
        self.levels = []
        self.error = None

    def read_connect(self, conn):
        data = b""
        while len(data) < 2 or len(data) < 2 + data[1]:
            chunk = conn.recv(1024)
            if not chunk:
                raise AssertionError("client closed before CONNECT")
            data += chunk
        self.levels.append(data[8])  # fixed header (2), protocol name (6), then the level

    def run(self):
        try:
            conn, _ = self.srv.accept()
            self.read_connect(conn)
            conn.sendall(b"\x20\x02\x00\x01")  # 3.1.1: unacceptable protocol version
            conn.recv(16)
            conn.close()
            conn, _ = self.srv.accept()
            self.read_connect(conn)
            conn.sendall(CONNACK_OK)
            conn.recv(16)  # the client's DISCONNECT when it exits
            conn.close()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.srv.close()


def test_v5_refused_protocol_falls_back_to_311(lives):
    peer = V5Peer()
    peer.start()
    lv = lives("fallback", url="tcp://127.0.0.1:%d" % peer.port, id="fb-1", rmin=50, rmax=200, protocol=5,
               fallback=1)
    lv.send("start")
    lv.wait_connected()
    states = lv.states()
    assert states[0].startswith("state 0 connection refused: unacceptable protocol version"), states
    lv.send("proto")
    lv.wait_line(r"proto 4$", 20)
    assert "event=mqttc_protocol_fallback" in lv.log_text()
    lv.exit()
    peer.join(30)
    assert peer.error is None, peer.error
    assert peer.levels == [5, 4], peer.levels


V5_BROKEN = [
    # CONNACK v5 with Receive Maximum 1, then DISCONNECT 0x8b "server shutting down" + reason string
    (b"\x20\x06\x00\x00\x03\x21\x00\x01" + b"\xe0\x07\x8b\x05\x1f\x00\x02by",
     "disconnected by the broker: server shutting down (0x8b) (by)"),
    (b"\x20\x05\x00\x87\x02\x1f\x00", "protocol error: property value runs past the properties"),
    (b"\x20\x08\x00\x87\x05\x1f\x00\x02no", "connection refused: not authorized (no)"),
    (b"\x20\x03\x00\x00\x00" + b"\x30\x06\x00\x01t\x02\x30\x00", "protocol error: unknown property identifier"),
    (b"\x20\x02\x00\x00", "protocol error: MQTT 3.1.1 CONNACK accepting an MQTT 5 CONNECT"),
]


def test_v5_broken_and_refusing_brokers_give_reasons(lives):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(30)
    port = srv.getsockname()[1]
    closed = []

    def play():
        for payload, _ in V5_BROKEN:
            conn, _ = srv.accept()
            conn.settimeout(20)
            ScriptedPeer.read_connect(conn)
            conn.sendall(payload)
            try:
                closed.append(conn.recv(1024) == b"")
            except OSError:
                closed.append(True)
            conn.close()
        srv.close()
    t = threading.Thread(target=play, daemon=True)
    t.start()
    lv = lives("v5broken", url="tcp://127.0.0.1:%d" % port, id="v5b", rmin=50, rmax=200, protocol=5)
    lv.send("start")
    def drops():
        return [s[len("state 0 "):] for s in lv.states() if s.startswith("state 0 ")]
    wait_until(lambda: len(drops()) >= len(V5_BROKEN), 60, msg=lambda: "\n".join(lv.states()))
    reasons = drops()
    for (_, want), got in zip(V5_BROKEN, reasons):
        assert got.startswith(want), "expected %r, got %r (all: %s)" % (want, got, reasons)
    t.join(30)
    assert closed == [True] * len(V5_BROKEN), closed
