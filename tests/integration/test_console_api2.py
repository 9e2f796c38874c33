"""The console's fleet endpoints: the device list (GET /v1/devices), rollouts (/v1/rollouts) and API
keys over REST (/v1/keys). docs/console-api.md §3-5 is the contract."""
import time

import pytest

import harness
from harness import stays_true, wait_until
from test_registry import Api, ctl, operator_password


@pytest.fixture
def api(stack_factory):
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "auth.bcrypt_cost": 4, "http.key_cache_ms": 300,
                           "http.max_body": 1048576})  # a rollout of 10000 devices needs about 150 kB
    a = Api(stack, port)
    a.admin_pw = operator_password(stack)
    a.admin = a.token("admin", a.admin_pw)
    return a


def ok(api, method, path, token, body=None, status=200):
    st, _, b = api.call(method, path, token, body)
    assert st == status, (method, path, st, b)
    return b


def device_messages(api, dev):
    return ok(api, "GET", "/v1/devices/%s/messages?limit=100" % dev, api.admin)["messages"]


# ---- API keys ---------------------------------------------------------------------------------------

def test_keys_create_use_list_revoke(api):
    made = ok(api, "POST", "/v1/keys", api.admin, {"scope": "producer", "name": "line 1"}, 201)
    assert made["key"].startswith("drk_" + made["id"] + "_") and made["scope"] == "producer"
    assert made["device"] is None and made["name"] == "line 1" and made["revoked"] is False
    assert made["createdAt"] > 0
    pkey = made["key"]
    # the producer key works for its scope, and only for it
    assert api.call("POST", "/v1/devices/k1/messages", pkey, {"command": "c"})[0] == 201
    assert api.call("PUT", "/v1/devices/k1/pacing", pkey, {"intervalMs": 10})[0] == 403
    assert api.call("GET", "/v1/keys", pkey)[0] == 403
    dev = ok(api, "POST", "/v1/keys", api.admin, {"scope": "device", "device": "k1"}, 201)
    assert dev["device"] == "k1" and dev["name"] == ""
    assert api.call("GET", "/v1/devices/k1", dev["key"])[0] == 200
    assert api.call("GET", "/v1/devices/k2", dev["key"])[0] == 403
    adm = ok(api, "POST", "/v1/keys", api.admin, {"scope": "admin"}, 201)
    assert api.call("GET", "/v1/keys", adm["key"])[0] == 200
    # keys made by drover-ctl are listed too; secrets and hashes never are
    cid = ctl(api.stack, "key", "create", "producer", "from-ctl")[0].split("_")[1]
    listed = ok(api, "GET", "/v1/keys", api.admin)["keys"]
    ids = [k["id"] for k in listed]
    assert ids == sorted(ids) and {made["id"], dev["id"], adm["id"], cid} <= set(ids)
    for k in listed:
        assert set(k) == {"id", "scope", "device", "name", "createdAt", "revoked"}, k
    assert pkey.split("_", 2)[2] not in str(listed)  # the secret may itself hold "_"
    by_id = {k["id"]: k for k in listed}
    assert by_id[cid]["name"] == "from-ctl" and by_id[dev["id"]]["device"] == "k1"
    # revoke: 204, then the key stops working (within http.key_cache_ms)
    st, _, _ = api.call("DELETE", "/v1/keys/" + made["id"], api.admin)
    assert st == 204
    wait_until(lambda: api.call("POST", "/v1/devices/k1/messages", pkey, {"command": "c"})[0] == 401, 5)
    assert {k["id"]: k for k in ok(api, "GET", "/v1/keys", api.admin)["keys"]}[made["id"]]["revoked"] is True
    assert api.call("POST", "/v1/devices/k1/messages", adm["key"], {"command": "c"})[0] == 201


