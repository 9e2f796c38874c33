"""The Redis function library (common/lua/drover.lua) on its own, against a real redis-server: the key
layout, id scheme, group commit answers, bounded history, retention and the status log as outbox.
Each test calls the functions exactly as common/src/store.c does.
"""
import os
import time

import pytest

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
P, S, RET, NODE = "t:", 16, 600, "n1"
POLICY = [1, 100, 1000, 60000, 2, 0, 42]  # window, interval, ack timeout, retry max, back-off, jitter, seed


@pytest.fixture
def r(tmp_path):
    srv = harness.RedisServer(str(tmp_path))
    srv.start()
    c = srv.client()
    with open(os.path.join(ROOT, "common", "lua", "drover.lua")) as f:
        c.function_load(f.read(), replace=True)
    yield c
    c.close()
    srv.stop()


def shard(dev):
    return harness.shard_of(dev, S)


def tag(sh):
    return "%s{%d}" % (P, sh)


def msg_fields(dev, g="RECEIPT_CONFIRMATION", cmd="c", data="", tmp="", pd="", ttl=0, dby=0, mx=0, nb=0, idk="",
               fp="fp", ext=0, key="", size=None):
    size = size if size is not None else 110 + len(cmd) + len(data)
    return [dev, shard(dev), g, cmd, data, tmp, pd, ttl, dby, mx, nb, idk, fp, ext, key, size]


def accept(r, msgs, token="", default_ttl=0, max_message=0):
    shards = []
    for m in msgs:
        if m[1] not in shards:
            shards.append(m[1])
    args = [P, S, RET, NODE, 2147483647, token, 60, default_ttl, max_message, len(msgs)]
    for m in msgs:
        args += m
    return r.fcall("accept_batch", len(shards), *[tag(s) for s in shards], *args)


def ack(r, acks):
    keys = sorted({tag(int(a[1]) % S) for a in acks})
    args = [P, S, RET, NODE, len(acks)]
    for a in acks:
        args += list(a)
    return r.fcall("ack_batch", len(keys), *keys, *args)


def confirm(r, notes):
    """What a node does once the broker confirmed its publishes: XACK each note in its shard's log."""
    for i in range(0, len(notes), 9):
        r.xack("%s{%s}log" % (P, notes[i]), "pub", notes[i + 1])


def take_lease(r, sh):
    r.set("%slease" % tag(sh), "%s 1" % NODE)


def dispatch(r, sh):
    return r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *POLICY)


def get(r, mid):
    return r.fcall("get", 1, tag(mid % S), P, S, RET, NODE, mid)[0]


def test_ids_carry_their_shard_and_keys_their_tag(r):
    res, notes = accept(r, [msg_fields("dev-a"), msg_fields("dev-b"), msg_fields("dev-a")])
    ids = [int(res[i + 1]) for i in range(0, len(res), 4)]
    assert [res[i] for i in range(0, len(res), 4)] == ["OK"] * 3
    assert ids[0] % S == shard("dev-a") and ids[1] % S == shard("dev-b") and ids[2] % S == shard("dev-a")
    assert ids[2] == ids[0] + S, "per-shard counter: the next id of the same shard"
    for k in r.keys(P + "*"):
        assert k.startswith(P + "{"), "key without its shard's hash tag: %s" % k
    # every change is logged and claimed for the caller, 8 fields each
    assert len(notes) == 3 * 9 and notes[4] == "NOT_DELIVERED"


def test_batch_token_makes_a_retry_return_the_first_answer(r):
    first, notes1 = accept(r, [msg_fields("dev-t"), msg_fields("dev-u")], token="tok-1")
    again, notes = accept(r, [msg_fields("dev-t"), msg_fields("dev-u")], token="tok-1")
    # the same answer, and the notifications the first call claimed (its reply was lost, so they were
    # never published)
    assert again == first and notes == notes1
    assert sum(int(v) for k in r.keys(P + "{*}seq") for v in [r.get(k)]) == 2, "the retry stored again"


def test_idempotency_key_dup_and_conflict(r):
    res, _ = accept(r, [msg_fields("dev-i", idk="k1", fp="A")])
    mid = res[1]
    dup, notes = accept(r, [msg_fields("dev-i", idk="k1", fp="A")])
    assert dup[:3] == ["DUP", mid, "NOT_DELIVERED"] and len(notes) == 9, "receipt repeated with the original id"
    conflict, _ = accept(r, [msg_fields("dev-i", idk="k1", fp="B")])
    assert conflict[:2] == ["CONFLICT", mid]


def test_a_repeated_receipt_is_the_change_the_next_one_waits_for(r):
    """A duplicate submission repeats the receipt as a new log entry (the unconfirmed first one is
    replaced). The record must name the repeat as its last change: the next change, made by another node
    while the repeat is on its way, waits for it instead of overtaking it."""
    sh = shard("dev-dup")
    take_lease(r, sh)
    res, first = accept(r, [msg_fields("dev-dup", idk="k2", fp="A", pd="p", tmp="1")])
    mid = int(res[1])
    dup, repeat = accept(r, [msg_fields("dev-dup", idk="k2", fp="A", pd="p", tmp="1")])
    assert dup[0] == "DUP" and repeat[1] != first[1]
    dispatch(r, sh)
    _, notes = r.fcall("ack_batch", 1, tag(sh), P, S, RET, "other-node", 1, "dev-dup", mid, "DELIVERED")
    assert notes[4] == "DELIVERED" and notes[8] == repeat[1], "DELIVERED must wait for the repeated receipt"


def test_only_last_supersedes_pending_messages_of_the_same_command(r):
    res, n1 = accept(r, [msg_fields("dev-o", cmd="set"), msg_fields("dev-o", cmd="other"),
                         msg_fields("dev-o", g="RECEIPT_CONFIRMATION", cmd="set")])
    confirm(r, n1)
    a, b, c = int(res[1]), int(res[5]), int(res[9])
    res2, notes = accept(r, [msg_fields("dev-o", g="ONLY_LAST", cmd="set")])
    assert res2[0] == "OK" and int(res2[3]) == 2
    assert get(r, a)[5] == "CANCELLED" and get(r, c)[5] == "CANCELLED" and get(r, b)[5] == "NOT_DELIVERED"
    statuses = [notes[i + 4] for i in range(0, len(notes), 9)]
    assert statuses == ["CANCELLED", "CANCELLED", "NOT_DELIVERED"]
    # the queue holds only what is still pending
    assert r.xlen("%sq:dev-o" % tag(shard("dev-o"))) == 2


def cmd_calls(r, name):
    return int(r.info("commandstats").get("cmdstat_" + name, {}).get("calls", 0))


