"""REST API: Duster endpoints, the v1 API, API keys, errors, idempotency, SSE, and interplay with MQTT.

Every request goes through curl (a real HTTP client) against a real stack.
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
import yaml

import harness
from harness import wait_until, stays_true

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# ---- helpers ------------------------------------------------------------------------------------------

class Api:
    def __init__(self, stack, port):
        self.stack = stack
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, key=None, body=None, headers=None, raw=None, timeout=10):
        """Returns (status, headers, parsed JSON or text)."""
        cmd = ["curl", "-sS", "-i", "--max-time", str(timeout), "-X", method, self.base + path]
        if key:
            cmd += ["-H", "Authorization: Bearer " + key]
        for h in headers or []:
            cmd += ["-H", h]
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            if not any(h.lower().startswith("content-type") for h in headers or []):
                cmd += ["-H", "Content-Type: application/json"]
            cmd += ["--data-binary", "@-"]
        out = subprocess.run(cmd, input=data.encode() if isinstance(data, str) else data, capture_output=True,
                             timeout=timeout + 5)
        assert out.returncode == 0, "curl failed: %s" % out.stderr.decode()
        text = out.stdout.decode("utf-8", "replace")
        head, _, rest = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        try:
            parsed = json.loads(rest) if rest else None
        except ValueError:
            parsed = rest
        return status, hdrs, parsed


def ctl(stack, *args):
    env = dict(os.environ, DR_REDIS_PORT=str(stack.redis.port), DR_REDIS_PASSWORD=stack.redis.password,
               DR_REDIS_PREFIX=stack.prefix, DR_CLUSTER_SHARDS=str(stack.shards))
    out = subprocess.run([os.path.join(harness.BIN_DIR, "drover-ctl")] + list(args), env=env, capture_output=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def error_code(body):
    assert isinstance(body, dict) and "error" in body, "not a JSON error: %r" % (body,)
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return body["error"]["code"]


@pytest.fixture
def rest(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "http.key_cache_ms": 300})
    api = Api(stack, port)
    api.admin = ctl(stack, "key", "create", "admin", "ops")
    api.producer = ctl(stack, "key", "create", "producer", "fleet")
    api.producer2 = ctl(stack, "key", "create", "producer", "other-fleet")
    api.device = ctl(stack, "key", "create", "device", "rest-dev", "dev-key")
    return api


def submit(api, dev, key=None, **body):
    body.setdefault("command", "cmd")
    st, h, b = api.call("POST", "/v1/devices/%s/messages" % dev, key or api.producer, body)
    assert st == 201, (st, b)
    return b["id"]


# ---- health, docs -------------------------------------------------------------------------------------

def test_health_and_readiness(rest):
    st, h, b = rest.call("GET", "/healthz")
    assert (st, b) == (200, {"status": "ok"})
    assert h["content-length"] == str(len(json.dumps(b, separators=(",", ":"))))
    st, _, b = rest.call("GET", "/readyz")
    assert st == 200 and b == {"ready": True, "redis": True, "nats": True, "mqtt": True}
    rest.stack.nats.kill()
    wait_until(lambda: rest.call("GET", "/readyz")[0] == 503, 10, msg="readyz stays 200 without NATS")
    assert rest.call("GET", "/readyz")[2]["nats"] is False
    rest.stack.nats.start()
    wait_until(lambda: rest.call("GET", "/readyz")[0] == 200, 15)


def test_openapi_served_matches_document_and_server(rest):
    with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    st, _, served = rest.call("GET", "/v1/openapi.json")
    assert st == 200 and served == doc
    assert str(doc["openapi"]).startswith("3.1")
    # Every documented operation is routed (never 404 "no such endpoint" or 405) ...
    for path, ops in doc["paths"].items():
        concrete = path.replace("{deviceId}", "doc-dev").replace("{messageId}", "1")
        for method in ops:
            if method not in ("get", "put", "post", "delete"):
                continue
            if path == "/v1/events":
                continue  # a stream: covered by test_sse_*
            st, _, b = rest.call(method.upper(), concrete, rest.admin, {} if method in ("put", "post") else None)
            assert st != 405, (method, path, b)
            assert not (st == 404 and isinstance(b, dict) and b["error"]["message"] == "no such endpoint"), (method, path)
            assert str(st) in {str(k) for k in doc["paths"][path][method]["responses"]}, (method, path, st, b)
    # ... and routes that are not documented do not exist.
    st, _, b = rest.call("GET", "/v1/not-documented", rest.admin)
    assert st == 404 and error_code(b) == "NOT_FOUND"


def test_openapi_document_validates():
    """Validates docs/openapi.yaml against the OpenAPI 3.1 schema with a validator from npm."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("npm and node are needed to validate the OpenAPI document")
    cache = os.environ.get("DROVER_NPM_CACHE", os.path.join(ROOT, "build", "npm-openapi"))
    mod = os.path.join(cache, "node_modules", "@seriousme", "openapi-schema-validator")
    if not os.path.isdir(mod):
        os.makedirs(cache, exist_ok=True)
        out = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", cache,
                              "@seriousme/openapi-schema-validator@2"], capture_output=True, timeout=300)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
    with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    doc_path = os.path.join(cache, "openapi.json")
    with open(doc_path, "w") as f:
        json.dump(doc, f)
    script = ("import {Validator} from '%s/index.js';"
              "const r = await new Validator().validate(process.argv[1]);"
              "console.log(JSON.stringify(r.errors || []));process.exit(r.valid ? 0 : 1);" % mod)
    out = subprocess.run(["node", "--input-type=module", "-e", script, doc_path], capture_output=True, timeout=60)
    assert out.returncode == 0, "OpenAPI document invalid: %s %s" % (out.stdout.decode()[:3000], out.stderr.decode())


