"""GET /v1/stats: the cluster's counters and backlog gauges, summed from every node's metrics hash
(docs/rest.md "Cluster figures"). Two ingress and two dispatcher nodes share one Redis."""
import time

import pytest

import harness
from harness import wait_until
from test_registry import Api, ctl

SHARDS = 16
STALE_MS = 30000  # the bound at the tests' metrics.flush_ms of 200 ms: max(3 x 200, 30000)


@pytest.fixture
def cluster(stack_factory):
    s = stack_factory({"auth.bcrypt_cost": 4, "http.key_cache_ms": 300}, start=False)
    s.start_servers()
    ports = [harness.free_port(), harness.free_port()]
    for p in ports:
        s.add_ingress(overrides={"http.port": p})
    s.add_dispatcher()
    s.add_dispatcher()
    s.wait_ready()
    s.apis = [Api(s, p) for p in ports]
    s.admin_key = ctl(s, "key", "create", "admin")[0]
    return s


def stats(api, key):
    st, hdrs, body = api.call("GET", "/v1/stats", key)
    assert st == 200, (st, body)
    assert hdrs.get("cache-control") == "no-store"
    return body


def hashes(s):
    """{node: {field: int}} of every metrics hash, read straight from Redis."""
    def read(r):
        out = {}
        for k in r.scan_iter(match=s.prefix + "metrics:*", count=100):
            out[k[len(s.prefix) + 8:]] = {f: int(v) for f, v in r.hgetall(k).items()}
        return out
    return s.redis_call(read)


def field_sum(hs, name):
    return sum(h.get(name, 0) for h in hs.values())


COUNTERS = {"accepted": "producer_accepted", "rejected": "producer_rejected", "duplicate": "producer_duplicate",
            "sent": "sent", "resent": "resent", "expired": "expired", "failed": "failed", "notified": "notified",
            "publishFailed": "publish_failed", "redisErrors": "redis_errors"}


def test_stats_match_hashes_and_traffic(cluster):
    s = cluster
    a1, a2 = s.apis
    key = s.admin_key
    base = stats(a1, key)
    assert base["nodes"] == 4, base
    # traffic: MQTT commands to an online device that completes them, REST commands (through the other
    # ingress) to a device that never connects, so they stay queued
    dev = s.device("stats-on", auto_ack=True)
    prod = s.producer()
    ids = [prod.receipt_id(prod.send("stats-on")) for _ in range(5)]
    for mid in ids:
        s.wait_status(mid, "DELIVERED", 20)
    for i in range(3):
        st, _, b = a2.call("POST", "/v1/devices/stats-off/messages", key, {"command": "c%d" % i})
        assert st == 201, b
    st, _, b = a2.call("POST", "/v1/devices/stats-off/messages", key, raw='{"command": 5}')
    assert st == 400, b
    dev.wait_distinct(5, 20)

    # the gauges settle: three messages queued (the offline device's), every shard held once
    def settled():
        x = stats(a1, key)
        return x if x["gauges"]["queueDepth"] == 3 and x["gauges"]["shardsHeld"] == SHARDS else None
    cur = wait_until(settled, 30, interval=0.3, msg=lambda: stats(a1, key))
    assert cur["dispatchers"] == 2 and cur["staleDispatchers"] == 0 and cur["nodes"] == 4, cur
    assert cur["gauges"]["oldestPendingMs"] > 0 and cur["gauges"]["inFlight"] >= 0, cur
    assert cur["counters"]["accepted"] - base["counters"]["accepted"] == 8, (base, cur)
    assert cur["counters"]["rejected"] - base["counters"]["rejected"] == 1, (base, cur)
    assert cur["counters"]["statusChanges"]["DELIVERED"] - base["counters"]["statusChanges"]["DELIVERED"] >= 5
    assert cur["counters"]["sent"] - base["counters"]["sent"] >= 5
    assert cur["counters"]["acks"]["applied"] - base["counters"]["acks"]["applied"] >= 5

    # the sums are those of the hashes: every counter lies between a read before and one after
    before = hashes(s)
    x = stats(a2, key)  # the other ingress answers the same figures
    after = hashes(s)
    assert x["nodes"] == len(after) == 4
    for name, field in COUNTERS.items():
        assert field_sum(before, field) <= x["counters"][name] <= field_sum(after, field), (name, before, x)
    for name, field in (("applied", "ack_applied"), ("ignored", "ack_ignored"), ("unknownId", "ack_unknown_id")):
        assert field_sum(before, field) <= x["counters"]["acks"][name] <= field_sum(after, field), name
    for st_name in ("DELIVERED", "COMPLETED", "NOT_DELIVERED"):
        f = "status_" + st_name.lower()
        assert field_sum(before, f) <= x["counters"]["statusChanges"][st_name] <= field_sum(after, f), st_name
    disp = [h for n, h in after.items() if n.startswith("dispatcher")]
    assert len(disp) == 2 and all("gauge_queue_depth" in h and "flushed_at_ms" in h for h in disp)
    assert not any("gauge_queue_depth" in h for n, h in after.items() if n.startswith("ingress"))
    assert sum(h["gauge_shards_held"] for h in disp) == SHARDS
    assert abs(x["time"] - harness.now_ms()) < 5000


