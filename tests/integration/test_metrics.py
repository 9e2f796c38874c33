"""Prometheus metrics: /metrics on the ingress (REST listener) and on the dispatcher (metrics.port), checked
against the traffic a test made, against promtool, and through a real Prometheus server scraping both nodes.

Counters are compared as differences between a scrape before and one after the traffic, so the stack's own
readiness probe does not disturb them.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import harness
from harness import wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(ROOT, "deploy", "monitoring", "alerts.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "monitoring", "grafana-dashboard.json")
PROM_EXAMPLE = os.path.join(ROOT, "deploy", "monitoring", "prometheus.yml")
SHARDS = 16

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def tool(name):
    """promtool and prometheus come with Debian's prometheus package (deploy/local/packages-test.txt)."""
    path = shutil.which(name) or ("/usr/bin/" + name if os.access("/usr/bin/" + name, os.X_OK) else None)
    assert path, "%s is missing: install the packages of deploy/local/packages-test.txt" % name
    return path


def parse(text):
    """Exposition text -> (types {family: type}, samples {(name, ((label, value), ...)): float})."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            assert fam not in types, "family %s typed twice" % fam
            types[fam] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        labels = tuple(sorted(LABEL_RE.findall(m.group(3) or "")))
        key = (m.group(1), labels)
        assert key not in samples, "duplicate sample %r" % (key,)
        samples[key] = float(m.group(4))
    return types, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def label_values(samples, name, label):
    return {dict(lbl).get(label) for (n, lbl) in samples if n == name}


def http_get(port, path, timeout=10):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(port):
    st, ctype, body = http_get(port, "/metrics")
    assert st == 200 and ctype.startswith("text/plain; version=0.0.4"), (st, ctype)
    return body


def raw_request(port, data, timeout=10):
    """Sends raw bytes, returns everything the server answered before closing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def rest(port, method, path, body):
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def mstack(stack_factory):
    http_port, metrics_port = harness.free_port(), harness.free_port()
    s = stack_factory({"http.port": http_port, "http.duster_open": 1, "metrics.port": metrics_port,
                       "metrics.bind": "127.0.0.1", "cluster.shards": SHARDS})
    s.http_port, s.metrics_port = http_port, metrics_port
    return s


def make_traffic(s):
    """MQTT: 3 accepted and completed, 1 rejected; REST: 2 accepted (one completed, one for a device that never
    answers), 1 rejected, 1 duplicate; acks: 1 unknown id. Returns the id of the message left pending."""
    dev = s.device("m-dev", auto_ack=True, ack_status="COMPLETED")
    prod = s.producer(pd="m-prod")
    ids = [prod.receipt_id(prod.send("m-dev", command="c%d" % i)) for i in range(3)]
    prod.send_raw("producer/request/m-dev", b"{not json")
    st, b = rest(s.http_port, "PUT", "/producer/request/m-dev", {"command": "rest-1"})
    assert st == 200, b
    ids.append(b["id"])
    st, b = rest(s.http_port, "PUT", "/producer/request/m-dev", {"command": 5})
    assert st == 400, b
    # a REST message with an idempotency key, then its retry: one accepted, one duplicate
    st, away = rest(s.http_port, "PUT", "/producer/request/m-away", {"command": "away", "idempotencyKey": "k-1"})
    assert st == 200, away
    st, again = rest(s.http_port, "PUT", "/producer/request/m-away", {"command": "away", "idempotencyKey": "k-1"})
    assert st == 200 and again["id"] == away["id"], again
    dev.ack(987654321, "DELIVERED")  # unknown id
    for mid in ids[:3]:
        prod.wait_status(int(mid), "COMPLETED", 15)
    s.wait_status(int(ids[3]), "COMPLETED", 15)
    return int(away["id"])