def test_only_last_costs_what_it_cancels_not_the_devices_queue(r):
    """ONLY_LAST once scanned the device's whole queue (and before that rewrote a list of every
    pending id), so a device with a long queue paid its length for every ONLY_LAST message: quadratic
    in a mixed backlog. After a (device, command)'s first ONLY_LAST message, messages of that command
    are indexed: later ONLY_LAST messages read the index, never the queue, and cancel exactly the
    pending messages of their command, whatever their guarantee, not-before ones included."""
    dev = "dev-ol"
    sh = shard(dev)
    take_lease(r, sh)
    oi = "%soi:%s" % (tag(sh), dev)
    for i in range(0, 500, 100):  # a backlog of another command
        confirm(r, accept(r, [msg_fields(dev, cmd="other", tmp=str(k)) for k in range(i, i + 100)])[1])
    res, notes = accept(r, [msg_fields(dev, cmd="set")])
    confirm(r, notes)
    first_rc = int(res[1])
    res, notes = accept(r, [msg_fields(dev, g="ONLY_LAST", cmd="set")])  # the first: scans once
    confirm(r, notes)
    assert res[0] == "OK" and int(res[3]) == 1 and get(r, first_rc)[5] == "CANCELLED"
    last = int(res[1])
    for i in range(20):
        batch = [msg_fields(dev, g="RECEIPT_CONFIRMATION", cmd="set"),
                 msg_fields(dev, cmd="set", nb=now_ms(r) + 3600000)]  # not before an hour from now
        res, notes = accept(r, batch)
        confirm(r, notes)
        rc, sched = int(res[1]), int(res[5])
        xrange0, zrange0 = cmd_calls(r, "xrange"), cmd_calls(r, "zrange")
        res, notes = accept(r, [msg_fields(dev, g="ONLY_LAST", cmd="set")])
        assert cmd_calls(r, "xrange") == xrange0, "a later ONLY_LAST message read the queue"
        assert cmd_calls(r, "zrange") == zrange0, "a later ONLY_LAST message read the not-before schedule"
        confirm(r, notes)
        assert res[0] == "OK" and int(res[3]) == 3, res
        assert [get(r, x)[5] for x in (last, rc, sched)] == ["CANCELLED"] * 3
        last = int(res[1])
    assert r.zrange(oi, 0, -1) == ["set\x00%d" % last]
    assert r.xlen("%sq:%s" % (tag(sh), dev)) == 501, "the other command's backlog and the last message"
    # the message retires (here: cancelled through the REST API's function) and leaves the index
    res, notes = r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, last, "")
    assert res[0] == "OK", res
    assert not r.exists(oi), "a retired message left its index entry"
    # an entry whose message is gone is dropped by the next ONLY_LAST message of its command
    r.zadd(oi, {"set\x00999999": 0})
    res, _ = accept(r, [msg_fields(dev, g="ONLY_LAST", cmd="set")])
    assert res[0] == "OK" and int(res[3]) == 0
    assert r.zrange(oi, 0, -1) == ["set\x00%s" % res[1]]


def test_an_unconfirmed_earlier_change_is_published_before_a_later_one(r):
    """A node stored a message and has not confirmed its receipt when another node applies the ack: the
    DELIVERED note names the receipt it must wait for; once that receipt is confirmed it may go; if it
    goes stale (its node died) the waiting node takes it over and publishes it first. Either way the
    producer never sees DELIVERED before NOT_DELIVERED."""
    sh = shard("dev-n")
    take_lease(r, sh)
    res, notes = accept(r, [msg_fields("dev-n", pd="p", tmp="1")])  # claimed by NODE, not confirmed
    mid = int(res[1])
    dispatch(r, sh)
    out, notes2 = r.fcall("ack_batch", 1, tag(sh), P, S, RET, "other-node", 1, "dev-n", mid, "DELIVERED")
    assert out[:2] == ["OK", "DELIVERED"] and len(out) == 3
    assert [notes2[i + 4] for i in range(0, len(notes2), 9)] == ["DELIVERED"], notes2
    assert notes2[8] == notes[1], "the DELIVERED note must wait for the receipt"

    def wait(stale):
        return r.fcall("note_wait", 1, tag(sh), P, S, RET, "other-node", sh, notes2[8], stale)
    assert wait(60000) == 0, "still being published by its node"
    time.sleep(0.05)
    taken = wait(10)  # gone stale: taken over
    assert taken[1] == notes[1] and taken[4] == "NOT_DELIVERED", taken
    pend = r.xpending_range("%slog" % tag(sh), "pub", "-", "+", 10)
    assert {p["consumer"] for p in pend} == {"other-node"}, pend
    confirm(r, taken)
    assert wait(10) == 1, "confirmed: the waiting note may go"


def test_device_message_size_limit_and_default_deadline(r):
    res, _ = accept(r, [msg_fields("dev-z", size=1025), msg_fields("dev-z", size=1024)], max_message=1024)
    assert res[0:4] == ["TOO_LARGE", "", "", 1024] and res[4] == "OK"
    sh = shard("dev-z")
    r.fcall("devset", 1, tag(sh), P, S, RET, NODE, "dev-z", sh, "", "", "", 4096)
    res, _ = accept(r, [msg_fields("dev-z", size=4000)], max_message=1024)
    assert res[0] == "OK", "the device's own limit applies"
    assert r.fcall("devinfo", 1, tag(sh), P, S, RET, NODE, "dev-z", sh)[9] == "4096"
    # without a deadline of its own a message gets the default one
    res, _ = accept(r, [msg_fields("dev-y"), msg_fields("dev-y", ttl=5000)], default_ttl=60000)
    a, b = get(r, int(res[1])), get(r, int(res[5]))
    assert 59000 < int(a[11]) - int(a[6]) <= 60000 and 4000 < int(b[11]) - int(b[6]) <= 5000, (a[11], b[11])


def test_dispatch_is_fenced_without_the_lease(r):
    accept(r, [msg_fields("dev-f")])
    assert dispatch(r, shard("dev-f")) == ["FENCED"]
    take_lease(r, shard("dev-f"))
    out = dispatch(r, shard("dev-f"))
    assert out[0] == "OK" and len(out[5]) == 9 and out[5][1] == "dev-f" and int(out[5][6]) > 0 and int(out[5][7]) > 0
    # MQTT 5 expiry: re-send after 1 s (POLICY), interval 100 ms: below the 2 s margin, so the minimum
    assert out[5][8] == "1"


