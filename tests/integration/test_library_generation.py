"""A node never puts its function library over a newer one.

Every node loads the function library (common/lua/drover.lua) when it connects to Redis, replacing
whatever is loaded. A late node of an older release would so put an older library over data written
by a newer one, which that library misreads (docs/operations.md §4.2). The library declares a
generation, raised whenever the data it writes changes meaning; a node asks the loaded library's
generation first and leaves a newer one in place, staying unready (and retrying) instead.
"""
import os
import re
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def library():
    with open(os.path.join(ROOT, "common", "lua", "drover.lua")) as f:
        return f.read()


def generation(s):
    return s.redis_call(lambda r: r.fcall("generation", 0))


def load(s, body):
    s.redis_call(lambda r: r.function_load(body, replace=True))


def test_a_node_leaves_a_newer_library_in_place(stack_factory):
    s = stack_factory()
    body = library()
    gen = generation(s)
    assert gen >= 1
    assert re.search(r"\nlocal GENERATION = %d\n" % gen, body), "the nodes run a build of another library"

    # The library of the next generation, as a newer release would have loaded it.
    newer = re.sub(r"\nlocal GENERATION = \d+", "\nlocal GENERATION = %d" % (gen + 1), body, count=1)
    assert newer != body
    load(s, newer)

    # A node of this build comes late: it must not replace it, and must not get ready.
    late = s.add_dispatcher()
    late.wait_log(r"event=redis_library_newer library=drover loaded_generation=%d this_generation=%d" % (
        gen + 1, gen), 20)
    time.sleep(2.0)  # it retries meanwhile
    assert generation(s) == gen + 1
    assert "event=redis_ready" not in late.log_text()
    assert late.alive()

    # The cluster rolled back as a whole: the library of this generation again, and the late node
    # comes up on its next attempt.
    load(s, body)
    late.wait_log(r"event=redis_ready", 30)
    assert generation(s) == gen


def test_a_library_without_a_generation_is_replaced(stack_factory):
    s = stack_factory()
    body = library()
    gen = generation(s)
    # What a library of before generation 1 looks like to a node: no 'generation' function.
    older, n = re.subn(r"redis\.register_function\{function_name = 'generation',[^}]*\}\s*\}\n", "", body)
    assert n == 1
    load(s, older)
    assert s.redis_call(lambda r: r.function_list(library="drover"))[0]
    node = s.add_ingress()
    node.wait_log(r"event=redis_ready", 30)
    assert generation(s) == gen