def test_keys_bad_input(api):
    before = ok(api, "GET", "/v1/keys", api.admin)["keys"]
    for body in ({"scope": "root"}, {"scope": "PRODUCER"}, {}, {"scope": 1}, {"scope": "device"},
                 {"scope": "device", "device": "a/b"}, {"scope": "device", "device": ""},
                 {"scope": "producer", "device": "d1"}, {"scope": "producer", "name": "x" * 129},
                 {"scope": "producer", "name": 5}, []):
        st, _, b = api.call("POST", "/v1/keys", api.admin, body)
        assert st == 400 and b["error"]["code"] in ("BAD_FIELD", "BAD_DEVICE_ID", "BAD_JSON"), (body, st, b)
    assert api.call("POST", "/v1/keys", api.admin, raw="{nope")[0] == 400
    assert ok(api, "GET", "/v1/keys", api.admin)["keys"] == before
    for kid in ("0123456789ab", "nothex", "0123456789abc"):
        st, _, b = api.call("DELETE", "/v1/keys/" + kid, api.admin)
        assert st == 404 and b["error"]["code"] == "NOT_FOUND", (kid, st, b)
    # admin only: DEVISE logins, producer and device keys are refused
    api.create(api.admin, "kd1", "pw-kd1-12345")
    dtok = api.token("kd1", "pw-kd1-12345")
    pkey = ctl(api.stack, "key", "create", "producer", "p")[0]
    for t in (dtok, pkey):
        assert api.call("GET", "/v1/keys", t)[0] == 403
        assert api.call("POST", "/v1/keys", t, {"scope": "admin"})[0] == 403
        assert api.call("DELETE", "/v1/keys/0123456789ab", t)[0] == 403
    assert api.call("GET", "/v1/keys")[0] == 401


# ---- device list ------------------------------------------------------------------------------------

def list_all(api, token, prefix="", limit=2):
    """Pages through GET /v1/devices; returns the devices and the number of pages."""
    out, after, pages = [], None, 0
    while True:
        q = "/v1/devices?limit=%d&prefix=%s" % (limit, prefix) + ("&after=" + after if after else "")
        b = ok(api, "GET", q, token)
        assert len(b["devices"]) <= limit
        out += b["devices"]
        pages += 1
        after = b["nextAfter"]
        if after is None:
            return out, pages
        assert pages < 100


def test_device_list_paging_and_fields(api):
    for d in ("fl-reg-b", "fl-reg-a", "fl-both"):
        api.create(api.admin, d, "pw-" + d + "-1", description="desc " + d)
    api.create(api.admin, "fl-operator", "pw-operator-1", role="MAN")
    for d in ("fl-work-2", "fl-work-1", "fl-both", "zz-other"):
        ok(api, "POST", "/v1/devices/%s/messages" % d, api.admin, {"command": "c", "notBefore": harness.now_ms() + 600000}, 201)
    ok(api, "PUT", "/v1/devices/fl-work-1/pacing", api.admin, {"intervalMs": 250, "window": 3})
    ok(api, "POST", "/v1/devices/fl-work-2/messages", api.admin, {"command": "now"}, 201)
    devs, pages = list_all(api, api.admin, "fl-")
    names = [d["device"] for d in devs]
    assert names == ["fl-both", "fl-reg-a", "fl-reg-b", "fl-work-1", "fl-work-2"] and pages >= 3, names
    by = {d["device"]: d for d in devs}
    assert by["fl-reg-a"]["registered"] is True and by["fl-reg-a"]["description"] == "desc fl-reg-a"
    assert by["fl-reg-a"]["queued"] == 0 and by["fl-reg-a"]["lastSendAt"] is None
    assert by["fl-work-1"]["registered"] is False and by["fl-work-1"]["description"] == ""
    assert by["fl-work-1"]["scheduled"] == 1 and by["fl-work-1"]["intervalMs"] == 250
    assert by["fl-work-1"]["window"] == 3 and by["fl-work-1"]["mode"] is None
    assert by["fl-both"]["registered"] is True and by["fl-both"]["scheduled"] == 1
    assert set(by["fl-work-2"]) == {"device", "registered", "description", "queued", "inFlight", "scheduled",
                                    "nextSendAt", "lastSendAt", "lastAckAt", "intervalMs", "window", "mode",
                                    "maxMessageBytes"}
    # every page size gives the same listing; no prefix lists the other device too, not the operator
    for limit in (1, 3, 500):
        assert [d["device"] for d in list_all(api, api.admin, "fl-", limit)[0]] == names
    everything = [d["device"] for d in list_all(api, api.admin, "", 500)[0]]
    assert "zz-other" in everything and "fl-operator" not in everything and everything == sorted(everything)
    assert [d["device"] for d in list_all(api, api.admin, "fl-work", 500)[0]] == ["fl-work-1", "fl-work-2"]
    b = ok(api, "GET", "/v1/devices?after=fl-reg-b&prefix=fl-", api.admin)
    assert [d["device"] for d in b["devices"]] == ["fl-work-1", "fl-work-2"] and b["nextAfter"] is None
    # producer keys may list; device keys and DEVISE logins may not
    pkey = ctl(api.stack, "key", "create", "producer", "p")[0]
    assert ok(api, "GET", "/v1/devices?prefix=fl-reg", pkey)["devices"][0]["device"] == "fl-reg-a"
    dkey = ctl(api.stack, "key", "create", "device", "fl-reg-a")[0]
    assert api.call("GET", "/v1/devices", dkey)[0] == 403
    assert api.call("GET", "/v1/devices", api.token("fl-reg-a", "pw-fl-reg-a-1"))[0] == 403
    assert api.call("GET", "/v1/devices")[0] == 401
    for q in ("limit=0", "limit=501", "limit=x", "limit=", "prefix=" + "p" * 300, "after=" + "a" * 300, "prefix=%zz"):
        st, _, e = api.call("GET", "/v1/devices?" + q, api.admin)
        assert st == 400 and e["error"]["code"] == "BAD_FIELD", (q, st, e)


