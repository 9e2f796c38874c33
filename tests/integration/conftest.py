"""pytest fixtures for the Drover integration tests.

`stack`: fresh redis-server, nats-server and mosquitto plus one ingress and one dispatcher per test, with the
test-friendly defaults of harness.TEST_DEFAULTS. Per-test config overrides:

    @pytest.mark.drover_config({"dispatch.ack_timeout_ms": 10000, "dispatch.retry_max_ms": 20000})
    def test_x(stack): ...

`stack_factory`: build a stack by hand, e.g. stack_factory({"ingress.max_payload": 1024}, start=False).

A test fails in teardown when a node died on its own, exited non-zero after SIGTERM, or its log shows an
AddressSanitizer / UndefinedBehaviorSanitizer / LeakSanitizer report. When a test fails, the tails of every
log are attached to the report (section "drover logs").
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "drover_config(dict): config overrides for the stack fixture")
    config.addinivalue_line("markers", "drover_stack(ingress=1, dispatchers=1): node counts of the stack fixture")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    stacks = getattr(item, "_drover_stacks", [])
    if rep.failed and stacks:
        for s in stacks:
            rep.sections.append(("drover logs (%s)" % rep.when, s.log_tails(80)))


def _binaries_present():
    return all(os.access(os.path.join(harness.BIN_DIR, "drover-%s" % s), os.X_OK) for s in ("ingress", "dispatcher"))


@pytest.fixture
def stack_factory(request, tmp_path):
    made = []
    request.node._drover_stacks = made

    def make(overrides=None, ingress=1, dispatchers=1, start=True):
        if not _binaries_present():
            pytest.fail("Drover binaries missing in %s (set DROVER_BIN_DIR)" % harness.BIN_DIR)
        s = harness.Stack(tmp_path / ("stack%d" % len(made)), overrides)
        made.append(s)
        if start:
            s.start(ingress=ingress, dispatchers=dispatchers)
        return s

    yield make

    problems = []
    for s in made:
        problems += s.close()
    if problems:
        failed_already = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        text = "\n".join(problems)
        if not failed_already:
            text += "\n" + "\n".join(s.log_tails(80) for s in made)
        pytest.fail("node problems:\n" + text, pytrace=False)


@pytest.fixture
def stack(request, stack_factory):
    m = request.node.get_closest_marker("drover_config")
    overrides = dict(m.args[0]) if m and m.args else {}
    if m and m.kwargs:
        overrides.update(m.kwargs)
    n = request.node.get_closest_marker("drover_stack")
    counts = dict(n.kwargs) if n else {}
    return stack_factory(overrides, ingress=counts.get("ingress", 1), dispatchers=counts.get("dispatchers", 1))
