"""TLS on the links Drover speaks: MQTT over TLS (server certificate checked against our CA, optionally with
client certificates), NATS over TLS, and the REST API over HTTPS.

Certificates are made once per test session with the openssl CLI (harness.TlsFiles): a CA, a server
certificate for localhost/127.0.0.1, a client certificate, and an unrelated "wrong" CA.
"""
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import http.client

import pytest

import harness
from harness import wait_until


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    return harness.TlsFiles(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_stack(request, tmp_path, tls):
    """Like conftest's stack_factory, with Mosquitto's TLS listener and a TLS-only nats-server."""
    made = []
    request.node._drover_stacks = made

    def make(overrides=None, start=True, **kw):
        s = harness.Stack(tmp_path / ("stack%d" % len(made)), overrides, tls=tls, **kw)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    problems = []
    for s in made:
        problems += s.close()
    if problems:
        pytest.fail("node problems:\n" + "\n".join(problems) + "\n" + "\n".join(s.log_tails(80) for s in made),
                    pytrace=False)


def ctl(stack, *args):
    env = dict(os.environ, DR_REDIS_PORT=str(stack.redis.port), DR_REDIS_PASSWORD=stack.redis.password,
               DR_REDIS_PREFIX=stack.prefix, DR_CLUSTER_SHARDS=str(stack.shards))
    out = subprocess.run([os.path.join(harness.BIN_DIR, "drover-ctl")] + list(args), env=env, capture_output=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def tls_clients_of(stack):
    """Client ids Mosquitto saw connect on its TLS listener (mosquitto 2 logs the port of each connection)."""
    text = stack.mqtt.log_text()
    port_of = {m.group(1): int(m.group(2)) for m in re.finditer(r"New connection from (\S+) on port (\d+)\.", text)}
    return [m.group(2) for m in re.finditer(r"New client connected from (\S+) as (\S+)", text)
            if port_of.get(m.group(1)) == stack.mqtt.tls_port]


# ---- (a) MQTT over TLS end to end -----------------------------------------------------------------------

def test_command_over_mqtt_tls_is_delivered(tls_stack):
    stack = tls_stack()
    for n in stack.nodes:
        assert n.config["mqtt.url"] == "mqtts://127.0.0.1:%d" % stack.mqtt.tls_port
        n.wait_log(r"event=mqttc_tls_ready url=mqtts://127\.0\.0\.1:%d version=TLSv1\.[23]" % stack.mqtt.tls_port, 5)
    dev = stack.device("tls-dev-1")
    prod = stack.producer()
    mid = prod.receipt_id(prod.send("tls-dev-1", command="open"))
    dev.wait_for(mid, 15)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 15)
    assert stack.status(mid) == "DELIVERED"
    # Every Drover node and both test clients came in through the TLS listener, none through 1883's twin.
    wanted = {"drover-in-ingress-1", "drover-dp-dispatcher-1", "tls-dev-1", prod.client_id}
    wait_until(lambda: wanted <= set(tls_clients_of(stack)), 5,
               msg=lambda: "not all over TLS: %s" % tls_clients_of(stack))


def test_device_over_websockets_tls(tls_stack):
    """Duster's compose setup gave devices MQTT over WebSockets with TLS (9443): a device on that listener
    receives its command and its ack over the same connection completes it."""
    import paho.mqtt.client as mqtt
    stack = tls_stack()
    got, connected = [], threading.Event()
    dev = mqtt.Client(client_id="wss-dev-1", clean_session=True, transport="websockets")
    dev.username_pw_set("device", stack.mqtt.passwords["device"])
    dev.tls_set_context(stack.mqtt.tls.client_context())
    dev.on_connect = lambda c, u, f, rc: (c.subscribe("consumer/request/wss-dev-1", 1), connected.set()) if rc == 0 else None
    dev.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    dev.connect("127.0.0.1", stack.mqtt.wss_port, keepalive=30)
    dev.loop_start()
    try:
        assert connected.wait(10), stack.mqtt.tail(20)
        time.sleep(0.3)  # SUBACK
        prod = stack.producer()
        mid = prod.receipt_id(prod.send("wss-dev-1", command="open"))
        wait_until(lambda: any(m.get("id") == mid for m in got), 15, msg=lambda: "no command over wss: %s" % got)
        dev.publish("consumer/response/wss-dev-1", json.dumps({"id": mid, "deliveryStatus": "COMPLETED"}), qos=1)
        prod.wait_status(mid, "COMPLETED", 15)
    finally:
        dev.disconnect()
        dev.loop_stop()


# ---- (b) wrong CA ------------------------------------------------------------------------------------------

def test_wrong_ca_fails_clearly_and_retries_then_right_ca_works(tls_stack, tls):
    stack = tls_stack()
    bad = stack.add_ingress(node_id="ingress-badca", overrides={"mqtt.tls_ca": tls.other_ca})
    bad.wait_log(r'event=mqtt_tls_failed url=mqtts://\S+ reason="certificate verify failed: '
                 r'[^"]*certificate[^"]*" action=retrying', 20)
    # It keeps trying (back-off): the broker sees the handshake fail again and again, and the node lives on.
    wait_until(lambda: stack.mqtt.log_text().count("unknown ca") >= 3, 30,
               msg=lambda: "broker saw fewer than 3 failed handshakes:\n%s" % stack.mqtt.tail(20))
    assert bad.alive()
    assert "drover-in-ingress-badca" not in tls_clients_of(stack)
    bad.stop()
    bad.set(**{"mqtt.tls_ca": tls.ca})
    since = bad.log_size()
    bad.start()
    bad.wait_log(r"event=mqttc_connected url=mqtts://", 20, since=since)
    assert "event=mqtt_tls_failed" not in bad.log_text()[since:]


# ---- (c) HTTPS ---------------------------------------------------------------------------------------------

def https_call(port, method, path, key, body, ctx, host="127.0.0.1"):
    req = urllib.request.Request("https://%s:%d%s" % (host, port, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_over_https(tls_stack, tls):
    port = harness.free_port()
    stack = tls_stack({"http.port": port, "http.tls_cert": tls.server, "http.tls_key": tls.server_key})
    stack.ingress.wait_log(r"event=http_listening address=127\.0\.0\.1 port=%d tls=1" % port, 5)
    key = ctl(stack, "key", "create", "producer", "fleet")
    dev = stack.device("https-dev")
    ctx = tls.client_context()
    st, b = https_call(port, "POST", "/v1/devices/https-dev/messages", key, {"command": "open"}, ctx)
    assert st == 201, b
    dev.wait_for(b["id"], 15)
    # the host name is checked too: "localhost" is in the certificate
    st, b2 = https_call(port, "GET", "/v1/messages/%s" % b["id"], key, None, ctx, host="localhost")
    assert st == 200 and str(b2["id"]) == str(b["id"]), b2
    # a client that does not trust our CA refuses the server
    with pytest.raises(urllib.error.URLError) as e:
        https_call(port, "GET", "/healthz", key, None, tls.client_context(ca=tls.other_ca))
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    # plain HTTP to the TLS port gets no HTTP answer: the connection is closed
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/healthz")
        conn.getresponse()
    conn.close()
    # ... and the server is unharmed
    st, b = https_call(port, "GET", "/healthz", key, None, ctx)
    assert (st, b) == (200, {"status": "ok"})
    assert stack.ingress.alive()


# ---- (d) NATS over TLS -------------------------------------------------------------------------------------

def test_status_events_over_nats_tls(tls_stack, tls):
    stack = tls_stack()
    assert stack.nats.url.startswith("tls://")
    for n in stack.nodes:
        assert "event=nats_connected" in n.log_text()
    # the server takes TLS only: a plain client is turned away
    with pytest.raises((harness.HarnessError, OSError)):
        harness.NatsSubscriber(stack.nats, "drover.status").close()
    sub = harness.NatsSubscriber(stack.nats, "drover.status", tls=tls)
    try:
        dev = stack.device("nats-tls-dev")
        prod = stack.producer()
        mid = prod.receipt_id(prod.send("nats-tls-dev", command="open"))
        dev.wait_for(mid, 15)
        dev.ack(mid)
        prod.wait_status(mid, "DELIVERED", 15)

        def events():
            out = []
            for p in sub.payloads():
                e = json.loads(p)
                if str(e.get("id")) == str(mid):
                    out.append(e["status"])
            return out
        wait_until(lambda: "DELIVERED" in events(), 10, msg=lambda: "status events seen: %s" % events())
        assert all(e.get("device") == "nats-tls-dev" for e in map(json.loads, sub.payloads())
                   if str(e.get("id")) == str(mid))
    finally:
        sub.close()


def test_nats_wrong_ca_is_reported(tls_stack, tls):
    stack = tls_stack()
    bad = stack.add_ingress(node_id="ingress-natsbad", overrides={"nats.tls_ca": tls.other_ca})
    bad.wait_log(r'event=nats_tls_failed url=tls://\S+ reason="[^"]*SSL handshake error: [^"]*certificate[^"]*" action=retrying', 20)
    assert bad.alive()
    # the right CA, but a name the certificate does not carry
    named = stack.add_dispatcher(node_id="dispatcher-natsname", overrides={"nats.tls_server_name": "not-this-host"})
    named.wait_log(r'event=nats_tls_failed url=tls://\S+ reason="[^"]*SSL handshake error: [^"]*hostname mismatch[^"]*"', 20)
    assert "event=nats_connected" not in named.log_text()
    assert named.alive()


# ---- (e) client certificates -------------------------------------------------------------------------------

def test_client_certificate_required_by_broker(tls_stack, tls):
    stack = tls_stack(mqtt_require_certificate=True)  # nodes get mqtt.tls_cert/tls_key; ready probe passes
    for n in stack.nodes:
        assert n.config["mqtt.tls_cert"] == tls.client
    dev = stack.device("cert-dev", auto_ack=True)
    prod = stack.producer()
    mid = prod.receipt_id(prod.send("cert-dev", command="open"))
    prod.wait_status(mid, "DELIVERED", 15)
    assert dev.count(mid) >= 1
    # without a certificate the broker refuses the node, which says so and keeps trying
    bare = stack.add_ingress(node_id="ingress-nocert", overrides={"mqtt.tls_cert": "", "mqtt.tls_key": ""})
    bare.wait_log(r'event=mqtt_tls_failed url=mqtts://\S+ reason="TLS [^"]+"', 20)
    assert bare.alive()
    assert "drover-in-ingress-nocert" not in tls_clients_of(stack)


# ---- bad TLS settings ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--mqtt.tls_ca=/etc/hostname"], "mqtt.url 'tcp://127.0.0.1:1'"),
    (["--mqtt.url=mqtts://127.0.0.1:1", "--mqtt.tls_key=/x"], "mqtt.tls_key needs mqtt.tls_cert"),
    (["--http.tls_cert=/x"], "http.tls_cert and http.tls_key must be set together"),
    (["--nats.url=tls://127.0.0.1:1,nats://127.0.0.1:2"], "mixes plain nats://"),
    (["--nats.url=tls://127.0.0.1:1", "--nats.tls_cert=/x"], "nats.tls_cert and nats.tls_key must be set together"),
    (["--mqtt.url=mqtts://127.0.0.1:1", "--mqtt.tls_ca=/nonexistent/ca.pem"], "mqttc: TLS files"),
    (["--nats.url=tls://127.0.0.1:1", "--nats.tls_ca=/nonexistent/ca.pem"], "nats options"),
    (["--http.port=%d" % harness.free_port(), "--http.tls_cert=/nonexistent/c.pem",
      "--http.tls_key=/nonexistent/k.pem"], "http.tls_cert/http.tls_key: /nonexistent/c.pem"),
])
def test_bad_tls_settings_are_refused(tmp_path, args, needle):
    # Nothing needs to run: a setting error stops the node before it does anything (ports 1 and 2 are closed).
    binary = os.path.join(harness.BIN_DIR, "drover-ingress")
    base = ["--redis.port=1", "--nats.url=nats://127.0.0.1:1", "--mqtt.url=tcp://127.0.0.1:1", "--http.port=0"]
    out = subprocess.run([binary] + base + args, capture_output=True, timeout=30, cwd=str(tmp_path),
                         env=harness.clean_env(), stdin=subprocess.DEVNULL)
    err = out.stderr.decode(errors="replace")
    assert out.returncode != 0, err
    assert needle in err, err
    for marker in harness.SANITIZER_MARKERS:
        assert marker not in err, err


def test_http_port_in_use_is_refused_cleanly(tmp_path):
    """The REST port is taken: the node says so and exits, without a sanitizer report (the listener's
    handle is released before the server is freed, and nothing of h2o is set up yet)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        binary = os.path.join(harness.BIN_DIR, "drover-ingress")
        argv = [binary, "--redis.port=1", "--nats.url=nats://127.0.0.1:1", "--mqtt.url=tcp://127.0.0.1:1",
                "--http.port=%d" % taken.getsockname()[1]]
        out = subprocess.run(argv, capture_output=True, timeout=30, cwd=str(tmp_path), env=harness.clean_env(),
                             stdin=subprocess.DEVNULL)
    finally:
        taken.close()
    err = out.stderr.decode(errors="replace")
    assert out.returncode != 0, err
    assert "cannot listen on 127.0.0.1:" in err and "address already in use" in err, err
    for marker in harness.SANITIZER_MARKERS:
        assert marker not in err, err


def test_mqtt_tls_switch_turns_plain_url_into_tls(tls_stack, tls):
    stack = tls_stack()
    n = stack.add_dispatcher(node_id="dispatcher-switch", overrides={
        "mqtt.url": "tcp://127.0.0.1:%d" % stack.mqtt.tls_port, "mqtt.tls": 1})
    n.wait_log(r"event=mqttc_connected url=mqtts://127\.0\.0\.1:%d" % stack.mqtt.tls_port, 20)


# ---- Redis through a local TLS tunnel (hiredis 0.14 has no TLS) -----------------------------------------------

STUNNEL = os.environ.get("DROVER_STUNNEL", "/usr/bin/stunnel4")


class Stunnel(harness.Proc):
    """stunnel4 in client mode: plain TCP on 127.0.0.1:port in, TLS to 127.0.0.1:target out, the server's
    certificate checked against ca and the name localhost."""

    def __init__(self, workdir, port, target, ca):
        super().__init__(workdir, "stunnel.log")
        self.name = "stunnel"
        self.port = port
        self.conf = os.path.join(workdir, "stunnel.conf")
        with open(self.conf, "w") as f:
            f.write("foreground = yes\npid =\ndebug = notice\n[redis]\nclient = yes\n"
                    "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\nCAfile = %s\nverifyChain = yes\n"
                    "checkHost = localhost\n" % (port, target, ca))

    def argv(self):
        return [STUNNEL, self.conf]

    def ready(self):
        return harness.tcp_ready(self.port)


class TunnelledRedis(harness.RedisServer):
    """redis-server with only its TLS port (Redis 7 tls-port; the plain port is 0), reached through a
    stunnel4 client tunnel listening on self.port: every client, the nodes and the harness alike, goes
    through the tunnel."""

    def __init__(self, workdir, tls):
        super().__init__(workdir)
        self.tls_port = harness.free_port()
        with open(self.conf, "a") as f:
            f.write("port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"
                    "tls-auth-clients no\n" % (self.tls_port, tls.server, tls.server_key, tls.ca))
        self.tunnel = Stunnel(self.dir, self.port, self.tls_port, tls.ca)

    def start(self, wait=True, timeout=20):
        super().start(wait=False)
        if self.tunnel.proc is None or self.tunnel.proc.poll() is not None:
            self.tunnel.start(wait=True, timeout=timeout)
        if wait:
            self.wait_ready(timeout)
        return self

    def stop(self, timeout=10):
        try:
            return super().stop(timeout)
        finally:
            if self.tunnel.alive():
                self.tunnel.stop(timeout)


@pytest.mark.skipif(not os.access(STUNNEL, os.X_OK), reason="stunnel4 is not installed (deploy/local/packages-test.txt)")
def test_redis_through_stunnel_to_tls_port(tls_stack, tls):
    stack = tls_stack(start=False)
    stack.redis = TunnelledRedis(stack.dir, tls)
    stack.start()
    assert stack.r.config_get("port")["port"] == "0"  # Redis has no plain port: everything went through TLS
    assert int(stack.r.config_get("tls-port")["tls-port"]) == stack.redis.tls_port
    dev = stack.device("redis-tls-dev")
    prod = stack.producer()
    mid = prod.receipt_id(prod.send("redis-tls-dev", command="open"))
    dev.wait_for(mid, 15)
    dev.ack(mid)
    prod.wait_status(mid, "DELIVERED", 15)
    assert stack.status(mid) == "DELIVERED"