def test_device_list_forgets_devices_without_work(api):
    """A device leaves the index once its work is done and its state expired (bounded cost: the stale
    name is examined once)."""
    mid = ok(api, "POST", "/v1/devices/gone-1/messages", api.admin,
             {"command": "c", "notBefore": harness.now_ms() + 600000}, 201)["id"]
    assert [d["device"] for d in ok(api, "GET", "/v1/devices?prefix=gone-", api.admin)["devices"]] == ["gone-1"]
    ok(api, "POST", "/v1/messages/%d/cancel" % mid, api.admin)
    r = api.stack.r
    p = api.stack.prefix
    wait_until(lambda: not any(r.zscore(k, "gone-1") for k in r.scan_iter(match=p + "{*}due")), 10)
    for k in r.scan_iter(match=p + "{*}d:gone-1"):
        r.delete(k)  # what the retention would do
    assert ok(api, "GET", "/v1/devices?prefix=gone-", api.admin)["devices"] == []
    assert not any(r.zscore(k, "gone-1") is not None for k in r.scan_iter(match=p + "{*}dx"))


# ---- rollouts ---------------------------------------------------------------------------------------

def create_rollout(api, token, body, status=201):
    return ok(api, "POST", "/v1/rollouts", token, body, status)


def get_rollout(api, rid, token=None):
    return ok(api, "GET", "/v1/rollouts/%d" % rid, token or api.admin)


def wait_state(api, rid, state, timeout):
    wait_until(lambda: get_rollout(api, rid)["state"] == state, timeout, interval=0.2)
    return get_rollout(api, rid)


def one_message_each(api, devs, command):
    for d in devs:
        msgs = device_messages(api, d)
        assert len(msgs) == 1 and msgs[0]["command"] == command, (d, msgs)


