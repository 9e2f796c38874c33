"""Live test of dr_redis (common/src/redis.c) against a real redis-server.

The client writes the commands of a loop turn itself, just before the loop polls, and watches its socket
for room only when the socket did not take everything (the event adapter in common/src/redis.c). The
ingress's own test of that path (tests/integration/test_group_commit.py) cannot tell whether the watch is
there: the ingress issues other commands now and then, and each of them writes the rest of the buffer on
its way out. Here the `redis_live` program (tests/redis/redis_live.c) issues a single SET of 32 MB while
Redis is stopped and then nothing else, so the rest of the command reaches Redis only if the client
goes on writing by itself once the socket has room again: a client that stops at the first short write
never sees the reply.

One stand-in for the watch this test cannot tell from the real one: writing from every loop turn (the
prepare handle restarted instead of the watch) also gets there, because dr_redis's 50 ms timer keeps
the loop turning, and each turn writes what fits. Only a measure of time could tell them apart (32 MB
take about 0.15 s after Redis resumes with the watch, about 0.35 s without), and this test times nothing.

Redis runs on a random 127.0.0.1 port without persistence (harness.RedisServer with its append-only file
turned off). Every wait is bounded and generous; nothing is timed.
"""
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402

LIVE = os.environ.get("DROVER_REDIS_LIVE", os.path.join(harness.BIN_DIR, "redis_live"))

SIZE = 32 * 1024 * 1024  # far more than the socket buffers of both ends hold while Redis is stopped
KEY = "redis_live:big"
REPLY_TIMEOUT = 60  # once Redis runs again the rest takes well under a second; without the watch, forever


class VolatileRedis(harness.RedisServer):
    """The harness's redis-server without its append-only file: nothing here needs to survive a restart,
    and fsyncing 32 MB would only slow the test down."""

    def __init__(self, workdir):
        super().__init__(workdir)
        with open(self.conf, "a") as f:
            f.write("appendonly no\n")  # a later directive overrides the harness's "appendonly yes"


class LiveFailed(Exception):
    """redis_live reported an error or exited: raised through wait_until, which keeps polling on
    AssertionError, so that the test fails at once instead of at the end of its wait."""


class Live(harness.LineProgram):
    """One redis_live process: its stdout lines collected by a thread, its stderr in a log file. A
    line "error ..." or an exit fails a wait at once (LiveFailed)."""

    def __init__(self, workdir, **opts):
        super().__init__(LIVE, "DROVER_REDIS_LIVE", os.path.join(workdir, "redis_live.log"), "redis_live",
                         **opts)

    def failed(self, line):
        if line.startswith("error "):
            return LiveFailed("redis_live: %s\nlog:\n%s" % (line, self.tail()))
        return None

    def exited(self):
        return LiveFailed("redis_live exited with %s; output %s\nlog:\n%s" % (
            self.proc.returncode, self.snapshot(), self.tail()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()  # only this process, by the PID we started
        self.proc.wait(10)
        self.proc.stdin.close()
        self.reader.join(10)


def expected_value(size):
    """What redis_live stores: 16-byte records "%015x\\n" of their own offset, the last one cut short."""
    return b"".join(b"%015x\n" % off for off in range(0, size, 16))[:size]


def send_queue(port):
    """Bytes queued in the send buffer of every 127.0.0.1 connection to `port` (/proc/net/tcp)."""
    remote = "0100007F:%04X" % port
    queued = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[2] == remote:
                queued.append(int(fields[4].split(":")[0], 16))
    return queued


@pytest.fixture
def redis_server(tmp_path):
    r = VolatileRedis(str(tmp_path))
    r.start()
    yield r
    if r.alive():
        r.resume()  # a test that failed while Redis was stopped
    r.stop()


@pytest.fixture
def live(tmp_path):
    made = []

    def make(**opts):
        lv = Live(str(tmp_path), **opts)
        made.append(lv)
        return lv
    yield make
    for lv in made:
        lv.close()


def test_a_command_larger_than_the_socket_takes_is_written_once_redis_reads_again(redis_server, live):
    # "pass" is a Python keyword, hence the dict.
    lv = live(**{"port": redis_server.port, "pass": redis_server.password, "key": KEY, "size": SIZE})
    lv.wait_line(r"ready$", 20)
    redis_server.pause()
    try:
        lv.send("go")
        lv.wait_line(r"sent %d$" % SIZE, 20)
        # Redis reads nothing meanwhile: the kernel fills Redis's receive buffer and the client's send
        # buffer, the write comes back short, and from then on only the writable watch moves the rest.
        time.sleep(2)
        queued = send_queue(redis_server.port)
        assert queued and max(queued) > 0, "the client's socket is not full: %s" % queued
        assert not any(l.startswith("reply") for l in lv.snapshot())
    finally:
        redis_server.resume()
    lv.wait_line(r"reply OK$", REPLY_TIMEOUT)
    assert lv.proc.wait(20) == 0, "redis_live exited with %s\n%s" % (lv.proc.returncode,
                                                                      harness.tail(lv.log_path))
    log = open(lv.log_path, encoding="utf-8", errors="replace").read()
    assert not any(m in log for m in harness.SANITIZER_MARKERS), log[-4000:]
    c = redis_server.client(decode=False)
    try:
        assert c.strlen(KEY) == SIZE
        assert c.get(KEY) == expected_value(SIZE)
    finally:
        c.close()
