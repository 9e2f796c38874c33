"""Bounded workload and history checker for Drover's fault-injection suite.

Workload: D harness Devices (auto-ack, every third one subscribed at QoS 1) and P producers. Each producer owns
the devices i with i % P == p and sends to each of them sequentially: the next command for a device goes out
only after the previous one was receipted. Every command carries a messageBirthCertificate and its own
idempotencyKey; a command without a receipt after `retry_s` is re-sent unchanged (same key, same tmpId), as a
careful producer must. Transports per producer: "mqtt" (producer/request/<dev>, QoS 1) or "rest"
(POST /v1/devices/<dev>/messages with an Idempotency-Key header, retried on connection errors, timeouts and
5xx against the next ingress in the list).

History: every receipt (id, device, key), every device arrival (id, time), every producer notification, every
REST exchange (sent, answered, status). The checker works on that history plus the `m:` records in Redis.
"""
import http.client
import json
import os
import threading
import time

import harness
from harness import wait_until

RANK = {"UNKNOWN": 0, "NOT_DELIVERED": 0, "DELIVERED": 1, "COMPLETED": 2, "COMPLETED_WITH_ERROR": 2,
        "CANCELLED": 2, "EXPIRED": 2, "FAILED": 2, "PURGED": 2}


shard_of = harness.shard_of


def lease_owners(stack, shards):
    """shard -> node id holding its lease (None when free)."""
    def read(r):
        out = {}
        for sh in range(shards):
            v = r.get("%s{%d}lease" % (stack.prefix, sh))
            out[sh] = v.split(" ")[0] if v else None
        return out
    return stack.redis_call(read)


class PickyDevice(harness.Device):
    """A Device that auto-acks everything except the messages `refuse(msg)` selects."""

    def __init__(self, broker, device_id, refuse, **kw):
        self.refuse = refuse
        super().__init__(broker, device_id, auto_ack=True, **kw)

    def _on_message(self, client, userdata, message):
        try:
            m = json.loads(message.payload)
        except ValueError:
            m = None
        self.auto_ack = not (isinstance(m, dict) and self.refuse(m))
        super()._on_message(client, userdata, message)


class Cmd:
    __slots__ = ("dev", "key", "tmp", "body", "first_sent", "last_sent", "sends", "rid", "t_receipt", "prod")

    def __init__(self, prod, dev, key, tmp, body):
        self.prod, self.dev, self.key, self.tmp, self.body = prod, dev, key, tmp, body
        self.first_sent = self.last_sent = None
        self.sends = 0
        self.rid = None
        self.t_receipt = None