def test_send_ack_and_retirement(r):
    sh = shard("dev-s")
    take_lease(r, sh)
    res, notes = accept(r, [msg_fields("dev-s", data='{"x":1}')])
    mid = int(res[1])
    r.xack("%slog" % tag(sh), "pub", notes[1])  # the node published the receipt
    out = dispatch(r, sh)
    assert out[5][0] == str(mid) and out[5][4] == '{"x":1}' and out[5][5] == "1"
    bucket = "%sm:%d" % (tag(sh), (mid // S) // 64)
    assert r.ttl(bucket) == -1, "a bucket with a live message must not expire"
    assert ack(r, [("dev-x", mid, "DELIVERED")])[0] == ["WRONG_DEVICE", "", ""]
    res_ack, notes = ack(r, [("dev-s", mid, "DELIVERED")])
    assert res_ack[:2] == ["OK", "DELIVERED"] and int(res_ack[2]) >= 0 and notes[4] == "DELIVERED"
    assert 0 < r.ttl(bucket) <= RET, "the bucket expires once its last live message retired"
    assert r.xlen("%sq:dev-s" % tag(sh)) == 0 and 0 < r.ttl("%sq:dev-s" % tag(sh)) <= 3600
    assert ack(r, [("dev-s", mid, "DELIVERED")])[0] == ["IGNORED", "DELIVERED", ""]
    assert ack(r, [("dev-s", mid, "COMPLETED")])[0] == ["OK", "COMPLETED", ""]  # delivery was confirmed before
    events = get(r, mid)[19][0::4]
    assert events == ["accepted", "sent", "ack", "ack"], events


def test_history_stays_short_however_often_a_message_is_resent(r):
    sh = shard("dev-h")
    take_lease(r, sh)
    res, _ = accept(r, [msg_fields("dev-h")])
    mid = int(res[1])
    pol = [1, 0, 1, 1, 1, 0, 42]  # re-send after 1 ms, no pacing
    for _ in range(30):
        r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)
        time.sleep(0.003)
    m = get(r, mid)
    assert int(m[8]) >= 10, "expected many attempts, got %s" % m[8]
    assert len(m[19]) // 4 == 3, "history grew with re-sends: %s" % m[19]


def test_a_foreign_queue_entry_is_dropped_and_the_queue_goes_on(r):
    """An entry in a device queue that the library did not write (no message id, or not a number) is
    dropped where a pass meets it, in flight or next, and the messages behind it are still sent."""
    sh = shard("dev-f")
    take_lease(r, sh)
    q = "%sq:dev-f" % tag(sh)
    r.xadd(q, {"i": "not-a-number", "g": "R", "c": "c"})
    r.xadd(q, {"x": "1"})
    res, notes = accept(r, [msg_fields("dev-f", data='{"f":1}')])
    mid = int(res[1])
    confirm(r, notes)
    out = dispatch(r, sh)
    assert out[0] == "OK" and out[5][0] == str(mid) and out[5][4] == '{"f":1}', out
    assert [e[1].get("i") for e in r.xrange(q)] == [str(mid)], "the foreign entries are gone"
    assert ack(r, [("dev-f", mid, "DELIVERED")])[0][:2] == ["OK", "DELIVERED"]


def test_unsend_takes_the_attempt_back(r):
    sh = shard("dev-u1")
    take_lease(r, sh)
    res, _ = accept(r, [msg_fields("dev-u1")])
    mid = int(res[1])
    dispatch(r, sh)
    assert get(r, mid)[8] == "1"
    assert r.fcall("unsend", 1, tag(sh), P, S, RET, NODE, sh, 1, mid, 1) == 1
    assert get(r, mid)[8] == "0"
    assert r.fcall("unsend", 1, tag(sh), P, S, RET, NODE, sh, 1, mid, 1) == 0, "only the recorded attempt"
    r.set("%slease" % tag(sh), "other 2")
    assert r.fcall("unsend", 1, tag(sh), P, S, RET, NODE, sh, 1, mid, 0) == ["FENCED"]


def test_reclaim_and_trim_never_lose_an_unconfirmed_change(r):
    sh = shard("dev-r")
    _, notes = accept(r, [msg_fields("dev-r", pd="p1", tmp="5")])
    log = "%slog" % tag(sh)
    assert r.xpending(log, "pub")["pending"] == 1
    # trimming everything older than 0 ms keeps the unconfirmed entry
    r.fcall("trim_log", 1, tag(sh), P, S, RET, "owner", sh, 0)
    assert r.xlen(log) >= 1
    time.sleep(0.05)
    got, lost = r.fcall("reclaim", 1, tag(sh), P, S, RET, "owner", sh, 10, 100)
    assert lost == 0 and got[2] == notes[2] and got[6] == "p1" and got[5] == "5"
    r.xack(log, "pub", got[1])
    r.fcall("trim_log", 1, tag(sh), P, S, RET, "owner", sh, 0)
    assert r.xpending(log, "pub")["pending"] == 0


def test_reclaim_never_publishes_a_change_older_than_one_already_logged(r):
    """A node published NOT_DELIVERED and lost its confirmation (or its publish timed out) while the
    message's DELIVERED went out and was confirmed: the shard owner's reclaim must not publish
    NOT_DELIVERED after it. It confirms the old entry instead. The latest change of a message is still
    reclaimed and published when its node did not confirm it."""
    sh = shard("dev-rc")
    take_lease(r, sh)
    res, notes = accept(r, [msg_fields("dev-rc", pd="p", tmp="1")])
    mid = int(res[1])
    dispatch(r, sh)
    _, notes2 = r.fcall("ack_batch", 1, tag(sh), P, S, RET, "other-node", 1, "dev-rc", mid, "DELIVERED")
    assert [notes2[i + 4] for i in range(0, len(notes2), 9)] == ["DELIVERED"], notes2
    confirm(r, notes2)  # DELIVERED went out; the receipt's confirmation was lost
    log = "%slog" % tag(sh)
    assert r.xpending(log, "pub")["pending"] == 1
    time.sleep(0.05)
    got, lost = r.fcall("reclaim", 1, tag(sh), P, S, RET, "owner", sh, 10, 100)
    assert got == [] and lost == 0, "NOT_DELIVERED republished after DELIVERED: %s" % got
    assert r.xpending(log, "pub")["pending"] == 0, "the superseded entry stays unconfirmed"
    # the latest change, unconfirmed by its node, is reclaimed and published
    _, notes3 = r.fcall("ack_batch", 1, tag(sh), P, S, RET, "other-node", 1, "dev-rc", mid, "COMPLETED")
    time.sleep(0.05)
    got, _ = r.fcall("reclaim", 1, tag(sh), P, S, RET, "owner", sh, 10, 100)
    assert [got[i + 4] for i in range(0, len(got), 9)] == ["COMPLETED"], got
    assert notes[1] != notes3[1]


def test_heads_report_time_until_due(r):
    sh = shard("dev-hd")
    assert r.fcall("heads", 1, tag(sh), P, S, RET, NODE, sh) == [-1]
    accept(r, [msg_fields("dev-hd")])
    assert r.fcall("heads", 1, tag(sh), P, S, RET, NODE, sh) == [0]
    accept(r, [msg_fields("dev-hd2", nb=int(time.time() * 1000) + 60000)])
    d = r.fcall("heads", 1, tag(shard("dev-hd2")), P, S, RET, NODE, shard("dev-hd2"))[0]
    assert d == 0 or 55000 < d <= 60000


def test_cancel_and_purge_are_scoped_by_key(r):
    res, _ = accept(r, [msg_fields("dev-c", key="k-a"), msg_fields("dev-c", key="k-b"), msg_fields("dev-c")])
    a, b, mqtt = int(res[1]), int(res[5]), int(res[9])
    sh = shard("dev-c")
    assert r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, b, "k-a")[0] == ["NOT_FOUND"]
    assert r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, mqtt, "k-a")[0] == ["NOT_FOUND"]
    assert r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, a, "k-a")[0][0] == "OK"
    out, _ = r.fcall("purge", 1, tag(sh), P, S, RET, NODE, "dev-c", sh, 100, "k-b")
    assert out[:2] == ["OK", 1]
    assert get(r, mqtt)[5] == "NOT_DELIVERED", "a producer key purged a message it did not submit"
    out, _ = r.fcall("purge", 1, tag(sh), P, S, RET, NODE, "dev-c", sh, 100, "")
    assert out[:2] == ["OK", 1] and get(r, mqtt)[5] == "PURGED"


