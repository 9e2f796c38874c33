#!/usr/bin/env python3
"""Redis cost of one command's life in Drover, function by function.

Starts a private redis-server with the configuration the local stack ships (deploy/local/redis-common.conf:
AOF, appendfsync always, hash-max-listpack-value 1024, stream-node-max-bytes 512) on a random loopback port,
loads Drover's function library common/lua/drover.lua (FUNCTION LOAD) and drives complete command lives through
it, calling the functions exactly as common/src/store.c does, without MQTT, NATS or the services in the way:

    accept_batch -> XACK of its notes -> dispatch (send) -> ack_batch (DELIVERED) -> XACK of its notes

Producer messages and acks go in batches of --batch items per call (the ingress's group commit; 1 compares with
one call per item); every accept and ack batch wakes a dispatch pass over each shard it touched, as the
ingress's wake-ups do (a pass that finds nothing to send still costs its reads); the woken shards are passed
64 per dispatch_many call, as the dispatcher passes the shards due in one loop turn; each reply's notifications
are acknowledged with one XACK per shard, as dr_store_notes_done does. Calls go out --pipeline at a time, as
calls of many loop turns are in flight together in the services.

Each phase is measured on its own (INFO cpu and commandstats before and after it), so the report gives, per
function and per command completed: calls, Redis execution time (commandstats usec of FCALL, which includes
the commands the function ran; it excludes protocol, AOF writes and fsync), Redis CPU (user + sys of the server
process: execution, protocol, AOF write and fsync), and the commands each function ran (commands run by a
function count in commandstats under their own names). Periodic calls of the dispatcher (lease, heads,
reclaim, trim_log) are not part of a command's life and are not counted.

It also prints Redis memory per queued and per finished command (used_memory deltas). With --memory it breaks
both down by key kind: the used_memory freed by deleting each kind's keys (MEMORY USAGE alongside, for
comparison), once with every command queued (a second private Redis that only runs the accepts) and once
with every command finished; then what a finished message keeps for its retention and the fixed cost of a
device with work. Those figures need a few thousand commands: single allocations of tens of kB move them.

Usage: loadtest/redis_cost.py [--devices 1000] [--per-device 5] [--shards 1024] [--batch 64] [--pipeline 32]
                              [--data-bytes 84] [--burst] [--memory] [--default-ttl-ms MS]
                              [--redis-config KEY=VALUE ...]
Needs redis-server (7.0 or later) and python3-redis (Debian packages; run it with /usr/bin/python3).
"""
import argparse
import hashlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LIBRARY = os.path.join(ROOT, "common", "lua", "drover.lua")
REDIS_CONF = os.path.join(ROOT, "deploy", "local", "redis-common.conf")
PREFIX = "dr:"
NODE = "cost-bench"
IDS_MAX = 2147483647
TOKEN_TTL_S = 300      # the ingress keeps a batch token a few minutes
LOG_KEEP_S = 120       # the dispatcher trims the status logs to two minutes (LOG_KEEP_MS)
QUEUE_IDLE_S = 3600    # an empty device stream expires after an hour (drover.lua QUEUE_IDLE_S)
# window, interval ms, ack timeout ms, longest retry wait ms, back-off, jitter %: pacing off, no re-send
# during the run (the seed follows per call)
POLICY = [1, 0, 600000, 600000, "2.000000", 10]
DISPATCH_GROUP = 64  # shards per dispatch call (services/dispatcher/dispatch.c)
PHASES = ("accept_batch", "dispatch", "ack_batch", "XACK")
KINDS = ("m", "q", "d", "dm", "due", "log", "rq", "other", "setup")
KIND_TEXT = {"m": "bucket records {s}m:*", "q": "device streams {s}q:*", "d": "device hashes {s}d:*",
             "dm": "device listing {s}dm:*", "due": "schedule {s}due", "log": "status log {s}log",
             "rq": "batch tokens {s}rq:*", "other": "other ({s}seq)", "setup": "leases (not counted)"}
TARGETS = {"calls": 25, "trips": 3, "queued": 300, "finished": 120}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


NOTE_FIELDS = 9  # a claimed status change (common/lua/drover.lua, claim)
SEND_FIELDS = 9  # a send (send_out)


def tag(sh):
    return "%s{%d}" % (PREFIX, sh)