# ---- v1: submit, read, list ---------------------------------------------------------------------------

def test_submit_get_list_and_history(rest):
    dev = rest.stack.device("rest-a", auto_ack=True)
    st, h, b = rest.call("POST", "/v1/devices/rest-a/messages", rest.producer,
                         {"believerGuarantee": "RECEIPT_CONFIRMATION", "command": "digitalWrite",
                          "data": {"pinNumber": 13, "pinValue": True, "f": 0.1}})
    assert st == 201 and b["device"] == "rest-a" and b["status"] == "NOT_DELIVERED"
    mid = b["id"]
    assert h["location"] == "/v1/messages/%d" % mid
    got = dev.wait_for(mid, 10)[0]
    assert got.raw.endswith(b'"data":{"pinNumber":13,"pinValue":true,"f":0.1}}')
    rest.stack.wait_status(mid, "DELIVERED", 10)
    dev.ack(mid, "COMPLETED")
    rest.stack.wait_status(mid, "COMPLETED", 10)
    st, _, m = rest.call("GET", "/v1/messages/%d" % mid, rest.producer)
    assert st == 200 and m["status"] == "COMPLETED" and m["attempts"] == 1 and m["data"]["f"] == 0.1
    assert [(e["status"], e["event"]) for e in m["history"]] == [
        ("NOT_DELIVERED", "accepted"), ("NOT_DELIVERED", "sent"), ("DELIVERED", "ack"), ("COMPLETED", "ack")]
    assert all(a["ts"] <= b["ts"] for a, b in zip(m["history"], m["history"][1:]))
    # listing, newest first, cursor pagination and status filter
    ids = [mid] + [submit(rest, "rest-a", command="c%d" % i) for i in range(4)]
    page1 = rest.call("GET", "/v1/devices/rest-a/messages?limit=2", rest.producer)[2]
    assert [x["id"] for x in page1["messages"]] == ids[::-1][:2]
    page2 = rest.call("GET", "/v1/devices/rest-a/messages?limit=2&cursor=" + page1["nextCursor"], rest.producer)[2]
    assert [x["id"] for x in page2["messages"]] == ids[::-1][2:4]
    done = rest.call("GET", "/v1/devices/rest-a/messages?status=COMPLETED&limit=100", rest.admin)[2]
    assert mid in [x["id"] for x in done["messages"]]
    assert all(x["status"] == "COMPLETED" for x in done["messages"])


