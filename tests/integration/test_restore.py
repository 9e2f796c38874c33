"""Redis restored from an older backup: the id counters go back to where the backup left them, so ids
handed out after the backup come again. The device SDK must not take such a new message for a re-send
of the one it remembers under that id (it compares a fingerprint of command and data), and
`drover-ctl ids advance` moves every counter away from the ids handed out since the backup.

A real restore: Redis is stopped (SIGTERM, AOF complete), its AOF directory copied, Redis started again;
later it is stopped and the copy put back. The nodes stay up and reconnect by themselves.
"""
import os
import shutil

from test_firmware_sim import sims  # noqa: F401 (fixture)
from harness import wait_until
from test_rest import ctl


def aof_dir(stack):
    return os.path.join(stack.redis.dir, "appendonlydir")


def backup(stack, dest):
    stack.redis.stop()
    shutil.copytree(aof_dir(stack), dest)
    stack.redis.start()


def restore(stack, src):
    stack.redis.stop()
    shutil.rmtree(aof_dir(stack))
    shutil.copytree(src, aof_dir(stack))
    stack.redis.start()


def completed(prod, sim, device, command, data):
    """Sends one command, waits until the simulator completed it (one more COMPLETED ack for its id:
    the id may have been used before); returns its id."""
    def acks():
        return [e for e in sim.events("ack") if e.endswith(" status=COMPLETED")]
    before = len(acks())
    tmp = prod.send(device, command=command, data=data)
    mid = prod.receipt_id(tmp, timeout=20)
    done = "ack id=%d status=COMPLETED" % mid
    wait_until(lambda: done in acks()[before:], 20, msg=lambda: "no COMPLETED ack for %d:\n%s" % (mid, sim.text()))
    return mid


def test_restore_reuses_ids_device_still_executes_and_advance_moves_on(stack, sims, tmp_path):  # noqa: F811
    sim = sims("sim-r", "--complete-ms", "0", "--state", str(tmp_path / "ring.bin"))
    prod = stack.producer("0")
    first = completed(prod, sim, "sim-r", "open", {"n": 1})

    saved = str(tmp_path / "backup")
    backup(stack, saved)
    after_backup = completed(prod, sim, "sim-r", "open", {"n": 2})
    assert after_backup > first

    restore(stack, saved)
    # The counter went back: the next command of this device gets the id handed out after the backup.
    reused = completed(prod, sim, "sim-r", "open", {"n": 3})
    assert reused == after_backup, (first, after_backup, reused)
    # ... and the device ran it: same id, other data is a new message, not a re-send.
    runs = sim.events("exec", reused)
    assert len(runs) == 2, sim.text()
    assert 'data={"n":2}' in runs[0] and 'data={"n":3}' in runs[1], runs
    assert sim.events("duplicate", reused) == [], sim.text()
    assert stack.status(reused) == "COMPLETED"

    # After `ids advance` no id handed out before comes again.
    restore(stack, saved)
    out = ctl(stack, "ids", "advance")
    assert "advanced the id counters of %d shards" % stack.shards in out, out
    fresh = [completed(prod, sim, "sim-r", "open", {"n": 10 + k}) for k in range(3)]
    assert not set(fresh) & {first, after_backup}, (first, after_backup, fresh)
    assert len(set(fresh)) == 3
    for mid in fresh:
        assert len(sim.events("exec", mid)) == 1, sim.text()
        assert stack.status(mid) == "COMPLETED"
    sim.stop()


def test_ids_advance_by_a_given_step_and_bad_input(stack):
    prod = stack.producer("0")
    dev = stack.device("adv-1", auto_ack=True)
    a = prod.receipt_id(prod.send("adv-1"))
    ctl(stack, "ids", "advance", "1000")
    b = prod.receipt_id(prod.send("adv-1"))
    # ids of one shard step by the shard count: 1000 skipped counter values, then the next one
    assert b == a + 1001 * stack.shards, (a, b)
    dev.wait_for(b, 10)

    import subprocess
    from harness import BIN_DIR
    env = dict(os.environ, DR_REDIS_PORT=str(stack.redis.port), DR_REDIS_PASSWORD=stack.redis.password,
               DR_REDIS_PREFIX=stack.prefix, DR_CLUSTER_SHARDS=str(stack.shards))
    for bad in (["0"], ["-5"], ["x"], ["99999999999"], ["1", "2"]):
        out = subprocess.run([os.path.join(BIN_DIR, "drover-ctl"), "ids", "advance"] + bad, env=env,
                             capture_output=True, timeout=20)
        assert out.returncode == 1, (bad, out)
        assert out.stderr, bad
    # nothing moved
    c = prod.receipt_id(prod.send("adv-1"))
    assert c == b + stack.shards, (b, c)