def test_rollout_never_faster_than_its_rate(api):
    devs = ["rr-%02d" % i for i in range(30)]
    t0 = time.monotonic()
    ro = create_rollout(api, api.admin, {"command": "update", "data": {"v": 2}, "devices": devs, "ratePerSecond": 10})
    assert ro["state"] == "running" and ro["total"] == 30 and ro["ratePerSecond"] == 10
    assert ro["counts"]["queued"] == 30 and ro["data"] == {"v": 2} and ro["believerGuarantee"] == "RECEIPT_CONFIRMATION"
    samples = []
    while True:
        r = get_rollout(api, ro["id"])
        elapsed = time.monotonic() - t0
        samples.append((round(elapsed, 2), r["enqueued"]))
        # rate x time plus the burst (rate / 10 = 1 device): a lower bound on time, never a timing guess
        assert r["enqueued"] <= 10 * elapsed + 1, samples
        if r["state"] == "done":
            break
        assert elapsed < 60, samples
        time.sleep(0.2)
    assert r["enqueued"] == 30 and sum(r["counts"].values()) - r["counts"]["completedWithError"] == 30, r
    one_message_each(api, devs, "update")


def test_rollout_pause_resume(api):
    devs = ["rp-%02d" % i for i in range(30)]
    ro = create_rollout(api, api.admin, {"command": "p", "devices": devs, "ratePerSecond": 10})
    wait_until(lambda: get_rollout(api, ro["id"])["enqueued"] >= 5, 20)
    assert ok(api, "POST", "/v1/rollouts/%d/pause" % ro["id"], api.admin)["state"] == "paused"
    time.sleep(0.5)  # a batch being accepted when the pause came may still be recorded
    held = get_rollout(api, ro["id"])["enqueued"]
    assert held < 30
    stays_true(lambda: get_rollout(api, ro["id"])["enqueued"] == held, 1.5, interval=0.1)
    st, _, e = api.call("POST", "/v1/rollouts/%d/pause" % ro["id"], api.admin)
    assert st == 409 and e["error"]["code"] == "NOT_RUNNING"
    assert ok(api, "POST", "/v1/rollouts/%d/resume" % ro["id"], api.admin)["state"] == "running"
    st, _, e = api.call("POST", "/v1/rollouts/%d/resume" % ro["id"], api.admin)
    assert st == 409 and e["error"]["code"] == "NOT_PAUSED"
    done = wait_state(api, ro["id"], "done", 30)
    assert done["enqueued"] == 30
    one_message_each(api, devs, "p")
    st, _, e = api.call("POST", "/v1/rollouts/%d/cancel" % ro["id"], api.admin)
    assert st == 409 and e["error"]["code"] == "FINISHED"


def test_rollout_cancel_stops_everything(api):
    devs = ["rc-%02d" % i for i in range(20)]
    sims = [api.stack.device(d) for d in devs]  # they receive but never acknowledge
    ro = create_rollout(api, api.admin, {"command": "c", "devices": devs, "ratePerSecond": 4})
    wait_until(lambda: sum(s.count() for s in sims) >= 3, 20)
    got = ok(api, "POST", "/v1/rollouts/%d/cancel" % ro["id"], api.admin)
    assert got["state"] == "cancelled" and got["enqueued"] < 20
    time.sleep(0.5)
    r = get_rollout(api, ro["id"])
    enq = r["enqueued"]
    assert r["counts"]["cancelled"] == 20 and r["counts"]["queued"] == 0 and r["counts"]["sent"] == 0, r
    arrived = [s.count() for s in sims]
    assert sum(1 for a in arrived if a > 0) <= enq
    # nothing more is enqueued or sent, not even the re-sends of the unacknowledged ones
    stays_true(lambda: [s.count() for s in sims] == arrived and
                      get_rollout(api, ro["id"])["enqueued"] == enq, 2.5, interval=0.1)
    for d in devs:
        assert all(m["status"] == "CANCELLED" for m in device_messages(api, d))
    for op, code in (("cancel", "FINISHED"), ("pause", "NOT_RUNNING"), ("resume", "NOT_PAUSED")):
        st, _, e = api.call("POST", "/v1/rollouts/%d/%s" % (ro["id"], op), api.admin)
        assert st == 409 and e["error"]["code"] == code