def test_idempotent_retry_and_conflict(rest):
    h = ["Idempotency-Key: order-77"]
    st1, _, b1 = rest.call("POST", "/v1/devices/rest-i/messages", rest.producer, {"command": "open"}, headers=h)
    st2, h2, b2 = rest.call("POST", "/v1/devices/rest-i/messages", rest.producer, {"command": "open"}, headers=h)
    assert (st1, st2) == (201, 200) and b1["id"] == b2["id"] and h2["idempotent-replayed"] == "true"
    st3, _, b3 = rest.call("POST", "/v1/devices/rest-i/messages", rest.producer, {"command": "close"}, headers=h)
    assert st3 == 409 and error_code(b3) == "IDEMPOTENCY_CONFLICT"
    # keys are scoped to the API key: another producer's same key is a new message
    st4, _, b4 = rest.call("POST", "/v1/devices/rest-i/messages", rest.producer2, {"command": "open"}, headers=h)
    assert st4 == 201 and b4["id"] != b1["id"]
    listed = rest.call("GET", "/v1/devices/rest-i/messages", rest.admin)[2]["messages"]
    assert sorted(x["id"] for x in listed) == sorted([b1["id"], b4["id"]])


def test_bulk_submit(rest):
    body = {"devices": ["bulk-1", "bulk-2", "bulk-3"], "command": "reboot"}
    st, _, b = rest.call("POST", "/v1/messages/bulk", rest.producer, body, headers=["Idempotency-Key: wave-1"])
    assert st == 200 and b["accepted"] == 3 and b["failed"] == 0
    assert [m["device"] for m in b["messages"]] == body["devices"] and len({m["id"] for m in b["messages"]}) == 3
    st, _, again = rest.call("POST", "/v1/messages/bulk", rest.producer, body, headers=["Idempotency-Key: wave-1"])
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in b["messages"]]
    for bad in ({"devices": [], "command": "x"}, {"devices": ["ok", "bad/id"]}, {"command": "x"}):
        st, _, e = rest.call("POST", "/v1/messages/bulk", rest.producer, bad)
        assert st == 400, bad


# ---- errors -------------------------------------------------------------------------------------------

