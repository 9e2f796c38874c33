"""The device simulator (firmware/sim, built on the device SDK) against the real stack: a command reaches
it, is acknowledged and reported COMPLETED, and a re-send of an id it already executed is acknowledged
again but never executed twice, also across a restart with the SDK's ring kept in a file.

Config (stack defaults): interval 300 ms, ack timeout 1500 ms, retry max 3000 ms, tick 20 ms.
"""
import os
import re
import signal
import subprocess

import pytest

from harness import BIN_DIR, SANITIZER_MARKERS, clean_env, stays_true, tail, wait_until

SIM = os.path.join(BIN_DIR, "drover-device-sim")


class Sim:
    """One drover-device-sim process; its stdout (one event per line) goes to a log file."""

    def __init__(self, stack, workdir, device, *args, run_s=90):
        if not os.access(SIM, os.X_OK):
            pytest.fail("%s missing (set DROVER_BIN_DIR)" % SIM)
        n = len([f for f in os.listdir(workdir) if f.startswith("sim-")])
        self.log_path = os.path.join(str(workdir), "sim-%s-%d.log" % (device, n))
        env = clean_env()
        env["DR_SIM_PASSWORD"] = stack.mqtt.passwords["device"]
        argv = [SIM, "-b", stack.mqtt.url, "-u", "device", "-d", device, "-t", str(run_s)] + list(args)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        self.wait(r"^connected ", 15)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self, kind, mid=None):
        """Lines starting with `kind` (exec, duplicate, ack, complete), optionally for one id."""
        out = [ln for ln in self.text().splitlines() if ln.startswith(kind + " ")]
        if mid is not None:
            out = [ln for ln in out if re.search(r"\bid=%d\b" % mid, ln)]
        return out

    def wait(self, pattern, timeout):
        rx = re.compile(pattern, re.M)

        def found():
            if self.proc.poll() is not None and not rx.search(self.text()):
                raise AssertionError("simulator exited with %s:\n%s" % (self.proc.returncode,
                                                                          tail(self.log_path)))
            return rx.search(self.text())
        return wait_until(found, timeout, msg=lambda: "simulator log never matched %r:\n%s" % (
            pattern, tail(self.log_path)))

    def stop(self):
        """SIGTERM; the simulator must exit 0 with a summary and no sanitizer report."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError("simulator ignored SIGTERM:\n%s" % tail(self.log_path))
        text = self.text()
        assert self.proc.returncode == 0, tail(self.log_path)
        assert "summary " in text, text
        for m in SANITIZER_MARKERS:
            assert m not in text, text


@pytest.fixture
def sims(stack, tmp_path):
    made = []

    def start(device, *args):
        s = Sim(stack, tmp_path, device, *args)
        made.append(s)
        return s
    yield start
    for s in made:
        if s.proc.poll() is None:
            os.kill(s.proc.pid, signal.SIGKILL)
            s.proc.wait(10)


def test_command_acked_and_completed(stack, sims):
    sim = sims("sim-a", "--complete-ms", "200")
    prod = stack.producer("0")

    tmp = prod.send("sim-a", command="digitalWrite", data={"pinNumber": 13, "pinValue": True})
    mid = prod.receipt_id(tmp)
    prod.wait_status(mid, "COMPLETED", 15)
    assert prod.statuses(mid) == ["NOT_DELIVERED", "DELIVERED", "COMPLETED"]
    ex = sim.events("exec", mid)
    assert len(ex) == 1, sim.text()
    assert "guarantee=RECEIPT_CONFIRMATION command=digitalWrite" in ex[0], ex
    assert 'data={"pinNumber":13,"pinValue":true}' in ex[0], ex
    # The simulator logs an ack once its PUBACK is in, which Drover sends after storing a completion.
    sim.wait(r"^ack id=%d status=COMPLETED$" % mid, 10)
    assert sim.events("ack", mid) == ["ack id=%d status=DELIVERED" % mid, "ack id=%d status=COMPLETED" % mid]
    assert stack.status(mid) == "COMPLETED"

    # guarantee NO: executed once; the optional acks move it from UNKNOWN as for Duster firmware
    tmp = prod.send("sim-a", guarantee="NO", command="blink", data=None)
    mid_no = prod.receipt_id(tmp)
    prod.wait_status(mid_no, "COMPLETED", 15)
    assert prod.statuses(mid_no) == ["UNKNOWN", "DELIVERED", "COMPLETED"]
    assert len(sim.events("exec", mid_no)) == 1
    assert sim.events("duplicate") == []
    sim.stop()


def test_resend_is_acknowledged_not_executed_again(stack, sims, tmp_path):
    state = str(tmp_path / "ring.bin")
    # Every ack is lost: Drover re-sends the same id, which the SDK recognises.
    sim = sims("sim-b", "--ack-loss", "100", "--complete-ms", "0", "--state", state)
    prod = stack.producer("0")
    tmp = prod.send("sim-b", command="open-valve", data={"ms": 500})
    mid = prod.receipt_id(tmp)
    sim.wait(r"^duplicate id=%d status=COMPLETED" % mid, 15)
    sim.wait(r"(?s)(^duplicate id=%d .*){2}" % mid, 15)
    assert len(sim.events("exec", mid)) == 1, sim.text()
    assert all("lost=1" in a for a in sim.events("ack", mid))
    assert prod.statuses(mid) == ["NOT_DELIVERED"]
    sim.stop()

    # A restarted device with the same saved ring answers the next re-send with the recorded outcome.
    again = sims("sim-b", "--complete-ms", "0", "--state", state)
    assert "remembered=1" in again.text(), again.text()
    prod.wait_status(mid, "COMPLETED", 15)
    assert again.events("exec") == [], again.text()
    again.wait(r"^ack id=%d status=COMPLETED$" % mid, 10)
    assert stack.status(mid) == "COMPLETED"
    # Acknowledged: the re-sends stop.
    n = len(again.events("duplicate", mid))
    stays_true(lambda: len(again.events("duplicate", mid)) == n, 4.0,
               msg=lambda: "re-sent after COMPLETED:\n%s" % again.text())

    # The next command is new and runs normally.
    tmp = prod.send("sim-b", command="close-valve")
    mid2 = prod.receipt_id(tmp)
    prod.wait_status(mid2, "COMPLETED", 15)
    assert len(again.events("exec", mid2)) == 1
    again.stop()
    assert len(sim.events("exec", mid)) + len(again.events("exec", mid)) == 1