def test_rollout_progress_counts_what_devices_did(api):
    delivered = [api.stack.device("rg-d%d" % i, auto_ack=True) for i in range(3)]
    completed = [api.stack.device("rg-c%d" % i, auto_ack=True, complete_after=0.05) for i in range(3)]
    errored = [api.stack.device("rg-e%d" % i, auto_ack=True, complete_after=0.05,
                                complete_status="COMPLETED_WITH_ERROR") for i in range(2)]
    silent = ["rg-s0", "rg-s1"]  # never connected
    sims = delivered + completed + errored
    devs = [s.device_id for s in sims] + silent
    ro = create_rollout(api, api.admin, {"command": "g", "devices": devs, "ratePerSecond": 50})
    want = {"delivered": 3, "completed": 3, "completedWithError": 2, "failed": 2}

    def matches():
        c = get_rollout(api, ro["id"])["counts"]
        return all(c[k] == v for k, v in want.items()) and c["queued"] + c["sent"] == 2

    wait_until(matches, 20, interval=0.2)
    c = get_rollout(api, ro["id"])["counts"]
    assert c["expired"] == 0 and c["cancelled"] == 0 and c["forgotten"] == 0
    assert all(len(s.acked) == 1 for s in sims)


def test_rollout_survives_ingress_restart(api):
    devs = ["rs-%02d" % i for i in range(30)]
    ro = create_rollout(api, api.admin, {"command": "r", "devices": devs, "ratePerSecond": 10})
    wait_until(lambda: get_rollout(api, ro["id"])["enqueued"] >= 8, 20)
    api.stack.ingress.restart(kill=True)  # SIGKILL mid-rollout, then a new process
    done = wait_state(api, ro["id"], "done", 40)
    assert done["enqueued"] == 30
    one_message_each(api, devs, "r")  # nothing lost, nothing twice


def test_rollout_bad_input_and_access(api):
    good = {"command": "x", "devices": ["ba-1"]}
    bad = [{}, {"command": "x"}, dict(good, query={"prefix": "ba-"}), dict(good, devices=[]),
           dict(good, devices=["a/b"]), dict(good, devices=["ba-1", "ba-1"]), dict(good, devices="ba-1"),
           dict(good, devices=["d%d" % i for i in range(10001)]), dict(good, devices=[5]),
           dict(good, ratePerSecond=0), dict(good, ratePerSecond=1001), dict(good, ratePerSecond="5"),
           dict(good, command=""), dict(good, command="c" * 1025), dict(good, command=7), dict(good, data=[1]),
           dict(good, believerGuarantee="MAYBE"), dict(good, ttlMs=0), dict(good, ttlMs=31536000001),
           {"command": "x", "query": {"prefix": 5}}, {"command": "x", "query": {"prefix": "x", "y": 1}},
           {"command": "x", "query": {"prefix": "nothing-matches-"}}, dict(good, extra=1), [good]]
    for body in bad:
        st, _, e = api.call("POST", "/v1/rollouts", api.admin, body)
        assert st == 400, (body if len(str(body)) < 200 else "big", st, e)
    assert api.call("POST", "/v1/rollouts", api.admin, raw="{")[0] == 400
    assert ok(api, "GET", "/v1/rollouts", api.admin) == {"rollouts": [], "nextAfter": None}
    for method, path in (("GET", "/v1/rollouts/999"), ("POST", "/v1/rollouts/999/pause"),
                         ("POST", "/v1/rollouts/999/resume"), ("POST", "/v1/rollouts/999/cancel")):
        st, _, e = api.call(method, path, api.admin)
        assert st == 404 and e["error"]["code"] == "NOT_FOUND", (path, st, e)
    assert api.call("GET", "/v1/rollouts/abc", api.admin)[0] == 400
    for q in ("limit=0", "limit=101", "limit=x", "after=0", "after=x"):
        assert api.call("GET", "/v1/rollouts?" + q, api.admin)[0] == 400, q
    # producers see and control only their own; device keys and DEVISE logins nothing
    p1 = ctl(api.stack, "key", "create", "producer", "p1")[0]
    p2 = ctl(api.stack, "key", "create", "producer", "p2")[0]
    mine = create_rollout(api, p1, dict(good, ratePerSecond=1000))
    assert get_rollout(api, mine["id"], p1)["id"] == mine["id"]
    assert api.call("GET", "/v1/rollouts/%d" % mine["id"], p2)[0] == 404
    assert api.call("POST", "/v1/rollouts/%d/cancel" % mine["id"], p2)[0] == 404
    assert ok(api, "GET", "/v1/rollouts", p2)["rollouts"] == []
    assert [r["id"] for r in ok(api, "GET", "/v1/rollouts", p1)["rollouts"]] == [mine["id"]]
    api.create(api.admin, "ba-dv", "pw-ba-dv-123")
    dtok = api.token("ba-dv", "pw-ba-dv-123")
    dkey = ctl(api.stack, "key", "create", "device", "ba-1")[0]
    for t in (dtok, dkey):
        assert api.call("POST", "/v1/rollouts", t, good)[0] == 403
        assert api.call("GET", "/v1/rollouts", t)[0] == 403
        assert api.call("GET", "/v1/rollouts/%d" % mine["id"], t)[0] == 403
    # the messages carry the producer's key: its search finds them
    wait_state(api, mine["id"], "done", 10)
    assert [m["device"] for m in ok(api, "GET", "/v1/messages?command=x", p1)["messages"]] == ["ba-1"]
    # paging, newest first; a query rollout takes the devices the device list shows
    for i in range(2):
        create_rollout(api, api.admin, dict(good, command="page%d" % i))
    q = create_rollout(api, api.admin, {"command": "q", "query": {"prefix": "ba-"}})
    assert q["total"] == 2  # ba-1 (has work) and ba-dv (registered)
    page = ok(api, "GET", "/v1/rollouts?limit=2", api.admin)
    assert [r["id"] for r in page["rollouts"]] == [q["id"], q["id"] - 1] and page["nextAfter"] == q["id"] - 1
    rest = ok(api, "GET", "/v1/rollouts?limit=2&after=%d" % page["nextAfter"], api.admin)
    assert [r["id"] for r in rest["rollouts"]] == [q["id"] - 2, mine["id"]] and rest["nextAfter"] is None
    assert "counts" not in rest["rollouts"][0]