def test_memory_per_queued_and_finished_message(r):
    """Not a benchmark: a guard that the layout stays lean, measured as loadtest/redis_cost.py --memory
    measures it (docs/benchmarks.md has its figures): the used_memory (without client buffers and the
    AOF buffer) that deleting each kind of key frees, once with every message queued and once with
    every message finished. A queued message costs at most 300 B beyond its payload without the status
    log (trimmed to two minutes) and batch tokens (a minute; none here); a finished message keeps for
    the retention its record and its entry in the device's listing, at most 120 B beyond its payload.
    20 messages per device, as redis_cost.py --per-device 20."""
    data = '{"pinNumber":13,"pinValue":true,"pad":"%s"}' % ("x" * 50)  # 84-byte payload
    n, devices = 2000, 100
    msgs = [msg_fields("dev-m%d" % (k % devices), cmd="digitalWrite", data=data, pd="p", tmp=str(k + 1))
            for k in range(n)]
    transient = ("log", "rq", "lease", "")  # status log, batch tokens, leases and keys outside the shards
    # Redis 7 allocates a latency histogram (about 24 kB) at the first call of each command name: the
    # first INFO or DEL of a measurement would count as memory the deleted keys took
    r.config_set("latency-tracking", "no")

    def used():
        m = r.info("memory")
        return m["used_memory"] - m["mem_clients_normal"] - m["mem_clients_slaves"] - m["mem_aof_buffer"]

    def confirm_all(notes):
        """One XACK per shard, as dr_store_notes_done."""
        by = {}
        for i in range(0, len(notes), 9):
            by.setdefault(notes[i], []).append(notes[i + 1])
        for sh, ids in by.items():
            r.xack("%s{%s}log" % (P, sh), "pub", *ids)

    def accept_all():
        for i in range(0, n, 64):
            res, notes = accept(r, msgs[i:i + 64])
            assert res[0::4] == ["OK"] * len(msgs[i:i + 64]), res
            confirm_all(notes)

    def freed_by_kind():
        """Deletes every key, kind after kind (the name after the shard's tag up to ':'); returns the
        used_memory each kind freed."""
        kinds = {}
        for k in r.scan_iter(match="*", count=1000):
            kind = k[k.index("}") + 1:].split(":", 1)[0] if k.startswith(P + "{") else ""
            kinds.setdefault(kind, []).append(k)
        out = {}
        for kind, keys in sorted(kinds.items()):
            before = used()
            for i in range(0, len(keys), 500):
                r.delete(*keys[i:i + 500])
            out[kind] = before - used()
        return out

    accept_all()
    queued = freed_by_kind()
    per_queued = sum(v for k, v in queued.items() if k not in transient) / n - len(data)

    for sh in range(S):
        take_lease(r, sh)
    accept_all()
    pol = [1, 0, 600000, 600000, 2, 0, 42]  # window 1, no pacing, no re-send during the test
    args = [P, S, RET, NODE, 1000] + pol + [S] + [x for sh in range(S) for x in (sh, 1)]
    done = 0
    while True:
        _, out, notes = r.fcall("dispatch_many", S, *[tag(sh) for sh in range(S)], *args)
        confirm_all(notes)
        sends = [(out[i + 2], int(out[i + 1]), "DELIVERED") for i in range(0, len(out), 10)]
        if not sends:
            break
        for i in range(0, len(sends), 64):
            res, notes = ack(r, sends[i:i + 64])
            assert res[0::3] == ["OK"] * len(sends[i:i + 64]), res
            confirm_all(notes)
        done += len(sends)
    assert done == n, "%d of %d delivered" % (done, n)
    finished = freed_by_kind()
    kept = finished["m"] + finished["dm"]
    per_finished = kept / n - len(data)
    print("\nmemory per message, B: " + ", ".join("%s %.1f/%.1f" % (k or "other", queued.get(k, 0) / n,
                                                                     finished.get(k, 0) / n)
                                                  for k in sorted(set(queued) | set(finished))) + " (queued/finished)")
    print("queued: %.0f B beyond its payload without the status log (target <= 300); finished: %.0f B = "
          "record %.0f + listing %.0f, %.0f B beyond its payload (target <= 120)"
          % (per_queued, kept / n, finished["m"] / n, finished["dm"] / n, per_finished))
    assert per_queued <= 300, "%.0f bytes per queued message beyond its payload" % per_queued
    assert per_finished <= 120, "%.0f bytes per finished message beyond its payload" % per_finished


def now_ms(r):
    s, us = r.time()
    return s * 1000 + us // 1000