class Workload:
    def __init__(self, stack, name="w", devices=12, transports=("mqtt", "mqtt", "mqtt"), rate=8.0,
                 retry_s=3.0, rest_ports=(), rest_key=None, qos1_every=3, extra=None, devices_list=None):
        self.stack = stack
        self.name = name
        self.rate = rate
        self.retry_s = retry_s
        self.rest_ports = list(rest_ports)
        self.rest_key = rest_key
        self.extra = dict(extra or {})
        self.lock = threading.Lock()
        self.devices = devices_list or [stack.device("%s-d%02d" % (name, i), qos=1 if i % qos1_every == 0 else 0,
                                                      auto_ack=True) for i in range(devices)]
        self.transports = list(transports)
        self.producers = [stack.producer("%s-p%d" % (name, j)) for j in range(len(self.transports))]
        self.cmds = []  # every command, in creation order
        self.rest_log = []  # (t_sent, t_answered or None, status or error string, port)
        self.stop_sending = threading.Event()
        self.stop_all = threading.Event()
        self.threads = []
        self.thread_errors = []  # exceptions that ended a producer thread (each one fails the scenario)
        self.t_start = None

    # ---- sending --------------------------------------------------------------------------------
    def start(self):
        self.t_start = time.time()
        for j in range(len(self.producers)):
            t = threading.Thread(target=self._run_guarded, args=(j,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _mqtt_send(self, prod, c):
        try:
            cl = prod.client
            if cl is not None:
                cl.publish("producer/request/%s" % c.dev, c.body, qos=1)
        except Exception:
            pass  # not connected: the retry timer re-sends

    def _rest_send(self, prod, c):
        """One attempt per ingress at most; returns True when a 2xx carried the id."""
        for k in range(max(1, len(self.rest_ports))):
            if k > 0:
                c.sends += 1  # a retry: counted like an MQTT re-send
            port = self.rest_ports[(c.tmp + c.sends) % len(self.rest_ports)]  # spread commands over ingresses
            t0 = time.time()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=6)
                conn.request("POST", "/v1/devices/%s/messages" % c.dev, body=c.body,
                             headers={"Authorization": "Bearer " + self.rest_key,
                                      "Content-Type": "application/json", "Idempotency-Key": c.key})
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.rest_log.append((t0, None, type(e).__name__, port))
                if self.stop_all.is_set():
                    return False
                time.sleep(0.2)
                continue
            t1 = time.time()
            with self.lock:
                self.rest_log.append((t0, t1, resp.status, port))
            if 200 <= resp.status < 300:
                b = json.loads(data)
                c.rid = b["id"]
                c.t_receipt = t1
                return True
            if resp.status >= 500 or resp.status == 429:
                time.sleep(0.2)
                continue
            raise AssertionError("REST answered %s %r for %s" % (resp.status, data[:200], c.key))
        return False

    def _check_receipt(self, prod, c):
        n = [r for r in prod.notes() if r.msg.get("tmpId") == c.tmp]
        if n:
            c.rid = n[0].msg["id"]
            c.t_receipt = n[0].t  # arrival of the first notification, not the time this thread looked
            return True
        return False

    def _run_guarded(self, j):
        try:
            self._run(j)
        except Exception as e:  # noqa: BLE001  (reported by check(), never swallowed)
            with self.lock:
                self.thread_errors.append("producer %d: %s: %s" % (j, type(e).__name__, e))

    def _run(self, j):
        prod = self.producers[j]
        transport = self.transports[j]
        mine = [d for i, d in enumerate(self.devices) if i % len(self.producers) == j]
        if not mine:
            return
        pending = {d.device_id: None for d in mine}
        k = {d.device_id: 0 for d in mine}
        interval = len(self.producers) / float(self.rate)
        i = 0
        while not self.stop_all.is_set():
            d = mine[i % len(mine)]
            i += 1
            dev = d.device_id
            c = pending[dev]
            now = time.time()
            if c is not None and c.rid is None and transport == "mqtt":
                self._check_receipt(prod, c)
            if c is not None and c.rid is not None:
                pending[dev] = c = None
            if c is None:
                if self.stop_sending.is_set():
                    if all(v is None for v in pending.values()):
                        return
                    continue
                k[dev] += 1
                tmp = prod.next_tmp()
                key = "%s:%s:%d" % (prod.pd, dev, k[dev])
                body = prod.body("RECEIPT_CONFIRMATION", "cmd", {"n": k[dev]}, tmp, True, idempotencyKey=key,
                                 **self.extra)
                c = Cmd(prod, dev, key, tmp, json.dumps(body, separators=(",", ":")))
                with self.lock:
                    self.cmds.append(c)
                pending[dev] = c
            elif now - c.last_sent < self.retry_s:
                time.sleep(interval / max(1, len(mine)))
                continue
            c.sends += 1
            c.last_sent = time.time()
            if c.first_sent is None:
                c.first_sent = c.last_sent
            if transport == "rest":
                self._rest_send(prod, c)
            else:
                self._mqtt_send(prod, c)
            time.sleep(interval)

    def run_for(self, seconds, events=()):
        """Runs the load for `seconds`; `events` is a list of (offset_s, callable) fired in order."""
        if self.t_start is None:
            self.start()
        for off, fn in sorted(events, key=lambda e: e[0]):
            delay = self.t_start + off - time.time()
            if delay > 0:
                time.sleep(delay)
            fn()
        delay = self.t_start + seconds - time.time()
        if delay > 0:
            time.sleep(delay)
        self.stop_sending.set()

    def finish(self, receipt_timeout=30, drain_s=30):
        """Stops new commands, lets producers retry what has no receipt yet, then waits (bounded) until every
        accepted command reached its device and its producer saw a status at least DELIVERED."""
        self.stop_sending.set()
        deadline = time.time() + receipt_timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))
        self.stop_all.set()
        for t in self.threads:
            t.join(10)
        try:
            wait_until(lambda: not self._undrained(), drain_s, interval=0.2)
        except AssertionError:
            pass  # the checker reports what is missing

    def _undrained(self):
        arrived = {d.device_id: set(d.ids()) for d in self.devices}
        out = []
        for c in self.accepted():
            seen = [RANK.get(s, -1) for s in c.prod.statuses(c.rid)]
            if c.rid not in arrived.get(c.dev, ()) or not seen or max(seen) < 1:
                out.append(c)
        return out

    def accepted(self):
        with self.lock:
            return [c for c in self.cmds if c.rid is not None]

    # ---- checking -------------------------------------------------------------------------------
    def check(self):
        """Numbers and a textual report over the whole history."""
        acc = self.accepted()
        by_dev = {d.device_id: d for d in self.devices}
        res = {"accepted": len(acc), "sent_cmds": len(self.cmds), "unreceipted": len(self.cmds) - len(acc),
               "lost": 0, "order_violations": 0, "dup_deliveries": 0, "unexpected_ids": 0, "status_missing": 0,
               "regressions": 0, "idem_dups": 0, "receipt_id_conflicts": 0,
               "retried_cmds": sum(1 for c in self.cmds if c.sends > 1),
               "thread_errors": len(self.thread_errors)}
        report = list(self.thread_errors)
        # unreceipted: producers re-send a command until it is receipted, also after the fault healed; one that
        # never got a receipt means a node stopped serving (or a producer thread died)
        for c in self.cmds:
            if c.rid is None:
                report.append("unreceipted: key %s (tmpId %s, %d sends, first %.1f s after start)" % (
                    c.key, c.tmp, c.sends, (c.first_sent or 0) - (self.t_start or 0)))
        # lost
        for c in acc:
            if c.rid not in set(by_dev[c.dev].ids()):
                res["lost"] += 1
                report.append("lost: id %s dev %s key %s (redis: %s)" % (c.rid, c.dev, c.key, self.stack.msg(c.rid)))
        # order: first arrivals of accepted ids must follow acceptance order (= id order per device, since each
        # device's commands are sent sequentially and ids grow with acceptance)
        acc_ids = {}
        for c in acc:
            acc_ids.setdefault(c.dev, []).append(c.rid)
        for dev, ids in acc_ids.items():
            order = {mid: n for n, mid in enumerate(ids)}
            if ids != sorted(ids):
                report.append("dev %s: acceptance ids not increasing: %s" % (dev, ids))
            last = -1
            for mid in by_dev[dev].first_ids():
                if mid not in order:
                    continue
                if order[mid] < last:
                    res["order_violations"] += 1
                    report.append("order: dev %s id %s arrived after a later command; first arrivals %s" % (
                        dev, mid, by_dev[dev].first_ids()))
                last = max(last, order[mid])
            for d_ in [by_dev[dev]]:
                for mid in ids:
                    n = d_.count(mid)
                    if n > 1:
                        res["dup_deliveries"] += n - 1
        # duplicates only with the same id: an id a device received that no receipt gave to a command for that
        # device is a command stored twice under another id, or somebody else's command
        for d_ in self.devices:
            mine = set(acc_ids.get(d_.device_id, ()))
            for mid in d_.first_ids():
                if mid not in mine:
                    res["unexpected_ids"] += 1
                    report.append("unexpected: dev %s received id %s, which no receipt for it named" % (
                        d_.device_id, mid))
        # statuses seen by producers
        for c in acc:
            st = c.prod.statuses(c.rid)
            ranks = [RANK.get(s, -1) for s in st]
            ok = "NOT_DELIVERED" in st and any(r >= 1 for r in ranks[st.index("NOT_DELIVERED") + 1:])
            if not ok:
                res["status_missing"] += 1
                report.append("statuses: id %s (key %s) producer saw %s" % (c.rid, c.key, st))
            hi = -1
            for r in ranks:
                if r < hi:
                    res["regressions"] += 1
                    report.append("regression: id %s notifications %s" % (c.rid, st))
                    break
                hi = max(hi, r)
            tmp_ids = {n.get("id") for n in c.prod.for_tmp(c.tmp)}
            if len(tmp_ids) > 1:
                res["receipt_id_conflicts"] += 1
                report.append("tmpId %s of key %s notified with ids %s" % (c.tmp, c.key, sorted(tmp_ids)))
        # stored twice for one idempotency key (authoritative: the records in Redis)
        keys = self.idem_index()
        for k, ids in keys.items():
            if len(ids) > 1:
                res["idem_dups"] += len(ids) - 1
                report.append("idempotency key %s stored as ids %s" % (k, sorted(ids)))
        return res, report

    def idem_index(self):
        """idempotency key -> ids stored with it (this run's keys only), from the records in Redis."""
        out = {}
        for mid, m in self.stack.msgs(self.stack.message_ids()).items():
            idk = m.get("idk")
            if idk and ("%s-p" % self.name) in idk:
                out.setdefault(idk, set()).add(mid)
        return out

    def rest_answers(self, t_from, t_to):
        """REST exchanges sent at or after t_from and answered before t_to: (status list)."""
        with self.lock:
            return [s for (t0, t1, s, _) in self.rest_log if t0 >= t_from and t1 is not None and t1 < t_to]