def test_rollout_of_ten_thousand_devices(api):
    devs = ["big-%05d" % i for i in range(10000)]
    ro = create_rollout(api, api.admin, {"command": "b", "believerGuarantee": "NO", "devices": devs,
                                         "ratePerSecond": 1000})
    assert ro["total"] == 10000
    wait_until(lambda: get_rollout(api, ro["id"])["enqueued"] >= 500, 30, interval=0.2)
    got = ok(api, "POST", "/v1/rollouts/%d/cancel" % ro["id"], api.admin)
    c = got["counts"]
    assert got["state"] == "cancelled" and sum(c.values()) - c["completedWithError"] == 10000, got
    # NO messages are sent at once and never acknowledged; the rest never left the rollout
    assert c["cancelled"] + c["sent"] == 10000 and c["cancelled"] >= 10000 - got["enqueued"], got


def test_rollout_two_ingress_nodes_share_the_rate(api):
    """Both nodes look for work every tick; the lease lets one advance the rollout and the bucket in
    Redis keeps the rate whoever advances it."""
    second = api.stack.add_ingress(overrides={"http.port": harness.free_port()})
    second.wait_log(r"event=http_listening", 20)
    devs = ["r2-%02d" % i for i in range(30)]
    t0 = time.monotonic()
    ro = create_rollout(api, api.admin, {"command": "two", "devices": devs, "ratePerSecond": 10})
    while True:
        r = get_rollout(api, ro["id"])
        elapsed = time.monotonic() - t0
        assert r["enqueued"] <= 10 * elapsed + 1, (elapsed, r)
        if r["state"] == "done":
            break
        assert elapsed < 60
        time.sleep(0.2)
    one_message_each(api, devs, "two")