def stored(r, mid):
    """The stored record of mid as Redis holds it: (its size in bytes, the unpacked array)."""
    sh = mid % S
    bucket, field = "%sm:%d" % (tag(sh), (mid // S) // 64), str((mid // S) % 64)
    return r.eval("local v = redis.call('HGET', KEYS[1], ARGV[1]) return {#v, cmsgpack.unpack(v)}", 1, bucket,
                  field)


def test_records_written_before_the_compact_form_are_read_and_rewritten(r):
    """A record as the previous library wrote it (absolute times, full history, the log entry id as a
    string) reads the same, and its next change stores it compact with the same content."""
    sh = shard("dev-old")
    take_lease(r, sh)
    res, notes = accept(r, [msg_fields("dev-old", cmd="set", data='{"v":1}', pd="p9", tmp="7")])
    mid = int(res[1])
    confirm(r, notes)
    ts = now_ms(r) - 5000
    bucket, field = "%sm:%d" % (tag(sh), (mid // S) // 64), str((mid // S) % 64)
    # device, guarantee, command, data, status, accepted, changed, attempts, tmpId, producerDeviseId,
    # deliver-by, max attempts, not-before, ext, idempotency key, API key id, stream entry id, shown,
    # next re-send, last send, history, live, has producer, last log entry
    sid = r.xrange("%sq:dev-old" % tag(sh))[0][0]
    r.eval("""
local ts = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack({'dev-old', 'R', 'set', '{"v":1}', 0, ts, ts + 1200, 1, 7, 'p9',
  0, 0, 0, 0, '', '', ARGV[2], 0, ts + 60000, ts + 1200, {1, 0, 0, 0, 2, 0, 1200, 1}, 1, 1, ARGV[4]}))
""", 1, bucket, field, sid, ts, notes[1])
    m = get(r, mid)
    assert m[6] == str(ts) and m[7] == str(ts + 1200) and m[8] == "1" and m[9] == "7" and m[10] == "p9"
    assert m[17] == str(ts + 1200) and m[18] == str(ts + 60000), m
    assert m[19] == ["accepted", "NOT_DELIVERED", str(ts), "0", "sent", "NOT_DELIVERED", str(ts + 1200), "1"]
    old_raw, _ = stored(r, mid)
    res_ack, notes2 = ack(r, [("dev-old", mid, "DELIVERED")])
    assert res_ack[:2] == ["OK", "DELIVERED"] and notes2[4] == "DELIVERED"
    raw, arr = stored(r, mid)
    assert len(arr) == 25 and arr[24] == 1, "written back in the compact form"
    assert raw < old_raw, (raw, old_raw)
    m2 = get(r, mid)
    assert m2[6] == str(ts) and m2[17] == str(ts + 1200) and m2[18] == "0", "delivered: no next re-send"
    assert m2[19][:8] == m[19] and m2[19][8:10] == ["ack", "DELIVERED"], m2[19]
    assert int(m2[7]) >= now_ms(r) - 60000 and m2[7] == m2[19][10]
    # the log entry id kept in the compact record still orders the next change after this one
    res_c, notes3 = ack(r, [("dev-old", mid, "COMPLETED")])
    assert res_c[:2] == ["OK", "COMPLETED"] and notes3[4] == "DELIVERED" and notes3[13] == "COMPLETED", notes3


def test_queue_expiry_follows_the_schedule(r):
    """A device's queue expires only once the device has left the schedule, and stops expiring when
    work comes back, whichever way the queue emptied."""
    dev = "dev-qx"
    sh = shard(dev)
    take_lease(r, sh)
    q, due = "%sq:%s" % (tag(sh), dev), "%sdue" % tag(sh)
    res, _ = accept(r, [msg_fields(dev)])
    mid = int(res[1])
    assert r.ttl(q) == -1 and r.zscore(due, dev) is not None
    dispatch(r, sh)
    ack(r, [(dev, mid, "DELIVERED")])
    assert r.zscore(due, dev) is None and 0 < r.ttl(q) <= 3600
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev)])
    a, b = int(res[1]), int(res[5])
    assert r.ttl(q) == -1, "work came back: the queue must not expire"
    assert r.zrange("%sdx" % tag(sh), 0, -1) == [dev]
    for mid in (a, b):
        assert r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, mid, "")[0][0] == "OK"
    assert r.xlen(q) == 0 and r.ttl(q) == -1 and r.zscore(due, dev) is not None, "still scheduled"
    dispatch(r, sh)
    assert r.zscore(due, dev) is None and 0 < r.ttl(q) <= 3600


def test_in_flight_count_survives_a_lost_or_stale_read_position(r):
    """The pass counts in-flight entries from the read position it records ('r' in the d: hash); without
    it, or with one behind the group, it counts from the group and never sends beyond the window or
    stops re-sending."""
    dev = "dev-w"
    sh = shard(dev)
    take_lease(r, sh)
    pol = [2, 0, 60000, 60000, 1, 0, 42]  # window 2, no pacing, re-send after a minute

    def pass_():
        return r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)[5]
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev), msg_fields(dev)])
    ids = [res[1], res[5], res[9]]
    dk = "%sd:%s" % (tag(sh), dev)
    due = "%sdue" % tag(sh)
    assert pass_()[0] == ids[0] and pass_()[0] == ids[1] and pass_() == [], "window of 2"
    assert r.hget(dk, "r") == r.xrange("%sq:%s" % (tag(sh), dev))[1][0]
    r.hdel(dk, "r")
    r.zadd(due, {dev: 0})
    assert pass_() == [], "counted from the group without the recorded position"
    ack(r, [(dev, int(ids[0]), "DELIVERED")])
    assert pass_()[0] == ids[2], "the freed slot takes the next entry"
    r.hset(dk, "r", "0-1")  # behind the group: every entry looks unread, though all were read
    r.zadd(due, {dev: 0})
    assert pass_() == [] and r.hget(dk, "r") is None, "the stale position is dropped, nothing sent"
    # the in-flight entries are still found: one taken back is sent again
    assert r.fcall("unsend", 1, tag(sh), P, S, RET, NODE, sh, 1, int(ids[1]), 1) == 1
    sent = pass_()
    assert sent[0] == ids[1] and sent[5] == "1", sent
    assert r.hget(dk, "r") == r.xrange("%sq:%s" % (tag(sh), dev))[-1][0]


def test_dispatch_next_pass_time_matches_the_schedule(r):
    """The time until the next pass that dispatch returns comes from what it read and wrote, without
    reading the schedule again: it must agree with the schedule Redis holds after the pass."""
    sh = shard("dev-np")
    take_lease(r, sh)
    t0 = now_ms(r)
    accept(r, [msg_fields("dev-np"), msg_fields("dev-np", ttl=30000)])
    out = dispatch(r, sh)
    t1 = now_ms(r)
    z = r.zrange("%sdue" % tag(sh), 0, 0, withscores=True)  # devices and deadlines
    head = int(z[0][1])
    assert out[0] == "OK" and max(0, head - t1) <= out[4] <= max(0, head - t0), (out[4], head - t0, head - t1)


def test_device_hash_expiry_is_refreshed_at_most_every_quarter_retention(r):
    dev = "dev-x"
    sh = shard(dev)
    take_lease(r, sh)
    dk = "%sd:%s" % (tag(sh), dev)

    def pass_():
        return r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, 1, 0, 1000, 60000, 2, 0, 42)[5]
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev)])
    assert pass_()[0] == res[1]
    x = r.hget(dk, "x")
    assert x is not None and RET < r.ttl(dk) <= RET + RET // 4
    r.expire(dk, RET)  # as if set a while ago: a write within the quarter leaves it alone
    ack(r, [(dev, int(res[1]), "DELIVERED")])
    assert r.hget(dk, "x") == x and r.ttl(dk) <= RET
    r.hset(dk, "x", int(x) - RET * 250)  # the last refresh is a quarter of the retention old
    assert pass_()[0] == res[5]
    assert r.hget(dk, "x") != x and r.ttl(dk) > RET
    r.fcall("devset", 1, tag(sh), P, S, RET, NODE, dev, sh, 500, "", "", "")
    assert r.ttl(dk) == -1
    r.fcall("devset", 1, tag(sh), P, S, RET, NODE, dev, sh, "-", "", "", "")
    assert r.hget(dk, "x") is None and 0 < r.ttl(dk) <= RET


def test_a_batch_with_several_commands_for_one_device(r):
    """The device's size limit is read, and the device scheduled, once per call: every command of the
    batch still gets the device's own limit, and a not-before command first does not keep the ones
    after it from being due now."""
    dev = "dev-b"
    sh = shard(dev)
    r.fcall("devset", 1, tag(sh), P, S, RET, NODE, dev, sh, "", "", "", 2000)
    r.zrem("%sdue" % tag(sh), dev)  # devset woke it; the batch alone must make it due
    later = now_ms(r) + 60000
    t0 = now_ms(r)
    res, _ = accept(r, [msg_fields(dev, nb=later), msg_fields(dev, size=1900), msg_fields(dev, size=2100),
                        msg_fields(dev), msg_fields("dev-b2", size=2100)], max_message=1000)
    assert [res[i] for i in range(0, len(res), 4)] == ["OK", "OK", "TOO_LARGE", "OK", "TOO_LARGE"], res
    assert res[11] == 2000 and res[19] == 1000, "each device's own limit"
    assert int(r.zscore("%sdue" % tag(sh), dev)) <= now_ms(r) and r.xlen("%sq:%s" % (tag(sh), dev)) == 2
    assert int(r.zscore("%sdue" % tag(sh), dev)) >= t0