def kind_of(key):
    """Key kind: the name after <prefix>{<shard>} up to its first ':'."""
    if not key.startswith(PREFIX + "{"):
        return "setup"
    name = key[key.index("}") + 1:]
    k = name.split(":", 1)[0]
    if k in ("lease", "epoch"):
        return "setup"  # there before the first command, as {prefix}nodes
    return k if k in KINDS else "other"


class Phase:
    def __init__(self):
        self.calls = 0          # calls the client sent
        self.usec = 0           # commandstats usec of those calls (FCALL, or XACK for the notes)
        self.user = self.sys = 0.0
        self.cmds = {}          # command name -> [calls, usec] of commands the functions ran


class Bench:
    def __init__(self, args):
        self.a = args
        self.dir = tempfile.mkdtemp(prefix="drover-cost.")
        self.port = free_port()
        extra = []
        for kv in args.redis_config:
            k, v = kv.split("=", 1)
            extra += ["--" + k, v]
        self.proc = subprocess.Popen(
            shlex.split(args.server_wrapper) + ["redis-server", REDIS_CONF, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--logfile", "redis.log"] + extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port, decode_responses=True)
        for _ in range(100 if not args.server_wrapper else 1200):
            try:
                self.r.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        with open(LIBRARY, "rb") as f:
            text = f.read()
        self.library = hashlib.sha1(text).hexdigest()[:12]
        self.r.function_load(text.decode(), replace=True)
        self.common = [PREFIX, str(args.shards), str(args.retention), NODE]
        self.phases = {p: Phase() for p in PHASES}
        self.lua_heap_max = 0  # the function engine's Lua heap, largest seen after a measured stretch
        self.seed = 12345
        self.order = random.Random(1)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10 if not self.a.server_wrapper else 300)
        shutil.rmtree(self.dir, ignore_errors=True)

    def shard(self, dev):
        return fnv1a64(dev.encode()) % self.a.shards

    # ---- calls ----------------------------------------------------------------------------------

    def fcall(self, fn, shards, args):
        """One FCALL as store.c builds it: KEYS <prefix>{<shard>} per shard (first-seen order), then ARGV
        prefix, shard count, retention, node, then the function's own arguments."""
        keys = []
        for sh in shards:
            k = tag(sh)
            if k not in keys:
                keys.append(k)
        return ["FCALL", fn, str(len(keys))] + keys + self.common + [str(x) for x in args]

    def send(self, cmds):
        """Sends cmds --pipeline at a time; returns the replies."""
        out = []
        for i in range(0, len(cmds), self.a.pipeline):
            p = self.r.pipeline(transaction=False)
            for c in cmds[i:i + self.a.pipeline]:
                p.execute_command(*c)
            out.extend(p.execute())
        return out

    def snap(self):
        info = self.r.execute_command("INFO", "cpu", "commandstats", "memory")
        self.lua_heap_max = max(self.lua_heap_max, int(info.get("used_memory_vm_functions", 0)))
        cmds = {}
        for k, v in info.items():
            if k.startswith("cmdstat_"):
                cmds[k[len("cmdstat_"):]] = (v["calls"], v["usec"])
        return info["used_cpu_user"], info["used_cpu_sys"], cmds

    def measured(self, phase, fn):
        """Runs fn() as one measured stretch of phase: Redis CPU and commandstats deltas."""
        u0, s0, c0 = self.snap()
        out = fn()
        u1, s1, c1 = self.snap()
        ph = self.phases[phase]
        ph.user += u1 - u0
        ph.sys += s1 - s0
        own = "fcall" if phase != "XACK" else "xack"
        for name, (calls, usec) in c1.items():
            dc, du = calls - c0.get(name, (0, 0))[0], usec - c0.get(name, (0, 0))[1]
            if name == "info" or dc == 0:
                continue
            if name == own:
                ph.usec += du
            else:
                e = ph.cmds.setdefault(name, [0, 0])
                e[0] += dc
                e[1] += du
        return out

    def call_phase(self, phase, cmds):
        self.phases[phase].calls += len(cmds)
        return self.measured(phase, lambda: self.send(cmds))

    def xack(self, groups):
        """One XACK per shard per reply (groups: list of notes lists), sent like dr_store_notes_done."""
        cmds = []
        for notes in groups:
            by = {}
            for i in range(0, len(notes), NOTE_FIELDS):
                by.setdefault(int(notes[i]), []).append(notes[i + 1])
            for sh, ids in by.items():
                cmds.append(["XACK", tag(sh) + "log", "pub"] + ids)
        if cmds:
            self.phases["XACK"].calls += len(cmds)
            for r in self.measured("XACK", lambda: self.send(cmds)):
                assert r > 0, "XACK acknowledged nothing"
        return sum(len(n) // NOTE_FIELDS for n in groups)

    # ---- a command's life -----------------------------------------------------------------------

    def data(self, k):
        head = '{"pinNumber":%d,"pinValue":true,"pad":"' % (k % 100)
        return head + "x" * max(0, self.a.data_bytes - len(head) - 2) + '"}'

    def accept(self, items):
        """items: [(dev, shard, data, tmp)] in arrival order. Returns the shards woken (every shard touched)."""
        cmds = []
        for i in range(0, len(items), self.a.batch):
            b = items[i:i + self.a.batch]
            # largest id, batch token, its ttl, default deliver-by (0: none), device message limit (0: none)
            args = [IDS_MAX, "%032x" % random.getrandbits(128), TOKEN_TTL_S, self.a.default_ttl_ms, 0, len(b)]
            for dev, sh, data, tmp in b:
                # dev, shard, guarantee, command, data, tmpId, producerDeviseId, ttl ms, deliver-by,
                # max attempts, not-before, idempotency key, fingerprint, ext, API key id, device message size
                args += [dev, sh, "RECEIPT_CONFIRMATION", self.a.command, data, tmp, "p0", 0, 0, 0, 0, "",
                         "%016x" % fnv1a64((dev + data).encode()), "0", "", 110 + len(data)]
            cmds.append(self.fcall("accept_batch", [it[1] for it in b], args))
        notes = []
        for res, nt in self.call_phase("accept_batch", cmds):
            for k in range(0, len(res), 4):
                assert res[k] == "OK", res[k:k + 4]
            notes.append(nt)
        self.notes += self.xack(notes)
        return {it[1] for it in items}

    def dispatch(self, shards):
        """One pass over each shard, DISPATCH_GROUP shards per call as the dispatcher sends the shards due
        in one loop turn (dispatch_many). Returns [(id, dev)] sent and the shards to pass again (more, or
        not reached by a call that spent its budget)."""
        cmds = []
        groups = [shards[i:i + DISPATCH_GROUP] for i in range(0, len(shards), DISPATCH_GROUP)]
        for g in groups:
            self.seed += 1
            args = [self.a.dispatch_batch] + POLICY + [self.seed, len(g)]
            for sh in g:
                args += [sh, self.epochs[sh]]
            cmds.append(self.fcall("dispatch_many", g, args))
        sends, again, notes = [], set(), []
        for g, rep in zip(groups, self.call_phase("dispatch", cmds)):
            res, out, nt = rep
            for k, sh in enumerate(g):
                code = res[6 * k + 1]
                assert res[6 * k] == str(sh) and code in ("OK", "LATER"), res[6 * k:6 * k + 6]
                if code == "LATER" or int(res[6 * k + 4]):
                    again.add(sh)
                if code == "OK":
                    self.passes += 1
            for i in range(0, len(out), SEND_FIELDS + 1):
                sends.append((int(out[i + 1]), out[i + 2]))
            notes.append(nt)
        self.notes += self.xack(notes)
        return sends, again

    def ack(self, sends):
        """Acks sends DELIVERED in batches. Returns the shards woken (every shard of every batch)."""
        cmds = []
        for i in range(0, len(sends), self.a.batch):
            b = sends[i:i + self.a.batch]
            args = [len(b)]
            for mid, dev in b:
                args += [dev, mid, "DELIVERED"]
            cmds.append(self.fcall("ack_batch", [mid % self.a.shards for mid, _ in b], args))
        notes = []
        for res, nt in self.call_phase("ack_batch", cmds):
            for k in range(0, len(res), 3):
                assert res[k] == "OK", res[k:k + 3]
            notes.append(nt)
        self.notes += self.xack(notes)
        return {mid % self.a.shards for mid, _ in sends}

    # ---- memory ---------------------------------------------------------------------------------

    def used(self):
        """used_memory without client buffers and the AOF buffer, which grow and shrink with the traffic."""
        m = self.r.info("memory")
        return m["used_memory"] - m["mem_clients_normal"] - m["mem_clients_slaves"] - m["mem_aof_buffer"]

    def settle(self):
        """The first plain write after function calls allocates about 24 kB once (seen with Redis 7.0): make
        it happen before a measurement starts."""
        self.r.set(PREFIX + "probe", "1")
        self.r.delete(PREFIX + "probe")

    def breakdown(self):
        """Every key by kind: {kind: [keys, MEMORY USAGE, used_memory freed by deleting them]}. Deletes every
        key, kind after kind: MEMORY USAGE is an estimate (it counts a stream's nodes at about twice what
        they take), the drop of used_memory when a kind's keys go is what they really hold."""
        self.settle()
        keys = list(self.r.scan_iter(count=1000))
        out = {k: [0, 0, 0] for k in KINDS}
        p = self.r.pipeline(transaction=False)
        for k in keys:
            p.memory_usage(k, samples=0)
        by = {k: [] for k in KINDS}
        for k, b in zip(keys, p.execute()):
            kd = kind_of(k)
            by[kd].append(k)
            out[kd][0] += 1
            out[kd][1] += b or 0
        for kd in KINDS:
            before = self.used()
            for i in range(0, len(by[kd]), 500):
                self.r.delete(*by[kd][i:i + 500])
            out[kd][2] = before - self.used()
        return out

    # ---- run ------------------------------------------------------------------------------------

    def setup(self):
        """Takes every shard's lease (one dispatcher) and builds the commands. Returns them."""
        a = self.a
        held = self.r.execute_command(*self.fcall("lease", [], [600000, "0"]))
        self.epochs = {int(held[i]): held[i + 1] for i in range(0, len(held), 2)}
        assert len(self.epochs) == a.shards, "the lease call took %d of %d shards" % (len(self.epochs), a.shards)
        devs = ["cost-dev-%d" % i for i in range(a.devices)]
        dsh = {d: self.shard(d) for d in devs}
        items = []
        if a.burst:
            for d in devs:
                for k in range(a.per_device):
                    items.append((d, dsh[d], self.data(len(items)), str(len(items) + 1)))
        else:
            for k in range(a.per_device):
                for d in devs:
                    items.append((d, dsh[d], self.data(len(items)), str(len(items) + 1)))
        self.notes = 0
        self.settle()
        self.used0 = self.used()
        return items

    def lives(self, items):
        """Accepts items, then sends and acknowledges until every queue is empty. Returns what it counted."""
        t0 = time.time()
        wake = self.accept(items)
        used_q = self.used() - self.used0
        done = 0
        self.passes = 0
        while wake:
            shards = sorted(wake)
            sends, again = self.dispatch(shards)
            wake = set(again)
            if sends:
                self.order.shuffle(sends)  # devices answer in any order, not shard by shard
                wake |= self.ack(sends)
                done += len(sends)
        return {"done": done, "passes": self.passes, "elapsed": time.time() - t0, "used_q": used_q,
                "used_f": self.used() - self.used0}

    def report(self, items, res):
        a = self.a
        ph = self.phases
        n = res["done"]
        total = len(items)
        payload = sum(len(it[2]) for it in items) / total
        print("redis_cost: %d devices x %d commands%s, %d shards, batch %d, pipeline %d, data %d B + command "
              "'%s'; %d of %d commands went through accept, send, ack and notification in %.1f s (%.2f "
              "devices per shard with work)" % (a.devices, a.per_device, " (in bursts)" if a.burst else "",
                                                a.shards, a.batch, a.pipeline, payload, a.command, n, total,
                                                res["elapsed"], a.devices / len({it[1] for it in items})))
        print("function library: common/lua/drover.lua sha1 %s" % self.library)
        print("dispatch passes: %d (%.2f per command, %.2f sends per pass); notifications: %d (%.1f per "
              "command)" % (res["passes"], res["passes"] / n, n / res["passes"], self.notes, self.notes / n))
        print()
        print("%-13s %8s %9s %10s %10s %12s %11s" % ("phase", "calls", "calls/cmd", "usec/call", "usec/cmd",
                                                    "redis.calls", "cpu us/cmd"))
        tc = tu = tr = tcpu = 0
        for name in PHASES:
            p = ph[name]
            rc = sum(c for c, _ in p.cmds.values())
            cpu = (p.user + p.sys) * 1e6
            tc += p.calls
            tu += p.usec
            tr += rc
            tcpu += cpu
            print("%-13s %8d %9.3f %10.1f %10.1f %12.2f %11.1f" % (
                name, p.calls, p.calls / n, p.usec / p.calls if p.calls else 0, p.usec / n, rc / n, cpu / n))
        print("%-13s %8d %9.3f %10s %10.1f %12.2f %11.1f" % ("per command", tc, tc / n, "", tu / n, tr / n, tcpu / n))
        print()
        user = sum(p.user for p in ph.values())
        sys_ = sum(p.sys for p in ph.values())
        fn_usec = sum(ph[p].usec for p in PHASES[:3])
        inner = sum(u for p in PHASES[:3] for _, u in ph[p].cmds.values())
        print("redis cpu per command: %.1f usec = user %.1f + sys %.1f (execution, protocol, AOF write and fsync)"
              % (tcpu / n, user * 1e6 / n, sys_ * 1e6 / n))
        print("redis execution per command: %.1f usec (commandstats usec of FCALL and of the notes' XACK); of the "
              "functions' %.1f usec, %.1f in the commands they ran and %.1f in Lua itself" % (
                  tu / n, fn_usec / n, inner / n, (fn_usec - inner) / n))
        print("redis.calls per command: %s; client calls (round trips) per command: %s" % (
            with_target("%.2f" % (tr / n), TARGETS["calls"]), with_target("%.3f" % (tc / n), TARGETS["trips"])))
        print()
        print("commands run by the functions, per command (commandstats):")
        names = {}
        for name in PHASES[:3]:
            for c, (calls, usec) in ph[name].cmds.items():
                e = names.setdefault(c, {"usec": 0})
                e[name] = calls
                e["usec"] += usec
        print("  %-16s %13s %9s %10s %8s %9s" % ("command", "accept_batch", "dispatch", "ack_batch", "total",
                                                  "usec/cmd"))
        for c, e in sorted(names.items(), key=lambda kv: (-sum(v for k, v in kv[1].items() if k != "usec"), kv[0])):
            cnt = [e.get(p, 0) / n for p in PHASES[:3]]
            print("  %-16s %13.2f %9.2f %10.2f %8.2f %9.1f" % (c, cnt[0], cnt[1], cnt[2], sum(cnt), e["usec"] / n))
        print("  %-16s %13.2f %9.2f %10.2f %8.2f %9.1f" % (
            "all", *[sum(c for c, _ in ph[p].cmds.values()) / n for p in PHASES[:3]], tr / n, inner / n))
        print()
        print("redis memory per queued command: %.0f B, %s beyond its payload (%.0f B of data; used_memory delta "
              "after the accepts, status log and batch tokens included)" % (
                  res["used_q"] / total, with_target("%.0f B" % (res["used_q"] / total - payload),
                                                     TARGETS["queued"]), payload))
        print("redis memory left per finished command: %.0f B (used_memory delta once every queue is empty, "
              "status log and batch tokens included)" % (res["used_f"] / n))
        print("function engine's Lua heap: at most %.0f kB seen (used_memory_vm_functions after each measured "
              "stretch)" % (self.lua_heap_max / 1024))
        return payload


def with_target(x, target):
    return "%s (target <= %s)" % (x, target)


def print_kinds(title, kinds, n):
    print(title)
    print("  %-34s %6s %10s %10s %12s" % ("key kind", "keys", "B/command", "B/key", "MEMORY USAGE"))
    for k in KINDS:
        c, usage, freed = kinds[k]
        if c:
            print("  %-34s %6d %10.1f %10.0f %12.1f" % (KIND_TEXT[k], c, freed / n, freed / c, usage / n))
    counted = [v for k, v in kinds.items() if k != "setup"]
    print("  %-34s %6d %10.1f %10s %12.1f" % ("all keys but the leases", sum(v[0] for v in counted),
                                              sum(v[2] for v in counted) / n, "", sum(v[1] for v in counted) / n))


def memory_report(args, items, payload, queued, finished, due_members, n):
    total = len(items)
    print()
    print("memory by key kind: B/command and B/key are the used_memory freed by deleting the kind's keys; "
          "MEMORY USAGE (B/command) is Redis's estimate, for comparison")
    print_kinds("with all %d commands queued (a second private Redis, the same accepts):" % total, queued, total)
    durable = sum(queued[k][2] for k in KINDS if k not in ("log", "rq", "setup"))
    print("  queued command without the status log (kept %d s) and batch tokens (%d s): %.0f B, %s beyond "
          "payload" % (LOG_KEEP_S, TOKEN_TTL_S, durable / total,
                       with_target("%.0f B" % (durable / total - payload), TARGETS["queued"])))
    print_kinds("with all %d commands finished (DELIVERED, queues empty):" % n, finished, n)
    kept = finished["m"][2] + finished["dm"][2]
    print("  kept for retention (%d s) per finished message: %.0f B = record %.0f B + listing %.0f B; %s beyond "
          "payload (the record keeps device, command and data); %.1f records per bucket" % (
              args.retention, kept / n, finished["m"][2] / n, finished["dm"][2] / n,
              with_target("%.0f B" % (kept / n - payload), TARGETS["finished"]), n / max(1, finished["m"][0])))
    print()
    q_empty = finished["q"][2] / max(1, finished["q"][0])
    q_full = queued["q"][2] / max(1, queued["q"][0])
    d_hash = finished["d"][2] / max(1, finished["d"][0])
    due_member = queued["due"][2] / max(1, due_members)
    print("fixed cost per device with work: %.0f B = stream %.0f B (empty, with its group; expires %d s after it "
          "empties) + d: hash %.0f B (kept for retention) + due entry %.0f B (%d due keys, %d members)" % (
              q_empty + d_hash + due_member, q_empty, QUEUE_IDLE_S, d_hash, due_member, queued["due"][0],
              due_members))
    print("  a queued stream entry: %.0f B (a stream with %d entries: %.0f B)" % (
        (q_full - q_empty) / args.per_device, args.per_device, q_full))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-device", type=int, default=5)
    ap.add_argument("--shards", type=int, default=1024, help="cluster.shards (default 1024)")
    ap.add_argument("--batch", type=int, default=64,
                    help="items per accept_batch and ack_batch call (default 64; 1: one call per item)")
    ap.add_argument("--default-ttl-ms", type=int, default=0,
                    help="dispatch.default_ttl_ms: the deliver-by of a message without one (default 0: none; the "
                         "services default to 86400000, which gives every message a deadline entry)")
    ap.add_argument("--dispatch-batch", type=int, default=64, help="dispatch.batch: devices per pass (64)")
    ap.add_argument("--pipeline", type=int, default=32, help="calls sent together (default 32)")
    ap.add_argument("--data-bytes", type=int, default=84, help="size of each command's data (JSON, default 84)")
    ap.add_argument("--command", default="digitalWrite")
    ap.add_argument("--retention", type=int, default=86400, help="retention_s (default 86400)")
    ap.add_argument("--redis-config", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of deploy/local/redis-common.conf for comparison, e.g. "
                         "appendfsync=everysec or hash-max-listpack-value=64 (repeatable)")
    ap.add_argument("--burst", action="store_true",
                    help="each device's commands arrive one after another (so a batch holds several commands "
                         "for one device) instead of interleaved with every other device's")
    ap.add_argument("--memory", action="store_true",
                    help="Redis memory by key kind, queued and finished, and the fixed cost per device")
    ap.add_argument("--server-wrapper", default="", metavar="COMMAND",
                    help="run redis-server under this command, e.g. 'valgrind --tool=callgrind "
                         "--callgrind-out-file=/tmp/redis.cg': instruction counts do not move with the "
                         "machine's speed, so they compare two libraries where CPU times are too noisy")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        print("redis_cost: redis-server is not installed", file=sys.stderr)
        return 2
    if not os.path.exists(REDIS_CONF):
        print("redis_cost: %s not found" % REDIS_CONF, file=sys.stderr)
        return 2
    b = Bench(args)
    try:
        items = b.setup()
        res = b.lives(items)
        payload = b.report(items, res)
        finished = b.breakdown() if args.memory else None
    finally:
        b.close()
    ok = res["done"] == len(items)
    if not args.memory:
        return 0 if ok else 1
    q = Bench(args)
    try:
        q.setup()
        q.accept(items)
        due_members = sum(q.r.zcard(tag(sh) + "due") for sh in {it[1] for it in items})
        enc = q.r.object("encoding", next(q.r.scan_iter(match=PREFIX + "{*}m:*", count=1000)))
        queued = q.breakdown()
    finally:
        q.close()
    memory_report(args, items, payload, queued, finished, due_members, res["done"])
    print("  bucket record encoding: %s" % enc)
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