def test_rollout_handed_out_again_never_duplicates(api):
    """What a node leaves when it dies after accepting a batch and before recording it: the devices
    are enqueued but the rollout does not know. Made here by rolling the records back; the next take
    hands the devices out again and the idempotency key yields the original messages."""
    devs = ["rd-%02d" % i for i in range(12)]
    ro = create_rollout(api, api.admin, {"command": "again", "devices": devs, "ratePerSecond": 50})
    wait_state(api, ro["id"], "done", 20)
    before = {d: [m["id"] for m in device_messages(api, d)] for d in devs}
    r, k = api.stack.r, "%s{ro}" % api.stack.prefix
    r.delete("%smi:%d" % (k, ro["id"]))
    r.hset("%sr:%d" % (k, ro["id"]), mapping={"st": "running", "enq": 0, "tk": 0})
    r.sadd(k + "run", ro["id"])
    done = wait_state(api, ro["id"], "done", 20)
    assert done["enqueued"] == 12 and done["counts"]["queued"] + done["counts"]["sent"] == 12, done
    assert {d: [m["id"] for m in device_messages(api, d)] for d in devs} == before


def test_finished_rollouts_expire_with_their_messages(stack_factory):
    """A finished rollout is kept as long as its messages: until the last one's deadline (here the default
    deliver-by, 1 s) has passed and its retention (3 s) with it; then its keys expire and it leaves the
    listings, so rollouts do not pile up in Redis. Live rollouts stay listed whatever expired around them."""
    port = harness.free_port()
    stack = stack_factory({"http.port": port, "auth.bcrypt_cost": 4, "retention_s": 3,
                           "dispatch.default_ttl_ms": 1000})
    api = Api(stack, port)
    api.admin = api.token("admin", operator_password(stack))
    done = create_rollout(api, api.admin, {"command": "x", "devices": ["re-1", "re-2"], "ratePerSecond": 100})
    wait_state(api, done["id"], "done", 20)
    cancelled = create_rollout(api, api.admin, {"command": "y", "devices": ["re-%d" % i for i in range(50)],
                                                "ratePerSecond": 1})
    ok(api, "POST", "/v1/rollouts/%d/cancel" % cancelled["id"], api.admin)
    for rid in (done["id"], cancelled["id"]):
        ttl = stack.redis_call(lambda r: r.ttl("%s{ro}r:%d" % (stack.prefix, rid)))
        assert 0 < ttl <= 4, "finished rollout %d: ttl %s" % (rid, ttl)
    running = create_rollout(api, api.admin, {"command": "z", "devices": ["rz-%d" % i for i in range(60)],
                                              "ratePerSecond": 1})  # runs for a minute
    assert stack.redis_call(lambda r: r.ttl("%s{ro}r:%d" % (stack.prefix, running["id"]))) == -1
    for rid in (done["id"], cancelled["id"]):
        wait_until(lambda: api.call("GET", "/v1/rollouts/%d" % rid, api.admin)[0] == 404, 10)
    create_rollout(api, api.admin, {"command": "w", "devices": ["re-8"], "ratePerSecond": 1})  # prunes listings
    listed = [r["id"] for r in ok(api, "GET", "/v1/rollouts", api.admin)["rollouts"]]
    assert done["id"] not in listed and cancelled["id"] not in listed and running["id"] in listed, listed
    left = stack.redis_call(lambda r: r.zrange("%s{ro}all" % stack.prefix, 0, -1))
    assert str(done["id"]) not in left and str(cancelled["id"]) not in left, left
    # a page of one passes over ids that expired before a create pruned them
    newer = create_rollout(api, api.admin, {"command": "v", "devices": ["rv-%d" % i for i in range(60)],
                                            "ratePerSecond": 1})
    ok(api, "POST", "/v1/rollouts/%d/cancel" % newer["id"], api.admin)
    stack.redis_call(lambda r: r.delete("%s{ro}r:%d" % (stack.prefix, newer["id"])))  # as if it expired
    pages, after = [], None
    while True:
        page = ok(api, "GET", "/v1/rollouts?limit=1" + ("&after=%d" % after if after else ""), api.admin)
        pages += [r["id"] for r in page["rollouts"]]
        after = page["nextAfter"]
        if after is None:
            break
    assert newer["id"] not in pages and running["id"] in pages, pages