def test_bucket_live_count_when_one_call_retires_several(r):
    """The bucket's live count is read with a record and written with it: messages of one bucket that
    retire in one call each count once, and the bucket expires exactly when its last live one retired."""
    dev = "dev-l"
    sh = shard(dev)
    take_lease(r, sh)
    res, notes = accept(r, [msg_fields(dev), msg_fields(dev), msg_fields(dev)])
    ids = [int(res[i]) for i in (1, 5, 9)]
    bucket = "%sm:%d" % (tag(sh), (ids[0] // S) // 64)
    assert all("%sm:%d" % (tag(sh), (i // S) // 64) == bucket for i in ids)
    assert r.hget(bucket, "#") == "3"
    pol = [3, 0, 60000, 60000, 1, 0, 42]  # window 3: all three in flight
    sent = r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)[5]
    sent += r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)[5]
    sent += r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)[5]
    assert [int(sent[i]) for i in range(0, len(sent), 9)] == ids
    out, _ = ack(r, [(dev, ids[0], "DELIVERED"), (dev, ids[1], "COMPLETED"), (dev, ids[0], "COMPLETED")])
    assert out[0::3] == ["OK", "OK", "OK"], out
    assert r.hget(bucket, "#") == "1" and r.ttl(bucket) == -1, "one message is still live"
    out, _ = ack(r, [(dev, ids[2], "DELIVERED")])
    assert out[0] == "OK" and r.hget(bucket, "#") == "0" and 0 < r.ttl(bucket) <= RET


def xlen_calls(r):
    return int(r.info("commandstats").get("cmdstat_xlen", {}).get("calls", 0))


def test_an_ack_wakes_a_device_with_more_queued_without_reading_the_queue(r):
    """A send notes whether more of the device's queue was behind it; the ack of that message then wakes
    the device without asking the queue's length. The note goes with the ack (a finished record does not
    keep it), and if the rest was cancelled meanwhile, the pass that comes lets the device go idle."""
    dev = "dev-m"
    sh = shard(dev)
    take_lease(r, sh)
    due, q = "%sdue" % tag(sh), "%sq:%s" % (tag(sh), dev)
    pol = [1, 0, 60000, 60000, 1, 0, 42]  # window 1, no pacing

    def dispatch(r, sh):
        return r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev)])
    a, b = int(res[1]), int(res[5])
    assert int(dispatch(r, sh)[5][0]) == a
    assert len(stored(r, a)[1]) == 26, "the send saw b behind it"
    rec = stored(r, a)[1]
    assert rec[25] == 2 + rec[19], "and when the device may be sent to next: at once (no pacing)"
    n = xlen_calls(r)
    t = now_ms(r)
    assert ack(r, [(dev, a, "DELIVERED")])[0][0] == "OK"
    assert xlen_calls(r) == n, "the queue's length was read"
    assert len(stored(r, a)[1]) == 25, "a finished record keeps no note of the queue"
    assert r.zscore(due, dev) is not None and t - 1 <= int(r.zscore(due, dev)) <= now_ms(r), "due now"
    assert int(dispatch(r, sh)[5][0]) == b
    assert len(stored(r, b)[1]) == 25, "nothing was behind b"
    assert ack(r, [(dev, b, "DELIVERED")])[0][0] == "OK"
    assert xlen_calls(r) == n + 1 and r.zscore(due, dev) is None, "the empty queue lets the device go"

    # more was queued at the send, and cancelled before the ack: woken, then idle after one pass
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev)])
    c1, c2 = int(res[1]), int(res[5])
    assert int(dispatch(r, sh)[5][0]) == c1
    assert r.fcall("cancel", 1, tag(sh), P, S, RET, NODE, c2, "")[0][0] == "OK"
    h = hmget_calls(r)
    assert ack(r, [(dev, c1, "DELIVERED")])[0][0] == "OK"
    assert hmget_calls(r) == h + 1, "the record only: the device's hash was not read"
    assert int(r.hget("%sd:%s" % (tag(sh), dev), "a")) >= t, "the ack's time is kept"
    assert r.zscore(due, dev) is not None
    assert dispatch(r, sh)[5] == []
    assert r.zscore(due, dev) is None and r.xlen(q) == 0 and 0 < r.ttl(q) <= 3600


def xreadgroup_calls(r):
    return int(r.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))


def test_a_batch_claims_the_notes_of_all_its_shards_with_one_read(r):
    """A call that logged changes in several shards claims them with one XREADGROUP over all those logs;
    when one log has lost its group, the call claims log by log and creates the group, and no note is
    missed either way."""
    devs = []
    for i in range(200):
        d = "dev-c%d" % i
        if shard(d) not in [shard(x) for x in devs]:
            devs.append(d)
        if len(devs) == 5:
            break
    res, notes = accept(r, [msg_fields(d) for d in devs])  # the first call creates the logs' groups
    assert len(notes) == 5 * 9
    confirm(r, notes)
    n = xreadgroup_calls(r)
    res, notes = accept(r, [msg_fields(d) for d in devs] + [msg_fields(devs[0])])
    assert xreadgroup_calls(r) == n + 1, "one read claims the notes of five shards"
    ids = [res[i + 1] for i in range(0, len(res), 4)]
    assert sorted(notes[i + 2] for i in range(0, len(notes), 9)) == sorted(ids)
    assert {int(notes[i]) for i in range(0, len(notes), 9)} == {shard(d) for d in devs}
    for i in range(0, len(notes), 9):
        assert int(notes[i]) == int(notes[i + 2]) % S, "each note names its own shard"
    pend = r.xpending("%slog" % tag(shard(devs[0])), "pub")
    assert pend["pending"] == 2 and pend["consumers"][0]["name"] == NODE
    confirm(r, notes)
    r.xgroup_destroy("%slog" % tag(shard(devs[2])), "pub")
    res, notes = accept(r, [msg_fields(d) for d in devs])
    ids = [res[i + 1] for i in range(0, len(res), 4)]
    assert sorted(notes[i + 2] for i in range(0, len(notes), 9)) == sorted(ids), "log by log, none missed"


