#!/usr/bin/env python3
"""Redis cost of one command's life in Drover, script by script.

Starts a private redis-server (AOF, appendfsync always, as in production) on a random loopback port, loads
Drover's Lua scripts from common/lua exactly as the services do (lib.lua prepended), and drives complete
command lives through them without MQTT, NATS or the services in the way:

    accept -> dispatch pass (send) -> ack (DELIVERED) -> outbox read + outbox delete

It reports, per script, the Redis execution time per call (INFO commandstats, which excludes network and
fsync) and, per command, Redis's whole CPU time (user + sys of the server process: execution, protocol,
AOF writes and fsyncs), plus Redis memory per queued command. Use it to see where Redis time goes and to
compare script changes before and after; the end-to-end benchmarks are in loadtest/scenarios.

With --profile, Redis's slow log records every command (threshold 0) and the report adds the commands the
scripts run, by total time: the profile of the scripts' own work (the slow log adds overhead of its own, so
use the figures without --profile for costs, and these for where the time goes).

Usage: loadtest/redis_cost.py [--devices 1000] [--per-device 5] [--shards 64] [--pipeline 32] [--data-bytes 64]
                              [--profile]
Needs redis-server and python3-redis (Debian packages).
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LUA = os.path.join(ROOT, "common", "lua")
PREFIX = "dr:"
RETENTION = "604800"
NODE = "cost-bench"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def script_text(name):
    with open(os.path.join(LUA, "lib.lua")) as f:
        lib = f.read()
    with open(os.path.join(LUA, name + ".lua")) as f:
        return lib + "\n" + f.read()


class Bench:
    def __init__(self, args):
        self.a = args
        self.dir = tempfile.mkdtemp(prefix="drover-cost.")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"]
            + [w for kv in args.redis_config for w in ("--" + kv.split("=", 1)[0], kv.split("=", 1)[1])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.r.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        self.sha = {n: self.r.script_load(script_text(n)) for n in ("accept", "dispatch", "ack", "outbox", "lease")}
        self.names = {v: k for k, v in self.sha.items()}
        self.stats = {}  # script -> [calls, usec]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def now(self):
        return str(int(time.time() * 1000))

    def shard(self, dev):
        return fnv1a64(dev.encode()) % self.a.shards

    def run(self, calls):
        """calls: [(script, argv)], sent in pipelines of --pipeline; returns the replies."""
        out = []
        for i in range(0, len(calls), self.a.pipeline):
            p = self.r.pipeline(transaction=False)
            for name, argv in calls[i:i + self.a.pipeline]:
                p.evalsha(self.sha[name], 0, *argv)
            out.extend(p.execute())
        return out

    def cpu(self):
        info = self.r.info("cpu")
        return info["used_cpu_user"], info["used_cpu_sys"]

    def evalsha_usec(self):
        s = self.r.info("commandstats").get("cmdstat_evalsha", {})
        return s.get("calls", 0), s.get("usec", 0)

    def measured(self, name, calls):
        c0, u0 = self.evalsha_usec()
        replies = self.run(calls)
        c1, u1 = self.evalsha_usec()
        st = self.stats.setdefault(name, [0, 0])
        st[0] += c1 - c0
        st[1] += u1 - u0
        return replies

    def main(self):
        a = self.a
        devs = ["cost-dev-%d" % i for i in range(a.devices)]
        pad = "x" * a.data_bytes
        # one dispatcher holding every shard
        self.run([("lease", [PREFIX, self.now(), RETENTION, NODE, "600000", str(a.shards), "0"])])
        epochs = {}
        for sh in range(a.shards):
            v = self.r.get("%slease:%d" % (PREFIX, sh)).decode()
            epochs[sh] = v.split(" ")[1]
        used0 = self.r.info("memory")["used_memory"]
        if a.profile:
            self.r.config_set("slowlog-max-len", 1000000)
            self.r.config_set("slowlog-log-slower-than", 0)
            self.r.slowlog_reset()
        cpu0 = self.cpu()
        t0 = time.time()
        n = 0
        calls = []
        for k in range(a.per_device):
            for d in devs:
                n += 1
                data = '{"k":%d,"pad":"%s"}' % (k, pad)
                calls.append(("accept", [PREFIX, self.now(), RETENTION, d, str(self.shard(d)),
                                         "RECEIPT_CONFIRMATION", "cmd", data, str(n), "p0", "", "", "", "",
                                         "%016x" % n, "2147483647", "0", "%032x" % n, "300", ""]))
        self.measured("accept", calls)
        queued = self.r.info("memory")["used_memory"] - used0
        if a.memory:
            self.memory_breakdown(len(calls))
        payload = sum(len(c[1][7]) + len(c[1][6]) for c in calls)
        total = len(calls)
        done = 0
        while done < total:
            # one dispatch pass per shard with due devices (pacing off, window 1)
            passes = [("dispatch", [PREFIX, self.now(), RETENTION, str(sh), epochs[sh], NODE, "64", "1", "0",
                                    "600000", "600000", "2.0", "10", str(sh + 1)])
                      for sh in range(a.shards) if self.r.zcard("%sdue:%d" % (PREFIX, sh))]
            sends = []
            for rep in self.measured("dispatch", passes):
                out = rep[4]
                for i in range(0, len(out), 6):
                    sends.append((out[i].decode(), out[i + 1].decode()))
            if not sends:
                break
            self.measured("ack", [("ack", [PREFIX, self.now(), RETENTION, dev, mid, "DELIVERED"]) for dev, mid in sends])
            done += len(sends)
            # the outbox, as the dispatcher drains it: read a batch, delete what was published
            deletes = []
            for sh in range(a.shards):
                ents = self.r.xrange("%snt:%d" % (PREFIX, sh), count=100)
                while ents:
                    deletes.append(("outbox", [PREFIX, self.now(), RETENTION, str(sh), ents[-1][0].decode()]))
                    self.measured("outbox", [deletes.pop()])
                    ents = self.r.xrange("%snt:%d" % (PREFIX, sh), count=100)
        elapsed = time.time() - t0
        cpu1 = self.cpu()
        user, sys_ = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        cpu = user + sys_
        print("redis_cost: %d devices x %d commands, %d shards, pipeline %d, data %d B; %d commands went "
              "through accept, send, ack and notification in %.1f s" % (a.devices, a.per_device, a.shards,
                                                                          a.pipeline, a.data_bytes, done, elapsed))
        print("%-10s %9s %12s %12s" % ("script", "calls", "usec/call", "usec/command"))
        tot = 0
        for name in ("accept", "dispatch", "ack", "outbox"):
            c, u = self.stats.get(name, [0, 0])
            tot += u
            print("%-10s %9d %12.1f %12.1f" % (name, c, u / c if c else 0, u / done if done else 0))
        print("%-10s %9s %12s %12.1f" % ("scripts", "", "", tot / done if done else 0))
        print("redis cpu per command: %.1f usec = user %.1f + sys %.1f (execution, protocol, AOF write and fsync)" %
              tuple(x * 1e6 / done if done else 0 for x in (cpu, user, sys_)))
        print("redis memory per queued command: %.0f B (of which payload %.0f B)" % (queued / total, payload / total))
        if a.profile:
            self.profile(done)
            self.prelude()
        return 0 if done == total else 1

    def prelude(self, calls=20000):
        """Cost of the helper prelude (lib.lua) that every script call runs before its own code."""
        with open(os.path.join(LUA, "lib.lua")) as f:
            lib = f.read()
        out = []
        for text in ("return 1", lib + "\nreturn 1"):
            sha = self.r.script_load(text)
            self.r.config_resetstat()
            p = self.r.pipeline(transaction=False)
            for _ in range(calls):
                p.evalsha(sha, 0, PREFIX, self.now(), RETENTION)
            p.execute()
            out.append(self.r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
        print("script prelude: an empty script %.1f usec/call, the same with lib.lua before it %.1f usec/call"
              % tuple(out))

    def memory_breakdown(self, n):
        """MEMORY USAGE of every key after the accepts, summed by key kind (the part after the prefix)."""
        kinds = {}
        for k in self.r.scan_iter(count=1000):
            kind = k.decode()[len(PREFIX):].split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + (self.r.memory_usage(k, samples=0) or 0)
        print("memory by key kind after queueing %d commands (MEMORY USAGE; the notification outbox nt and the "
              "request tokens rq are transient):" % n)
        for kind, b in sorted(kinds.items(), key=lambda kv: -kv[1]):
            if b / n >= 1:
                print("  %-8s %8.1f B/command" % (kind, b / n))
        enc = self.r.object("encoding", PREFIX + "m:1")
        print("  message record encoding: %s" % (enc.decode() if isinstance(enc, bytes) else enc))

    def profile(self, done):
        self.r.config_set("slowlog-log-slower-than", 10000)
        agg = {}
        for e in self.r.slowlog_get(1000000):
            words = e["command"].split(b" ", 2)
            name = words[0].decode().lower()
            if name in ("evalsha", "slowlog", "config", "info", "zcard", "xrange") and name != "evalsha":
                if name != "xrange":
                    continue
            if name == "evalsha":
                continue  # the scripts' own totals are above; their commands follow
            c = agg.setdefault(name, [0, 0])
            c[0] += 1
            c[1] += e["duration"]
        tot = sum(v[1] for v in agg.values()) or 1
        print("commands run by the scripts (slow log, threshold 0), by total time:")
        print("  %-16s %9s %12s %12s %7s" % ("command", "calls", "usec/call", "usec/command", "share"))
        for name, (c, u) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:20]:
            print("  %-16s %9d %12.1f %12.1f %6.1f%%" % (name, c, u / c, u / done, 100.0 * u / tot))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-device", type=int, default=5)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--pipeline", type=int, default=32)
    ap.add_argument("--data-bytes", type=int, default=64)
    ap.add_argument("--redis-config", action="append", default=[], metavar="KEY=VALUE",
                    help="extra redis-server setting, e.g. hash-max-listpack-value=1024 (repeatable)")
    ap.add_argument("--memory", action="store_true", help="Redis memory by key kind after queueing")
    ap.add_argument("--profile", action="store_true", help="list the commands the scripts run, by time")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        print("redis_cost: redis-server is not installed", file=sys.stderr)
        return 2
    b = Bench(args)
    try:
        return b.main()
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