def test_metrics_endpoints_promtool_and_prometheus(mstack, tmp_path):
    s = mstack
    ing0 = parse(scrape(s.http_port))[1]
    dsp0 = parse(scrape(s.metrics_port))[1]
    away = make_traffic(s)
    # the ack of unknown id and the rejected MQTT message are counted when the ingress handled them
    wait_until(lambda: value(parse(scrape(s.http_port))[1], "drover_acks_total", outcome="unknown_id") >
               value(ing0, "drover_acks_total", outcome="unknown_id"), 10, msg="unknown-id ack never counted")
    wait_until(lambda: value(parse(scrape(s.http_port))[1], "drover_commands_rejected_total", transport="mqtt") >
               value(ing0, "drover_commands_rejected_total", transport="mqtt"), 10, msg="MQTT rejection not counted")

    ing_text, dsp_text = scrape(s.http_port), scrape(s.metrics_port)
    ing_types, ing = parse(ing_text)
    dsp_types, dsp = parse(dsp_text)

    def d_ing(name, **lbl):
        return value(ing, name, **lbl) - value(ing0, name, **lbl)

    def d_dsp(name, **lbl):
        return value(dsp, name, **lbl) - value(dsp0, name, **lbl)

    # (a) families, types, label values, and counters that match the traffic
    for types in (ing_types, dsp_types):
        for fam, typ in [("drover_commands_accepted_total", "counter"), ("drover_acks_total", "counter"),
                         ("drover_status_changes_total", "counter"), ("drover_redis_errors_total", "counter"),
                         ("drover_nats_dropped_total", "counter"), ("drover_fenced_total", "counter"),
                         ("drover_sends_total", "counter"), ("drover_resends_total", "counter"),
                         ("drover_notifications_published_total", "counter"),
                         ("drover_redis_call_seconds", "histogram"), ("drover_ingest_batch_size", "histogram"),
                         ("drover_receipt_seconds", "histogram"), ("drover_mqtt_connected", "gauge"),
                         ("drover_build_info", "gauge")]:
            assert types.get(fam) == typ, "%s: %s" % (fam, types.get(fam))
    for fam, typ in [("drover_shard_leases_held", "gauge"), ("drover_queue_depth", "gauge"),
                     ("drover_in_flight", "gauge"), ("drover_oldest_pending_seconds", "gauge")]:
        assert dsp_types.get(fam) == typ, fam
    assert "drover_shard_leases_held" not in ing_types
    assert label_values(ing, "drover_commands_accepted_total", "transport") == {"mqtt", "rest"}
    assert label_values(ing, "drover_acks_total", "outcome") == {"applied", "ignored", "unknown_id",
                                                                 "wrong_device", "rejected"}
    assert "COMPLETED" in label_values(ing, "drover_status_changes_total", "status")
    assert value(ing, "drover_build_info", version="0.1.0") == 1

    assert d_ing("drover_commands_accepted_total", transport="mqtt") == 3
    assert d_ing("drover_commands_accepted_total", transport="rest") == 2
    assert d_ing("drover_commands_rejected_total", transport="mqtt") == 1
    assert d_ing("drover_commands_rejected_total", transport="rest") == 1
    assert d_ing("drover_commands_duplicate_total", transport="rest") == 1
    assert d_ing("drover_commands_duplicate_total", transport="mqtt") == 0
    assert d_ing("drover_acks_total", outcome="applied") == 4
    assert d_ing("drover_acks_total", outcome="unknown_id") == 1
    assert d_ing("drover_status_changes_total", status="COMPLETED") == 4
    # five first sends: four completed on m-dev, and m-away's (published though nobody listens)
    assert d_dsp("drover_sends_total") == 5
    assert d_dsp("drover_status_changes_total", status="COMPLETED") == 0  # acks change status on the ingress
    assert d_ing("drover_receipt_seconds_count") == 3
    # accept -> first send for the five first sends; accept -> first ack for the four acknowledged ones
    assert d_dsp("drover_accept_to_send_seconds_count") == 5
    assert d_ing("drover_accept_to_delivered_seconds_count") == 4
    assert d_ing("drover_rest_accept_seconds_count") == 3
    assert value(ing, "drover_redis_call_seconds_count") > value(ing0, "drover_redis_call_seconds_count")
    assert value(ing, "drover_ingest_batch_size_count") >= 1
    # histogram buckets are cumulative and end in the count
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in ing.items() if n == "drover_redis_call_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), value(ing, "drover_redis_call_seconds_count"))
    # dispatcher gauges
    assert value(dsp, "drover_shard_leases_held") == SHARDS
    assert value(dsp, "drover_mqtt_connected") == 1 and value(ing, "drover_mqtt_connected") == 1
    assert value(dsp, "drover_redis_connected") == 1

    # the backlog round (every 5 s) sees the message for the absent device, in flight and ageing
    def backlog():
        b = parse(scrape(s.metrics_port))[1]
        return b if value(b, "drover_queue_depth") >= 1 and value(b, "drover_oldest_pending_seconds") > 0 else None
    b = wait_until(backlog, 20, interval=0.5, msg="the queued message never showed in drover_queue_depth")
    assert value(b, "drover_queue_depth") == 1, "only m-away's message is pending"
    assert value(b, "drover_in_flight") == 1
    assert s.status(away) in ("NOT_DELIVERED", "UNKNOWN")
    # the round's own cost sets the wait before the next: 5 s, or 20 times the round when longer
    took, wait = value(b, "drover_backlog_round_seconds"), value(b, "drover_backlog_interval_seconds")
    assert took >= 0
    assert wait == pytest.approx(max(5.0, 20 * took), abs=0.0011), (took, wait)

    # health endpoints of the dispatcher's listener
    assert http_get(s.metrics_port, "/healthz")[0] == 200
    st, _, body = http_get(s.metrics_port, "/readyz")
    assert st == 200 and json.loads(body)["ready"] is True and json.loads(body)["shards_held"] == SHARDS

    # (b) promtool accepts both outputs and the shipped rules
    promtool = tool("promtool")
    for text in (ing_text, dsp_text):
        out = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    out = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    out = subprocess.run([promtool, "check", "config", "--syntax-only", PROM_EXAMPLE], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    json.load(open(DASHBOARD))

    # (c) a real Prometheus scrapes both nodes and reports the same counters
    prom_port = harness.free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "rule_files: [%s]\n"
                   "scrape_configs:\n"
                   "  - job_name: drover\n    static_configs:\n"
                   "      - targets: ['127.0.0.1:%d']\n        labels: {service: ingress}\n"
                   "      - targets: ['127.0.0.1:%d']\n        labels: {service: dispatcher}\n"
                   % (json.dumps(RULES), s.http_port, s.metrics_port))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([tool("prometheus"), "--config.file=%s" % cfg, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                             "--web.listen-address=127.0.0.1:%d" % prom_port], stdout=log, stderr=subprocess.STDOUT)
    try:
        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?%s" % (prom_port, urllib.parse.urlencode({"query": q}))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.loads(r.read())["data"]["result"]
            except (OSError, ValueError, KeyError):
                return None
            return float(res[0]["value"][1]) if res else None

        want = {
            'sum(drover_commands_accepted_total{transport="rest"})': value(ing, "drover_commands_accepted_total",
                                                                           transport="rest"),
            'sum(drover_commands_accepted_total{transport="mqtt"})': value(ing, "drover_commands_accepted_total",
                                                                           transport="mqtt"),
            'sum(drover_acks_total{outcome="unknown_id"})': value(ing, "drover_acks_total", outcome="unknown_id"),
            'sum(drover_sends_total)': value(dsp, "drover_sends_total") + value(ing, "drover_sends_total"),
            'drover_shard_leases_held{service="dispatcher"}': SHARDS,
            'count(up{job="drover"} == 1)': 2,
        }
        for q, v in want.items():
            wait_until(lambda: query(q) == v, 60, interval=0.5,
                       msg=lambda: "prometheus: %s = %s, expected %s" % (q, query(q), v))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_dispatcher_listener_refuses_bad_and_slow_clients(mstack):
    port = mstack.metrics_port
    assert raw_request(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(port, b"GET /metrics HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_request(port, b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").startswith(b"HTTP/1.1 413 ")
    assert raw_request(port, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    try:
        assert raw_request(port, big).startswith(b"HTTP/1.1 431 ")
    except ConnectionResetError:
        pass  # the server closed while the rest of the head was still arriving: refused all the same
    head = raw_request(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    # a client that never finishes its request holds no one up, and is closed after the read timeout
    slow = socket.create_connection(("127.0.0.1", port), timeout=15)
    slow.sendall(b"GET /metr")
    t0 = time.monotonic()
    assert http_get(port, "/healthz")[0] == 200
    slow.settimeout(15)
    assert slow.recv(100) == b"", "the slow client was answered instead of closed"
    assert time.monotonic() - t0 < 14
    slow.close()
    assert http_get(port, "/healthz")[0] == 200
    # the dispatcher is still fine and still delivers
    p = mstack.producer(pd="after")
    d = mstack.device("after-dev", auto_ack=True, ack_status="COMPLETED")
    mid = p.receipt_id(p.send("after-dev"))
    d.wait_for(mid, 15)


def test_ingress_metrics_is_open_and_read_only(mstack):
    st, ctype, body = http_get(mstack.http_port, "/metrics")
    assert st == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "drover_commands_accepted_total" in body
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % mstack.http_port, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_metrics_port_zero_means_no_listener(stack_factory):
    s = stack_factory({"metrics.port": 0})
    assert "metrics_listening" not in s.dispatcher.log_text()


def test_bad_metrics_settings_are_refused(stack_factory):
    s = stack_factory(start=False)
    s.start_servers()
    port = harness.free_port()  # the bind address is checked only when there is a listener
    for bad in ({"metrics.port": 70000}, {"metrics.port": -1}, {"metrics.port": port, "metrics.bind": ""},
                {"metrics.port": port, "metrics.bind": "localhost"}):
        n = s.add_dispatcher(overrides=bad, start=False)
        out = subprocess.run(n.argv(), env=n.env(), capture_output=True, timeout=20)
        assert out.returncode != 0, bad
        assert "metrics." in out.stderr.decode(), out.stderr.decode()
        s.nodes.remove(n)


def test_ctl_metrics_prints_cluster_sums(stack_factory):
    s = stack_factory({"metrics.port": 0}, ingress=2)
    prod = s.producer(pd="ctl")
    dev = s.device("ctl-dev", auto_ack=True, ack_status="COMPLETED")
    for i in range(4):
        prod.wait_status(prod.receipt_id(prod.send("ctl-dev", command="c%d" % i)), "COMPLETED", 15)
    s.wait_metric("ack_applied", 5)  # the stack's probe and ours
    dev.disconnect()
    # two ingresses share the producer subscription: the cluster line adds up both nodes' counts
    env = dict(os.environ, DR_REDIS_PORT=str(s.redis.port), DR_REDIS_PASSWORD=s.redis.password,
               DR_REDIS_PREFIX=s.prefix, DR_CLUSTER_SHARDS=str(s.shards))

    def run():
        out = subprocess.run([os.path.join(harness.BIN_DIR, "drover-ctl"), "metrics"], env=env, capture_output=True,
                             timeout=20)
        assert out.returncode == 0, out.stderr.decode()
        text = out.stdout.decode()
        nodes, cluster, section = {}, {}, None
        for line in text.splitlines():
            if not line.startswith("  "):
                section = line
                continue
            name, val = line.split()
            target = cluster if section.startswith("cluster (sum over") else nodes.setdefault(section, {})
            target[name] = int(val)
        return text, nodes, cluster

    text, nodes, cluster = run()
    assert any(l.startswith("cluster (sum over 3 nodes)") for l in text.splitlines()), text
    assert len(nodes) == 3, text
    for name in ("producer_accepted", "ack_applied", "sent", "status_completed"):
        assert cluster[name] == sum(n.get(name, 0) for n in nodes.values()), (name, text)
    assert cluster["producer_accepted"] == s.metric("producer_accepted") >= 5
    assert cluster["status_completed"] >= 5
