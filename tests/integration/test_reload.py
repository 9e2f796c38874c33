"""SIGHUP: a node loads its configuration again. Options read on every use (pacing, re-send policy,
limits, log level) take effect at once; the others are named in the log as needing a restart and keep
their values; a configuration that fails to load changes nothing and the node keeps running."""
import os
import signal

from harness import wait_until
from test_pacing import SLACK, cts


def hup(node):
    mark = node.log_size()
    os.kill(node.pid, signal.SIGHUP)
    return node.wait_log(r"event=(reloaded|reload_failed)[^\n]*", 10, since=mark).group(0)


def spacing(stack, prod, dev, n=3):
    ids = [prod.receipt_id(prod.send(dev.device_id, command="c%d" % i)) for i in range(n)]
    for i in ids:
        dev.wait_for(i, 20)
    t = [cts(dev.arrivals_of(i)[0]) for i in ids]
    return [b - a for a, b in zip(t, t[1:])]


def test_sighup_applies_pacing_and_names_what_needs_a_restart(stack):
    prod = stack.producer("0")
    dev = stack.device("dev-hup", auto_ack=True)
    before = spacing(stack, prod, dev)
    assert max(before) < 1500, before  # the test default, 300 ms

    disp = stack.dispatcher
    disp.set(**{"dispatch.interval_ms": 1500, "redis.timeout_ms": 4000, "log.level": "notice"})
    line = hup(disp)
    assert "event=reloaded applied=2" in line, line
    assert 'needs_restart="redis.timeout_ms"' in line, line
    after = spacing(stack, prod, dev)
    assert min(after) >= 1500 - SLACK, "new interval not applied: %s" % after
    # log.level notice: verbose lines stop
    mark = disp.log_size()
    spacing(stack, prod, dev, 2)
    assert "level=verbose" not in disp.log_text()[mark:]

    # a broken file: nothing changes, the node stays up and keeps the last good values
    disp.set(**{"dispatch.interval_ms": "soon"})
    line = hup(disp)
    assert "event=reload_failed" in line and "dispatch.interval_ms" in line, line
    assert disp.alive()
    again = spacing(stack, prod, dev)
    assert min(again) >= 1500 - SLACK, again

    # the ingress reloads too (its own log says so) and keeps serving
    ing = stack.ingress
    ing.set(**{"device.max_message": 4096})
    line = hup(ing)
    assert "event=reloaded applied=1" in line, line
    wait_until(lambda: prod.receipt_id(prod.send("dev-hup", command="last")) > 0, 20)