def test_error_statuses_and_nothing_changes(rest):
    seq0 = rest.stack.seq()
    keys0 = set(rest.stack.message_keys())
    cases = [
        ("POST", "/v1/devices/e1/messages", rest.producer, None, "{not json", [], 400, "BAD_JSON"),
        ("POST", "/v1/devices/e1/messages", rest.producer, {"command": 5}, None, [], 400, "BAD_TYPE"),
        ("POST", "/v1/devices/e1/messages", rest.producer, {"believerGuarantee": "MAYBE"}, None, [], 400, "BAD_GUARANTEE"),
        ("POST", "/v1/devices/e1/messages", rest.producer, {"data": [1]}, None, [], 400, "BAD_DATA"),
        ("POST", "/v1/devices/a%2Fb/messages", rest.producer, {}, None, [], 400, "BAD_DEVICE_ID"),
        ("POST", "/v1/devices/" + "x" * 200 + "/messages", rest.producer, {}, None, [], 400, "BAD_DEVICE_ID"),
        ("POST", "/v1/devices/e1/messages", None, {}, None, [], 401, "UNAUTHORIZED"),
        ("POST", "/v1/devices/e1/messages", "drk_000000000000_" + "A" * 43, {}, None, [], 401, "UNAUTHORIZED"),
        ("POST", "/v1/devices/e1/messages", "Basic abc", {}, None, [], 401, "UNAUTHORIZED"),
        ("POST", "/v1/devices/e1/messages", rest.device, {}, None, [], 403, "FORBIDDEN"),
        ("PUT", "/v1/devices/e1/pacing", rest.producer, {"intervalMs": 5}, None, [], 403, "FORBIDDEN"),
        ("GET", "/v1/messages/999999", rest.admin, None, None, [], 404, "NOT_FOUND"),
        ("GET", "/v1/messages/abc", rest.admin, None, None, [], 400, "BAD_ID"),
        ("GET", "/v1/nothing", rest.admin, None, None, [], 404, "NOT_FOUND"),
        ("DELETE", "/v1/messages/1", rest.admin, None, None, [], 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/v1/devices/e1/messages", rest.producer, None, json.dumps({"data": {"x": "a" * 70000}}), [], 413,
         "TOO_LARGE"),
        ("POST", "/v1/devices/e1/messages", rest.producer, None, '{"command":"x"}', ["Content-Type: text/plain"], 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        ("POST", "/v1/devices/e1/messages", rest.producer, None, '{"data":' + '{"a":' * 40 + '1' + '}' * 41, [], 400,
         "BAD_JSON"),
        ("PUT", "/v1/devices/e1/pacing", rest.admin, {"window": 0}, None, [], 400, "BAD_FIELD"),
    ]
    for method, path, key, body, raw, hdrs, want, code in cases:
        if key == "Basic abc":
            st, h, b = rest.call(method, path, None, body, raw=raw, headers=hdrs + ["Authorization: Basic abc"])
        else:
            st, h, b = rest.call(method, path, key, body, raw=raw, headers=hdrs)
        assert st == want, (method, path, st, b)
        assert error_code(b) == code, (method, path, b)
        assert h["content-type"].startswith("application/json")
    assert rest.stack.seq() == seq0, "a rejected request stored something"
    assert set(rest.stack.message_keys()) == keys0


def test_rate_limit_429(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "http.rate": 1, "http.burst": 3})
    api = Api(stack, port)
    key = ctl(stack, "key", "create", "admin")
    codes = [api.call("GET", "/v1/devices/rl", key)[0] for _ in range(6)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
    st, h, b = api.call("GET", "/v1/devices/rl", key)
    assert st == 429 and error_code(b) == "RATE_LIMITED" and int(h["retry-after"]) >= 1
    time.sleep(1.2)
    assert api.call("GET", "/v1/devices/rl", key)[0] == 200


def test_redis_down_gives_503_never_2xx(rest):
    rest.stack.redis.pause()
    try:
        st, h, b = rest.call("POST", "/v1/devices/r503/messages", rest.producer, {"command": "x"}, timeout=20)
        assert st == 503 and error_code(b) == "UNAVAILABLE" and "retry-after" in h
    finally:
        rest.stack.redis.resume()
    wait_until(lambda: rest.call("POST", "/v1/devices/r503/messages", rest.producer, {"command": "y"})[0] == 201, 20)


def test_revoked_key_stops_working(rest):
    key = ctl(rest.stack, "key", "create", "producer", "temp")
    assert rest.call("GET", "/v1/devices/rv", key)[0] == 200
    ctl(rest.stack, "key", "revoke", key.split("_")[1])
    wait_until(lambda: rest.call("GET", "/v1/devices/rv", key)[0] == 401, 5, msg="revoked key still accepted")


# ---- device keys, pull and ack ------------------------------------------------------------------------

def test_device_key_is_bound_to_its_device(rest):
    mine = submit(rest, "rest-dev")
    other = submit(rest, "someone-else")
    assert rest.call("POST", "/v1/devices/someone-else/next", rest.device)[0] == 403
    st, _, b = rest.call("POST", "/v1/devices/someone-else/messages/%d/ack" % other, rest.device, {})
    assert st == 403 and error_code(b) == "FORBIDDEN"
    assert rest.call("GET", "/v1/messages/%d" % other, rest.device)[0] == 404
    assert rest.call("GET", "/v1/messages/%d" % mine, rest.device)[0] == 200
    # an ack naming another device's message through the device's own path is not found
    st, _, b = rest.call("POST", "/v1/devices/rest-dev/messages/%d/ack" % other, rest.device, {})
    assert st == 404
    assert rest.stack.status(other) == "NOT_DELIVERED"


def test_pull_obeys_order_window_and_pacing_then_ack(rest):
    st, _, s = rest.call("PUT", "/v1/devices/rest-dev/pacing", rest.admin, {"mode": "pull", "intervalMs": 500})
    assert st == 200 and s["mode"] == "pull" and s["intervalMs"] == 500
    ids = [submit(rest, "rest-dev", command="p%d" % i) for i in range(3)]
    st, _, m1 = rest.call("POST", "/v1/devices/rest-dev/next", rest.device)
    assert st == 200 and m1["id"] == ids[0] and list(m1) == ["id", "believerGuarantee", "command", "currentTimestamp",
                                                             "data"]
    # window 1: nothing else until the ack
    st, h, _ = rest.call("POST", "/v1/devices/rest-dev/next", rest.device)
    assert st == 204 and int(h["retry-after"]) >= 1
    st, _, a = rest.call("POST", "/v1/devices/rest-dev/messages/%d/ack" % ids[0], rest.device, {})
    assert st == 200 and a == {"id": ids[0], "status": "DELIVERED", "applied": True}
    st, _, a = rest.call("POST", "/v1/devices/rest-dev/messages/%d/ack" % ids[0], rest.device,
                         {"deliveryStatus": "DELIVERED"})
    assert st == 200 and a["applied"] is False
    # the next one comes no earlier than the interval after the previous send
    wait_until(lambda: rest.call("POST", "/v1/devices/rest-dev/next", rest.device)[2] not in (None, ""), 5)
    st, _, m2 = rest.call("GET", "/v1/messages/%d" % ids[1], rest.admin)
    assert m2["lastSentAt"] - rest.call("GET", "/v1/messages/%d" % ids[0], rest.admin)[2]["lastSentAt"] >= 500 - 5
    st, _, b = rest.call("POST", "/v1/devices/rest-dev/messages/%d/ack" % ids[1], rest.device,
                         {"deliveryStatus": "BOGUS"})
    assert st == 400 and error_code(b) == "BAD_STATUS"


def test_rest_and_mqtt_interoperate(rest):
    # REST-submitted command reaches an MQTT device; its MQTT ack shows up over REST
    dev = rest.stack.device("interop-mqtt")
    mid = submit(rest, "interop-mqtt", command="viaRest")
    got = dev.wait_for(mid, 10)[0]
    assert got.msg["command"] == "viaRest"
    dev.ack(mid)
    wait_until(lambda: rest.call("GET", "/v1/messages/%d" % mid, rest.admin)[2]["status"] == "DELIVERED", 10)
    # an MQTT-submitted command can be pulled over REST and acked there
    rest.call("PUT", "/v1/devices/interop-rest/pacing", rest.admin, {"mode": "pull"})
    prod = rest.stack.producer("pd-interop")
    mid2 = prod.receipt_id(prod.send("interop-rest", command="viaMqtt"))
    st, _, m = rest.call("POST", "/v1/devices/interop-rest/next", rest.admin)
    assert st == 200 and m["id"] == mid2 and m["command"] == "viaMqtt"
    rest.call("POST", "/v1/devices/interop-rest/messages/%d/ack" % mid2, rest.admin, {"deliveryStatus": "COMPLETED"})
    prod.wait_status(mid2, "COMPLETED", 10)
    assert prod.statuses(mid2) == ["NOT_DELIVERED", "COMPLETED"]


# ---- cancel, purge ------------------------------------------------------------------------------------

def test_cancel_and_purge(rest):
    mid = submit(rest, "offline-c")
    st, _, b = rest.call("POST", "/v1/messages/%d/cancel" % mid, rest.producer)
    assert (st, b) == (200, {"id": mid, "status": "CANCELLED"})
    st, _, b = rest.call("POST", "/v1/messages/%d/cancel" % mid, rest.producer)
    assert st == 409 and error_code(b) == "NOT_CANCELLABLE"
    # another producer cannot see or cancel this producer's message
    other = submit(rest, "offline-c")
    assert rest.call("POST", "/v1/messages/%d/cancel" % other, rest.producer2)[0] == 404
    ids = [submit(rest, "offline-p", command="x%d" % i) for i in range(5)]
    st, _, b = rest.call("DELETE", "/v1/devices/offline-p/messages", rest.producer)
    assert st == 200 and b == {"device": "offline-p", "purged": 5}
    for i in ids:
        assert rest.stack.status(i) == "PURGED"
    st, _, s = rest.call("GET", "/v1/devices/offline-p", rest.producer)
    assert st == 200 and s["queued"] == 0 and s["inFlight"] == 0


def test_producer_cannot_cancel_a_message_submitted_over_mqtt(rest):
    """A message submitted over MQTT has no owner key: producer keys may read it, but only an admin may
    cancel it (a producer key gets 404, as for an unknown id, and nothing changes)."""
    rest.call("PUT", "/v1/devices/offline-m/pacing", rest.admin, {"mode": "pull"})  # stays NOT_DELIVERED
    prod = rest.stack.producer("pd-cancel")
    mid = prod.receipt_id(prod.send("offline-m", command="viaMqtt"))
    st, _, m = rest.call("GET", "/v1/messages/%d" % mid, rest.producer)
    assert st == 200 and m["status"] == "NOT_DELIVERED"
    for key in (rest.producer, rest.producer2):
        st, _, b = rest.call("POST", "/v1/messages/%d/cancel" % mid, key)
        assert st == 404 and error_code(b) == "NOT_FOUND", (st, b)
    assert rest.stack.status(mid) == "NOT_DELIVERED"
    st, _, b = rest.call("POST", "/v1/messages/%d/cancel" % mid, rest.admin)
    assert (st, b) == (200, {"id": mid, "status": "CANCELLED"})
    prod.wait_status(mid, "CANCELLED", 10)


def test_purge_is_scoped_to_the_producer_key(rest):
    """A producer key purges only the messages it submitted; an admin key purges every pending one,
    including those of other keys and those submitted over MQTT."""
    rest.call("PUT", "/v1/devices/offline-s/pacing", rest.admin, {"mode": "pull"})
    mine = [submit(rest, "offline-s", command="a%d" % i) for i in range(3)]
    theirs = [submit(rest, "offline-s", key=rest.producer2, command="b%d" % i) for i in range(2)]
    prod = rest.stack.producer("pd-purge")
    via_mqtt = prod.receipt_id(prod.send("offline-s", command="viaMqtt"))
    st, _, b = rest.call("DELETE", "/v1/devices/offline-s/messages", rest.producer)
    assert st == 200 and b == {"device": "offline-s", "purged": 3}, b
    assert [rest.stack.status(i) for i in mine] == ["PURGED"] * 3
    assert [rest.stack.status(i) for i in theirs + [via_mqtt]] == ["NOT_DELIVERED"] * 3
    st, _, s = rest.call("GET", "/v1/devices/offline-s", rest.producer)
    assert st == 200 and s["queued"] == 3
    st, _, b = rest.call("DELETE", "/v1/devices/offline-s/messages", rest.admin)
    assert st == 200 and b == {"device": "offline-s", "purged": 3}, b
    assert [rest.stack.status(i) for i in theirs + [via_mqtt]] == ["PURGED"] * 3
    prod.wait_status(via_mqtt, "CANCELLED", 10)  # PURGED is shown as CANCELLED to Duster producers


def test_cancel_racing_a_delivery(rest):
    """Either the cancel wins (200, the device's ack changes nothing) or the delivery wins (409); the final
    status always agrees with what the cancel call said, over many races."""
    dev = rest.stack.device("race", auto_ack=True)
    outcomes = set()
    for i in range(12):
        mid = submit(rest, "race", command="r%d" % i)
        time.sleep((i % 4) * 0.01)
        st, _, b = rest.call("POST", "/v1/messages/%d/cancel" % mid, rest.producer)
        assert st in (200, 409), b
        final = "CANCELLED" if st == 200 else "DELIVERED"
        outcomes.add(final)
        stays_true(lambda: rest.stack.status(mid) == final, 0.4,
                   msg=lambda: "cancel said %d but status is %s" % (st, rest.stack.status(mid)))
    assert outcomes, outcomes


# ---- Duster endpoints ---------------------------------------------------------------------------------

def test_duster_endpoints(rest):
    prod = rest.stack.producer("0")
    st, _, b = rest.call("PUT", "/producer/request/duster-d", rest.producer,
                         {"believerGuarantee": "RECEIPT_CONFIRMATION", "command": "blink", "data": {"pinNumber": 2},
                          "messageBirthCertificate": {"tmpId": 3, "producerDeviseId": "0"}})
    assert st == 200 and list(b) == ["id", "tmpId", "deliveryStatus"] and b["tmpId"] == 3
    assert b["deliveryStatus"] == "NOT_DELIVERED"
    mid = b["id"]
    st, _, b = rest.call("PUT", "/producer/request/duster-d", rest.producer, {"command": "nocert"})
    assert st == 200 and b["tmpId"] is None
    st, _, arr = rest.call("GET", "/consumer/getLastMessage/duster-d", rest.admin)
    assert st == 200 and len(arr) == 1 and arr[0]["id"] == mid and list(arr[0]) == [
        "id", "believerGuarantee", "command", "currentTimestamp", "data"]
    assert rest.call("GET", "/consumer/getLastMessage/duster-d", rest.admin)[2][0]["id"] == mid  # no side effect
    st, _, body = rest.call("POST", "/consumer/request/duster-d", rest.admin, {"id": mid})
    assert st == 200 and body in (None, "")
    prod.wait_status(mid, "DELIVERED", 10)
    st, _, b = rest.call("GET", "/producer/getMessageStatus/%d" % mid, rest.producer)
    assert (st, b) == (200, {"deliveryStatus": "DELIVERED"})
    assert rest.call("GET", "/producer/getMessageStatus/99999", rest.producer)[0] == 404
    assert rest.call("GET", "/producer/getMessageStatus/x", rest.producer)[0] == 400
    # acks are bound to the device in the path (Duster ignored it)
    assert rest.call("POST", "/consumer/request/not-the-device", rest.admin, {"id": mid})[0] == 404
    assert rest.call("PUT", "/producer/request/duster-d", None, {"command": "x"})[0] == 401


def test_duster_paths_open_on_loopback_when_configured(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "http.duster_open": 1})
    api = Api(stack, port)
    st, _, b = api.call("PUT", "/producer/request/open-d", None, {"command": "x"})
    assert st == 200 and b["deliveryStatus"] == "NOT_DELIVERED"
    assert api.call("POST", "/v1/devices/open-d/messages", None, {"command": "x"})[0] == 401


