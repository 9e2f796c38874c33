#!/usr/bin/python3
"""How long one fsync takes on a file system: the floor under every latency Drover can promise.

Redis with `appendfsync always` (the configuration Drover ships, docs/operations.md) writes the append-only
file and fsyncs it before it answers a call that changed data, and does nothing else meanwhile. So no
accept or ack can be answered faster than one fsync, and a batch that arrives while an fsync runs waits for
it and then for its own. This tool appends records the size of a typical accept batch's AOF write to a file
and fsyncs after each, as Redis does, and prints the distribution.

Usage: loadtest/fsync_latency.py [--dir DIR] [--count 2000] [--bytes 16384] [--interval-ms 2]
DIR defaults to the current directory: run it on the file system Redis's data directory is on (the local
stack keeps it under the state directory, deploy/local). --interval-ms spaces the fsyncs as a steady load
would (0: back to back).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time


def pct(sorted_ms, p):
    if not sorted_ms:
        return 0.0
    k = min(len(sorted_ms) - 1, max(0, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=".", help="directory on the file system to measure (default: current)")
    ap.add_argument("--count", type=int, default=2000, help="fsyncs to time (default 2000)")
    ap.add_argument("--bytes", type=int, default=16384, help="bytes appended before each fsync (default 16384)")
    ap.add_argument("--interval-ms", type=float, default=2.0,
                    help="pause between fsyncs in ms (default 2; 0: back to back)")
    a = ap.parse_args()
    if a.count < 1 or a.bytes < 1 or a.interval_ms < 0:
        ap.error("--count and --bytes must be positive, --interval-ms not negative")
    fd, path = tempfile.mkstemp(prefix="drover-fsync-", dir=a.dir)
    block = b"x" * a.bytes
    ms = []
    try:
        for _ in range(a.count):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            ms.append((time.perf_counter() - t0) * 1000.0)
            if a.interval_ms > 0:
                time.sleep(a.interval_ms / 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    ms.sort()
    over = lambda t: sum(1 for x in ms if x > t)
    print("fsync_latency: %d appends of %d B + fsync in %s, %.1f ms apart" % (a.count, a.bytes,
                                                                              os.path.abspath(a.dir), a.interval_ms))
    print("  ms: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f" % (
        pct(ms, 50), pct(ms, 90), pct(ms, 99), pct(ms, 99.9), ms[-1], statistics.mean(ms)))
    print("  over 10 ms: %d (%.2f %%)   over 20 ms: %d (%.2f %%)" % (over(10), 100.0 * over(10) / len(ms), over(20),
                                                                     100.0 * over(20) / len(ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