def test_stale_gauges_are_not_summed(cluster):
    """A hash with gauges flushed longer ago than the bound counts its counters, not its gauges."""
    s = cluster
    a1 = s.apis[0]
    wait_until(lambda: stats(a1, s.admin_key)["dispatchers"] == 2, 20)
    cur = stats(a1, s.admin_key)
    now = harness.now_ms()
    fake = {"producer_accepted": 1000, "gauge_queue_depth": 70, "gauge_in_flight": 7, "gauge_scheduled": 3,
            "gauge_oldest_pending_ms": 10 ** 9, "gauge_shards_held": 5, "gauge_backlog_at_ms": now}
    s.redis_call(lambda r: r.hset(s.prefix + "metrics:ghost", mapping=dict(fake, flushed_at_ms=now - STALE_MS - 5000)))
    # a new hash is found by the next walk of the keyspace (at most 10 s after the last one ended)
    x = wait_until(lambda: (lambda x: x if x["nodes"] == cur["nodes"] + 1 else None)(stats(a1, s.admin_key)), 20,
                   interval=0.3)
    assert x["staleDispatchers"] == 1 and x["dispatchers"] == 2, x
    assert x["counters"]["accepted"] >= cur["counters"]["accepted"] + 1000
    assert x["gauges"]["queueDepth"] < 70 and x["gauges"]["shardsHeld"] == SHARDS, x
    # the same hash, freshly flushed, counts: its figures are added and its oldest age is the maximum
    s.redis_call(lambda r: r.hset(s.prefix + "metrics:ghost", "flushed_at_ms", harness.now_ms()))
    y = stats(a1, s.admin_key)
    assert y["dispatchers"] == 3 and y["staleDispatchers"] == 0, y
    assert y["gauges"]["shardsHeld"] == SHARDS + 5 and y["gauges"]["oldestPendingMs"] == 10 ** 9, y
    assert y["gauges"]["queueDepth"] >= 70 and y["gauges"]["inFlight"] >= 7, y
    # a hash that expired disappears from the figures
    s.redis_call(lambda r: r.delete(s.prefix + "metrics:ghost"))
    assert stats(a1, s.admin_key)["nodes"] == cur["nodes"]


def test_killed_dispatcher_stops_counting(cluster):
    s = cluster
    a1 = s.apis[0]
    for i in range(4):
        assert a1.call("POST", "/v1/devices/stats-away/messages", s.admin_key, {"command": "c%d" % i})[0] == 201
    wait_until(lambda: stats(a1, s.admin_key)["gauges"]["queueDepth"] == 4, 30, interval=0.3)
    victim = [n for n in s.nodes if n.service == "dispatcher"][1]
    victim.kill()
    killed_at = harness.now_ms()
    # after the bound its gauges are skipped, and the survivor's rounds report every shard
    x = wait_until(lambda: (lambda x: x if x["staleDispatchers"] == 1 and x["gauges"]["shardsHeld"] == SHARDS
                            and x["gauges"]["queueDepth"] == 4 else None)(stats(a1, s.admin_key)),
                   STALE_MS / 1000 + 30, interval=0.5, msg=lambda: stats(a1, s.admin_key))
    assert harness.now_ms() - killed_at >= STALE_MS - 2000  # not skipped before the bound
    assert x["dispatchers"] == 1 and x["nodes"] == 4, x


def test_stats_auth(cluster):
    s = cluster
    a1 = s.apis[0]
    st, _, b = a1.call("GET", "/v1/stats")
    assert st == 401, b
    assert a1.call("GET", "/v1/stats", "drk_nope_nope")[0] == 401
    pkey = ctl(s, "key", "create", "producer")[0]
    dkey = ctl(s, "key", "create", "device", "d1")[0]
    for k in (pkey, dkey):
        st, _, b = a1.call("GET", "/v1/stats", k)
        assert st == 403 and b["error"]["code"] == "FORBIDDEN", b
    # a DEVISE login token is no operator's
    a1.create(s.admin_key, "stats-dev", pw="pw-stats-123")
    tok = a1.token("stats-dev", "pw-stats-123")
    assert a1.call("GET", "/v1/stats", tok)[0] == 403
    assert a1.call("POST", "/v1/stats", s.admin_key)[0] == 405
    assert stats(a1, s.admin_key)["nodes"] >= 4