def hmget_calls(r):
    return int(r.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def test_an_ack_reads_the_device_when_its_next_send_time_may_have_moved(r):
    """With a window of 2 and pacing, a later send can move the device's next send time before the ack
    of an earlier one: the send then notes "more" without a time, and the ack reads the device's hash and
    wakes the device when pacing allows."""
    dev = "dev-w2"
    sh = shard(dev)
    take_lease(r, sh)
    due = "%sdue" % tag(sh)
    pol = [2, 100, 60000, 60000, 1, 0, 42]  # window 2, 100 ms pacing

    def dispatch(r, sh):
        return r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 100, *pol)
    res, _ = accept(r, [msg_fields(dev), msg_fields(dev), msg_fields(dev)])
    a, b = int(res[1]), int(res[5])
    assert int(dispatch(r, sh)[5][0]) == a
    assert stored(r, a)[1][25] == 1, "more queued, next send time not noted"
    time.sleep(0.12)
    out = dispatch(r, sh)
    assert int(out[5][0]) == b
    h = hmget_calls(r)
    assert ack(r, [(dev, a, "DELIVERED")])[0][0] == "OK"
    assert hmget_calls(r) == h + 2, "the record and the device's hash"
    assert int(r.zscore(due, dev)) >= int(out[5][6]) + 100, "b's send set the next time"


