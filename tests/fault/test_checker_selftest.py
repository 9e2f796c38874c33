"""Negative controls for the history checker: hand-made histories with a lost command, an order violation, a
duplicate delivery, an id nobody was given, a command never receipted, a missing status, a regression and a key
stored twice must each be detected, and assert_clean must fail on each of the properties it guards. Runs without
any server (harness Devices and Producers are created unconnected and fed with recorded arrivals)."""
import json
import threading

import harness
import pytest

from checker import Cmd, Workload, assert_clean


class FakeStack:
    prefix = "dr:"

    def __init__(self):
        self.idk = {}

    def msg(self, mid):
        return {}


def make(histories, idk=None, stray=None, unreceipted=0):
    """histories: {device: [(rid, arrivals, statuses)]} in acceptance order; stray: {device: [(time, id)]} arrivals
    of ids no command was given; unreceipted: commands the producer sent that never got a receipt."""
    w = Workload.__new__(Workload)
    w.stack = FakeStack()
    w.name = "self"
    w.lock = threading.Lock()
    w.cmds = []
    w.devices = []
    w.thread_errors = []
    w.t_start = 0
    prod = harness.Producer(None, pd="self-p0", connect=False)
    tmp = 0
    for dev, cmds in histories.items():
        d = harness.Device(None, dev, connect=False)
        w.devices.append(d)
        for rid, _, statuses in cmds:
            tmp += 1
            c = Cmd(prod, dev, "self-p0:%s:%d" % (dev, rid), tmp, "{}")
            c.rid, c.sends = rid, 1
            w.cmds.append(c)
            for st in statuses:
                prod.responses.append(harness.Received("producer/response/self-p0", json.dumps(
                    {"id": rid, "tmpId": tmp, "deliveryStatus": st})))
    for k in range(unreceipted):
        c = Cmd(prod, "a", "self-p0:a:never%d" % k, 1000 + k, "{}")
        c.sends, c.first_sent = 3, 1.0
        w.cmds.append(c)
    for dev, cmds in histories.items():
        d = next(x for x in w.devices if x.device_id == dev)
        order = sorted([(t, rid) for rid, arrivals, _ in cmds for t in arrivals] + list((stray or {}).get(dev, [])))
        for _, rid in order:
            d.received.append(harness.Received("consumer/request/" + dev, json.dumps({"id": rid})))
    w.idem_index = lambda: idk or {}
    return w


OK = ["NOT_DELIVERED", "DELIVERED"]


def test_clean_history_passes():
    res, report = make({"a": [(1, [1], OK), (2, [2], OK)], "b": [(3, [1], OK)]}).check()
    assert (res["lost"], res["order_violations"], res["dup_deliveries"], res["status_missing"],
            res["regressions"], res["idem_dups"], res["unexpected_ids"], res["unreceipted"]) == (0,) * 8, report
    assert_clean(res, report, 3)


def test_duplicates_with_the_same_id_are_counted_not_failed():
    res, report = make({"a": [(1, [1, 2, 3], OK), (2, [4], OK)]}).check()
    assert res["dup_deliveries"] == 2 and res["order_violations"] == 0, report
    assert_clean(res, report, 2)


def test_detects_loss_order_dups_statuses_and_keys():
    w = make({"a": [(1, [2], OK), (2, [1], OK), (3, [], ["NOT_DELIVERED"])],
              "b": [(4, [1, 5], ["NOT_DELIVERED", "DELIVERED", "NOT_DELIVERED"]), (5, [6], ["DELIVERED"])]},
             idk={"self-p0:b:9": {7, 8}})
    res, report = w.check()
    assert res["lost"] == 1  # id 3
    assert res["order_violations"] == 1  # id 1 first arrived after id 2
    assert res["dup_deliveries"] == 1  # id 4 twice
    assert res["status_missing"] == 2  # id 3 never DELIVERED, id 5 never NOT_DELIVERED
    assert res["regressions"] == 1  # id 4 went back to NOT_DELIVERED
    assert res["idem_dups"] == 1


def test_detects_unexpected_ids_and_unreceipted_commands():
    # id 9 reached device a although no receipt named it (a command stored twice under another id)
    res, report = make({"a": [(1, [1], OK)]}, stray={"a": [(2, 9)]}, unreceipted=2).check()
    assert res["unexpected_ids"] == 1, report
    assert res["unreceipted"] == 2, report
    assert res["lost"] == 0 and res["order_violations"] == 0, report


@pytest.mark.parametrize("case", [
    dict(histories={"a": [(1, [], OK)]}),  # lost
    dict(histories={"a": [(1, [2], OK), (2, [1], OK)]}),  # order
    dict(histories={"a": [(1, [1], ["NOT_DELIVERED"])]}),  # status missing
    dict(histories={"a": [(1, [1], OK + ["NOT_DELIVERED"])]}),  # regression
    dict(histories={"a": [(1, [1], OK)]}, idk={"self-p0:a:1": {1, 2}}),  # key stored twice
    dict(histories={"a": [(1, [1], OK)]}, stray={"a": [(2, 7)]}),  # unexpected id
    dict(histories={"a": [(1, [1], OK)]}, unreceipted=1),  # never receipted
])
def test_assert_clean_fails_on_each_violation(case):
    res, report = make(**case).check()
    with pytest.raises(AssertionError):
        assert_clean(res, report, 1)
