#!/usr/bin/python3
"""Redis time of an ONLY_LAST accept for a device with N other commands queued, per function library.

For each library file given and each N: a fresh redis-server (tests/integration/harness.RedisServer:
AOF, appendfsync always) loads the library, N commands of another command name are queued for one
device, one ONLY_LAST message makes its (device, command) known, and then 200 accept calls of one
ONLY_LAST message each run; the figure is FCALL's usec_per_call from INFO commandstats over those 200.
The functions are called as common/src/store.c calls them (the helpers of
tests/integration/test_store_functions.py). docs/benchmarks.md, "ONLY_LAST without a queue scan".

    /usr/bin/python3 loadtest/only_last_cost.py OLD.lua common/lua/drover.lua [--queued 0,1000,10000]
"""
import argparse
import os
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
import test_store_functions as t  # noqa: E402


def usec_per_accept(library, queued, calls=200):
    srv = harness.RedisServer(tempfile.mkdtemp(prefix="only_last_cost."))
    srv.start()
    r = srv.client()
    try:
        with open(library) as f:
            r.function_load(f.read(), replace=True)
        dev = "dev-bench"
        for i in range(0, queued, 250):
            batch = [t.msg_fields(dev, cmd="other", tmp=str(k)) for k in range(i, min(queued, i + 250))]
            t.confirm(r, t.accept(r, batch)[1])
        t.confirm(r, t.accept(r, [t.msg_fields(dev, g="ONLY_LAST", cmd="set")])[1])
        r.config_resetstat()
        for _ in range(calls):
            t.confirm(r, t.accept(r, [t.msg_fields(dev, g="ONLY_LAST", cmd="set")])[1])
        return float(r.info("commandstats")["cmdstat_fcall"]["usec_per_call"])
    finally:
        r.close()
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("libraries", nargs="+", help="function library files (drover.lua of each build)")
    ap.add_argument("--queued", default="0,1000,10000", help="other commands queued for the device")
    a = ap.parse_args()
    print("%-10s %s" % ("queued", "  ".join("%s" % os.path.basename(os.path.dirname(p)) + "/" +
                                          os.path.basename(p) for p in a.libraries)))
    for n in (int(x) for x in a.queued.split(",")):
        print("%-10d %s" % (n, "  ".join("%.1f us" % usec_per_accept(p, n) for p in a.libraries)))


if __name__ == "__main__":
    main()