# ---- SSE ----------------------------------------------------------------------------------------------

class SseReader(threading.Thread):
    def __init__(self, api, query, key, last_id=None):
        super().__init__(daemon=True)
        cmd = ["curl", "-sN", "--max-time", "30", "-H", "Authorization: Bearer " + key, api.base + "/v1/events" + query]
        if last_id:
            cmd += ["-H", "Last-Event-ID: " + last_id]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        self.events = []
        self.start()

    def run(self):
        ev = {}
        for line in self.proc.stdout:
            line = line.decode().rstrip("\n")
            if line.startswith("id: "):
                ev["id"] = line[4:]
            elif line.startswith("data: "):
                ev["data"] = json.loads(line[6:])
            elif line == "" and ev:
                self.events.append(ev)
                ev = {}

    def statuses(self, mid):
        return [e["data"]["status"] for e in self.events if e["data"]["id"] == mid]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_sse_streams_every_change_in_order_and_resumes(rest):
    first = SseReader(rest, "?device=sse-d", rest.admin)
    time.sleep(0.5)
    dev = rest.stack.device("sse-d")
    mid = submit(rest, "sse-d")
    dev.wait_for(mid, 10)
    dev.ack(mid)
    wait_until(lambda: first.statuses(mid) == ["NOT_DELIVERED", "DELIVERED"], 10,
               msg=lambda: "events: %s" % first.events)
    last_id = first.events[-1]["id"]
    assert all(re.fullmatch(r"\d+:\d+-\d+", e["id"]) for e in first.events), first.events
    assert int(last_id.split(":")[0]) == mid % rest.stack.shards  # <shard>:<log entry id>
    first.close()
    # changes while nobody listens are delivered on resume, in order, and nothing before last_id again
    dev.ack(mid, "COMPLETED")
    other = submit(rest, "sse-other")
    rest.stack.wait_status(mid, "COMPLETED", 10)
    second = SseReader(rest, "?device=sse-d", rest.admin, last_id=last_id)
    wait_until(lambda: second.statuses(mid) == ["COMPLETED"], 10, msg=lambda: "events: %s" % second.events)
    assert all(e["data"]["device"] == "sse-d" for e in second.events)
    assert other not in [e["data"]["id"] for e in second.events]
    second.close()
    # an id without a shard (data layout 1) restarts every shard from its millisecond: events of that
    # millisecond may come again, nothing later is lost
    old_style = SseReader(rest, "?device=sse-d", rest.admin, last_id=last_id.split(":", 1)[1])
    wait_until(lambda: "COMPLETED" in old_style.statuses(mid), 10, msg=lambda: "events: %s" % old_style.events)
    assert set(old_style.statuses(mid)) <= {"DELIVERED", "COMPLETED"}
    old_style.close()
    for bad in ("x", "1:2", "a:1-2", "1:1-2-3"):
        st, _, b = rest.call("GET", "/v1/events", rest.admin, headers=["Last-Event-ID: " + bad])
        assert st == 400 and error_code(b) == "BAD_FIELD", (bad, st, b)
    # a device key sees only its own device, whatever it asks for
    third = SseReader(rest, "?device=sse-d", rest.device, last_id=first.events[0]["id"])
    mine = submit(rest, "rest-dev")
    wait_until(lambda: third.statuses(mine) == ["NOT_DELIVERED"], 10)
    assert all(e["data"]["device"] == "rest-dev" for e in third.events)
    third.close()