def dl_member(mid):
    """The schedule member that stands for the deadlines of mid's record bucket."""
    return "#m%d" % (mid // S // 64)


def bucket_of(mid):
    return "%sm:%d" % (tag(mid % S), mid // S // 64)


def test_deadlines_share_the_schedule_one_member_per_bucket(r):
    """Deadlines are members of the shard's schedule, one per record bucket ('#m<n>'), scored no later
    than the earliest deadline of the bucket's live messages: one read per pass finds due devices and
    expired messages, an accept adds to the schedule only when its deadline comes earlier, a retiring
    message costs no schedule call, and the pass that reaches the member sets it to the next deadline
    (or drops it when nothing live is left)."""
    dev = "dev-dl"
    sh = shard(dev)
    take_lease(r, sh)
    due = "%sdue" % tag(sh)
    zadd = lambda: int(r.info("commandstats").get("cmdstat_zadd", {}).get("calls", 0))
    z0 = zadd()
    res, _ = accept(r, [msg_fields(dev, ttl=60000), msg_fields(dev, ttl=120000), msg_fields(dev, ttl=1)])
    b, b2, a = int(res[1]), int(res[5]), int(res[9])
    assert dl_member(a) == dl_member(b) == dl_member(b2), "one bucket (a fresh shard counter)"
    mem = dl_member(a)
    # b adds the member, b2 comes later (covered), a comes earlier and lowers it; the other ZADDs: the
    # device's wake, its entry in the name index, the three listing entries and the search index's
    # entry for the shard's first message
    assert zadd() - z0 == 2 + 1 + 1 + 3 + 1, zadd() - z0
    score = int(r.zscore(due, mem))
    assert score == get_deadline(r, a), (score, get_deadline(r, a))
    live = int(r.hget(bucket_of(a), "#"))
    assert live % 128 == 3 and live // 128 == score, "the bucket's count field knows the member's score"
    assert [m for m in r.zrange(due, 0, -1) if m.startswith("#")] == [mem], "one member for the bucket"
    assert not r.exists("%sexp" % tag(sh))
    time.sleep(0.01)
    n = int(r.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0))
    out = dispatch(r, sh)
    assert out[0] == "OK" and out[1] == 1, out
    assert int(r.info("commandstats")["cmdstat_zrange"]["calls"]) == n + 1, "one read of the schedule"
    assert get(r, a)[5] == "EXPIRED"
    assert int(r.zscore(due, mem)) == get_deadline(r, b), "the member moves to the next live deadline"
    assert int(r.hget(bucket_of(a), "#")) == get_deadline(r, b) * 128 + 2
    assert [out[5][i] for i in range(0, len(out[5]), 9)] == [str(b)], "b is sent, a is not"
    sent_at = int(out[5][6])
    z1 = zadd()
    assert ack(r, [(dev, b, "DELIVERED")])[0][0] == "OK"
    assert r.zscore(due, mem) is not None, "a retiring message leaves the member alone"
    assert int(r.zscore(due, dev)) >= sent_at + POLICY[1], "woken when pacing allows"
    # b2 is sent once pacing allows (the window freed), acknowledged, and the bucket has nothing live left
    time.sleep(POLICY[1] / 1000 + 0.02)
    out = dispatch(r, sh)
    assert [out[5][i] for i in range(0, len(out[5]), 9)] == [str(b2)]
    assert ack(r, [(dev, b2, "DELIVERED")])[0][0] == "OK"
    assert int(r.hget(bucket_of(a), "#")) % 128 == 0 and 0 < r.ttl(bucket_of(a)) <= RET
    # when the member comes due, the pass finds nothing live: the member goes, the count field forgets it
    r.zadd(due, {mem: now_ms(r) - 1})
    out = dispatch(r, sh)
    assert out[0] == "OK" and out[1] == 0 and r.zscore(due, mem) is None
    assert int(r.hget(bucket_of(a), "#")) == 0
    # a new message of the bucket adds the member again
    res, _ = accept(r, [msg_fields(dev, ttl=30000)])
    c = int(res[1])
    assert dl_member(c) == mem and int(r.zscore(due, mem)) == get_deadline(r, c)
    assert zadd() > z1


DL_UNITS = [1, 1000, 60000, 3600000, 86400000]  # ms, s, min, h, days: the unit index is (form - 1) // 2


def get_deadline(r, mid):
    """The deadline (ms) in mid's record: stored as -(time after acceptance in the record's unit) - 1
    (absolute when it lies before the acceptance)."""
    rec = stored(r, mid)[1]
    v = int(rec[10])
    return rec[5] + (-v - 1) * DL_UNITS[(rec[24] - 1) // 2] if v < 0 else v


def test_a_deadline_is_stored_relative_to_acceptance(r):
    """The compact record keeps a deadline after acceptance as -(time after acceptance) - 1 in the largest
    unit that divides it (the default day in one byte), and reads it back absolute: the message still
    expires at it, and get shows it."""
    dev = "dev-rel"
    sh = shard(dev)
    take_lease(r, sh)
    cases = [(86400000, -2, 4), (7200000, -3, 3), (120000, -3, 2), (90000, -91, 1), (1500, -1501, 0),
             (86400000 * 3 + 1000, -259202, 1)]
    res, _ = accept(r, [msg_fields(dev, ttl=t) for t, _, _ in cases] + [msg_fields(dev, dby=5)])
    ids = [int(res[i]) for i in range(1, len(res), 4)]
    for mid, (ttl, v, unit) in zip(ids, cases):
        rec = stored(r, mid)[1]
        assert rec[10] == v and (rec[24] - 1) // 2 == unit, (ttl, rec[10], rec[24])
        assert int(get(r, mid)[11]) == rec[5] + ttl == get_deadline(r, mid)
    assert -32 <= stored(r, ids[0])[1][10] < 0, "the default day is a negative fixint: one byte of msgpack"
    b = ids[-1]
    assert stored(r, b)[1][10] == 5, "a deadline before the acceptance stays absolute"
    out = dispatch(r, sh)
    assert get(r, b)[5] == "EXPIRED" and get(r, ids[0])[5] == "NOT_DELIVERED", out
    # the 1.5 s deadline, read back from its unit, expires the message when it passes
    time.sleep(1.6)
    take_lease(r, sh)
    dispatch(r, sh)
    assert get(r, ids[4])[5] == "EXPIRED" and get(r, ids[3])[5] == "NOT_DELIVERED"


def test_deadlines_of_an_older_library_still_expire(r):
    """Deadlines an older library wrote: a member '#<id>' per message in the schedule, or one in the set
    {s}exp, which heads (the dispatcher's reconciliation) moves into the schedule. Both expire their
    message; a member left behind by a finished message goes when it comes due."""
    res, _ = accept(r, [msg_fields("dev-dl2", ttl=60000), msg_fields("dev-dl2", ttl=60000)])
    c, d = int(res[1]), int(res[5])
    sh2 = c % S
    take_lease(r, sh2)
    due2, exp2 = "%sdue" % tag(sh2), "%sexp" % tag(sh2)
    r.zrem(due2, dl_member(c))
    r.hset(bucket_of(c), "#", 2)  # as an older library keeps it: the live count alone
    r.zadd(exp2, {str(c): now_ms(r) - 5})
    r.zadd(due2, {"#%d" % d: now_ms(r) - 5})
    assert r.fcall("heads", 1, tag(sh2), P, S, RET, NODE, sh2) == [0], "the moved deadline is due"
    assert not r.exists(exp2) and r.zscore(due2, "#%d" % c) is not None
    out = dispatch(r, sh2)
    assert out[1] == 2 and get(r, c)[5] == "EXPIRED" and get(r, d)[5] == "EXPIRED"
    assert r.zscore(due2, "#%d" % c) is None and r.zscore(due2, "#%d" % d) is None
    assert int(r.hget(bucket_of(c), "#")) == 0 and 0 < r.ttl(bucket_of(c)) <= RET


def test_dispatch_many_passes_several_shards_in_one_call(r):
    """One call passes several shards, each fenced on its own, tags every send with its shard, and
    stops taking shards once it visited a batch of devices: the rest are answered LATER."""
    devs = ["dm-%d" % i for i in range(40)]
    by = {}
    for d in devs:
        by.setdefault(shard(d), []).append(d)
    shards = sorted(by)[:4]
    for sh in shards[:3]:
        take_lease(r, sh)
    accept(r, [msg_fields(d) for sh in shards for d in by[sh]])
    pol = [1, 0, 60000, 60000, 1, 0, 42]

    def many(batch, shs):
        args = [P, S, RET, NODE, batch] + pol + [len(shs)]
        for sh in shs:
            args += [sh, 1]
        return r.fcall("dispatch_many", len(shs), *[tag(sh) for sh in shs], *args)
    r.set("%slease" % tag(shards[3]), "%s 1" % "n2")  # another node holds the fourth shard
    calls = lambda c: int(r.info("commandstats").get("cmdstat_" + c, {}).get("calls", 0))
    g, mg = calls("get"), calls("mget")
    res, out, notes = many(100, shards)
    codes = {int(res[6 * k]): res[6 * k + 1] for k in range(len(shards))}
    assert codes == {shards[0]: "OK", shards[1]: "OK", shards[2]: "OK", shards[3]: "FENCED"}, res
    assert (calls("get"), calls("mget")) == (g, mg + 1), "one read of the four leases"
    sent = {}
    for i in range(0, len(out), 10):
        sent.setdefault(int(out[i]), []).append(out[i + 2])
    assert {sh: sorted(v) for sh, v in sent.items()} == {sh: sorted(by[sh]) for sh in shards[:3]}
    assert notes == []
    # a budget of one device: the first shard runs, the others come back LATER
    accept(r, [msg_fields(d) for sh in shards[:3] for d in by[sh]])
    for sh in shards[:3]:
        r.zadd("%sdue" % tag(sh), {d: 0 for d in by[sh]})
    res, out, _ = many(1, shards[:3])
    assert [res[6 * k + 1] for k in range(3)] == ["OK", "LATER", "LATER"], res
    assert res[6 * 0 + 4] == 1, "the first shard has more to do"


GC_LIBRARY = """#!lua name=test_gc
redis.register_function('test_gc_live', function() collectgarbage('collect') return collectgarbage('count') * 1024 end)
"""


def lua_live(r):
    """Bytes live in the function engine's Lua state after a full collection. Every library shares that
    state; this one, loaded beside drover for the test, runs the collection."""
    return int(r.fcall("test_gc_live", 0))


def test_the_function_engines_heap_does_not_grow_with_the_messages_it_has_seen(r):
    """The library keeps state at module level (bound globals, shard tags, the strings of numbers below
    4,096): none of it may grow with the devices or messages it has handled. After a warm-up that fills
    the number strings (message ids pass 4,096), what stays live after a full collection must be the
    same after 1,000 and after 4,000 more messages on new devices (a library that kept 20 B per message
    would add 80 kB). The largest heap seen, garbage included (Lua's collector at the library's pause
    lets it grow to several times what is live), stays within a bound too."""
    r.function_load(GC_LIBRARY, replace=True)
    pol = [1, 0, 60000, 60000, 1, 0, 42]  # window 1, no pacing: every pass sends

    def work(prefix, groups, devices=500, per_device=2):
        peak = 0
        for g in range(groups):
            devs = ["%s%d-%d" % (prefix, g, i) for i in range(devices)]
            for _ in range(per_device):
                for i in range(0, devices, 64):
                    _, notes = accept(r, [msg_fields(d, data='{"v":1}') for d in devs[i:i + 64]])
                    confirm(r, notes)
                    peak = max(peak, int(r.info("memory")["used_memory_vm_functions"]))
                sent = []
                for sh in range(S):
                    out = r.fcall("dispatch", 1, tag(sh), P, S, RET, NODE, sh, 1, 1000, *pol)
                    sent += [(out[5][k + 1], out[5][k]) for k in range(0, len(out[5]), 9)]
                    peak = max(peak, int(r.info("memory")["used_memory_vm_functions"]))
                assert len(sent) == devices, "one send per device and pass, got %d" % len(sent)
                for i in range(0, len(sent), 64):
                    res, notes = ack(r, [(d, mid, "DELIVERED") for d, mid in sent[i:i + 64]])
                    assert all(x == "OK" for x in res[0::3]), res
                    confirm(r, notes)
                    peak = max(peak, int(r.info("memory")["used_memory_vm_functions"]))
        return peak

    for sh in range(S):
        take_lease(r, sh)
    work("heap-w", 5)  # 5,000 messages: ids pass 4,096
    work("heap-a", 1)  # 1,000 messages on 500 new devices
    live_a = lua_live(r)
    peak = work("heap-b", 4)  # 4,000 messages on 2,000 new devices, in calls of the same size
    live_b = lua_live(r)
    print("function engine: %d kB live after 1,000 messages, %d kB after 4,000 more; largest heap %d kB"
          % (live_a // 1024, live_b // 1024, peak // 1024))
    assert live_b < live_a + 16 * 1024, "what stays live grew with the work: %d B, then %d B" % (live_a, live_b)
    assert peak < 32 * 1024 * 1024, "largest heap %d kB" % (peak // 1024)
