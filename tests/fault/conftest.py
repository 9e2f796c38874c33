"""pytest set-up of the fault-injection suite: reuses the integration harness and its fixtures.

The integration directory goes on sys.path (for `harness` and `test_rest`), and its conftest is loaded under
another module name so its fixtures (`stack_factory`, `stack`) and its report hook (log tails on failure) are
re-exported here unchanged.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "integration"))
sys.path.insert(0, INTEGRATION)
sys.path.insert(0, HERE)

_spec = importlib.util.spec_from_file_location("drover_integration_conftest", os.path.join(INTEGRATION, "conftest.py"))
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)

stack_factory = _integration.stack_factory
stack = _integration.stack
pytest_runtest_makereport = _integration.pytest_runtest_makereport

# One marker per scenario (pytest -m R4); tests/CMakeLists.txt makes one ctest entry of each.
SCENARIOS = ("R1", "R2", "R3", "R4", "R5", "R6", "R8", "R10", "R11", "R11b", "R16", "R17", "R19", "R20", "R21",
             "R22", "R23", "R24", "R25", "R26", "R27")


def pytest_configure(config):
    _integration.pytest_configure(config)
    config.addinivalue_line("markers", "fault: a fault-injection scenario")
    for r in SCENARIOS:
        config.addinivalue_line("markers", "%s: fault scenario %s of the reliability matrix" % (r, r))