def log_value(*values):
    """A status log entry's one field 'n' as the library writes it: each value as <length>:<bytes>."""
    return "".join("%d:%s" % (len(v.encode()), v) for v in values)


def test_sse_reads_both_forms_of_log_entries_and_skips_malformed_ones(rest):
    """The library writes a log entry as one field 'n' (generation 3); entries of generation 2 and
    before, field pairs, may still be in a log after an upgrade. SSE shows both, filters both, and
    skips an entry it cannot read without stopping the stream."""
    reader = SseReader(rest, "?device=sse-forms", rest.admin)
    time.sleep(0.5)
    mid = submit(rest, "sse-forms")
    wait_until(lambda: reader.statuses(mid) == ["NOT_DELIVERED"], 10, msg=lambda: "events: %s" % reader.events)
    log = "%s{%d}log" % (rest.stack.prefix, mid % rest.stack.shards)
    raw = rest.stack.redis_call(lambda r: r.xrange(log, "-", "+"))
    mine = [f for _, f in raw if f.get("n", "").startswith(log_value(str(mid)))]
    assert mine and set(mine[0]) == {"n"}, "the library's entry is not the one-field form: %s" % raw[-3:]

    def inject(r):
        r.xadd(log, {"i": "777001", "d": "sse-forms", "s": "DELIVERED", "t": "", "p": "", "x": "0", "k": "", "a": ""})
        r.xadd(log, {"n": "9:77"})  # malformed: the length runs past the end
        r.xadd(log, {"n": log_value("777002", "sse-other-dev", "DELIVERED", "", "", "0", "", "")})
        r.xadd(log, {"n": log_value("777003", "sse-forms", "COMPLETED", "5", "pd:x", "1", "k 1", "")})
    rest.stack.redis_call(inject)
    wait_until(lambda: reader.statuses(777003) == ["COMPLETED"], 10, msg=lambda: "events: %s" % reader.events)
    assert reader.statuses(777001) == ["DELIVERED"], reader.events
    assert reader.statuses(777002) == [], "another device's entry passed the device filter: %s" % reader.events
    assert all(e["data"]["device"] == "sse-forms" for e in reader.events), reader.events
    # the stream goes on after the malformed entry
    later = submit(rest, "sse-forms")
    wait_until(lambda: reader.statuses(later) == ["NOT_DELIVERED"], 10, msg=lambda: "events: %s" % reader.events)

    # many unreadable entries: the warnings are limited, and a later line says how many were left out
    def flood(r):
        p = r.pipeline(transaction=True)
        for _ in range(30):
            p.xadd(log, {"n": "9:77"})
        p.xadd(log, {"n": log_value("777004", "sse-forms", "DELIVERED", "", "", "0", "", "")})
        p.execute()
    rest.stack.redis_call(flood)
    wait_until(lambda: reader.statuses(777004) == ["DELIVERED"], 10, msg=lambda: "events: %s" % reader.events)
    time.sleep(1.1)  # the next warning opens a new one-second window, which reports the last one's count

    def one_more(r):
        r.xadd(log, {"n": "9:77"})
        r.xadd(log, {"n": log_value("777005", "sse-forms", "DELIVERED", "", "", "0", "", "")})
    rest.stack.redis_call(one_more)
    wait_until(lambda: reader.statuses(777005) == ["DELIVERED"], 10, msg=lambda: "events: %s" % reader.events)
    reader.close()
    text = rest.stack.ingress.log_text()
    logged = len(re.findall(r"event=sse_entry_malformed ", text))
    left_out = sum(int(n) for n in re.findall(r"event=sse_entries_malformed_not_logged count=(\d+)", text))
    assert logged < 32, "every one of the 32 unreadable entries was logged"
    assert logged + left_out == 32, (logged, left_out)