def summary(label, res, **extra):
    keys = ["accepted", "unreceipted", "lost", "order_violations", "dup_deliveries", "unexpected_ids",
            "status_missing", "regressions", "idem_dups", "retried_cmds"]
    parts = ["%s=%s" % (k, res[k]) for k in keys if k in res]
    parts += ["%s=%s" % (k, v) for k, v in extra.items()]
    line = "%s: %s" % (label, " ".join(parts))
    print("\n" + line)
    path = os.environ.get("DROVER_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return line


def assert_clean(res, report, min_accepted=1):
    """The properties every scenario must keep. Duplicate deliveries (same id) are reported, not failed."""
    text = "\n".join(report[:40])
    assert res.get("thread_errors", 0) == 0, "producer threads failed\n%s" % text
    assert res["accepted"] >= min_accepted, "only %d commands accepted\n%s" % (res["accepted"], text)
    assert res["lost"] == 0, "accepted commands lost: %d\n%s" % (res["lost"], text)
    assert res.get("unreceipted", 0) == 0, "commands never receipted after the fault healed: %d\n%s" % (
        res["unreceipted"], text)
    assert res.get("unexpected_ids", 0) == 0, "ids delivered that no receipt named: %d\n%s" % (
        res["unexpected_ids"], text)
    assert res["order_violations"] == 0, "order violations: %d\n%s" % (res["order_violations"], text)
    assert res["status_missing"] == 0, "statuses missing: %d\n%s" % (res["status_missing"], text)
    assert res["regressions"] == 0, "status regressions: %d\n%s" % (res["regressions"], text)
    assert res["idem_dups"] == 0, "idempotency keys stored twice: %d\n%s" % (res["idem_dups"], text)
    assert res["receipt_id_conflicts"] == 0, text
